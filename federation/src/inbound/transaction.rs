//! `PUT /_matrix/federation/v1/send/{txnId}`: a transaction of PDUs and EDUs from another
//! server.
//!
//! A transaction is processed once: its response is stored under `(origin, txn id)` for
//! [`TXN_RETENTION_MS`], and a retry gets the stored response without anything being done
//! again. The PDUs are grouped by room; rooms are processed concurrently, each room's PDUs in
//! the order sent, so a room with a slow gap to fill does not hold up the others. The work
//! runs in its own task, so a sender that gives up waiting does not cut it off half-way.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axon_api::{ApiError, ApiResult, AppState, Ruma, RumaResponse};
use axon_core::rooms::room_version::RoomVersion;
use axon_core::storage::{Direction, Json, KeyRange, StorageError, Table, WriteBatch, catalogue};
use axum::Extension;
use axum::extract::State;
use ruma::api::federation::transactions::send_transaction_message;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, OwnedServerName,
    RoomVersionId,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue as RawJsonValue;

use super::error::InboundError;
use super::fetch::canonical;
use super::pdu::{PduContext, event_id_of, handle_pdu};
use super::{blocking, edu};
use crate::Federation;
use crate::key_fetch::now_ms;

/// The most PDUs a transaction may carry (the spec's limit).
pub(crate) const MAX_PDUS: usize = 50;
/// The most EDUs a transaction may carry (the spec's limit).
pub(crate) const MAX_EDUS: usize = 100;
/// How long a processed transaction's response is kept for retries: a day.
pub(crate) const TXN_RETENTION_MS: u64 = 24 * 60 * 60 * 1000;
/// Expired transactions removed per new transaction, so cleanup keeps pace without a timer.
const EXPIRE_PER_TRANSACTION: usize = 16;

/// `(origin, txn id)` -> the stored response.
const TXNS: Table<(OwnedServerName, String), Json<TxnRecord>> =
    Table::new(&catalogue::FEDERATION_INBOUND_TXNS);
/// `(received at, origin, txn id)` -> nothing: the same transactions by age.
const TXNS_BY_AGE: Table<(u64, OwnedServerName, String), ()> =
    Table::new(&catalogue::FEDERATION_INBOUND_TXNS_BY_AGE);

/// A processed transaction.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct TxnRecord {
    received_at: u64,
    /// Each PDU's result: `None` for success, else the error sent.
    pdus: BTreeMap<OwnedEventId, Option<String>>,
}

/// The per-PDU results of a transaction.
pub(crate) type PduResults = BTreeMap<OwnedEventId, Result<(), String>>;

/// # `PUT /_matrix/federation/v1/send/{txnId}`
pub(crate) async fn send_transaction(
    State(state): State<AppState>,
    Extension(federation): Extension<Arc<Federation>>,
    request: Ruma<send_transaction_message::v1::Request>,
) -> ApiResult<RumaResponse<send_transaction_message::v1::Response>> {
    let origin = request.identity.0;
    let body = request.body;
    if body.origin != origin {
        return Err(ApiError::forbidden(
            "The transaction's origin is not the server that signed the request",
        ));
    }
    check_limits(body.pdus.len(), body.edus.len())?;
    let services = state.services_arc();
    let key = (origin.clone(), body.transaction_id.to_string());
    let lookup = key.clone();
    let stored = blocking(&services, move |services| {
        TXNS.get(&*services.store, &lookup)
            .map_err(ApiError::internal)
    })
    .await?;
    if let Some(Json(record)) = stored
        && now_ms().saturating_sub(record.received_at) < TXN_RETENTION_MS
    {
        return Ok(send_transaction_message::v1::Response::new(results_of(&record)).into());
    }

    let ctx = PduContext {
        services: Arc::clone(&services),
        federation,
        origin,
    };
    let work = tokio::spawn(async move {
        let (results, ()) = tokio::join!(
            process_pdus(&ctx, body.pdus),
            edu::apply_edus(&ctx, body.edus)
        );
        let record = TxnRecord {
            received_at: now_ms(),
            pdus: results
                .iter()
                .map(|(id, result)| (id.clone(), result.clone().err()))
                .collect(),
        };
        let saved = blocking(&ctx.services, move |services| {
            // Local members' syncs wait for the new events' push evaluation: doing it here
            // saves them waiting for the evaluator to be scheduled.
            if let Err(err) = services.push.evaluate_published(&services.rooms) {
                tracing::warn!(%err, "evaluating push rules after a transaction failed");
            }
            save(&services.store, &key, &record).map_err(ApiError::internal)
        })
        .await;
        if let Err(error) = saved {
            tracing::warn!(?error, "cannot store a processed transaction");
        }
        results
    });
    let results = work
        .await
        .map_err(|err| ApiError::internal(format!("transaction task failed: {err}")))?;
    Ok(send_transaction_message::v1::Response::new(results).into())
}

