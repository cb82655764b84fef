//! The room event store and the local append pipeline: the first of the three flows.
//!
//! A local client's event goes through [`Rooms::append_local`] under the room's write lock
//! ([`RoomGuard`], from [`Rooms::lock`]): the PDU is built on the room's forward extremities
//! with its auth events taken from the current state, hashed and signed, checked against the
//! current state by the auth rules, and persisted in one atomic write batch with its short id,
//! the state snapshot after it, the timeline and topological indexes, the new forward
//! extremities, the membership indexes, the current-state pointer and its stream position.
//! Then the [`StreamNotifier`] wakes whoever waits for new events.
//!
//! What is stored (column families in `storage::catalogue`, keys through the codec):
//! - `rooms`: room id -> version, creator, creation time, short room id;
//! - `room_events`: short event id -> the PDU as stored (redacted in place when a redaction
//!   is accepted) with its status ([`EventStatus`]), stream position and state snapshots;
//! - `room_timeline` `(room, stream)` and `room_topology` `(room, depth, stream)` -> event,
//!   for sync and for `/messages`;
//! - `room_forward_extremities` `(room, event)`, `room_current_state` room -> snapshot;
//! - `user_memberships` `(user, room)` and `room_memberships` `(room, user)` -> membership;
//! - the global stream position counter in `counters`.
//!
//! Only events with status [`EventStatus::Normal`] enter the timeline, the indexes and the
//! current state; outliers, rejected and soft-failed events are stored apart.
//!
//! Events from other servers go through [`Rooms::append_remote`] (module `remote`): the
//! specification's checks on receipt, then the same write as a local event when accepted, with
//! the current state resolved over the forward extremities when the graph forks.
//!
//! Appending is synchronous and does disk I/O (a synced write): call it from
//! `spawn_blocking`, moving the guard in. Reads take no lock.

mod append;
mod create;
mod error;
mod lock;
mod notifier;
mod query;
mod remote;
mod tables;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use ruma::{OwnedRoomId, RoomId, ServerName};

pub use self::append::{AppendedEvent, MAX_PREV_EVENTS, NewEvent};
pub use self::create::{CreateRoom, InitialStateEvent, RoomPreset};
pub use self::error::RoomError;
pub use self::lock::{RoomGuard, RoomLocks};
pub use self::notifier::{Audience, StreamAudience, StreamNotifier};
pub use self::query::{RoomInfo, StoredEvent};
pub use self::remote::{NewOutOfRoomMembership, OutOfRoomMembership, RemoteOutcome};
use self::tables::{COUNTERS, STREAM_COUNTER};
pub use self::tables::{EventStatus, ShortRoomId, StreamPosition, TopoPosition};
use super::short_ids::ShortIds;
use super::state::StateStore;
use crate::keys::ServerKeys;
use crate::storage::{GroupSync, KvStore, StorageError};

/// The rooms service: the event store, the room locks and the notifier. Constructed once by
/// the server and shared.
pub struct Rooms {
    store: Arc<dyn KvStore>,
    keys: Arc<ServerKeys>,
    short_ids: ShortIds,
    states: StateStore,
    locks: RoomLocks,
    notifier: StreamNotifier,
    /// Shares log syncs between the writers of every room (group commit).
    group_sync: GroupSync,
}

impl fmt::Debug for Rooms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rooms")
            .field("server_name", &self.keys.server_name())
            .field("stream", &self.notifier.current())
            .finish_non_exhaustive()
    }
}

impl Rooms {
    /// The service over `store`, signing with `keys`, with the default state cache.
    pub fn new(store: Arc<dyn KvStore>, keys: Arc<ServerKeys>) -> Result<Self, StorageError> {
        Self::with_state_store(store, keys, StateStore::default())
    }

    /// The service with a given state snapshot store (to size its cache).
    pub fn with_state_store(
        store: Arc<dyn KvStore>,
        keys: Arc<ServerKeys>,
        states: StateStore,
    ) -> Result<Self, StorageError> {
        let current = COUNTERS
            .get(&*store, &STREAM_COUNTER.to_owned())?
            .unwrap_or(0);
        Ok(Self {
            store,
            keys,
            short_ids: ShortIds::new(),
            states,
            locks: RoomLocks::new(),
            notifier: StreamNotifier::new(StreamPosition(current)),
            group_sync: GroupSync::new(),
        })
    }

    /// The server the service signs events for.
    pub fn server_name(&self) -> &ServerName {
        self.keys.server_name()
    }

    /// The store.
    pub fn store(&self) -> &dyn KvStore {
        &*self.store
    }

    /// The short id interner (one per database: everything that writes room data goes
    /// through this one, so its allocation lock serialises them).
    pub fn short_ids(&self) -> &ShortIds {
        &self.short_ids
    }

    /// The state snapshot store.
    pub fn state_store(&self) -> &StateStore {
        &self.states
    }

    /// The room write locks.
    pub fn locks(&self) -> &RoomLocks {
        &self.locks
    }

    /// Waits for the write lock of `room_id`.
    pub async fn lock(&self, room_id: &RoomId) -> RoomGuard {
        self.locks.lock(room_id).await
    }

    /// The stream notifier.
    pub fn notifier(&self) -> &StreamNotifier {
        &self.notifier
    }

    /// A receiver of stream position changes (see [`StreamNotifier::subscribe`]).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<StreamPosition> {
        self.notifier.subscribe()
    }

    /// The latest persisted stream position: every event at or below it is readable.
    pub fn current_stream_position(&self) -> StreamPosition {
        self.notifier.current()
    }

    /// Checks that `guard` is this service's lock of `room_id`.
    fn check_guard(&self, guard: &RoomGuard, room_id: &RoomId) -> Result<(), RoomError> {
        if guard.room_id() == room_id && self.locks.issued(guard) {
            Ok(())
        } else {
            Err(RoomError::LockMismatch {
                held: guard.room_id().to_owned(),
                wanted: OwnedRoomId::from(room_id),
            })
        }
    }
}
