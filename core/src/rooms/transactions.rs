//! Client transaction ids: which event a device's transaction id already sent, and back.
//!
//! `PUT /rooms/{roomId}/send/{eventType}/{txnId}` and `/redact/{eventId}/{txnId}` must be
//! idempotent per device: a retry with the same transaction id returns the first event's id
//! and creates nothing. The sending device also sees its transaction id in the event's
//! `unsigned`, so the mapping is kept both ways. It is durable, so a retry after a restart is
//! still recognised.
//!
//! The mapping is written in the same batch as the event it names (`NewEvent::transaction`),
//! and callers look it up again under the room's write lock before appending, so neither a
//! crash nor two concurrent retries can send a transaction twice.

use ruma::{DeviceId, EventId, OwnedDeviceId, OwnedEventId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

use crate::storage::{Json, KvStore, StorageError, Table, WriteBatch, catalogue};

/// Key tag of the forward map, so both maps share one column family without colliding.
const BY_TXN: u64 = 0;
/// Key tag of the reverse map.
const BY_EVENT: u64 = 1;

/// `(BY_TXN, user, device, transaction id)` -> event id.
const TRANSACTIONS: Table<(u64, OwnedUserId, OwnedDeviceId, String), Vec<u8>> =
    Table::new(&catalogue::ROOM_TRANSACTIONS);
/// `(BY_EVENT, event id)` -> who sent it under which transaction id.
const EVENT_TRANSACTIONS: Table<(u64, OwnedEventId), Json<Transaction>> =
    Table::new(&catalogue::ROOM_TRANSACTIONS);

/// The transaction an event was sent in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// The sender.
    pub user_id: OwnedUserId,
    /// The sending device.
    pub device_id: OwnedDeviceId,
    /// The client's transaction id.
    pub txn_id: String,
}

/// The event a device already sent under `txn_id`, if any.
pub fn transaction_event(
    store: &dyn KvStore,
    user_id: &UserId,
    device_id: &DeviceId,
    txn_id: &str,
) -> Result<Option<OwnedEventId>, StorageError> {
    let key = (
        BY_TXN,
        user_id.to_owned(),
        device_id.to_owned(),
        txn_id.to_owned(),
    );
    let Some(bytes) = TRANSACTIONS.get(store, &key)? else {
        return Ok(None);
    };
    let corrupt = |reason: String| StorageError::Corrupt {
        cf: catalogue::ROOM_TRANSACTIONS.name,
        what: "value",
        reason,
    };
    let text = String::from_utf8(bytes).map_err(|err| corrupt(err.to_string()))?;
    EventId::parse(text)
        .map(Some)
        .map_err(|err| corrupt(err.to_string()))
}

/// The transaction `event_id` was sent in, when a local device sent it through an endpoint
/// with a transaction id.
pub fn event_transaction(
    store: &dyn KvStore,
    event_id: &EventId,
) -> Result<Option<Transaction>, StorageError> {
    Ok(EVENT_TRANSACTIONS
        .get(store, &(BY_EVENT, event_id.to_owned()))?
        .map(|Json(transaction)| transaction))
}

/// Adds the mapping between `transaction` and `event_id`, both ways, to `batch`.
pub fn add_to_batch(batch: &mut WriteBatch, transaction: &Transaction, event_id: &EventId) {
    let key = (
        BY_TXN,
        transaction.user_id.clone(),
        transaction.device_id.clone(),
        transaction.txn_id.clone(),
    );
    TRANSACTIONS.put(batch, &key, &event_id.as_str().as_bytes().to_vec());
    EVENT_TRANSACTIONS.put(
        batch,
        &(BY_EVENT, event_id.to_owned()),
        &Json(transaction.clone()),
    );
}

/// Records that `transaction` sent `event_id`, on its own.
pub fn record_transaction(
    store: &dyn KvStore,
    transaction: &Transaction,
    event_id: &EventId,
) -> Result<(), StorageError> {
    let mut batch = WriteBatch::new();
    add_to_batch(&mut batch, transaction, event_id);
    store.write(batch)
}

#[cfg(test)]
mod tests {
    use ruma::{device_id, event_id, user_id};

    use super::*;
    use crate::storage::MemoryStore;

    #[test]
    fn transactions_are_per_user_and_device_and_map_back() {
        let store = MemoryStore::new();
        let alice = user_id!("@alice:example.org");
        let bob = user_id!("@bob:example.org");
        let phone = device_id!("PHONE");
        let laptop = device_id!("LAPTOP");
        let event = event_id!("$abc");
        assert_eq!(transaction_event(&store, alice, phone, "t1").unwrap(), None);
        assert_eq!(event_transaction(&store, event).unwrap(), None);
        let transaction = Transaction {
            user_id: alice.to_owned(),
            device_id: phone.to_owned(),
            txn_id: "t1".to_owned(),
        };
        record_transaction(&store, &transaction, event).unwrap();
        assert_eq!(
            transaction_event(&store, alice, phone, "t1").unwrap(),
            Some(event.to_owned())
        );
        assert_eq!(event_transaction(&store, event).unwrap(), Some(transaction));
        assert_eq!(
            transaction_event(&store, alice, laptop, "t1").unwrap(),
            None
        );
        assert_eq!(transaction_event(&store, bob, phone, "t1").unwrap(), None);
        assert_eq!(transaction_event(&store, alice, phone, "t2").unwrap(), None);
    }
}
