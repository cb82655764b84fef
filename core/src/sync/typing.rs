//! Typing notifications: who is typing in which room, in memory only.
//!
//! Typing is ephemeral, so it is not written to the store and has its own counter, the
//! typing serial: every change of a room's set of typing users (a start, a stop, an expiry)
//! takes the next serial, and the room remembers the serial of its last change. A sync token
//! carries the serial it has seen; a room whose last change is newer sends its current typing
//! users. Waiting syncs watch the serial next to the stream position.
//!
//! Expiry is computed on read (an expired entry is never served) and one background task per
//! service sleeps until the earliest expiry to remove it and bump the serial, so waiting syncs
//! learn that the user stopped typing. Refreshing a typing notification that is already
//! known changes no serial and wakes nobody.
//!
//! The rooms of the latest changes are kept by serial ([`Typing::rooms_changed_between`]),
//! so a waiting sync passes typing changes in rooms it does not watch without looking.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// How many recent changes keep the room they changed. A waiter that slept through more
/// changes than this simply looks.
const CHANGE_LOG: usize = 4096;

/// Limits of typing notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypingSettings {
    /// The timeout used when a client gives none.
    pub default_timeout: Duration,
    /// The longest timeout a client may ask for; longer ones are cut to it.
    pub max_timeout: Duration,
}

impl Default for TypingSettings {
    fn default() -> Self {
        Self {
            default_timeout: Duration::from_secs(30),
            max_timeout: Duration::from_secs(120),
        }
    }
}

/// The typing service.
#[derive(Clone)]
pub struct Typing {
    inner: Arc<Inner>,
}

struct Inner {
    settings: TypingSettings,
    rooms: Mutex<HashMap<OwnedRoomId, RoomTyping>>,
    /// The latest typing serial.
    serial: watch::Sender<u64>,
    /// The room of each recent serial, in serial order: written under the rooms lock before
    /// the serial is announced, so a serial a waiter can see is already here (unless it left).
    changes: Mutex<VecDeque<(u64, OwnedRoomId)>>,
    /// Wakes the expiry task when an entry is added (or the service is dropped).
    expiry_changed: Arc<Notify>,
    expiry_task_started: AtomicBool,
}

#[derive(Default)]
struct RoomTyping {
    /// The serial of the room's last change.
    serial: u64,
    /// Who is typing, until when.
    users: BTreeMap<OwnedUserId, Instant>,
}

impl fmt::Debug for Typing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Typing")
            .field("serial", &self.current())
            .finish_non_exhaustive()
    }
}

