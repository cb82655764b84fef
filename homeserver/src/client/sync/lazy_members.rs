//! Which membership events lazy-loading syncs have sent to each device, so later syncs can
//! leave them out (the filter's `include_redundant_members: false`, the default).
//!
//! The record is in memory and bounded: the least recently syncing devices are forgotten
//! first, and a device without a record is sent its members again, as if it had none.
//! Redundant members only cost bytes; a missing one leaves the client without a sender's
//! name, so every doubt resolves to sending.
//!
//! Each entry remembers the stream position of the response that carried it (its
//! `next_batch`). A sync from `since` trusts only entries recorded at or before `since`:
//! those came in responses the client built its token from. Entries recorded after `since`
//! came in a response the client did not take (it retried from an older token), so a sync
//! from `since` drops them before it starts.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::{Mutex, PoisonError};

use axon_core::rooms::graph::StreamPosition;
use lru::LruCache;
use ruma::{
    DeviceId, EventId, OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId,
};

/// Devices remembered at once.
const DEFAULT_DEVICES: NonZeroUsize = match NonZeroUsize::new(10_000) {
    Some(devices) => devices,
    None => NonZeroUsize::MIN,
};
/// Entries remembered at once over all devices (a few hundred bytes each at most): past it,
/// the least recently syncing devices are forgotten.
const DEFAULT_ENTRY_BUDGET: usize = 2_000_000;

/// The membership events sent to each device by lazy-loading syncs.
pub(crate) struct SentMembers {
    inner: Mutex<Inner>,
}

struct Inner {
    devices: LruCache<(OwnedUserId, OwnedDeviceId), DeviceRecord>,
    /// Entries over all devices.
    entries: usize,
    budget: usize,
}

/// What one device was sent.
#[derive(Default)]
struct DeviceRecord {
    /// Room -> member (state key) -> the member event sent and when.
    rooms: HashMap<OwnedRoomId, HashMap<String, Sent>>,
    entries: usize,
    /// The newest position an entry was recorded at, so most syncs need not look for
    /// entries after their token.
    newest: StreamPosition,
}

struct Sent {
    event_id: OwnedEventId,
    /// The `next_batch` stream position of the response that carried it.
    at: StreamPosition,
}

impl DeviceRecord {
    /// Forgets the entries recorded after `since`; how many it forgot.
    fn drop_after(&mut self, since: StreamPosition) -> usize {
        if self.newest <= since {
            return 0;
        }
        let before = self.entries;
        for members in self.rooms.values_mut() {
            members.retain(|_, sent| sent.at <= since);
        }
        self.rooms.retain(|_, members| !members.is_empty());
        self.entries = self.rooms.values().map(HashMap::len).sum();
        self.newest = since;
        before - self.entries
    }
}

impl fmt::Debug for SentMembers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("SentMembers")
            .field("devices", &inner.devices.len())
            .field("entries", &inner.entries)
            .finish()
    }
}

impl Default for SentMembers {
    fn default() -> Self {
        Self::new(DEFAULT_DEVICES, DEFAULT_ENTRY_BUDGET)
    }
}

