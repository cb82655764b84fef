//! Push: each user's push rules, their evaluation against every new event, the notifications
//! that result (with the unread counts derived from them), and pushers with their delivery
//! queues.
//!
//! - Rules ([`Push::rules`] and the editing methods): one ruleset per user, ruma's
//!   [`Ruleset`](ruma::push::Ruleset), the server defaults until the user changes something.
//!   A change is written at the next position of the server-wide stream, so waiting syncs
//!   wake and can tell from [`Push::rules_changed_since`] that the `m.push_rules` account data
//!   ([`Push::rules_event`]) must be sent again.
//! - Evaluation ([`run_evaluator`], one round of it [`Push::process_next`]): follows the
//!   event stream with [`Rooms::events_after`] and evaluates each event for every local joined
//!   member but the sender, and for a local invitee. Each notifying result becomes a
//!   [`NotificationRecord`], written together with the delivery queue entries of the user's
//!   HTTP pushers and the position processed so far in one batch. The batch takes no stream
//!   position: a sync covering an event waits for its evaluation ([`Push::wait_evaluated`]),
//!   so the event wakes the sync once and its unread counts come with it.
//! - Counts ([`Push::unread_counts`]) and the `/notifications` listing
//!   ([`Push::notifications`]) read the notification tables.
//! - Pruning ([`run_pruner`], one batch of it [`Push::prune_batch`]): a notification older
//!   than the retention period goes once it is read (by the rule unread counts apply) or once
//!   its user is gone from the room (left it before the cutoff, or deactivated), so the
//!   tables hold what still counts and what is recent, not the server's whole history.
//! - Pushers ([`Push::set_pusher`], [`Push::pushers`]) and their queues ([`Push::queued`],
//!   [`Push::dequeue`], [`Push::subscribe_queue`]): the HTTP delivery itself lives above
//!   `core`, which makes no HTTP requests.
//!
//! Tables (column families in `storage::catalogue`):
//! - `push_rules`: user -> ruleset and the position it changed at;
//! - `push_notifications`: `(user, filed at, event position)` -> notification (filed at the
//!   event's position; records of older versions at the position they were written at);
//! - `push_notifications_by_room`: `(user, room, event position)` -> highlight and thread;
//! - `pushers` `(user, app id, pushkey)` and `pushers_by_key` `(app id, pushkey, user)`;
//! - `push_queue`: `(user, app id, pushkey, event position)` -> what to deliver;
//! - the evaluator's progress under `push.last_processed` in `counters`.
//!
//! [`Rooms::events_after`]: crate::rooms::graph::Rooms::events_after

mod error;
mod evaluate;
mod notifications;
mod prune;
mod pushers;
mod rules;
mod tables;

#[cfg(test)]
mod tests;

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use lru::LruCache;
use ruma::{OwnedRoomId, OwnedUserId};
use tokio::sync::{broadcast, watch};

pub use self::error::PushError;
pub use self::evaluate::{Round, evaluate_actions, run_evaluator, thread_root};
use self::notifications::CachedCounts;
pub use self::notifications::{NotificationPage, NotificationRecord, UnreadCounts};
pub use self::prune::{
    PruneBatch, PruneCursor, RoomRetention, reads_from_receipts, room_retention, run_pruner,
};
pub use self::pushers::{PusherKey, QueuedPush, StoredPusher};
use self::tables::{LAST_PROCESSED, PROGRESS};
use crate::rooms::graph::StreamPosition;
use crate::storage::{KvStore, StorageError};

/// How many queue announcements the channel of [`Push::subscribe_queue`] holds for a slow
/// receiver before it reports a lag (the receiver then rescans the queues).
const QUEUE_ANNOUNCEMENTS: usize = 1024;

/// How many `(user, room)` unread counts are kept for the next sync (a few hundred bytes
/// each).
const CACHED_COUNTS: NonZeroUsize = match NonZeroUsize::new(16_384) {
    Some(entries) => entries,
    None => NonZeroUsize::MIN,
};