impl Typing {
    /// An empty service (the serial starts at 0 at every start of the server).
    pub fn new(settings: TypingSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                rooms: Mutex::new(HashMap::new()),
                serial: watch::Sender::new(0),
                changes: Mutex::new(VecDeque::with_capacity(CHANGE_LOG)),
                expiry_changed: Arc::new(Notify::new()),
                expiry_task_started: AtomicBool::new(false),
            }),
        }
    }

    /// The latest typing serial.
    pub fn current(&self) -> u64 {
        *self.inner.serial.borrow()
    }

    /// A receiver of typing serial changes, for waiting syncs.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.serial.subscribe()
    }

    /// Marks `user_id` as typing in the room for `timeout` (the default when `None`, capped
    /// at the maximum). The API layer checks that the user is joined. Must be called inside a
    /// tokio runtime (it starts the expiry task on first use).
    pub fn start(&self, room_id: &RoomId, user_id: &UserId, timeout: Option<Duration>) {
        let settings = self.inner.settings;
        let timeout = timeout
            .unwrap_or(settings.default_timeout)
            .min(settings.max_timeout);
        let until = Instant::now() + timeout;
        let now = Instant::now();
        {
            let mut rooms = self.inner.lock();
            let room = rooms.entry(room_id.to_owned()).or_default();
            let was_typing = room.users.get(user_id).is_some_and(|expiry| *expiry > now);
            room.users.insert(user_id.to_owned(), until);
            if !was_typing {
                room.serial = self.inner.bump(room_id);
            }
        }
        self.ensure_expiry_task();
        self.inner.expiry_changed.notify_one();
    }

    /// Marks `user_id` as no longer typing in the room.
    pub fn stop(&self, room_id: &RoomId, user_id: &UserId) {
        let now = Instant::now();
        let mut rooms = self.inner.lock();
        let Some(room) = rooms.get_mut(room_id) else {
            return;
        };
        if let Some(expiry) = room.users.remove(user_id)
            && expiry > now
        {
            room.serial = self.inner.bump(room_id);
        }
        if room.users.is_empty() && room.serial == 0 {
            rooms.remove(room_id);
        }
    }

    /// Who is typing in the room now, sorted.
    pub fn typing_in(&self, room_id: &RoomId) -> Vec<OwnedUserId> {
        let now = Instant::now();
        self.inner
            .lock()
            .get(room_id)
            .map(|room| live_users(room, now))
            .unwrap_or_default()
    }

    /// The typing users of the room, if they changed after serial `since`: a `since` ahead of
    /// the current serial (a token from before a restart) counts as a change, so the current
    /// state is sent, though only for rooms where someone is typing.
    pub fn changed_since(&self, room_id: &RoomId, since: u64) -> Option<Vec<OwnedUserId>> {
        let now = Instant::now();
        let current = self.current();
        let rooms = self.inner.lock();
        let room = rooms.get(room_id)?;
        let users = live_users(room, now);
        if since > current {
            return (!users.is_empty()).then_some(users);
        }
        (room.serial > since).then_some(users)
    }

    /// The rooms whose typing users changed after serial `after` up to `upto` (each once), or
    /// `None` when some of those changes are no longer remembered: then the caller must
    /// assume any room changed.
    pub fn rooms_changed_between(&self, after: u64, upto: u64) -> Option<Vec<OwnedRoomId>> {
        if upto <= after {
            return Some(Vec::new());
        }
        let log = self.inner.changes_log();
        let start = log.partition_point(|(serial, _)| *serial <= after);
        let mut rooms: Vec<OwnedRoomId> = Vec::new();
        let mut seen: HashSet<&RoomId> = HashSet::new();
        let mut expected = after + 1;
        for (serial, room_id) in log.range(start..) {
            if *serial > upto {
                break;
            }
            if *serial != expected {
                return None;
            }
            if seen.insert(room_id) {
                rooms.push(room_id.clone());
            }
            expected += 1;
        }
        (expected == upto + 1).then_some(rooms)
    }

    /// Starts the task that removes expired entries, once, if a runtime is there.
    fn ensure_expiry_task(&self) {
        if self.inner.expiry_task_started.swap(true, Ordering::AcqRel) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(expire(
                    Arc::downgrade(&self.inner),
                    Arc::clone(&self.inner.expiry_changed),
                ));
            }
            Err(_) => self
                .inner
                .expiry_task_started
                .store(false, Ordering::Release),
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<OwnedRoomId, RoomTyping>> {
        // Every change under this lock leaves the map consistent, so a panic elsewhere while
        // holding it cannot leave half an update: poisoning is ignored.
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn changes_log(&self) -> MutexGuard<'_, VecDeque<(u64, OwnedRoomId)>> {
        // Each change pushes or pops one whole entry: poisoning is ignored, as above.
        self.changes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the next serial for a change of `room_id`, logs it, and announces it. Called
    /// with the rooms lock held, so serials are handed out (and logged) in the order changes
    /// are made.
    fn bump(&self, room_id: &RoomId) -> u64 {
        let next = self.serial.borrow().saturating_add(1);
        {
            let mut log = self.changes_log();
            if log.len() == CHANGE_LOG {
                log.pop_front();
            }
            log.push_back((next, room_id.to_owned()));
        }
        self.serial.send_replace(next);
        next
    }

    /// Removes expired entries, bumping the serial of each room that changed; returns the
    /// next expiry, if any.
    fn sweep(&self, now: Instant) -> Option<Instant> {
        let mut rooms = self.lock();
        let mut next: Option<Instant> = None;
        for (room_id, room) in rooms.iter_mut() {
            let before = room.users.len();
            room.users.retain(|_, expiry| *expiry > now);
            if room.users.len() != before {
                room.serial = self.bump(room_id);
            }
            if let Some(earliest) = room.users.values().min() {
                next = Some(next.map_or(*earliest, |next| next.min(*earliest)));
            }
        }
        next
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Lets the expiry task see that the service is gone.
        self.expiry_changed.notify_one();
    }
}

fn live_users(room: &RoomTyping, now: Instant) -> Vec<OwnedUserId> {
    room.users
        .iter()
        .filter(|(_, expiry)| **expiry > now)
        .map(|(user, _)| user.clone())
        .collect()
}

