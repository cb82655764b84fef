//! Pruning notifications: without it `push_notifications` and `push_notifications_by_room`
//! would hold one record per notifying event and recipient for ever.
//!
//! A notification goes once it is older than the retention period (by its event's
//! `origin_server_ts`) and either read or its user is gone from the room:
//! - read means read by the rule of [`Push::unread_counts`], with the positions every caller
//!   of it uses: the sync's (the main timeline's position and each thread's) and the push
//!   badge's (the main timeline's for every thread). A notification both leave read counts
//!   for neither, so pruning never changes an unread count;
//! - gone means the user left the room (or was banned from it) before the cutoff, or their
//!   account is deactivated: counts are only served for rooms a user is joined to or invited
//!   into, and a deactivated account is never served again.
//!
//! Unread notifications of members are kept whatever their age: they still count.
//!
//! Concurrency: pruning takes no lock. The evaluator only ever adds keys at event positions
//! after everything already evaluated, and pruning only deletes keys it has just read, at or
//! before positions already evaluated, so the two never touch the same key. Read receipts
//! only move forwards, so a notification read when pruning decides stays read. Cached
//! unread counts (`Push::counts_cache`) stay exact: an entry is only reused for the read
//! positions it was computed under, and a pruned notification is at or before those
//! positions if they are the current ones (it was never counted), while an entry for older
//! positions is never asked for again once a receipt moved past them.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ruma::events::StateEventType;
use ruma::events::room::member::MembershipState;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};

use super::notifications::ReadPositions;
use super::tables::{NOTIFICATIONS, NOTIFICATIONS_BY_ROOM};
use super::{Push, PushError, now_ms};
use crate::Services;
use crate::rooms::graph::StreamPosition;
use crate::storage::{Direction, Json, KeyCodec, KeyRange, WriteBatch};
use crate::sync::Receipts;

/// Deletions per batch: one write batch of both tables' keys.
const BATCH: usize = 1_000;
/// Notifications one batch looks at, at most, per deletion it may make: a table full of old
/// unread notifications is crossed in short batches too.
const SCAN_PER_DELETION: usize = 10;
/// The first pass runs this long after start-up, once the server has settled.
const FIRST_PASS_AFTER: Duration = Duration::from_secs(60);
/// Time between the starts of two passes.
const PASS_EVERY: Duration = Duration::from_secs(3_600);

/// What keeps a user's notifications in one room from being pruned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomRetention {
    /// The user's read positions, as unread counts take them: notifications after them are
    /// unread and kept.
    Reads {
        /// The main timeline's position ([`Receipts::read_position`] without a thread).
        main: Option<StreamPosition>,
        /// Each thread's position ([`Receipts::thread_read_positions`]).
        threads: BTreeMap<OwnedEventId, StreamPosition>,
    },
    /// Nothing: the user is gone from the room (or from the server).
    Gone,
}

impl RoomRetention {
    /// Whether a notification at `stream` in `thread` may go (its age aside).
    fn releases(&self, thread: Option<&OwnedEventId>, stream: StreamPosition) -> bool {
        match self {
            Self::Gone => true,
            // Read for the sync's counts and for the push badge, which takes the main
            // timeline's position for threads too.
            Self::Reads { main, threads } => {
                ReadPositions::new(*main, threads.clone()).covers(thread, stream)
                    && ReadPositions::new(*main, BTreeMap::new()).covers(thread, stream)
            }
        }
    }
}

/// Where the next batch of a pruning pass starts: after the last notification looked at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PruneCursor((OwnedUserId, StreamPosition, StreamPosition));

/// What one [`Push::prune_batch`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PruneBatch {
    /// Notifications looked at.
    pub scanned: usize,
    /// Notifications deleted (from both tables).
    pub pruned: usize,
    /// Where the next batch starts; `None`: the pass is complete.
    pub next: Option<PruneCursor>,
}