/// 400 `M_BAD_JSON` when a transaction carries more than the spec allows.
pub(crate) fn check_limits(pdus: usize, edus: usize) -> Result<(), ApiError> {
    if pdus > MAX_PDUS {
        return Err(ApiError::bad_json(format!(
            "A transaction may carry at most {MAX_PDUS} PDUs, not {pdus}"
        )));
    }
    if edus > MAX_EDUS {
        return Err(ApiError::bad_json(format!(
            "A transaction may carry at most {MAX_EDUS} EDUs, not {edus}"
        )));
    }
    Ok(())
}

fn results_of(record: &TxnRecord) -> PduResults {
    record
        .pdus
        .iter()
        .map(|(id, error)| {
            (
                id.clone(),
                match error {
                    None => Ok(()),
                    Some(error) => Err(error.clone()),
                },
            )
        })
        .collect()
}

/// Stores a processed transaction and removes a few expired ones, in one batch.
fn save(
    store: &Arc<dyn axon_core::storage::KvStore>,
    key: &(OwnedServerName, String),
    record: &TxnRecord,
) -> Result<(), StorageError> {
    let store = &**store;
    let mut batch = WriteBatch::new();
    let cutoff = record.received_at.saturating_sub(TXN_RETENTION_MS);
    let expired = TXNS_BY_AGE.collect(
        store,
        KeyRange::all(),
        Direction::Forward,
        Some(EXPIRE_PER_TRANSACTION),
    )?;
    for (aged, ()) in expired {
        if aged.0 >= cutoff {
            break;
        }
        TXNS_BY_AGE.delete(&mut batch, &aged);
        TXNS.delete(&mut batch, &(aged.1.clone(), aged.2.clone()));
    }
    if let Some(Json(old)) = TXNS.get(store, key)? {
        TXNS_BY_AGE.delete(&mut batch, &(old.received_at, key.0.clone(), key.1.clone()));
    }
    TXNS.put(&mut batch, key, &Json(record.clone()));
    TXNS_BY_AGE.put(
        &mut batch,
        &(record.received_at, key.0.clone(), key.1.clone()),
        &(),
    );
    store.write(batch)?;
    Ok(())
}

/// A PDU of a transaction, parsed far enough to be routed to its room.
struct Routed {
    room_id: OwnedRoomId,
    json: CanonicalJsonObject,
}

/// Parses each PDU far enough to know its room; PDUs without a readable room id cannot be
/// named in the response and are dropped (as the spec allows for unparseable PDUs).
fn route(raw: Vec<Box<RawJsonValue>>) -> Vec<Routed> {
    raw.iter()
        .filter_map(|raw| {
            let json = match canonical(raw) {
                Ok(json) => json,
                Err(error) => {
                    tracing::info!(%error, "dropping an unparseable PDU");
                    return None;
                }
            };
            let room_id = match json.get("room_id") {
                Some(CanonicalJsonValue::String(room_id)) => {
                    OwnedRoomId::try_from(room_id.as_str()).ok()?
                }
                _ => {
                    tracing::info!("dropping a PDU without a room id");
                    return None;
                }
            };
            Some(Routed { room_id, json })
        })
        .collect()
}

/// The PDUs grouped by room, rooms in order of first appearance, each room's PDUs in the
/// order sent.
fn group_by_room(routed: Vec<Routed>) -> Vec<(OwnedRoomId, Vec<CanonicalJsonObject>)> {
    let mut index: HashMap<OwnedRoomId, usize> = HashMap::new();
    let mut groups: Vec<(OwnedRoomId, Vec<CanonicalJsonObject>)> = Vec::new();
    for Routed { room_id, json } in routed {
        match index.get(&room_id) {
            Some(&at) => groups[at].1.push(json),
            None => {
                index.insert(room_id.clone(), groups.len());
                groups.push((room_id, vec![json]));
            }
        }
    }
    groups
}

/// Processes the PDUs: rooms concurrently, each room in order.
async fn process_pdus(ctx: &PduContext, raw: Vec<Box<RawJsonValue>>) -> PduResults {
    let groups = group_by_room(route(raw));
    let rooms: Vec<OwnedRoomId> = groups.iter().map(|(room, _)| room.clone()).collect();
    let versions = blocking(&ctx.services, move |services| {
        rooms
            .into_iter()
            .map(|room| Ok(services.rooms.room_version(&room)?))
            .collect::<Result<Vec<_>, ApiError>>()
    })
    .await;
    let versions = match versions {
        Ok(versions) => versions,
        Err(error) => {
            tracing::error!(?error, "cannot read room versions for a transaction");
            return PduResults::new();
        }
    };
    let work = groups
        .into_iter()
        .zip(versions)
        .map(|((room_id, pdus), version)| process_room(ctx, room_id, version, pdus));
    let mut results = PduResults::new();
    for room_results in futures::future::join_all(work).await {
        for (event_id, result) in room_results {
            results.insert(event_id, result.map_err(|err| err.to_string()));
        }
    }
    results
}

