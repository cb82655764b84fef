//! Reading rooms: events, state, memberships, timeline and topological pagination.
//!
//! Every query is synchronous and takes no lock. Room-scoped queries that need the room
//! ([`Rooms::state_event`], [`Rooms::current_state`], [`Rooms::timeline`],
//! [`Rooms::messages`]) answer [`RoomError::NotFound`] for an unknown room; the membership
//! queries read their indexes and simply find nothing.

use std::ops::Bound;

use ruma::api::Direction;
use ruma::events::StateEventType;
use ruma::events::room::member::MembershipState;
use ruma::{
    CanonicalJsonValue, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId,
    OwnedUserId, RoomId, UInt, UserId,
};

use super::tables::{
    CURRENT_STATE, EVENTS, EXTREMITIES, EventRecord, EventStatus, ROOM_MEMBERSHIPS, ROOMS,
    RoomRecord, STREAM_EVENTS, ShortRoomId, StreamPosition, TIMELINE, TOPOLOGY, TopoPosition,
    USER_MEMBERSHIPS,
};
use super::{RoomError, Rooms};
use crate::rooms::pdu::Pdu;
use crate::rooms::room_version::RoomVersion;
use crate::rooms::short_ids::{ShortEventId, SnapshotId};
use crate::storage::{
    Direction as ScanDirection, Json, KeyCodec, KeyRange, StorageError, catalogue, prefix_successor,
};

/// A room as the store knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomInfo {
    /// The room id.
    pub room_id: OwnedRoomId,
    /// Its version.
    pub version: RoomVersion,
    /// The user who created it.
    pub creator: OwnedUserId,
    /// When it was created here (for rooms joined over federation: when they were joined).
    pub created_at: MilliSecondsSinceUnixEpoch,
    /// Its short id in this database.
    pub short: ShortRoomId,
}

/// An event as stored, with what the server knows about it.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    /// The event (redacted, if a redaction of it was accepted; `unsigned.redacted_because`
    /// then holds the redaction).
    pub pdu: Pdu,
    /// Its room.
    pub room_id: OwnedRoomId,
    /// Its stream position, for events in the timeline ([`EventStatus::Normal`]).
    pub stream: Option<StreamPosition>,
    /// How it stands in the room.
    pub status: EventStatus,
}

impl StoredEvent {
    /// Its position in the room's topological order, for events in the timeline: a
    /// `/messages` token next to it.
    pub fn topo_position(&self) -> Option<TopoPosition> {
        self.stream.map(|stream| TopoPosition {
            depth: u64::from(self.pdu.depth()),
            stream,
        })
    }
}

/// A stored event with its state snapshots.
pub(super) struct Loaded {
    pub(super) event: StoredEvent,
    pub(super) record_state_before: Option<SnapshotId>,
    pub(super) record_state_after: Option<SnapshotId>,
}

/// What an append needs to know of a room.
pub(super) struct RoomHead {
    pub(super) room_id: OwnedRoomId,
    pub(super) short: ShortRoomId,
    pub(super) version: RoomVersion,
    pub(super) current: Option<SnapshotId>,
    /// Forward extremities, most recent (deepest, then newest) first.
    pub(super) extremities: Vec<ShortEventId>,
}

impl Rooms {
    /// The room, if it is known here.
    pub fn room_info(&self, room_id: &RoomId) -> Result<Option<RoomInfo>, RoomError> {
        let Some(record) = self.room_record(room_id)? else {
            return Ok(None);
        };
        Ok(Some(RoomInfo {
            room_id: room_id.to_owned(),
            version: RoomVersion::new(&record.version)?,
            creator: record.creator,
            created_at: MilliSecondsSinceUnixEpoch(
                UInt::try_from(record.created_at).unwrap_or(UInt::MAX),
            ),
            short: record.short,
        }))
    }

    /// The version of the room, if it is known here.
    pub fn room_version(&self, room_id: &RoomId) -> Result<Option<RoomVersion>, RoomError> {
        match self.room_record(room_id)? {
            Some(record) => Ok(Some(RoomVersion::new(&record.version)?)),
            None => Ok(None),
        }
    }

    /// An event by id, whatever its status.
    pub fn get_event(&self, event_id: &EventId) -> Result<Option<StoredEvent>, RoomError> {
        let Some(short) = self.short_ids.event(&*self.store, event_id)? else {
            return Ok(None);
        };
        Ok(self.load(short)?.map(|loaded| loaded.event))
    }

    /// The current state event of `(kind, state_key)` in the room.
    pub fn state_event(
        &self,
        room_id: &RoomId,
        kind: &StateEventType,
        state_key: &str,
    ) -> Result<Option<Pdu>, RoomError> {
        match self.current_snapshot(room_id)? {
            Some(snapshot) => self.state_pdu(snapshot, kind, state_key),
            None => Ok(None),
        }
    }

