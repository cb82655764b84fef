//! Read receipts: `m.read` (public) and `m.read.private` (seen only by their owner), each
//! unthreaded, for the main timeline or for one thread. `m.fully_read` is not a receipt but
//! room account data, written by the API layer.
//!
//! A receipt only moves forwards: one that points at an event older than the receipt already
//! held (same user, type and thread) is ignored, as clients racing each other would otherwise
//! move a read marker backwards.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::{Deserialize, Serialize};

use super::{SyncError, now_ms};
use crate::rooms::graph::{Audience, Rooms, StreamPosition};
use crate::storage::{Direction, Json, KeyCodec, KeyRange, KvStore, Table, catalogue};

/// `(room, user, type, thread)` -> the receipt; the thread is "" (unthreaded), "main" or the
/// thread root's event id.
const RECEIPTS: Table<(OwnedRoomId, OwnedUserId, String, String), Json<Record>> =
    Table::new(&catalogue::RECEIPTS);
/// `(room, position)` -> the receipt that changed there.
const CHANGES: Table<(OwnedRoomId, StreamPosition), Json<ChangeRecord>> =
    Table::new(&catalogue::RECEIPTS_STREAM);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    event_id: OwnedEventId,
    ts: u64,
    stream: StreamPosition,
    /// The stream position of the event the receipt points at.
    event_stream: StreamPosition,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChangeRecord {
    user: OwnedUserId,
    kind: String,
    thread: String,
}

/// The receipt types stored here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReceiptKind {
    /// `m.read`: everyone in the room sees it.
    Read,
    /// `m.read.private`: only its owner sees it.
    ReadPrivate,
}

impl ReceiptKind {
    /// The type as the spec names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "m.read",
            Self::ReadPrivate => "m.read.private",
        }
    }

    fn parse(kind: &str) -> Option<Self> {
        match kind {
            "m.read" => Some(Self::Read),
            "m.read.private" => Some(Self::ReadPrivate),
            _ => None,
        }
    }
}

/// Which timeline a receipt covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReceiptThread {
    /// No `thread_id`: the whole room.
    Unthreaded,
    /// `thread_id: "main"`: the main timeline, outside threads.
    Main,
    /// `thread_id: <root>`: one thread.
    Thread(OwnedEventId),
}

impl ReceiptThread {
    fn key(&self) -> String {
        match self {
            Self::Unthreaded => String::new(),
            Self::Main => "main".to_owned(),
            Self::Thread(root) => root.as_str().to_owned(),
        }
    }

    fn from_key(key: &str) -> Result<Self, SyncError> {
        Ok(match key {
            "" => Self::Unthreaded,
            "main" => Self::Main,
            root => Self::Thread(OwnedEventId::try_from(root).map_err(|err| {
                crate::storage::StorageError::Corrupt {
                    cf: catalogue::RECEIPTS.name,
                    what: "key",
                    reason: format!("bad thread id: {err}"),
                }
            })?),
        })
    }

    /// The `thread_id` a client sees (none for unthreaded receipts).
    pub fn thread_id(&self) -> Option<&str> {
        match self {
            Self::Unthreaded => None,
            Self::Main => Some("main"),
            Self::Thread(root) => Some(root.as_str()),
        }
    }
}

/// A receipt as served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Whose receipt.
    pub user_id: OwnedUserId,
    /// Its type.
    pub kind: ReceiptKind,
    /// Its thread.
    pub thread: ReceiptThread,
    /// The event read up to.
    pub event_id: OwnedEventId,
    /// When it was sent, in milliseconds since the Unix epoch.
    pub ts: u64,
    /// Where in the stream it was written.
    pub stream: StreamPosition,
}

/// The receipts service.
pub struct Receipts {
    store: Arc<dyn KvStore>,
}

impl fmt::Debug for Receipts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receipts").finish_non_exhaustive()
    }
}

impl Receipts {
    /// The service over `store`.
    pub fn new(store: Arc<dyn KvStore>) -> Self {
        Self { store }
    }

