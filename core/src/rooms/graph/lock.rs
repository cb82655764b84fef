//! Room write locks: one writer per room at a time, proven by a guard value.
//!
//! Appending to a room is a read-modify-write of its head (forward extremities, current
//! state), so two appends to the same room must not interleave; appends to different rooms
//! may. Each room with a writer (or writers waiting) has an async mutex in a map; the map
//! holds weak references, and the last guard of a room removes its entry, so the map only
//! grows with the rooms being written right now.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use ruma::{OwnedRoomId, RoomId};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// Entries with no live lock left behind (a waiter cancelled while another task held the lock)
/// are swept when the map passes this many entries, or twice its size after the last sweep.
const MIN_SWEEP_LEN: usize = 64;

#[derive(Debug, Default)]
struct LockMap {
    rooms: HashMap<OwnedRoomId, Weak<AsyncMutex<()>>>,
    sweep_at: usize,
}

impl LockMap {
    fn sweep_if_large(&mut self) {
        if self.rooms.len() < self.sweep_at.max(MIN_SWEEP_LEN) {
            return;
        }
        self.rooms.retain(|_, lock| lock.strong_count() > 0);
        self.sweep_at = self.rooms.len() * 2;
    }
}

/// The per-room write locks of one [`Rooms`](super::Rooms) service.
#[derive(Debug, Default)]
pub struct RoomLocks {
    map: Arc<Mutex<LockMap>>,
}

impl RoomLocks {
    /// No room locked.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits until no one else writes to `room_id`, and returns the proof.
    pub async fn lock(&self, room_id: &RoomId) -> RoomGuard {
        let mutex = self.slot(room_id);
        let guard = mutex.lock_owned().await;
        RoomGuard {
            room_id: room_id.to_owned(),
            guard: Some(guard),
            map: Arc::clone(&self.map),
        }
    }

    /// The lock of `room_id` if it is free now, without waiting.
    pub fn try_lock(&self, room_id: &RoomId) -> Option<RoomGuard> {
        let mutex = self.slot(room_id);
        let guard = mutex.try_lock_owned().ok()?;
        Some(RoomGuard {
            room_id: room_id.to_owned(),
            guard: Some(guard),
            map: Arc::clone(&self.map),
        })
    }

    /// How many rooms have an entry in the lock map (locked, waited for, or not swept yet).
    pub fn len(&self) -> usize {
        lock_map(&self.map).rooms.len()
    }

    /// Whether no room has an entry in the lock map.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `guard` was handed out by these locks (not by another service's).
    pub(super) fn issued(&self, guard: &RoomGuard) -> bool {
        Arc::ptr_eq(&self.map, &guard.map)
    }

    fn slot(&self, room_id: &RoomId) -> Arc<AsyncMutex<()>> {
        let mut map = lock_map(&self.map);
        if let Some(existing) = map.rooms.get(room_id).and_then(Weak::upgrade) {
            return existing;
        }
        let mutex = Arc::new(AsyncMutex::new(()));
        map.rooms.insert(room_id.to_owned(), Arc::downgrade(&mutex));
        map.sweep_if_large();
        mutex
    }
}

fn lock_map(map: &Mutex<LockMap>) -> MutexGuard<'_, LockMap> {
    // The map is only ever changed by complete inserts and removes, so a panic elsewhere
    // while it was held leaves it consistent.
    map.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Proof that the write lock of one room is held; released on drop.
///
/// It owns everything it needs (`'static`, `Send`), so it can be moved into
/// `tokio::task::spawn_blocking` together with the synchronous append.
pub struct RoomGuard {
    room_id: OwnedRoomId,
    guard: Option<OwnedMutexGuard<()>>,
    map: Arc<Mutex<LockMap>>,
}

impl fmt::Debug for RoomGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoomGuard")
            .field("room_id", &self.room_id)
            .finish_non_exhaustive()
    }
}

impl RoomGuard {
    /// The room whose lock this is.
    pub fn room_id(&self) -> &RoomId {
        &self.room_id
    }
}

impl Drop for RoomGuard {
    fn drop(&mut self) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        let mut map = lock_map(&self.map);
        // Under the map lock nobody can take a new reference to this mutex, and every waiter
        // holds one already: if ours is the only one left, nobody needs the entry.
        let mutex = OwnedMutexGuard::mutex(&guard);
        if Arc::strong_count(mutex) == 1
            && map
                .rooms
                .get(&self.room_id)
                .is_some_and(|entry| std::ptr::eq(entry.as_ptr(), Arc::as_ptr(mutex)))
        {
            map.rooms.remove(&self.room_id);
        }
        drop(guard);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ruma::room_id;

    use super::*;

    #[tokio::test]
    async fn one_writer_per_room_and_entries_go_away() {
        let locks = RoomLocks::new();
        let a = locks.lock(room_id!("!a:x")).await;
        // Another room is independent.
        let b = locks.try_lock(room_id!("!b:x")).unwrap();
        assert!(locks.try_lock(room_id!("!a:x")).is_none());
        assert_eq!(locks.len(), 2);
        drop(b);
        assert_eq!(locks.len(), 1);

        // A waiter gets the lock once the holder drops it, and the entry survives the handover.
        let waiter = {
            let mutex = locks.slot(room_id!("!a:x"));
            tokio::spawn(async move {
                let _held = mutex.lock_owned().await;
            })
        };
        drop(a);
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .unwrap()
            .unwrap();
        let again = locks.lock(room_id!("!a:x")).await;
        assert_eq!(again.room_id(), room_id!("!a:x"));
        drop(again);
        assert!(locks.is_empty());
    }

    #[test]
    fn abandoned_entries_are_swept() {
        let locks = RoomLocks::new();
        for n in 0..(MIN_SWEEP_LEN * 3) {
            // `slot` without locking leaves a dead entry, as a cancelled waiter would.
            let room = OwnedRoomId::try_from(format!("!r{n}:x")).unwrap();
            drop(locks.slot(&room));
        }
        assert!(locks.len() <= MIN_SWEEP_LEN, "{} entries left", locks.len());
    }
}