impl Push {
    /// Deletes up to `limit` notifications after `from` (from the start: `None`) whose event
    /// is older than `cutoff_ms` (milliseconds since the Unix epoch) and that `retention`
    /// releases, in one atomic batch over both tables. `retention` is asked once per user
    /// and room in the batch. Synchronous (disk I/O): run it on a blocking thread.
    pub fn prune_batch(
        &self,
        cutoff_ms: u64,
        from: Option<&PruneCursor>,
        limit: usize,
        retention: &mut dyn FnMut(&UserId, &RoomId) -> Result<RoomRetention, PushError>,
    ) -> Result<PruneBatch, PushError> {
        let limit = limit.max(1);
        let range = KeyRange {
            start: from.map_or(Bound::Unbounded, |PruneCursor(key)| {
                Bound::Excluded(key.to_key_bytes())
            }),
            end: Bound::Unbounded,
        };
        let scan = limit.saturating_mul(SCAN_PER_DELETION);
        let records = NOTIFICATIONS.collect(&*self.store, range, Direction::Forward, Some(scan))?;
        let complete = records.len() < scan;
        let mut known: HashMap<(OwnedUserId, OwnedRoomId), RoomRetention> = HashMap::new();
        let mut batch = WriteBatch::new();
        let mut scanned = 0;
        let mut pruned = 0;
        let mut last = None;
        for (key, Json(record)) in records {
            scanned += 1;
            let user = key.0.clone();
            if record.ts < cutoff_ms {
                let room = (user.clone(), record.room_id.clone());
                let held = match known.get(&room) {
                    Some(held) => held.clone(),
                    None => {
                        let held = retention(&user, &record.room_id)?;
                        known.insert(room, held.clone());
                        held
                    }
                };
                if held.releases(record.thread_root.as_ref(), record.stream) {
                    NOTIFICATIONS_BY_ROOM
                        .delete(&mut batch, &(user, record.room_id.clone(), record.stream));
                    NOTIFICATIONS.delete(&mut batch, &key);
                    pruned += 1;
                }
            }
            last = Some(key);
            if pruned >= limit {
                break;
            }
        }
        if !batch.is_empty() {
            // Unsynced: a deletion lost in a crash is made again by the next pass.
            self.store.write_unsynced(batch)?;
            self.pruned.fetch_add(pruned as u64, Ordering::Relaxed);
        }
        let next = if complete && pruned < limit {
            None
        } else {
            last.map(PruneCursor)
        };
        Ok(PruneBatch {
            scanned,
            pruned,
            next,
        })
    }
}

/// The read positions of `user_id` in the room, as the sync's unread counts take them.
pub fn reads_from_receipts(
    receipts: &Receipts,
    user_id: &UserId,
    room_id: &RoomId,
) -> Result<RoomRetention, PushError> {
    Ok(RoomRetention::Reads {
        main: receipts.read_position(user_id, room_id, None)?,
        threads: receipts.thread_read_positions(user_id, room_id)?,
    })
}

/// What keeps the notifications of `user_id` in the room: nothing once their account is
/// deactivated or they left the room (or were banned) before `cutoff_ms`; else their read
/// positions.
pub fn room_retention(
    services: &Services,
    user_id: &UserId,
    room_id: &RoomId,
    cutoff_ms: u64,
) -> Result<RoomRetention, PushError> {
    if services
        .accounts
        .user(user_id)?
        .is_some_and(|account| account.deactivated)
    {
        return Ok(RoomRetention::Gone);
    }
    let rooms = &services.rooms;
    if matches!(
        rooms.membership(room_id, user_id)?,
        Some(MembershipState::Leave | MembershipState::Ban)
    ) && rooms
        .state_event(room_id, &StateEventType::RoomMember, user_id.as_str())?
        .is_some_and(|member| u64::from(member.origin_server_ts().get()) < cutoff_ms)
    {
        return Ok(RoomRetention::Gone);
    }
    reads_from_receipts(&services.receipts, user_id, room_id)
}

/// Prunes notifications older than `retention` until the runtime shuts down: one pass
/// shortly after start-up, then one an hour, each in batches on blocking threads.
pub async fn run_pruner(services: Arc<Services>, retention: Duration) {
    let start = tokio::time::Instant::now() + FIRST_PASS_AFTER;
    let mut passes = tokio::time::interval_at(start, PASS_EVERY);
    // A pass that overran is followed by the next a whole period later, not at once.
    passes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        passes.tick().await;
        let cutoff_ms =
            now_ms().saturating_sub(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX));
        match prune_pass(&services, cutoff_ms).await {
            Ok(0) => tracing::debug!("no notifications to prune"),
            Ok(pruned) => tracing::info!(pruned, "pruned read notifications"),
            Err(error) => tracing::error!(%error, "pruning notifications failed"),
        }
    }
}

/// One pass over every notification, a batch at a time; returns how many were pruned.
async fn prune_pass(services: &Arc<Services>, cutoff_ms: u64) -> Result<u64, PushError> {
    let mut cursor = None;
    let mut total = 0;
    loop {
        let worker = Arc::clone(services);
        let from = cursor.take();
        let batch = tokio::task::spawn_blocking(move || {
            worker
                .push
                .prune_batch(cutoff_ms, from.as_ref(), BATCH, &mut |user, room| {
                    room_retention(&worker, user, room, cutoff_ms)
                })
        })
        .await;
        let batch = match batch {
            Ok(batch) => batch?,
            Err(error) => {
                tracing::error!(%error, "a notification pruning batch failed");
                return Ok(total);
            }
        };
        total += batch.pruned as u64;
        match batch.next {
            Some(next) => cursor = Some(next),
            None => return Ok(total),
        }
    }
}
