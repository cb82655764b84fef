//! To-device messages: per-device inboxes at server-wide stream positions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

use ruma::events::AnyToDeviceEvent;
use ruma::serde::Raw;
use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
use serde_json::value::RawValue as RawJsonValue;

use super::tables::{TO_DEVICE, TO_DEVICE_TXNS};
use super::{E2ee, E2eeError};
use crate::rooms::graph::{Audience, Rooms, StreamPosition};
use crate::storage::{Direction, KeyCodec, KeyRange, WriteBatch};

/// The most recipients one batch of messages names as its audience; a batch for more wakes
/// every waiting sync.
pub(super) const MAX_AUDIENCE_USERS: usize = 256;

/// One message to queue: the target device and the content.
#[derive(Debug)]
pub struct ToDeviceMessage {
    /// The recipient.
    pub user_id: OwnedUserId,
    /// The recipient's device.
    pub device_id: OwnedDeviceId,
    /// The event content.
    pub content: Box<RawJsonValue>,
}

/// What a `/sendToDevice` request did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// The messages were queued at this position.
    Queued(StreamPosition),
    /// The sender's device already sent this transaction: nothing new was queued.
    Duplicate,
}

/// The stored form of a to-device event: what sync serves.
fn event_json(sender: &UserId, event_type: &str, content: &RawJsonValue) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Event<'a> {
        sender: &'a UserId,
        #[serde(rename = "type")]
        event_type: &'a str,
        content: &'a RawJsonValue,
    }
    serde_json::to_vec(&Event {
        sender,
        event_type,
        content,
    })
    .unwrap_or_default()
}

impl E2ee {
    /// Queues `messages` from `sender`'s device in one batch at the next stream position
    /// (which wakes the recipients' syncs), unless that device already sent `txn_id`: a
    /// retried transaction queues nothing again. Synchronous: call it from `spawn_blocking`.
    pub fn send_to_device(
        &self,
        rooms: &Rooms,
        sender: &UserId,
        sender_device: &DeviceId,
        txn_id: &str,
        event_type: &str,
        messages: Vec<ToDeviceMessage>,
    ) -> Result<SendOutcome, E2eeError> {
        let txn_key = (
            sender.to_owned(),
            sender_device.to_owned(),
            txn_id.to_owned(),
        );
        if TO_DEVICE_TXNS.contains(self.store(), &txn_key)? {
            // The first attempt may still wait for its write to become durable.
            rooms.sync_written()?;
            return Ok(SendOutcome::Duplicate);
        }
        let mut duplicate = false;
        let count = messages.len();
        // Messages wake their recipients' syncs alone (no messages: nobody, the sender's
        // syncs standing for that). A fan-out to very many users wakes everyone instead, which
        // keeps the notifier's log of recent audiences small.
        let recipients: BTreeSet<&UserId> = messages
            .iter()
            .map(|message| message.user_id.as_ref())
            .collect();
        let audience = match recipients.len() {
            0 => Some(Audience::User(sender.to_owned())),
            1 => recipients
                .first()
                .map(|recipient| Audience::User((*recipient).to_owned())),
            many if many <= MAX_AUDIENCE_USERS => Some(Audience::Users(
                recipients.into_iter().map(UserId::to_owned).collect(),
            )),
            _ => None,
        };
        let write = |batch: &mut crate::storage::WriteBatch, position| {
            // Checked again under the stream's allocation lock, which serialises writers:
            // two concurrent retries cannot both queue.
            if TO_DEVICE_TXNS.contains(self.store(), &txn_key)? {
                duplicate = true;
                return Ok(());
            }
            TO_DEVICE_TXNS.put(batch, &txn_key, &position);
            for (index, message) in messages.iter().enumerate() {
                let key = (
                    message.user_id.clone(),
                    message.device_id.clone(),
                    position,
                    index as u64,
                );
                TO_DEVICE.put(
                    batch,
                    &key,
                    &event_json(sender, event_type, &message.content),
                );
            }
            Ok(())
        };
        let position = match audience {
            Some(audience) => rooms.write_at_next_position_for(audience, write)?,
            None => rooms.write_at_next_position(write)?,
        };
        if duplicate {
            return Ok(SendOutcome::Duplicate);
        }
        self.to_device_pending
            .fetch_add(i64::try_from(count).unwrap_or(i64::MAX), Ordering::Relaxed);
        self.to_device_queued
            .fetch_add(u64::try_from(count).unwrap_or(u64::MAX), Ordering::Relaxed);
        Ok(SendOutcome::Queued(position))
    }

    /// Up to `limit` messages for the device after `since`, oldest first, none after the
    /// latest published stream position (so a sync token naming that position covers them).
    pub fn to_device_since(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        since: StreamPosition,
        limit: usize,
    ) -> Result<Vec<(StreamPosition, Raw<AnyToDeviceEvent>)>, E2eeError> {
        let until = *self.published.borrow();
        self.to_device_between(user_id, device_id, since, until, limit)
    }

