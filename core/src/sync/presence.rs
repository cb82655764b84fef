//! Presence: whether users are online, idle (`unavailable`) or offline, with a status message
//! and how long ago they were last active.
//!
//! What a user sets (`PUT /presence`, a sync's `set_presence`) is stored at a stream position,
//! so it reaches waiting syncs like any other change. The transitions caused by inactivity
//! are computed when presence is read, from the time of the last activity and of the last
//! sync, so no timer runs per user: an online user inactive for `idle_after` reads as
//! `unavailable`, and one who neither synced nor was active for `offline_after` reads as
//! `offline`. The time of the last sync is kept in memory only (after a restart, users count
//! as seen at their last stored activity until they sync again).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ruma::events::room::member::MembershipState;
use ruma::presence::PresenceState;
use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

use super::{SyncError, now_ms};
use crate::rooms::graph::{Audience, Rooms, StreamPosition};
use crate::storage::{Direction, Json, KeyCodec, KeyRange, KvStore, Table, catalogue};

const PRESENCE: Table<OwnedUserId, Json<Record>> = Table::new(&catalogue::PRESENCE);
const CHANGES: Table<StreamPosition, Json<OwnedUserId>> = Table::new(&catalogue::PRESENCE_STREAM);

/// The most rooms a presence change names as its audience (see [`Audience`]); a user in
/// more wakes every waiting sync instead.
const MAX_AUDIENCE_ROOMS: usize = 64;

/// A user active within this long counts as `currently_active`, and activity is stored again
/// only after this long, so a busy user does not write at every action.
const ACTIVE_GRANULARITY_MS: u64 = 60_000;

/// How presence behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceSettings {
    /// Whether presence is tracked and served at all.
    pub enabled: bool,
    /// An online user inactive this long reads as `unavailable`.
    pub idle_after: Duration,
    /// A user who neither synced nor was active this long reads as `offline`.
    pub offline_after: Duration,
}

impl Default for PresenceSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            idle_after: Duration::from_secs(300),
            offline_after: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    presence: PresenceState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status_msg: Option<String>,
    /// Milliseconds since the Unix epoch.
    last_active_ts: u64,
    stream: StreamPosition,
}

/// A user's presence as served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceView {
    /// Online, unavailable or offline, after the inactivity transitions.
    pub presence: PresenceState,
    /// The status message the user set.
    pub status_msg: Option<String>,
    /// Milliseconds since the user was last active (none if never).
    pub last_active_ago: Option<u64>,
    /// Whether the user is online and was active in the last minute.
    pub currently_active: bool,
}

impl PresenceView {
    fn offline() -> Self {
        Self {
            presence: PresenceState::Offline,
            status_msg: None,
            last_active_ago: None,
            currently_active: false,
        }
    }
}

/// The presence service.
pub struct Presence {
    store: Arc<dyn KvStore>,
    settings: PresenceSettings,
    /// When each user last synced, in milliseconds since the Unix epoch.
    last_sync: Mutex<HashMap<OwnedUserId, u64>>,
}