    /// Records that `user_id` has read `room_id` up to `event_id`, at the next stream position
    /// (waking waiting syncs). `None` when the receipt already points at that event or a later
    /// one, and nothing is written. [`SyncError::NotFound`] when the event is not in the
    /// room's timeline. Synchronous, with a synced write: call it from `spawn_blocking`.
    pub fn set(
        &self,
        rooms: &Rooms,
        room_id: &RoomId,
        user_id: &UserId,
        kind: ReceiptKind,
        thread: &ReceiptThread,
        event_id: &EventId,
    ) -> Result<Option<StreamPosition>, SyncError> {
        let event = rooms
            .get_event(event_id)?
            .filter(|event| event.room_id == room_id)
            .ok_or(SyncError::NotFound("event"))?;
        let event_stream = event.stream.ok_or(SyncError::NotFound("event"))?;
        let key = (
            room_id.to_owned(),
            user_id.to_owned(),
            kind.as_str().to_owned(),
            thread.key(),
        );
        let store = &*self.store;
        let not_newer = |old: &Option<Json<Record>>| {
            old.as_ref()
                .is_some_and(|Json(old)| old.event_stream >= event_stream)
        };
        // Checked before taking a position, so an ignored receipt wakes nobody.
        if not_newer(&RECEIPTS.get(store, &key)?) {
            return Ok(None);
        }
        let mut moved = false;
        let audience = Audience::Room(room_id.to_owned());
        let stream = rooms.write_at_next_position_for(audience, |batch, stream| {
            // Again under the allocation lock, for a receipt written meanwhile.
            let old = RECEIPTS.get(store, &key)?;
            if not_newer(&old) {
                // An empty batch: the position is spent, nothing else changes.
                return Ok(());
            }
            if let Some(Json(old)) = old {
                CHANGES.delete(batch, &(key.0.clone(), old.stream));
            }
            RECEIPTS.put(
                batch,
                &key,
                &Json(Record {
                    event_id: event_id.to_owned(),
                    ts: now_ms(),
                    stream,
                    event_stream,
                }),
            );
            CHANGES.put(
                batch,
                &(key.0.clone(), stream),
                &Json(ChangeRecord {
                    user: key.1.clone(),
                    kind: key.2.clone(),
                    thread: key.3.clone(),
                }),
            );
            moved = true;
            Ok(())
        })?;
        Ok(moved.then_some(stream))
    }

    /// The receipts of the room written at or before `upto` that `reader` may see (private
    /// receipts only their own).
    pub fn room_receipts(
        &self,
        room_id: &RoomId,
        upto: StreamPosition,
        reader: &UserId,
    ) -> Result<Vec<Receipt>, SyncError> {
        let mut out = Vec::new();
        for ((_, user, kind, thread), Json(record)) in
            RECEIPTS.scan_prefix(&*self.store, &(room_id.to_owned(),))?
        {
            if record.stream > upto {
                continue;
            }
            if let Some(receipt) = visible(user, &kind, &thread, record, reader)? {
                out.push(receipt);
            }
        }
        Ok(out)
    }

    /// The receipts of the room that changed after `after` and at or before `upto` and that
    /// `reader` may see, in stream order.
    pub fn changes(
        &self,
        room_id: &RoomId,
        after: StreamPosition,
        upto: StreamPosition,
        reader: &UserId,
    ) -> Result<Vec<Receipt>, SyncError> {
        if after >= upto {
            return Ok(Vec::new());
        }
        let room = room_id.to_owned();
        let range = KeyRange::half_open(
            (room.clone(), StreamPosition(after.0.saturating_add(1))).to_key_bytes(),
            (room.clone(), StreamPosition(upto.0.saturating_add(1))).to_key_bytes(),
        );
        let mut out = Vec::new();
        for ((_, stream), Json(change)) in
            CHANGES.collect(&*self.store, range, Direction::Forward, None)?
        {
            let key = (room.clone(), change.user, change.kind, change.thread);
            let Some(Json(record)) = RECEIPTS.get(&*self.store, &key)? else {
                continue;
            };
            if record.stream != stream {
                continue;
            }
            let (_, user, kind, thread) = key;
            if let Some(receipt) = visible(user, &kind, &thread, record, reader)? {
                out.push(receipt);
            }
        }
        Ok(out)
    }