/// The push service: rules, evaluation, notifications, pushers. Constructed once by the
/// server and shared.
pub struct Push {
    store: Arc<dyn KvStore>,
    /// Serialises read-modify-write changes of rulesets (rare: a user editing rules).
    rules_lock: Mutex<()>,
    /// Serialises changes of pushers, so the by-key index stays in step.
    pushers_lock: Mutex<()>,
    /// The position up to which the stream has been evaluated; persisted whenever a round
    /// read events, held here alone when it only passed positions without events.
    progress: Mutex<StreamPosition>,
    /// The position up to which every event has been evaluated, for syncs to wait on.
    evaluated: watch::Sender<StreamPosition>,
    /// The same position, for waiting on a blocking thread ([`Push::wait_evaluated_blocking`]).
    evaluated_blocking: (Mutex<StreamPosition>, Condvar),
    /// Unread counts of recent syncs per `(user, room)`, which the next sync extends with the
    /// notifications after them instead of counting every unread notification again.
    counts_cache: Mutex<LruCache<(OwnedUserId, OwnedRoomId), CachedCounts>>,
    /// Announces pushers that got queue entries, to the delivery side.
    queued: broadcast::Sender<PusherKey>,
    /// Notifications pruned since start-up, for metrics.
    pruned: AtomicU64,
}

impl fmt::Debug for Push {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Push").finish_non_exhaustive()
    }
}

impl Push {
    /// The service over `store`, resuming evaluation where it stopped.
    pub fn new(store: Arc<dyn KvStore>) -> Result<Self, StorageError> {
        let progress = PROGRESS
            .get(&*store, &LAST_PROCESSED.to_owned())?
            .unwrap_or(0);
        let (queued, _) = broadcast::channel(QUEUE_ANNOUNCEMENTS);
        Ok(Self {
            store,
            rules_lock: Mutex::new(()),
            pushers_lock: Mutex::new(()),
            progress: Mutex::new(StreamPosition(progress)),
            evaluated: watch::Sender::new(StreamPosition(progress)),
            evaluated_blocking: (Mutex::new(StreamPosition(progress)), Condvar::new()),
            counts_cache: Mutex::new(LruCache::new(CACHED_COUNTS)),
            queued,
            pruned: AtomicU64::new(0),
        })
    }

    /// The position up to which every event has been evaluated (and its notifications
    /// written). Never waits for a round in progress.
    pub fn last_processed(&self) -> StreamPosition {
        *self.evaluated.borrow()
    }

    /// Notifications pruned since start-up ([`Push::prune_batch`]), for metrics.
    pub fn pruned_total(&self) -> u64 {
        self.pruned.load(Ordering::Relaxed)
    }

    /// Waits until every event up to `position` has been evaluated, so unread counts read
    /// afterwards include them; gives up after `limit` (an evaluator that keeps failing must
    /// not hold syncs forever: their counts are then late, not wrong). Returns whether the
    /// evaluation got there.
    pub async fn wait_evaluated(&self, position: StreamPosition, limit: Duration) -> bool {
        let mut evaluated = self.evaluated.subscribe();
        matches!(
            tokio::time::timeout(limit, evaluated.wait_for(|done| *done >= position)).await,
            Ok(Ok(_))
        )
    }

    /// [`Push::wait_evaluated`] on a blocking thread: a sync computing its response there
    /// waits only when it comes to the unread counts, so its other work overlaps the
    /// evaluation.
    pub fn wait_evaluated_blocking(&self, position: StreamPosition, limit: Duration) -> bool {
        let (evaluated, raised) = &self.evaluated_blocking;
        let guard = lock(evaluated);
        let (done, _) = raised
            .wait_timeout_while(guard, limit, |done| *done < position)
            .unwrap_or_else(PoisonError::into_inner);
        *done >= position
    }

    /// Announces that every event up to `upto` has been evaluated.
    fn announce_evaluated(&self, upto: StreamPosition) {
        self.evaluated.send_if_modified(|evaluated| {
            let raised = upto > *evaluated;
            *evaluated = (*evaluated).max(upto);
            raised
        });
        let (evaluated, raised) = &self.evaluated_blocking;
        let mut done = lock(evaluated);
        if upto > *done {
            *done = upto;
            raised.notify_all();
        }
    }
}

/// Locks `mutex`; a panic of another holder leaves nothing half-done here (the guarded values
/// are unit or a position that is only ever raised), so a poisoned lock is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> u64 {
    u64::from(ruma::MilliSecondsSinceUnixEpoch::now().get())
}
