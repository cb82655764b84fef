//! Local users' presence and device list changes, for the servers sharing a room with them:
//! `m.presence`, `m.device_list_update` and `m.signing_key_update`.
//!
//! A feeder following the server-wide stream ([`run`]) rather than hooks in the handlers:
//! presence and device or key changes are each written at a stream position in the batch of
//! the change itself, from many places (syncs and `PUT /presence`, key and signature uploads,
//! the device cleanup task after a deletion, renames). The feeder reads them after its stored
//! position and stores a new position only once their EDUs are queued, so a crash anywhere
//! repeats some EDUs (receivers drop what they already have) and loses none, and no handler
//! needs to know about federation. Typing (kept in memory) and receipts (indexed per room,
//! with no server-wide stream to follow) are queued by their handlers instead.
//!
//! Device lists: what other servers were last told of each local user is stored (each
//! device's keys and display name, the master and self-signing keys). A change of the user is
//! compared with it, and each difference becomes one EDU, so a deleted device is announced
//! as deleted even though its keys are gone. Each device EDU has a `stream_id` above the
//! user's previous one and at most the position of the change (the user's changes are far
//! apart in the server-wide stream, so there is room below it), and names that previous one as
//! `prev_id`: the ids agree with the `stream_id` `/user/devices` answers (the position of the
//! user's latest change), so a receiver that resynced drops the EDUs its resync covered, and
//! one that missed an EDU (or never shared a room before) sees an unknown `prev_id` and
//! resyncs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axon_core::Services;
use axon_core::rooms::graph::StreamPosition;
use axon_core::storage::{Json, Table, WriteBatch, catalogue};
use ruma::serde::Raw;
use ruma::{OwnedServerName, OwnedUserId, RoomId, UserId};
use serde_json::{Value, json};

use super::edus::{
    AnnouncedDevice, PresenceUpdate, device_update_edu, presence_edu, signing_key_update_edu,
};
use super::servers_sharing_rooms_with;
use crate::Federation;
use crate::error::FederationError;

/// The feeder's stream position, under [`POSITION_KEY`].
const FEED: Table<String, u64> = Table::new(&catalogue::FEDERATION_EDU_FEED);
const POSITION_KEY: &str = "stream_position";
/// What other servers were last told: `(user, kind, id)` -> JSON, with the kinds below.
const SENT: Table<(OwnedUserId, String, String), Json<Value>> =
    Table::new(&catalogue::FEDERATION_DEVICE_LISTS_SENT);
/// `(user, DEVICE, device id)` -> `{"keys": ..., "device_display_name": ...}`.
const DEVICE: &str = "device";
/// `(user, CROSS_SIGNING, "master" or "self_signing")` -> the key.
const CROSS_SIGNING: &str = "cross_signing";
/// `(user, STREAM, "")` -> the last device list `stream_id` used.
const STREAM: &str = "stream";

/// Device list changes read per round.
const BATCH: usize = 200;
/// Wait after a failed round before the next try.
const RETRY: Duration = Duration::from_secs(1);