    /// The current state of the room.
    pub fn current_state(&self, room_id: &RoomId) -> Result<Vec<Pdu>, RoomError> {
        self.snapshot_pdus(self.current_snapshot(room_id)?)
    }

    /// The snapshot of the room's current state: the part of [`Rooms::head`] that state
    /// queries need, without the forward extremities (a scan reads need not pay for).
    fn current_snapshot(&self, room_id: &RoomId) -> Result<Option<SnapshotId>, RoomError> {
        let short = self.existing_room_short(room_id)?;
        Ok(CURRENT_STATE.get(&*self.store, &short)?)
    }

    /// The room's short id; `NotFound` for a room unknown here.
    fn existing_room_short(&self, room_id: &RoomId) -> Result<ShortRoomId, RoomError> {
        self.room_record(room_id)?
            .map(|record| record.short)
            .ok_or(RoomError::NotFound("room"))
    }

    /// The state of the room after `event_id` (including it, for a state event).
    pub fn state_at_event(&self, event_id: &EventId) -> Result<Vec<Pdu>, RoomError> {
        let loaded = self.existing_event(event_id)?;
        self.snapshot_pdus(loaded.record_state_after)
    }

    /// The state of the room before `event_id`: what it was authorised against.
    pub fn state_before_event(&self, event_id: &EventId) -> Result<Vec<Pdu>, RoomError> {
        let loaded = self.existing_event(event_id)?;
        self.snapshot_pdus(loaded.record_state_before)
    }

    /// The events at `(kind, state_key)` for each of `state_keys` in the state before
    /// `event_id`, read one entry at a time from the snapshot rather than materialising the
    /// whole state (a room's thousands of members cost nothing here). Keys without an entry
    /// are left out; the order follows `state_keys`.
    pub fn state_entries_before_event(
        &self,
        event_id: &EventId,
        kind: &StateEventType,
        state_keys: &[&str],
    ) -> Result<Vec<Pdu>, RoomError> {
        let loaded = self.existing_event(event_id)?;
        self.snapshot_entries(loaded.record_state_before, kind, state_keys)
    }

    /// [`state_entries_before_event`](Self::state_entries_before_event) for the state after
    /// `event_id` (including it, for a state event).
    pub fn state_entries_at_event(
        &self,
        event_id: &EventId,
        kind: &StateEventType,
        state_keys: &[&str],
    ) -> Result<Vec<Pdu>, RoomError> {
        let loaded = self.existing_event(event_id)?;
        self.snapshot_entries(loaded.record_state_after, kind, state_keys)
    }

