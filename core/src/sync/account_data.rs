//! Account data: per-user JSON objects by type, global or for one room
//! (`/user/{userId}/account_data/{type}`, `/user/{userId}/rooms/{roomId}/account_data/{type}`,
//! room tags as `m.tag`, `m.fully_read` from read markers, `m.ignored_user_list`).

use std::fmt;
use std::sync::Arc;

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::SyncError;
use crate::rooms::graph::{Audience, Rooms, StreamPosition};
use crate::storage::{Direction, Json, KeyCodec, KeyRange, KvStore, Table, catalogue};

/// `(user, room id or "" for global data, type)` -> the content.
const DATA: Table<(OwnedUserId, String, String), Json<Record>> =
    Table::new(&catalogue::ACCOUNT_DATA);
/// `(user, position)` -> which entry changed at that position.
const CHANGES: Table<(OwnedUserId, StreamPosition), Json<ChangeRecord>> =
    Table::new(&catalogue::ACCOUNT_DATA_STREAM);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    content: Value,
    stream: StreamPosition,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChangeRecord {
    room: String,
    kind: String,
}

/// One account data entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountDataEntry {
    /// Its room, for room account data.
    pub room_id: Option<OwnedRoomId>,
    /// The type (`m.tag`, `m.direct`...).
    pub kind: String,
    /// The content: a JSON object.
    pub content: Value,
    /// Where in the stream it was written.
    pub stream: StreamPosition,
}

/// The account data service.
pub struct AccountData {
    store: Arc<dyn KvStore>,
}

impl fmt::Debug for AccountData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountData").finish_non_exhaustive()
    }
}

impl AccountData {
    /// The service over `store`.
    pub fn new(store: Arc<dyn KvStore>) -> Self {
        Self { store }
    }

    /// Sets the `kind` account data of `user_id` (for `room_id`, or global) to `content` at
    /// the next stream position, waking waiting syncs. The API layer checks who may write
    /// what. Synchronous, with a synced write: call it from `spawn_blocking`.
    pub fn set(
        &self,
        rooms: &Rooms,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        kind: &str,
        content: Value,
    ) -> Result<StreamPosition, SyncError> {
        if !content.is_object() {
            return Err(SyncError::InvalidParam(
                "account data content must be a JSON object".to_owned(),
            ));
        }
        let key = (user_id.to_owned(), room_key(room_id), kind.to_owned());
        let store = &*self.store;
        let audience = Audience::User(user_id.to_owned());
        Ok(rooms.write_at_next_position_for(audience, |batch, stream| {
            // Under the allocation lock: no other write can interleave between this read and
            // the batch, so the old change entry is the live one.
            if let Some(Json(old)) = DATA.get(store, &key)? {
                CHANGES.delete(batch, &(key.0.clone(), old.stream));
            }
            DATA.put(batch, &key, &Json(Record { content, stream }));
            CHANGES.put(
                batch,
                &(key.0.clone(), stream),
                &Json(ChangeRecord {
                    room: key.1.clone(),
                    kind: key.2.clone(),
                }),
            );
            Ok(())
        })?)
    }

    /// The content of the `kind` account data of `user_id` (for `room_id`, or global).
    pub fn get(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        kind: &str,
    ) -> Result<Option<Value>, SyncError> {
        let key = (user_id.to_owned(), room_key(room_id), kind.to_owned());
        Ok(DATA
            .get(&*self.store, &key)?
            .map(|Json(record)| record.content))
    }

    /// Every account data entry of `user_id` written at or before `upto`, global and per room.
    pub fn all(
        &self,
        user_id: &UserId,
        upto: StreamPosition,
    ) -> Result<Vec<AccountDataEntry>, SyncError> {
        DATA.scan_prefix(&*self.store, &(user_id.to_owned(),))?
            .into_iter()
            .filter(|(_, Json(record))| record.stream <= upto)
            .map(|((_, room, kind), Json(record))| entry(&room, kind, record))
            .collect()
    }

    /// The entries of `user_id` written after `after` and at or before `upto`, in stream
    /// order (an entry overwritten after `upto` shows up in a later read instead).
    pub fn changes(
        &self,
        user_id: &UserId,
        after: StreamPosition,
        upto: StreamPosition,
    ) -> Result<Vec<AccountDataEntry>, SyncError> {
        if after >= upto {
            return Ok(Vec::new());
        }
        let user = user_id.to_owned();
        let range = KeyRange::half_open(
            (user.clone(), StreamPosition(after.0.saturating_add(1))).to_key_bytes(),
            (user.clone(), StreamPosition(upto.0.saturating_add(1))).to_key_bytes(),
        );
        let mut out = Vec::new();
        for ((_, stream), Json(change)) in
            CHANGES.collect(&*self.store, range, Direction::Forward, None)?
        {
            let key = (user.clone(), change.room, change.kind);
            if let Some(Json(record)) = DATA.get(&*self.store, &key)?
                && record.stream == stream
            {
                out.push(entry(&key.1, key.2, record)?);
            }
        }
        Ok(out)
    }
}

/// The room part of a key: the room id, or "" for global data (no room id is empty).
fn room_key(room_id: Option<&RoomId>) -> String {
    room_id
        .map(|room| room.as_str().to_owned())
        .unwrap_or_default()
}

fn entry(room: &str, kind: String, record: Record) -> Result<AccountDataEntry, SyncError> {
    let room_id = if room.is_empty() {
        None
    } else {
        Some(
            OwnedRoomId::try_from(room).map_err(|err| crate::storage::StorageError::Corrupt {
                cf: catalogue::ACCOUNT_DATA.name,
                what: "key",
                reason: format!("bad room id: {err}"),
            })?,
        )
    };
    Ok(AccountDataEntry {
        room_id,
        kind,
        content: record.content,
        stream: record.stream,
    })
}