/// Why a round of the feeder failed (it is retried).
#[derive(Debug, thiserror::Error)]
enum FeedError {
    #[error(transparent)]
    Federation(#[from] FederationError),
    #[error(transparent)]
    Storage(#[from] axon_core::storage::StorageError),
    #[error(transparent)]
    E2ee(#[from] axon_core::e2ee::E2eeError),
    #[error(transparent)]
    Presence(#[from] axon_core::sync::SyncError),
    #[error(transparent)]
    Accounts(#[from] axon_core::accounts::AccountError),
    #[error("stored keys are not JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Queues `edu` for the other servers with members in `room_id` (typing and receipts, which
/// their handlers send: see the module documentation). Nothing when federation is off.
/// Synchronous (a synced write): call it from `spawn_blocking`.
pub fn queue_for_room(
    federation: &Federation,
    services: &Services,
    room_id: &RoomId,
    edu: &Value,
) -> Result<(), FederationError> {
    if !federation.enabled() {
        return Ok(());
    }
    let mut servers = super::servers_in_room(services, room_id)?;
    servers.retain(|server| federation.client().allows(server));
    if servers.is_empty() {
        return Ok(());
    }
    federation.outbound().enqueue_edu(&servers, edu)
}

/// Follows the stream, queueing local users' presence and device list EDUs, until the process
/// ends. Started by the outbound sender when federation is on.
pub(super) async fn run(federation: Arc<Federation>, services: Arc<Services>) {
    let mut positions = services.rooms.subscribe();
    let reader = Arc::clone(&services);
    let mut read = match tokio::task::spawn_blocking(move || position(&reader)).await {
        Ok(Ok(position)) => position,
        _ => {
            tracing::error!("cannot read the EDU feeder's position; starting at the end");
            services.rooms.current_stream_position()
        }
    };
    loop {
        let (worker_federation, worker_services) = (Arc::clone(&federation), Arc::clone(&services));
        let round = tokio::task::spawn_blocking(move || {
            feed_round(&worker_federation, &worker_services, read)
        })
        .await;
        match round {
            Ok(Ok((upto, more))) => {
                read = upto;
                if more {
                    continue;
                }
            }
            Ok(Err(error)) => {
                tracing::error!(%error, "queueing presence and device EDUs failed; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
            Err(error) => {
                tracing::error!(%error, "the EDU feeder task failed; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        }
        if positions
            .wait_for(|position| *position > read)
            .await
            .is_err()
        {
            return;
        }
    }
}

fn position(services: &Services) -> Result<StreamPosition, FeedError> {
    Ok(StreamPosition(
        FEED.get(&*services.store, &POSITION_KEY.to_owned())?
            .unwrap_or(0),
    ))
}

/// One round: the changes after `after`, up to the published position (or a full batch of
/// device list changes). Returns the position reached and whether more may be waiting.
fn feed_round(
    federation: &Federation,
    services: &Services,
    after: StreamPosition,
) -> Result<(StreamPosition, bool), FeedError> {
    let published = services.rooms.current_stream_position();
    let mut changes = services.e2ee.device_list_changes_after(after, BATCH)?;
    let full = changes.len() == BATCH;
    changes.retain(|(position, _)| *position <= published);
    let upto = match changes.last() {
        Some((last, _)) if full => *last,
        _ => published,
    };
    if upto <= after {
        return Ok((after, false));
    }
    let own = services.rooms.server_name();
    let destinations = |user: &UserId| -> Result<BTreeSet<OwnedServerName>, FeedError> {
        let mut servers = servers_sharing_rooms_with(services, user)?;
        servers.retain(|server| federation.client().allows(server));
        Ok(servers)
    };

    let presence_changes = services.presence.changes(after, upto)?;
    let found_changes = !changes.is_empty() || !presence_changes.is_empty();
    for (user, view) in presence_changes {
        if user.server_name() != own {
            continue;
        }
        let servers = destinations(&user)?;
        if servers.is_empty() {
            continue;
        }
        let edu = presence_edu(&[PresenceUpdate {
            user_id: &user,
            presence: view.presence.as_str(),
            status_msg: view.status_msg.as_deref(),
            last_active_ago: view.last_active_ago,
            currently_active: view.currently_active,
        }]);
        federation.outbound().enqueue_edu(&servers, &edu)?;
    }

    // Each user once, at its latest change of the round: the comparison sees every change.
    let mut latest: BTreeMap<OwnedUserId, StreamPosition> = BTreeMap::new();
    for (position, user) in changes {
        if user.server_name() == own {
            latest.insert(user, position);
        }
    }
    for (user, position) in latest {
        let servers = destinations(&user)?;
        announce_devices(federation, services, &user, position, &servers)?;
    }

    // The position is saved only when the round found changes: passing positions without
    // any again after a restart queues nothing, and a synced write per stream position would
    // cost every event a second log sync.
    if found_changes {
        let mut batch = WriteBatch::new();
        FEED.put(&mut batch, &POSITION_KEY.to_owned(), &upto.0);
        services.store.write(batch)?;
    }
    Ok((upto, full))
}

/// What other servers see of a user: its devices with keys and its cross-signing keys.
#[derive(Debug, Default, PartialEq)]
struct Announced {
    /// Device id -> `{"keys": ..., "device_display_name": ...}`.
    devices: BTreeMap<String, Value>,
    master: Option<Value>,
    self_signing: Option<Value>,
    /// The last device list `stream_id` used (0 before the first).
    stream_id: u64,
}

/// The user as `/user/devices` would show it now.
fn current(services: &Services, user: &UserId) -> Result<Announced, FeedError> {
    let wanted = BTreeMap::from([(user.to_owned(), Vec::new())]);
    // Asked as the user itself: what any server may see of its keys.
    let mut keys = services.e2ee.query_keys(user, &wanted)?;
    let names: BTreeMap<String, String> = services
        .accounts
        .devices(user)?
        .into_iter()
        .filter_map(|(device, record)| Some((device.to_string(), record.display_name?)))
        .collect();
    let mut announced = Announced::default();
    for (device, raw) in keys.device_keys.remove(user).unwrap_or_default() {
        let mut device_keys: Value = serde_json::from_str(raw.json().get())?;
        if let Some(object) = device_keys.as_object_mut() {
            // Only for the local client's eyes: the name travels beside the keys.
            object.remove("unsigned");
        }
        let mut entry = json!({ "keys": device_keys });
        if let Some(name) = names.get(device.as_str()) {
            entry["device_display_name"] = Value::from(name.as_str());
        }
        announced.devices.insert(device.to_string(), entry);
    }
    let to_value = |raw: Raw<ruma::encryption::CrossSigningKey>| -> Result<Value, FeedError> {
        Ok(serde_json::from_str(raw.json().get())?)
    };
    announced.master = keys.master_keys.remove(user).map(to_value).transpose()?;
    announced.self_signing = keys
        .self_signing_keys
        .remove(user)
        .map(to_value)
        .transpose()?;
    Ok(announced)
}

/// What other servers were last told of `user`.
fn sent(services: &Services, user: &UserId) -> Result<Announced, FeedError> {
    let mut announced = Announced::default();
    for ((_, kind, id), Json(value)) in SENT.scan_prefix(&*services.store, &(user.to_owned(),))? {
        match kind.as_str() {
            DEVICE => {
                announced.devices.insert(id, value);
            }
            CROSS_SIGNING if id == "master" => announced.master = Some(value),
            CROSS_SIGNING => announced.self_signing = Some(value),
            STREAM => announced.stream_id = value.as_u64().unwrap_or(0),
            _ => {}
        }
    }
    Ok(announced)
}

/// One device EDU to send: the device and what it is now (`None`: deleted).
type DeviceChange = (String, Option<Value>);

/// The device changes between what was sent and what is now, in device id order.
fn device_changes(sent: &Announced, now: &Announced) -> Vec<DeviceChange> {
    let mut changes: Vec<DeviceChange> = now
        .devices
        .iter()
        .filter(|(device, entry)| sent.devices.get(*device) != Some(*entry))
        .map(|(device, entry)| (device.clone(), Some(entry.clone())))
        .collect();
    changes.extend(
        sent.devices
            .keys()
            .filter(|device| !now.devices.contains_key(*device))
            .map(|device| (device.clone(), None)),
    );
    changes.sort_by(|a, b| a.0.cmp(&b.0));
    changes
}

/// The `stream_id`s of `count` device EDUs of a change at `position`, after `last`: the
/// highest ones not above the position, unless there is no room below it.
fn stream_ids(last: u64, position: StreamPosition, count: u64) -> std::ops::Range<u64> {
    let start = last
        .saturating_add(1)
        .max(position.0.saturating_add(1).saturating_sub(count));
    start..start.saturating_add(count)
}

/// Queues the EDUs for what changed of `user`'s devices and cross-signing keys since the last
/// announcement, for `servers`, and stores the new announcement. With no server to tell, the
/// announcement is still stored (and its `stream_id`s used), so a server that later shares a
/// room sees a `prev_id` it does not know and fetches the whole list.
fn announce_devices(
    federation: &Federation,
    services: &Services,
    user: &UserId,
    position: StreamPosition,
    servers: &BTreeSet<OwnedServerName>,
) -> Result<(), FeedError> {
    let now = current(services, user)?;
    let before = sent(services, user)?;
    let changes = device_changes(&before, &now);
    let signing_changed = now.master != before.master || now.self_signing != before.self_signing;
    if changes.is_empty() && !signing_changed {
        return Ok(());
    }
    let owner = user.to_owned();
    let mut batch = WriteBatch::new();
    let ids = stream_ids(before.stream_id, position, changes.len() as u64);
    let mut previous = before.stream_id;
    for ((device, entry), stream_id) in changes.into_iter().zip(ids) {
        let prev_id: Vec<u64> = (previous > 0).then_some(previous).into_iter().collect();
        let announced = AnnouncedDevice {
            keys: entry.as_ref().and_then(|entry| entry.get("keys")),
            display_name: entry
                .as_ref()
                .and_then(|entry| entry.get("device_display_name"))
                .and_then(Value::as_str),
        };
        let edu = device_update_edu(user, &device, stream_id, &prev_id, announced);
        if !servers.is_empty() {
            federation.outbound().enqueue_edu(servers, &edu)?;
        }
        let key = (owner.clone(), DEVICE.to_owned(), device);
        match entry {
            Some(entry) => SENT.put(&mut batch, &key, &Json(entry)),
            None => SENT.delete(&mut batch, &key),
        }
        previous = stream_id;
    }
    SENT.put(
        &mut batch,
        &(owner.clone(), STREAM.to_owned(), String::new()),
        &Json(Value::from(previous)),
    );
    if signing_changed {
        if !servers.is_empty() && (now.master.is_some() || now.self_signing.is_some()) {
            let edu = signing_key_update_edu(user, now.master.as_ref(), now.self_signing.as_ref());
            federation.outbound().enqueue_edu(servers, &edu)?;
        }
        for (id, key) in [("master", &now.master), ("self_signing", &now.self_signing)] {
            let row = (owner.clone(), CROSS_SIGNING.to_owned(), id.to_owned());
            match key {
                Some(key) => SENT.put(&mut batch, &row, &Json(key.clone())),
                None => SENT.delete(&mut batch, &row),
            }
        }
    }
    services.store.write(batch)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announced(devices: &[(&str, Value)]) -> Announced {
        Announced {
            devices: devices
                .iter()
                .map(|(device, entry)| ((*device).to_owned(), entry.clone()))
                .collect(),
            ..Announced::default()
        }
    }

    #[test]
    fn changes_are_new_changed_and_deleted_devices() {
        let sent = announced(&[
            ("A", json!({"keys": 1})),
            ("B", json!({"keys": 2})),
            ("C", json!({"keys": 3})),
        ]);
        let now = announced(&[
            ("A", json!({"keys": 1})),
            ("B", json!({"keys": 2, "device_display_name": "renamed"})),
            ("D", json!({"keys": 4})),
        ]);
        let changes = device_changes(&sent, &now);
        assert_eq!(
            changes,
            vec![
                (
                    "B".to_owned(),
                    Some(json!({"keys": 2, "device_display_name": "renamed"}))
                ),
                ("C".to_owned(), None),
                ("D".to_owned(), Some(json!({"keys": 4}))),
            ]
        );
        assert!(device_changes(&now, &now).is_empty());
    }

    #[test]
    fn stream_ids_end_at_the_change_when_there_is_room() {
        assert_eq!(stream_ids(0, StreamPosition(10), 1), 10..11);
        assert_eq!(stream_ids(4, StreamPosition(10), 3), 8..11);
        // No room below the position: the ids still follow the last one.
        assert_eq!(stream_ids(9, StreamPosition(10), 3), 10..13);
        assert_eq!(stream_ids(0, StreamPosition(1), 3), 1..4);
        assert!(stream_ids(5, StreamPosition(10), 0).is_empty());
    }
}
