//! Notifications: the records evaluation leaves, unread counts over them, and the
//! `/notifications` listing.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use ruma::push::Action;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::{Deserialize, Serialize};

use super::tables::{NOTIFICATIONS, NOTIFICATIONS_BY_ROOM};
use super::{Push, PushError, lock};
use crate::rooms::graph::StreamPosition;
use crate::storage::{
    Direction, Json, KeyCodec, KeyRange, StorageError, ValueCodec, prefix_successor,
};

/// An event that notified a user.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NotificationRecord {
    /// The room of the event.
    pub room_id: OwnedRoomId,
    /// The event.
    pub event_id: OwnedEventId,
    /// The event's stream position (what read receipts are compared with).
    pub stream: StreamPosition,
    /// The stream position the notification is filed under in `/notifications`: its event's
    /// (records of older versions: the position they were written at, after the event's).
    pub written: StreamPosition,
    /// Whether a `highlight` tweak was set.
    pub highlight: bool,
    /// The thread root, for an event in a thread (`None`: the main timeline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_root: Option<OwnedEventId>,
    /// The actions of the rule that matched.
    pub actions: Vec<Action>,
    /// When the event was sent, in milliseconds since the Unix epoch.
    pub ts: u64,
}

/// Unread notification counts of one user in one room.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnreadCounts {
    /// Notifications of the main timeline after its read position.
    pub notification_count: u64,
    /// Of those, the ones that highlight.
    pub highlight_count: u64,
    /// Per thread root: `(notifications, highlights)` after the thread's read position.
    /// Threads without unread notifications are left out.
    pub threads: BTreeMap<OwnedEventId, (u64, u64)>,
}

impl UnreadCounts {
    /// `(notifications, highlights)` over the main timeline and every thread: the counts of
    /// a client that did not ask for per-thread counts.
    pub fn total(&self) -> (u64, u64) {
        self.threads.values().fold(
            (self.notification_count, self.highlight_count),
            |(notifications, highlights), (n, h)| (notifications + n, highlights + h),
        )
    }
}

/// The read positions unread counts were computed for: the main timeline's and each
/// thread's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ReadPositions {
    main: Option<StreamPosition>,
    threads: BTreeMap<OwnedEventId, StreamPosition>,
}

impl ReadPositions {
    pub(super) fn new(
        main: Option<StreamPosition>,
        threads: BTreeMap<OwnedEventId, StreamPosition>,
    ) -> Self {
        Self { main, threads }
    }

    /// Whether a notification at `stream` in `thread` (`None`: the main timeline) is read:
    /// at or before the thread's own position, or the main timeline's for a thread without
    /// one. The one rule of unread counting, which pruning applies too.
    pub(super) fn covers(&self, thread: Option<&OwnedEventId>, stream: StreamPosition) -> bool {
        let read = match thread {
            Some(root) => self.threads.get(root).copied().or(self.main),
            None => self.main,
        };
        read.is_some_and(|read| stream <= read)
    }
}

/// Unread counts of one user in one room as of `upto`, under `reads`: a later sync with the
/// same read positions only counts the notifications after `upto`.
#[derive(Clone, Debug)]
pub(super) struct CachedCounts {
    reads: ReadPositions,
    upto: StreamPosition,
    counts: UnreadCounts,
}

/// A page of `/notifications`, newest first.
#[derive(Clone, Debug)]
pub struct NotificationPage {
    /// The notifications.
    pub notifications: Vec<NotificationRecord>,
    /// Where the next (older) page starts, if there may be one.
    pub next_token: Option<String>,
}

impl Push {
    /// The unread counts of `user_id` in the room: the notifications after `main_read` (the
    /// event position the user's receipts cover for the main timeline; `None`: no receipt,
    /// everything is unread) and, for each thread, after its position in `thread_reads`, or
    /// after `main_read` for a thread without its own entry.
    ///
    /// Only events up to `upto` count: a sync reports the counts as of the position it
    /// covers, so a count never runs ahead of the timeline the client has.
    ///
    /// The caller folds the spec's receipt rules into the positions: an unthreaded receipt
    /// covers every timeline, so each position is the furthest of the unthreaded receipt and
    /// the receipt of that timeline.
    pub fn unread_counts(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        main_read: Option<StreamPosition>,
        thread_reads: &BTreeMap<OwnedEventId, StreamPosition>,
        upto: StreamPosition,
    ) -> Result<UnreadCounts, PushError> {
        // Read before scanning: every notification up to here is written, so counts up to
        // here are final and may be kept for the next sync to extend.
        let evaluated = self.last_processed();
        let key = (user_id.to_owned(), room_id.to_owned());
        let reads = ReadPositions {
            main: main_read,
            threads: thread_reads.clone(),
        };
        let cached = lock(&self.counts_cache)
            .get(&key)
            .filter(|cached| cached.reads == reads && cached.upto <= upto)
            .cloned();
        let (mut counts, after) = match cached {
            Some(cached) => (cached.counts, cached.upto),
            // Nothing at or before the earliest read position can be unread anywhere.
            None => (
                UnreadCounts::default(),
                thread_reads
                    .values()
                    .copied()
                    .fold(main_read.unwrap_or_default(), StreamPosition::min),
            ),
        };
        self.count_notifications(&key, &reads, after, upto, &mut counts)?;
        if upto <= evaluated {
            lock(&self.counts_cache).put(
                key,
                CachedCounts {
                    reads,
                    upto,
                    counts: counts.clone(),
                },
            );
        }
        Ok(counts)
    }