    /// Up to `limit` messages for the device in `(since, until]`, oldest first: for a sync
    /// whose token names `until`.
    pub fn to_device_between(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        since: StreamPosition,
        until: StreamPosition,
        limit: usize,
    ) -> Result<Vec<(StreamPosition, Raw<AnyToDeviceEvent>)>, E2eeError> {
        if until <= since {
            return Ok(Vec::new());
        }
        let owner = (user_id.to_owned(), device_id.to_owned());
        let start = (
            owner.0.clone(),
            owner.1.clone(),
            StreamPosition(since.0.saturating_add(1)),
        );
        let end = (owner.0, owner.1, StreamPosition(until.0.saturating_add(1)));
        let range = KeyRange::half_open(start.to_key_bytes(), end.to_key_bytes());
        TO_DEVICE
            .collect(self.store(), range, Direction::Forward, Some(limit))?
            .into_iter()
            .map(|((_, _, position, _), json)| {
                let text = String::from_utf8(json).map_err(|err| {
                    E2eeError::Storage(crate::storage::StorageError::Corrupt {
                        cf: "e2ee_to_device",
                        what: "value",
                        reason: err.to_string(),
                    })
                })?;
                let raw = RawJsonValue::from_string(text).map_err(|err| {
                    E2eeError::Storage(crate::storage::StorageError::Corrupt {
                        cf: "e2ee_to_device",
                        what: "value",
                        reason: err.to_string(),
                    })
                })?;
                Ok((position, Raw::from_json(raw)))
            })
            .collect()
    }

    /// Deletes the device's messages at or before `upto`: called once the client's next
    /// request proves it received them. Returns how many were deleted.
    pub fn delete_to_device_up_to(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        upto: StreamPosition,
    ) -> Result<usize, E2eeError> {
        let start = (user_id.to_owned(), device_id.to_owned());
        let end = (
            user_id.to_owned(),
            device_id.to_owned(),
            StreamPosition(upto.0.saturating_add(1)),
        );
        let range = KeyRange::half_open(start.to_key_bytes(), end.to_key_bytes());
        let mut batch = WriteBatch::new();
        let mut deleted = 0;
        for (key, _) in TO_DEVICE.collect(self.store(), range, Direction::Forward, None)? {
            TO_DEVICE.delete(&mut batch, &key);
            deleted += 1;
        }
        if deleted > 0 {
            self.store().write(batch)?;
            self.note_to_device_removed(deleted);
        }
        Ok(deleted)
    }

    /// Adds the deletion of the device's whole inbox to `batch`; returns how many messages.
    pub(super) fn remove_inbox_into(
        &self,
        batch: &mut WriteBatch,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<usize, E2eeError> {
        let messages =
            TO_DEVICE.scan_prefix(self.store(), &(user.to_owned(), device.to_owned()))?;
        for (key, _) in &messages {
            TO_DEVICE.delete(batch, key);
        }
        Ok(messages.len())
    }

    /// Messages waiting for delivery (a gauge for metrics).
    pub fn to_device_pending(&self) -> i64 {
        self.to_device_pending.load(Ordering::Relaxed)
    }

    /// Messages queued since start-up (a counter for metrics).
    pub fn to_device_queued_total(&self) -> u64 {
        self.to_device_queued.load(Ordering::Relaxed)
    }

    pub(super) fn note_to_device_removed(&self, count: usize) {
        self.to_device_pending
            .fetch_sub(i64::try_from(count).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// Counts the stored messages (at start-up, for the pending gauge).
    pub(super) fn count_to_device(store: &dyn crate::storage::KvStore) -> i64 {
        TO_DEVICE
            .count(store)
            .ok()
            .and_then(|count| i64::try_from(count).ok())
            .unwrap_or(0)
    }
}

/// The messages of one `/sendToDevice` request for local users, expanded: `*` targets every
/// device in `devices_of(user)`.
pub fn expand_targets(
    messages: BTreeMap<OwnedUserId, BTreeMap<Option<OwnedDeviceId>, Box<RawJsonValue>>>,
    mut devices_of: impl FnMut(&UserId) -> Result<Vec<OwnedDeviceId>, E2eeError>,
) -> Result<Vec<ToDeviceMessage>, E2eeError> {
    let mut out = Vec::new();
    for (user_id, targets) in messages {
        for (device, content) in targets {
            match device {
                Some(device_id) => out.push(ToDeviceMessage {
                    user_id: user_id.clone(),
                    device_id,
                    content,
                }),
                None => {
                    for device_id in devices_of(&user_id)? {
                        out.push(ToDeviceMessage {
                            user_id: user_id.clone(),
                            device_id,
                            content: content.clone(),
                        });
                    }
                }
            }
        }
    }
    Ok(out)
}