    /// The current membership of `user_id` in the room (`None`: never a member, or the room is
    /// unknown).
    pub fn membership(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> Result<Option<MembershipState>, RoomError> {
        let key = (room_id.to_owned(), user_id.to_owned());
        Ok(ROOM_MEMBERSHIPS
            .get(&*self.store, &key)?
            .map(|entry| entry.membership))
    }

    /// The rooms `user_id` has joined.
    pub fn joined_rooms(&self, user_id: &UserId) -> Result<Vec<OwnedRoomId>, RoomError> {
        Ok(self
            .rooms_of_user(user_id)?
            .into_iter()
            .filter(|(_, membership)| *membership == MembershipState::Join)
            .map(|(room_id, _)| room_id)
            .collect())
    }

    /// Every room `user_id` has a membership in (joined, invited, left, banned, knocking), with
    /// that membership.
    pub fn rooms_of_user(
        &self,
        user_id: &UserId,
    ) -> Result<Vec<(OwnedRoomId, MembershipState)>, RoomError> {
        Ok(USER_MEMBERSHIPS
            .scan_prefix(&*self.store, &(user_id.to_owned(),))?
            .into_iter()
            .map(|((_, room_id), entry)| (room_id, entry.membership))
            .collect())
    }

    /// The users with a membership in the room, with it; only those with `membership` if given.
    pub fn members(
        &self,
        room_id: &RoomId,
        membership: Option<&MembershipState>,
    ) -> Result<Vec<(OwnedUserId, MembershipState)>, RoomError> {
        Ok(ROOM_MEMBERSHIPS
            .scan_prefix(&*self.store, &(room_id.to_owned(),))?
            .into_iter()
            .filter(|(_, entry)| membership.is_none_or(|wanted| entry.membership == *wanted))
            .map(|((_, user_id), entry)| (user_id, entry.membership))
            .collect())
    }

    /// The room's forward extremities, most recent first.
    pub fn forward_extremities(&self, room_id: &RoomId) -> Result<Vec<OwnedEventId>, RoomError> {
        let head = self.existing_head(room_id)?;
        head.extremities
            .into_iter()
            .map(|short| {
                self.short_ids
                    .event_id_of(&*self.store, short)?
                    .ok_or_else(|| corrupt("forward extremity without an event id").into())
            })
            .collect()
    }

    /// Up to `limit` timeline events of the room in stream order, for sync: forward, the
    /// events after `from` (from the start when `None`), oldest first; backward, the events
    /// before `from` (from the end when `None`), newest first. `from` itself is never
    /// included, so the last position returned is the token to continue from.
    pub fn timeline(
        &self,
        room_id: &RoomId,
        from: Option<StreamPosition>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<(StreamPosition, Pdu)>, RoomError> {
        let short = self.existing_room_short(room_id)?;
        let prefix = (short,).to_key_bytes();
        let from = from.map(|from| (short, from).to_key_bytes());
        let (range, scan) = paginate(&prefix, from, direction);
        TIMELINE
            .collect(&*self.store, range, scan, Some(limit))?
            .into_iter()
            .map(|((_, stream), short)| Ok((stream, self.existing_pdu(short)?)))
            .collect()
    }

    /// Up to `limit` events of the room in topological order `(depth, stream)`, for
    /// `/messages`: forward, the events after `from` (from the start when `None`), in order;
    /// backward, the events before `from` (from the end when `None`), in reverse order. `from`
    /// itself is never included.
    pub fn messages(
        &self,
        room_id: &RoomId,
        from: Option<TopoPosition>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<(TopoPosition, Pdu)>, RoomError> {
        let short = self.existing_room_short(room_id)?;
        let prefix = (short,).to_key_bytes();
        let from = from.map(|from| (short, from.depth, from.stream).to_key_bytes());
        let (range, scan) = paginate(&prefix, from, direction);
        TOPOLOGY
            .collect(&*self.store, range, scan, Some(limit))?
            .into_iter()
            .map(|((_, depth, stream), short)| {
                Ok((TopoPosition { depth, stream }, self.existing_pdu(short)?))
            })
            .collect()
    }

    /// Up to `limit` events of every room after stream position `after`, in stream order,
    /// but none after [`Rooms::current_stream_position`]: for the consumers that follow the
    /// whole stream (push rule evaluation, the search index, federation senders), each of
    /// which keeps the last position it has processed.
    pub fn events_after(
        &self,
        after: StreamPosition,
        limit: usize,
    ) -> Result<Vec<(StreamPosition, StoredEvent)>, RoomError> {
        let published = self.current_stream_position();
        if after >= published {
            return Ok(Vec::new());
        }
        let start = after.0.saturating_add(1);
        let range = KeyRange::half_open(
            StreamPosition(start).to_key_bytes(),
            StreamPosition(published.0.saturating_add(1)).to_key_bytes(),
        );
        STREAM_EVENTS
            .collect(&*self.store, range, ScanDirection::Forward, Some(limit))?
            .into_iter()
            .map(|(stream, short)| {
                let loaded = self.load(short)?.ok_or_else(|| {
                    corrupt(format!("stream index points at missing event {}", short.0))
                })?;
                Ok((stream, loaded.event))
            })
            .collect()
    }

    // Helpers of the other modules.

    pub(super) fn room_record(&self, room_id: &RoomId) -> Result<Option<RoomRecord>, RoomError> {
        Ok(ROOMS
            .get(&*self.store, &room_id.to_owned())?
            .map(|Json(record)| record))
    }

    /// The head of the room, if it is known.
    pub(super) fn head(&self, room_id: &RoomId) -> Result<Option<RoomHead>, RoomError> {
        let Some(record) = self.room_record(room_id)? else {
            return Ok(None);
        };
        let version = RoomVersion::new(&record.version)?;
        let current = CURRENT_STATE.get(&*self.store, &record.short)?;
        let mut extremities = EXTREMITIES.scan_prefix(&*self.store, &(record.short,))?;
        extremities.sort_by(|((_, a), a_depth), ((_, b), b_depth)| (b_depth, b).cmp(&(a_depth, a)));
        Ok(Some(RoomHead {
            room_id: room_id.to_owned(),
            short: record.short,
            version,
            current,
            extremities: extremities
                .into_iter()
                .map(|((_, event), _)| event)
                .collect(),
        }))
    }

    fn existing_head(&self, room_id: &RoomId) -> Result<RoomHead, RoomError> {
        self.head(room_id)?.ok_or(RoomError::NotFound("room"))
    }

    fn existing_event(&self, event_id: &EventId) -> Result<Loaded, RoomError> {
        let short = self
            .short_ids
            .event(&*self.store, event_id)?
            .ok_or(RoomError::NotFound("event"))?;
        self.load(short)?.ok_or(RoomError::NotFound("event"))
    }

    /// The stored event behind `short`, if there is one.
    pub(super) fn load(&self, short: ShortEventId) -> Result<Option<Loaded>, RoomError> {
        match EVENTS.get(&*self.store, &short)? {
            Some(Json(record)) => parse_record(record).map(Some),
            None => Ok(None),
        }
    }

    /// The stored event behind `short`, which an index points at: missing means corruption.
    pub(super) fn existing_pdu(&self, short: ShortEventId) -> Result<Pdu, RoomError> {
        self.load(short)?
            .map(|loaded| loaded.event.pdu)
            .ok_or_else(|| corrupt(format!("index points at missing event {}", short.0)).into())
    }

    /// The event at `(kind, state_key)` in a snapshot.
    pub(super) fn state_pdu(
        &self,
        snapshot: SnapshotId,
        kind: &StateEventType,
        state_key: &str,
    ) -> Result<Option<Pdu>, RoomError> {
        let Some(key) = self.short_ids.state_key(&*self.store, kind, state_key)? else {
            return Ok(None);
        };
        match self.states.get(&*self.store, snapshot, key)? {
            Some(event) => self.existing_pdu(event).map(Some),
            None => Ok(None),
        }
    }

    fn snapshot_entries(
        &self,
        snapshot: Option<SnapshotId>,
        kind: &StateEventType,
        state_keys: &[&str],
    ) -> Result<Vec<Pdu>, RoomError> {
        let Some(snapshot) = snapshot else {
            return Ok(Vec::new());
        };
        let mut pdus = Vec::with_capacity(state_keys.len());
        for state_key in state_keys {
            if let Some(pdu) = self.state_pdu(snapshot, kind, state_key)? {
                pdus.push(pdu);
            }
        }
        Ok(pdus)
    }

    fn snapshot_pdus(&self, snapshot: Option<SnapshotId>) -> Result<Vec<Pdu>, RoomError> {
        let Some(snapshot) = snapshot else {
            return Ok(Vec::new());
        };
        self.states
            .load(&*self.store, snapshot)?
            .values()
            .map(|event| self.existing_pdu(*event))
            .collect()
    }
}

/// Parses a stored record into the event and its metadata.
pub(super) fn parse_record(record: EventRecord) -> Result<Loaded, RoomError> {
    let version = RoomVersion::new(&record.room_version)
        .map_err(|err| corrupt(format!("stored event: {err}")))?;
    let parsed = match record.reference_hash {
        Some(reference_hash) => Pdu::from_stored(record.event, reference_hash, &version),
        None => Pdu::from_canonical(record.event, &version),
    };
    let mut pdu = parsed.map_err(|err| corrupt(format!("stored event: {err}")))?;
    for (key, value) in record.unsigned.into_iter().flatten() {
        pdu.set_unsigned(key, value);
    }
    pdu.set_rejected(matches!(record.status, EventStatus::Rejected(_)));
    Ok(Loaded {
        event: StoredEvent {
            pdu,
            room_id: record.room_id,
            stream: record.stream,
            status: record.status,
        },
        record_state_before: record.state_before.map(SnapshotId::from),
        record_state_after: record.state_after.map(SnapshotId::from),
    })
}

/// Whether a stored event was redacted already.
pub(super) fn is_redacted(record: &EventRecord) -> bool {
    record.unsigned.as_ref().is_some_and(|unsigned| {
        matches!(
            unsigned.get("redacted_because"),
            Some(CanonicalJsonValue::Object(_))
        )
    })
}

/// The key range and scan direction of a page of a per-room index whose keys start with
/// `prefix`, from the exclusive key `from`.
fn paginate(
    prefix: &[u8],
    from: Option<Vec<u8>>,
    direction: Direction,
) -> (KeyRange, ScanDirection) {
    let prefix_end = match prefix_successor(prefix) {
        Some(end) => Bound::Excluded(end),
        None => Bound::Unbounded,
    };
    let prefix_start = Bound::Included(prefix.to_vec());
    match (direction, from) {
        (Direction::Forward, from) => (
            KeyRange {
                start: from.map_or(prefix_start, Bound::Excluded),
                end: prefix_end,
            },
            ScanDirection::Forward,
        ),
        (Direction::Backward, from) => (
            KeyRange {
                start: prefix_start,
                end: from.map_or(prefix_end, Bound::Excluded),
            },
            ScanDirection::Reverse,
        ),
    }
}

pub(super) fn corrupt(reason: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        cf: catalogue::ROOM_EVENTS.name,
        what: "value",
        reason: reason.into(),
    }
}