    /// Adds to `counts` the notifications of the user in the room for events after `after`
    /// and up to `upto` that `reads` leave unread.
    fn count_notifications(
        &self,
        (user, room): &(OwnedUserId, OwnedRoomId),
        reads: &ReadPositions,
        after: StreamPosition,
        upto: StreamPosition,
        counts: &mut UnreadCounts,
    ) -> Result<(), PushError> {
        if after >= upto {
            return Ok(());
        }
        let prefix = (user.clone(), room.clone()).to_key_bytes();
        let start = (
            user.clone(),
            room.clone(),
            StreamPosition(after.0.saturating_add(1)),
        )
            .to_key_bytes();
        let end = match upto.0.checked_add(1) {
            Some(next) => {
                Bound::Excluded((user.clone(), room.clone(), StreamPosition(next)).to_key_bytes())
            }
            None => prefix_successor(&prefix).map_or(Bound::Unbounded, Bound::Excluded),
        };
        let range = KeyRange {
            start: Bound::Included(start),
            end,
        };
        for ((_, _, stream), Json(entry)) in
            NOTIFICATIONS_BY_ROOM.collect(&*self.store, range, Direction::Forward, None)?
        {
            if reads.covers(entry.thread.as_ref(), stream) {
                continue;
            }
            let highlight = u64::from(entry.highlight);
            match entry.thread {
                Some(root) => {
                    let thread = counts.threads.entry(root).or_default();
                    thread.0 += 1;
                    thread.1 += highlight;
                }
                None => {
                    counts.notification_count += 1;
                    counts.highlight_count += highlight;
                }
            }
        }
        Ok(())
    }

    /// Up to `limit` notifications of `user_id`, newest first, starting after the token
    /// `from` of an earlier page; only highlights when `only_highlight`.
    pub fn notifications(
        &self,
        user_id: &UserId,
        from: Option<&str>,
        limit: usize,
        only_highlight: bool,
    ) -> Result<NotificationPage, PushError> {
        let user = user_id.to_owned();
        let prefix = (user.clone(),).to_key_bytes();
        let end = match from {
            Some(token) => {
                let (written, stream) = parse_token(token)?;
                Bound::Excluded((user, written, stream).to_key_bytes())
            }
            None => prefix_successor(&prefix).map_or(Bound::Unbounded, Bound::Excluded),
        };
        let range = KeyRange {
            start: Bound::Included(prefix),
            end,
        };
        let mut notifications = Vec::new();
        let mut next_token = None;
        for entry in self
            .store
            .iter(NOTIFICATIONS.column_family(), range, Direction::Reverse)?
        {
            if notifications.len() >= limit {
                break;
            }
            let (_, value) = entry?;
            let Json(record) = Json::<NotificationRecord>::decode_value(&value).map_err(|err| {
                StorageError::Corrupt {
                    cf: NOTIFICATIONS.column_family().name,
                    what: "value",
                    reason: err.0,
                }
            })?;
            // The token moves past filtered-out records too, so a page of highlights does
            // not scan them again.
            next_token = Some(token(&record));
            if only_highlight && !record.highlight {
                continue;
            }
            notifications.push(record);
        }
        if notifications.len() < limit {
            // The scan reached the oldest notification: there is no next page.
            next_token = None;
        }
        Ok(NotificationPage {
            notifications,
            next_token,
        })
    }

    /// The rooms in which notifications of `user_id` were filed after `since`, up to `upto`:
    /// their unread counts changed, even where the sync's filter hides the events.
    pub fn rooms_with_notifications_since(
        &self,
        user_id: &UserId,
        since: StreamPosition,
        upto: StreamPosition,
    ) -> Result<BTreeSet<OwnedRoomId>, PushError> {
        let user = user_id.to_owned();
        let prefix = (user.clone(),).to_key_bytes();
        let start = (user.clone(), StreamPosition(since.0.saturating_add(1))).to_key_bytes();
        let end = match upto.0.checked_add(1) {
            Some(after) => Bound::Excluded((user, StreamPosition(after)).to_key_bytes()),
            None => prefix_successor(&prefix).map_or(Bound::Unbounded, Bound::Excluded),
        };
        let range = KeyRange {
            start: Bound::Included(start),
            end,
        };
        Ok(NOTIFICATIONS
            .collect(&*self.store, range, Direction::Forward, None)?
            .into_iter()
            .map(|(_, Json(record))| record.room_id)
            .collect())
    }
}

/// The pagination token naming `record`.
fn token(record: &NotificationRecord) -> String {
    format!("{}_{}", record.written.0, record.stream.0)
}

fn parse_token(token: &str) -> Result<(StreamPosition, StreamPosition), PushError> {
    let invalid = || PushError::InvalidParam(format!("Invalid pagination token {token:?}"));
    let (written, stream) = token.split_once('_').ok_or_else(invalid)?;
    let written = written.parse().map_err(|_| invalid())?;
    let stream = stream.parse().map_err(|_| invalid())?;
    Ok((StreamPosition(written), StreamPosition(stream)))
}