/// One room's PDUs, in order.
async fn process_room(
    ctx: &PduContext,
    room_id: OwnedRoomId,
    version: Option<RoomVersion>,
    pdus: Vec<CanonicalJsonObject>,
) -> Vec<(OwnedEventId, Result<(), InboundError>)> {
    let mut out = Vec::with_capacity(pdus.len());
    let Some(version) = version else {
        // Named as the current default version would name it: we cannot know the version of
        // a room we do not know.
        let guess = RoomVersion::new(&RoomVersionId::V11).ok();
        for json in pdus {
            if let Some(event_id) = guess.as_ref().and_then(|v| event_id_of(&json, v)) {
                out.push((
                    event_id,
                    Err(InboundError::UnknownRoom(room_id.to_string())),
                ));
            }
        }
        return out;
    };
    for json in pdus {
        let Some(event_id) = event_id_of(&json, &version) else {
            tracing::info!(%room_id, "dropping a PDU whose event id cannot be computed");
            continue;
        };
        let result = handle_pdu(ctx, &version, &event_id, json).await;
        if let Err(error) = &result {
            tracing::info!(%room_id, %event_id, origin = %ctx.origin, %error, "PDU not accepted");
        }
        out.push((event_id, result));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn raw(value: serde_json::Value) -> Box<RawJsonValue> {
        serde_json::value::to_raw_value(&value).unwrap()
    }

    #[test]
    fn limits_are_the_specs() {
        assert!(check_limits(50, 100).is_ok());
        assert!(check_limits(0, 0).is_ok());
        let too_many_pdus = check_limits(51, 0).unwrap_err();
        assert_eq!(too_many_pdus.status(), http::StatusCode::BAD_REQUEST);
        assert_eq!(too_many_pdus.body()["errcode"], "M_BAD_JSON");
        let too_many_edus = check_limits(0, 101).unwrap_err();
        assert_eq!(too_many_edus.status(), http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn pdus_are_grouped_by_room_in_order_and_unroutable_ones_dropped() {
        let routed = route(vec![
            raw(json!({"room_id": "!b:x.test", "n": 1})),
            raw(json!({"room_id": "!a:x.test", "n": 2})),
            raw(json!({"no_room": true})),
            raw(json!({"room_id": "not a room id", "n": 9})),
            raw(json!({"room_id": "!b:x.test", "n": 3})),
            raw(json!({"room_id": "!b:x.test", "float": 1.5})),
            raw(json!(["not an object"])),
        ]);
        let groups = group_by_room(routed);
        let shape: Vec<(String, Vec<i64>)> = groups
            .iter()
            .map(|(room, pdus)| {
                let numbers = pdus
                    .iter()
                    .map(|pdu| match pdu.get("n") {
                        Some(CanonicalJsonValue::Integer(n)) => i64::from(*n),
                        _ => -1,
                    })
                    .collect();
                (room.to_string(), numbers)
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                ("!b:x.test".to_owned(), vec![1, 3]),
                ("!a:x.test".to_owned(), vec![2]),
            ]
        );
    }

    #[test]
    fn stored_results_come_back_as_sent() {
        let ok: OwnedEventId = "$ok".try_into().unwrap();
        let bad: OwnedEventId = "$bad".try_into().unwrap();
        let record = TxnRecord {
            received_at: 1,
            pdus: BTreeMap::from([(ok.clone(), None), (bad.clone(), Some("nope".to_owned()))]),
        };
        let stored: TxnRecord =
            serde_json::from_slice(&serde_json::to_vec(&record).unwrap()).unwrap();
        let results = results_of(&stored);
        assert_eq!(results[&ok], Ok(()));
        assert_eq!(results[&bad], Err("nope".to_owned()));
        // The wire shape: `{}` for success, `{"error": ...}` otherwise.
        let response = send_transaction_message::v1::Response::new(results);
        let http =
            ruma::api::OutgoingResponseExt::try_into_http_response::<Vec<u8>>(response).unwrap();
        let body: serde_json::Value = serde_json::from_slice(http.body()).unwrap();
        assert_eq!(
            body,
            json!({"pdus": {"$ok": {}, "$bad": {"error": "nope"}}})
        );
    }

    #[test]
    fn processed_transactions_are_stored_and_expire() {
        let store: Arc<dyn axon_core::storage::KvStore> =
            Arc::new(axon_core::storage::MemoryStore::new());
        let origin: OwnedServerName = "a.test".try_into().unwrap();
        let old_key = (origin.clone(), "old".to_owned());
        let old = TxnRecord {
            received_at: 1_000,
            pdus: BTreeMap::new(),
        };
        save(&store, &old_key, &old).unwrap();
        assert!(TXNS.get(&*store, &old_key).unwrap().is_some());
        let new_key = (origin, "new".to_owned());
        let new = TxnRecord {
            received_at: 1_000 + TXN_RETENTION_MS + 1,
            pdus: BTreeMap::new(),
        };
        save(&store, &new_key, &new).unwrap();
        assert!(TXNS.get(&*store, &old_key).unwrap().is_none());
        assert!(TXNS.get(&*store, &new_key).unwrap().is_some());
    }
}