impl fmt::Debug for Presence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Presence")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Presence {
    /// The service over `store`.
    pub fn new(store: Arc<dyn KvStore>, settings: PresenceSettings) -> Self {
        Self {
            store,
            settings,
            last_sync: Mutex::new(HashMap::new()),
        }
    }

    /// Whether presence is enabled.
    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// Sets the presence of `user_id` (`PUT /presence`): also counts as activity. Nothing
    /// happens when presence is disabled. Synchronous, with a synced write.
    pub fn set(
        &self,
        rooms: &Rooms,
        user_id: &UserId,
        presence: PresenceState,
        status_msg: Option<String>,
    ) -> Result<(), SyncError> {
        if !self.enabled() {
            return Ok(());
        }
        let now = now_ms();
        self.seen(user_id, now);
        self.write(rooms, user_id, presence, status_msg, now)
    }

    /// Stores the presence of a user of another server as its server reports it (an
    /// `m.presence` EDU): `last_active_ago` is relative to now. The user counts as seen now,
    /// so it reads as its server says until `offline_after` passes without another update.
    /// Nothing happens when presence is disabled. Synchronous, with a synced write.
    pub fn set_remote(
        &self,
        rooms: &Rooms,
        user_id: &UserId,
        presence: PresenceState,
        status_msg: Option<String>,
        last_active_ago: Option<u64>,
    ) -> Result<(), SyncError> {
        if !self.enabled() {
            return Ok(());
        }
        let now = now_ms();
        self.seen(user_id, now);
        let last_active = now.saturating_sub(last_active_ago.unwrap_or(0));
        self.write(rooms, user_id, presence, status_msg, last_active)
    }

    /// A sync of `user_id` with `set_presence`: `offline` changes nothing; otherwise the user
    /// counts as seen, and a user who reads as offline (or who asks to be `unavailable` while
    /// online) gets that state stored, keeping the status message. Synchronous; writes only
    /// on a change of state.
    pub fn user_synced(
        &self,
        rooms: &Rooms,
        user_id: &UserId,
        set_presence: &PresenceState,
    ) -> Result<(), SyncError> {
        if !self.enabled() || *set_presence == PresenceState::Offline {
            return Ok(());
        }
        let now = now_ms();
        let record = PRESENCE
            .get(&*self.store, &user_id.to_owned())?
            .map(|Json(record)| record);
        let effective = record.as_ref().map_or(PresenceState::Offline, |record| {
            self.view(user_id, record, now).presence
        });
        self.seen(user_id, now);
        let status_msg = record.as_ref().and_then(|record| record.status_msg.clone());
        match set_presence {
            PresenceState::Online if effective == PresenceState::Offline => {
                self.write(rooms, user_id, PresenceState::Online, status_msg, now)
            }
            PresenceState::Unavailable
                if record
                    .as_ref()
                    .is_none_or(|record| record.presence != PresenceState::Unavailable)
                    || effective == PresenceState::Offline =>
            {
                let last_active = record.map_or(now, |record| record.last_active_ts);
                self.write(
                    rooms,
                    user_id,
                    PresenceState::Unavailable,
                    status_msg,
                    last_active,
                )
            }
            _ => Ok(()),
        }
    }

    /// Records activity of `user_id` (typing, receipts): an online user who reads as idle
    /// becomes active again. Stored at most once per minute per user; users who set
    /// themselves unavailable or offline, or never synced, are left as they are.
    pub fn bump_active(&self, rooms: &Rooms, user_id: &UserId) -> Result<(), SyncError> {
        if !self.enabled() {
            return Ok(());
        }
        let now = now_ms();
        let Some(Json(record)) = PRESENCE.get(&*self.store, &user_id.to_owned())? else {
            return Ok(());
        };
        self.seen(user_id, now);
        if record.presence == PresenceState::Online
            && now.saturating_sub(record.last_active_ts) >= ACTIVE_GRANULARITY_MS
        {
            self.write(
                rooms,
                user_id,
                PresenceState::Online,
                record.status_msg,
                now,
            )?;
        }
        Ok(())
    }

    /// The presence of `user_id` now (offline if never set or presence is disabled).
    pub fn get(&self, user_id: &UserId) -> Result<PresenceView, SyncError> {
        self.get_at(user_id, now_ms())
    }

    /// The presence of `user_id` as it reads at `now` (milliseconds since the Unix epoch).
    fn get_at(&self, user_id: &UserId, now: u64) -> Result<PresenceView, SyncError> {
        if !self.enabled() {
            return Ok(PresenceView::offline());
        }
        Ok(match PRESENCE.get(&*self.store, &user_id.to_owned())? {
            Some(Json(record)) => self.view(user_id, &record, now),
            None => PresenceView::offline(),
        })
    }

    /// The presence of `user_id` if it was ever set at or before `upto`.
    pub fn known(
        &self,
        user_id: &UserId,
        upto: StreamPosition,
    ) -> Result<Option<PresenceView>, SyncError> {
        if !self.enabled() {
            return Ok(None);
        }
        Ok(PRESENCE
            .get(&*self.store, &user_id.to_owned())?
            .filter(|Json(record)| record.stream <= upto)
            .map(|Json(record)| self.view(user_id, &record, now_ms())))
    }

    /// The users whose presence was stored after `after` and at or before `upto`, each once,
    /// in stream order, with their presence now.
    pub fn changes(
        &self,
        after: StreamPosition,
        upto: StreamPosition,
    ) -> Result<Vec<(OwnedUserId, PresenceView)>, SyncError> {
        if !self.enabled() || after >= upto {
            return Ok(Vec::new());
        }
        let range = KeyRange::half_open(
            StreamPosition(after.0.saturating_add(1)).to_key_bytes(),
            StreamPosition(upto.0.saturating_add(1)).to_key_bytes(),
        );
        let now = now_ms();
        let mut out = Vec::new();
        for (stream, Json(user)) in
            CHANGES.collect(&*self.store, range, Direction::Forward, None)?
        {
            if let Some(Json(record)) = PRESENCE.get(&*self.store, &user)?
                && record.stream == stream
            {
                let view = self.view(&user, &record, now);
                out.push((user, view));
            }
        }
        Ok(out)
    }

    fn write(
        &self,
        rooms: &Rooms,
        user_id: &UserId,
        presence: PresenceState,
        status_msg: Option<String>,
        last_active_ts: u64,
    ) -> Result<(), SyncError> {
        let user = user_id.to_owned();
        let store = &*self.store;
        let write = |batch: &mut crate::storage::WriteBatch, stream| {
            if let Some(Json(old)) = PRESENCE.get(store, &user)? {
                CHANGES.delete(batch, &old.stream);
            }
            PRESENCE.put(
                batch,
                &user,
                &Json(Record {
                    presence,
                    status_msg,
                    last_active_ts,
                    stream,
                }),
            );
            CHANGES.put(batch, &stream, &Json(user.clone()));
            Ok(())
        };
        // Who sees the change: everyone sharing a joined or invited room with the user. A user
        // in many rooms would make a long audience; their change wakes every sync instead.
        let shared: Vec<_> = rooms
            .rooms_of_user(&user)?
            .into_iter()
            .filter(|(_, membership)| {
                matches!(membership, MembershipState::Join | MembershipState::Invite)
            })
            .map(|(room_id, _)| room_id)
            .collect();
        if shared.len() <= MAX_AUDIENCE_ROOMS {
            let audience = Audience::UserAndRoomMates {
                user_id: user.clone(),
                rooms: shared,
            };
            rooms.write_at_next_position_for(audience, write)?;
        } else {
            rooms.write_at_next_position(write)?;
        }
        Ok(())
    }

    fn seen(&self, user_id: &UserId, now: u64) {
        self.last_sync_map().insert(user_id.to_owned(), now);
    }

    fn last_sync_map(&self) -> MutexGuard<'_, HashMap<OwnedUserId, u64>> {
        // Plain timestamps: nothing can be left half-updated, so poisoning is ignored.
        self.last_sync
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The stored presence after the inactivity transitions.
    fn view(&self, user_id: &UserId, record: &Record, now: u64) -> PresenceView {
        let last_sync = self.last_sync_map().get(user_id).copied().unwrap_or(0);
        let last_seen = record.last_active_ts.max(last_sync);
        let idle_for = now.saturating_sub(record.last_active_ts);
        let presence = if record.presence == PresenceState::Offline
            || now.saturating_sub(last_seen) > duration_ms(self.settings.offline_after)
        {
            PresenceState::Offline
        } else if record.presence == PresenceState::Online
            && idle_for > duration_ms(self.settings.idle_after)
        {
            PresenceState::Unavailable
        } else {
            record.presence.clone()
        };
        PresenceView {
            currently_active: presence == PresenceState::Online && idle_for < ACTIVE_GRANULARITY_MS,
            presence,
            status_msg: record.status_msg.clone(),
            last_active_ago: Some(idle_for),
        }
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ruma::user_id;

    use super::*;
    use crate::storage::MemoryStore;

    #[test]
    fn inactivity_turns_online_into_unavailable_then_offline() {
        let store: Arc<dyn KvStore> = Arc::new(MemoryStore::new());
        let presence = Presence::new(
            Arc::clone(&store),
            PresenceSettings {
                enabled: true,
                idle_after: Duration::from_secs(300),
                offline_after: Duration::from_secs(600),
            },
        );
        let alice = user_id!("@alice:example.org");
        let t0 = 1_000_000_000;
        let record = Record {
            presence: PresenceState::Online,
            status_msg: Some("hi".to_owned()),
            last_active_ts: t0,
            stream: StreamPosition(1),
        };
        let at = |offset_secs: u64| presence.view(alice, &record, t0 + offset_secs * 1000);
        let fresh = at(0);
        assert_eq!(fresh.presence, PresenceState::Online);
        assert!(fresh.currently_active);
        assert_eq!(fresh.last_active_ago, Some(0));
        let later = at(120);
        assert_eq!(later.presence, PresenceState::Online);
        assert!(!later.currently_active);
        assert_eq!(at(301).presence, PresenceState::Unavailable);
        assert_eq!(at(601).presence, PresenceState::Offline);
        assert_eq!(at(601).status_msg.as_deref(), Some("hi"));

        // A recent sync keeps an idle user from going offline.
        presence.seen(alice, t0 + 590_000);
        assert_eq!(at(601).presence, PresenceState::Unavailable);
        assert_eq!(at(1191).presence, PresenceState::Offline);

        // Explicit states other than online do not decay into idle.
        let away = Record {
            presence: PresenceState::Unavailable,
            ..record.clone()
        };
        assert_eq!(
            presence.view(alice, &away, t0 + 400_000).presence,
            PresenceState::Unavailable
        );
        // Never set: offline.
        assert_eq!(
            presence.get_at(alice, t0).unwrap().presence,
            PresenceState::Offline
        );
    }
}