impl SentMembers {
    /// A record of up to `devices` devices and `budget` entries over all of them.
    pub(crate) fn new(devices: NonZeroUsize, budget: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                devices: LruCache::new(devices),
                entries: 0,
                budget,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The record holds no invariant a panicking holder could break halfway that would
        // make it unsafe: at worst a count is off until the device is forgotten.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a lazy-loading sync of the device: from scratch for an initial or full-state
    /// sync (`since` is `None`), which forgets what the device was sent; otherwise forgets
    /// what was recorded after `since`.
    pub(crate) fn start(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        since: Option<StreamPosition>,
    ) {
        let mut inner = self.lock();
        let key = (user_id.to_owned(), device_id.to_owned());
        let forgotten = match since {
            None => inner.devices.pop(&key).map_or(0, |record| record.entries),
            Some(since) => inner
                .devices
                .get_mut(&key)
                .map_or(0, |record| record.drop_after(since)),
        };
        inner.entries = inner.entries.saturating_sub(forgotten);
    }

    /// Whether the device was sent exactly `event_id` as `member`'s event in the room, in a
    /// response the client built `since` from.
    pub(crate) fn was_sent(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        room_id: &RoomId,
        member: &str,
        event_id: &EventId,
        since: StreamPosition,
    ) -> bool {
        let inner = self.lock();
        let key = (user_id.to_owned(), device_id.to_owned());
        inner
            .devices
            .peek(&key)
            .and_then(|record| record.rooms.get(room_id))
            .and_then(|members| members.get(member))
            .is_some_and(|sent| sent.event_id == event_id && sent.at <= since)
    }

    /// Forgets what the device was sent in the room (the room is sent to it anew, in full).
    pub(crate) fn forget_room(&self, user_id: &UserId, device_id: &DeviceId, room_id: &RoomId) {
        let mut inner = self.lock();
        let key = (user_id.to_owned(), device_id.to_owned());
        let forgotten = inner.devices.peek_mut(&key).map_or(0, |record| {
            let forgotten = record
                .rooms
                .remove(room_id)
                .map_or(0, |members| members.len());
            record.entries -= forgotten;
            forgotten
        });
        inner.entries = inner.entries.saturating_sub(forgotten);
    }

    /// Records that the response with `next_batch` stream position `at` sends the device
    /// these `(member, event id)` entries of the room.
    pub(crate) fn record<'e>(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        room_id: &RoomId,
        members: impl IntoIterator<Item = (&'e str, &'e EventId)>,
        at: StreamPosition,
    ) {
        let mut members = members.into_iter().peekable();
        if members.peek().is_none() {
            return;
        }
        let mut inner = self.lock();
        let key = (user_id.to_owned(), device_id.to_owned());
        let (added, evicted) = {
            let mut evicted = 0;
            if !inner.devices.contains(&key)
                && let Some((_, record)) = inner.devices.push(key.clone(), DeviceRecord::default())
            {
                // The least recently syncing device made room.
                evicted += record.entries;
            }
            let mut added = 0;
            if let Some(record) = inner.devices.get_mut(&key) {
                let room = record.rooms.entry(room_id.to_owned()).or_default();
                for (member, event_id) in members {
                    match room.get_mut(member) {
                        // Sent before: the earliest response carrying it is the one to trust.
                        Some(sent) if sent.event_id == event_id => {}
                        Some(sent) => {
                            *sent = Sent {
                                event_id: event_id.to_owned(),
                                at,
                            };
                        }
                        None => {
                            room.insert(
                                member.to_owned(),
                                Sent {
                                    event_id: event_id.to_owned(),
                                    at,
                                },
                            );
                            added += 1;
                        }
                    }
                }
                record.entries += added;
                record.newest = record.newest.max(at);
            }
            (added, evicted)
        };
        inner.entries = (inner.entries + added).saturating_sub(evicted);
        // Over budget: forget the least recently syncing devices (never the one just written,
        // which is the most recent).
        while inner.entries > inner.budget && inner.devices.len() > 1 {
            match inner.devices.pop_lru() {
                Some((_, record)) => inner.entries = inner.entries.saturating_sub(record.entries),
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ruma::{device_id, event_id, room_id, user_id};

    use super::*;

    const BOB: &str = "@bob:x";

    fn alice() -> &'static UserId {
        user_id!("@alice:x")
    }

    fn pos(n: u64) -> StreamPosition {
        StreamPosition(n)
    }

    /// Records that `device` was sent Bob's member event `event` in a response at `at`.
    fn record_bob(record: &SentMembers, device: &DeviceId, event: &EventId, at: u64) {
        record.record(alice(), device, room_id!("!r:x"), [(BOB, event)], pos(at));
    }

    fn sent(record: &SentMembers, device: &DeviceId, event: &EventId, since: u64) -> bool {
        record.was_sent(alice(), device, room_id!("!r:x"), BOB, event, pos(since))
    }

    #[test]
    fn entries_are_trusted_from_their_response_on_and_per_device() {
        let record = SentMembers::default();
        let join = event_id!("$join:x");
        record.start(alice(), device_id!("PHONE"), Some(pos(5)));
        record_bob(&record, device_id!("PHONE"), join, 10);
        // A sync from the token of that response, or a later one, trusts it.
        assert!(sent(&record, device_id!("PHONE"), join, 10));
        assert!(sent(&record, device_id!("PHONE"), join, 12));
        // Not another device, member event, member or room.
        assert!(!sent(&record, device_id!("LAPTOP"), join, 12));
        assert!(!sent(
            &record,
            device_id!("PHONE"),
            event_id!("$rename:x"),
            12
        ));
        assert!(!record.was_sent(
            alice(),
            device_id!("PHONE"),
            room_id!("!r:x"),
            "@carol:x",
            join,
            pos(12)
        ));
        assert!(!record.was_sent(
            alice(),
            device_id!("PHONE"),
            room_id!("!o:x"),
            BOB,
            join,
            pos(12)
        ));
    }

    #[test]
    fn a_sync_from_an_older_token_is_sent_them_again() {
        let record = SentMembers::default();
        let join = event_id!("$join:x");
        record_bob(&record, device_id!("PHONE"), join, 10);
        // The response at 10 never arrived: the client syncs from 5 again.
        assert!(!sent(&record, device_id!("PHONE"), join, 5));
        record.start(alice(), device_id!("PHONE"), Some(pos(5)));
        // And the entry is gone, even for later tokens of this new chain of responses.
        assert!(!sent(&record, device_id!("PHONE"), join, 10));
        record_bob(&record, device_id!("PHONE"), join, 11);
        assert!(!sent(&record, device_id!("PHONE"), join, 10));
        assert!(sent(&record, device_id!("PHONE"), join, 11));
        // Sent again later: the first response carrying it stays the one trusted.
        record.start(alice(), device_id!("PHONE"), Some(pos(11)));
        record_bob(&record, device_id!("PHONE"), join, 15);
        assert!(sent(&record, device_id!("PHONE"), join, 11));
    }

    #[test]
    fn a_changed_membership_replaces_the_entry() {
        let record = SentMembers::default();
        let (join, rename) = (event_id!("$join:x"), event_id!("$rename:x"));
        record_bob(&record, device_id!("PHONE"), join, 10);
        record.start(alice(), device_id!("PHONE"), Some(pos(10)));
        record_bob(&record, device_id!("PHONE"), rename, 20);
        assert!(!sent(&record, device_id!("PHONE"), join, 20));
        assert!(sent(&record, device_id!("PHONE"), rename, 20));
        assert_eq!(record.lock().entries, 1);
    }

    #[test]
    fn initial_syncs_and_new_rooms_start_again() {
        let record = SentMembers::default();
        let join = event_id!("$join:x");
        record_bob(&record, device_id!("PHONE"), join, 10);
        record_bob(&record, device_id!("LAPTOP"), join, 10);
        record.start(alice(), device_id!("PHONE"), None);
        assert!(!sent(&record, device_id!("PHONE"), join, 20));
        assert!(sent(&record, device_id!("LAPTOP"), join, 20));
        record.forget_room(alice(), device_id!("LAPTOP"), room_id!("!r:x"));
        assert!(!sent(&record, device_id!("LAPTOP"), join, 20));
        assert_eq!(record.lock().entries, 0);
    }

    #[test]
    fn forgotten_devices_are_sent_their_members_again() {
        let record = SentMembers::new(NonZeroUsize::MIN.saturating_add(1), 100);
        let join = event_id!("$join:x");
        record_bob(&record, device_id!("PHONE"), join, 10);
        record_bob(&record, device_id!("LAPTOP"), join, 10);
        // The phone syncs again, which makes the laptop the least recently used.
        record.start(alice(), device_id!("PHONE"), Some(pos(10)));
        // A third device pushes out the least recently used one.
        record_bob(&record, device_id!("TABLET"), join, 10);
        assert!(!sent(&record, device_id!("LAPTOP"), join, 10));
        assert!(sent(&record, device_id!("PHONE"), join, 10));
        assert_eq!(record.lock().entries, 2);

        // Over the entry budget, the least recently used devices go too.
        let record = SentMembers::new(DEFAULT_DEVICES, 2);
        let members = ["@a:x", "@b:x"].map(|member| (member, join));
        record.record(
            alice(),
            device_id!("PHONE"),
            room_id!("!r:x"),
            members,
            pos(10),
        );
        record_bob(&record, device_id!("LAPTOP"), join, 10);
        assert!(!record.was_sent(
            alice(),
            device_id!("PHONE"),
            room_id!("!r:x"),
            "@a:x",
            join,
            pos(10)
        ));
        assert!(sent(&record, device_id!("LAPTOP"), join, 10));
        assert_eq!(record.lock().entries, 1);
    }
}