    /// Whether the room has receipt changes after `after` and at or before `upto` (a cheap
    /// check before [`Receipts::changes`]).
    pub fn changed_since(
        &self,
        room_id: &RoomId,
        after: StreamPosition,
        upto: StreamPosition,
    ) -> Result<bool, SyncError> {
        if after >= upto {
            return Ok(false);
        }
        let room = room_id.to_owned();
        let range = KeyRange::half_open(
            (room.clone(), StreamPosition(after.0.saturating_add(1))).to_key_bytes(),
            (room, StreamPosition(upto.0.saturating_add(1))).to_key_bytes(),
        );
        Ok(!CHANGES
            .collect(&*self.store, range, Direction::Forward, Some(1))?
            .is_empty())
    }

    /// The stream position of the event that the latest `m.read` or `m.read.private` receipt
    /// of `user_id` in the room points at: for the main timeline when `thread` is `None`, else
    /// for that thread. Unthreaded receipts count for every timeline. `None` when the user has
    /// no such receipt.
    pub fn read_position(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        thread: Option<&EventId>,
    ) -> Result<Option<StreamPosition>, SyncError> {
        let threaded = thread.map_or_else(|| "main".to_owned(), |root| root.as_str().to_owned());
        let mut best = None;
        for kind in [ReceiptKind::Read, ReceiptKind::ReadPrivate] {
            for thread_key in [String::new(), threaded.clone()] {
                let key = (
                    room_id.to_owned(),
                    user_id.to_owned(),
                    kind.as_str().to_owned(),
                    thread_key,
                );
                if let Some(Json(record)) = RECEIPTS.get(&*self.store, &key)? {
                    best = best.max(Some(record.event_stream));
                }
            }
        }
        Ok(best)
    }

    /// The read position of each thread of the room that `user_id` has a threaded `m.read`
    /// or `m.read.private` receipt for, by thread root: the furthest of that receipt and the
    /// unthreaded one (which covers every timeline). For unread counts per thread.
    pub fn thread_read_positions(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
    ) -> Result<BTreeMap<OwnedEventId, StreamPosition>, SyncError> {
        let mut unthreaded = None;
        let mut threads: BTreeMap<OwnedEventId, StreamPosition> = BTreeMap::new();
        for ((_, _, kind, thread), Json(record)) in
            RECEIPTS.scan_prefix(&*self.store, &(room_id.to_owned(), user_id.to_owned()))?
        {
            if ReceiptKind::parse(&kind).is_none() {
                continue;
            }
            match ReceiptThread::from_key(&thread)? {
                ReceiptThread::Unthreaded => {
                    unthreaded = unthreaded.max(Some(record.event_stream));
                }
                ReceiptThread::Main => {}
                ReceiptThread::Thread(root) => {
                    let position = threads.entry(root).or_default();
                    *position = (*position).max(record.event_stream);
                }
            }
        }
        if let Some(unthreaded) = unthreaded {
            for position in threads.values_mut() {
                *position = (*position).max(unthreaded);
            }
        }
        Ok(threads)
    }
}

/// The receipt, if `reader` may see it.
fn visible(
    user: OwnedUserId,
    kind: &str,
    thread: &str,
    record: Record,
    reader: &UserId,
) -> Result<Option<Receipt>, SyncError> {
    let Some(kind) = ReceiptKind::parse(kind) else {
        return Ok(None);
    };
    if kind == ReceiptKind::ReadPrivate && user != reader {
        return Ok(None);
    }
    Ok(Some(Receipt {
        user_id: user,
        kind,
        thread: ReceiptThread::from_key(thread)?,
        event_id: record.event_id,
        ts: record.ts,
        stream: record.stream,
    }))
}