/// The expiry task: sleeps until the earliest expiry (or until an entry is added), sweeps,
/// and ends when the service is dropped. It holds the service only while sweeping.
async fn expire(inner: Weak<Inner>, changed: Arc<Notify>) {
    loop {
        let next = {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            inner.sweep(Instant::now())
        };
        // `notify_one` keeps a permit when nobody waits, so a start between the sweep and
        // this wait is not missed.
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = changed.notified() => {}
                }
            }
            None => changed.notified().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use ruma::{room_id, user_id};

    use super::*;

    #[tokio::test]
    async fn start_stop_and_serials() {
        let typing = Typing::new(TypingSettings::default());
        let room = room_id!("!r:example.org");
        let alice = user_id!("@alice:example.org");
        let bob = user_id!("@bob:example.org");
        assert_eq!(typing.current(), 0);
        assert_eq!(typing.changed_since(room, 0), None);

        typing.start(room, alice, None);
        assert_eq!(typing.current(), 1);
        assert_eq!(typing.changed_since(room, 0), Some(vec![alice.to_owned()]));
        assert_eq!(typing.changed_since(room, 1), None);
        // A refresh changes nothing.
        typing.start(room, alice, Some(Duration::from_secs(10)));
        assert_eq!(typing.current(), 1);

        typing.start(room, bob, None);
        assert_eq!(
            typing.typing_in(room),
            vec![alice.to_owned(), bob.to_owned()]
        );
        typing.stop(room, alice);
        assert_eq!(typing.current(), 3);
        assert_eq!(typing.changed_since(room, 2), Some(vec![bob.to_owned()]));
        // Stopping twice changes nothing.
        typing.stop(room, alice);
        assert_eq!(typing.current(), 3);
        // A serial from the future (a restart) sends what there is.
        assert_eq!(typing.changed_since(room, 99), Some(vec![bob.to_owned()]));
        typing.stop(room, bob);
        assert_eq!(typing.changed_since(room, 99), None);
    }

    /// Waits (with a deadline) for the serial to move past `seen`.
    async fn next_serial(typing: &Typing, seen: u64) -> u64 {
        let mut serials = typing.subscribe();
        let wait = serials.wait_for(|serial| *serial > seen);
        *tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn entries_expire_and_waiters_learn_it() {
        let typing = Typing::new(TypingSettings::default());
        let room = room_id!("!r:example.org");
        let alice = user_id!("@alice:example.org");
        typing.start(room, alice, Some(Duration::from_millis(20)));
        assert_eq!(next_serial(&typing, 1).await, 2);
        assert!(typing.typing_in(room).is_empty());
        assert_eq!(typing.changed_since(room, 1), Some(Vec::new()));
    }

    #[tokio::test]
    async fn the_rooms_of_recent_changes_are_known_by_serial() {
        let typing = Typing::new(TypingSettings::default());
        let (one, two) = (room_id!("!one:example.org"), room_id!("!two:example.org"));
        let alice = user_id!("@alice:example.org");
        let bob = user_id!("@bob:example.org");
        typing.start(one, alice, None);
        typing.start(two, bob, None);
        typing.start(one, bob, None);
        // A refresh takes no serial.
        typing.start(one, alice, None);
        typing.stop(two, bob);
        assert_eq!(typing.current(), 4);
        let rooms = |after, upto| typing.rooms_changed_between(after, upto);
        assert_eq!(rooms(0, 1), Some(vec![one.to_owned()]));
        assert_eq!(rooms(1, 2), Some(vec![two.to_owned()]));
        assert_eq!(rooms(0, 4), Some(vec![one.to_owned(), two.to_owned()]));
        assert_eq!(rooms(3, 4), Some(vec![two.to_owned()]));
        assert_eq!(rooms(4, 4), Some(Vec::new()));
        assert_eq!(rooms(4, 2), Some(Vec::new()));
        // Serials not handed out yet are not known.
        assert_eq!(rooms(3, 5), None);
    }

    #[tokio::test]
    async fn expiries_are_logged_with_their_room() {
        let typing = Typing::new(TypingSettings::default());
        let room = room_id!("!r:example.org");
        let alice = user_id!("@alice:example.org");
        typing.start(room, alice, Some(Duration::from_millis(20)));
        assert_eq!(next_serial(&typing, 1).await, 2);
        assert_eq!(
            typing.rooms_changed_between(1, 2),
            Some(vec![room.to_owned()])
        );
    }

    #[tokio::test]
    async fn changes_that_left_the_log_are_unknown() {
        let typing = Typing::new(TypingSettings::default());
        let alice = user_id!("@alice:example.org");
        let rooms: Vec<OwnedRoomId> = (0..=CHANGE_LOG)
            .map(|n| OwnedRoomId::try_from(format!("!r{n}:example.org")).unwrap())
            .collect();
        for room in &rooms {
            typing.start(room, alice, None);
        }
        let last = CHANGE_LOG as u64 + 1;
        assert_eq!(typing.current(), last);
        // Serial 1 (the first room) left the log.
        assert_eq!(typing.rooms_changed_between(0, last), None);
        assert_eq!(typing.rooms_changed_between(0, 1), None);
        assert_eq!(
            typing.rooms_changed_between(1, 2),
            Some(vec![rooms[1].clone()])
        );
        assert_eq!(
            typing
                .rooms_changed_between(1, last)
                .map(|changed| changed.len()),
            Some(CHANGE_LOG)
        );
    }

    #[tokio::test]
    async fn timeouts_are_capped() {
        let settings = TypingSettings {
            default_timeout: Duration::from_secs(30),
            max_timeout: Duration::from_millis(20),
        };
        let typing = Typing::new(settings);
        let room = room_id!("!r:example.org");
        let alice = user_id!("@alice:example.org");
        // Asked for an hour, expires within the test's deadline.
        typing.start(room, alice, Some(Duration::from_secs(3600)));
        assert_eq!(next_serial(&typing, 1).await, 2);
        assert!(typing.typing_in(room).is_empty());
    }
}
