//! Events received from other servers: the checks the specification makes on receipt of a PDU,
//! and filing the event in the room graph by their verdict.
//!
//! The federation layer has checked the event's format, signatures and hashes (the first three
//! checks). [`Rooms::append_remote`] makes the other three, in order:
//! 4. auth against the event's own `auth_events` (which must all be stored, outliers or not);
//! 5. auth against the state before the event: the state after its one prev event, or the
//!    resolution of the states after its prev events (or the state another server gave for it,
//!    [`Rooms::append_remote_with_state`]);
//! 6. auth against the room's current state.
//!
//! Failing 4 or 5 rejects the event: it is stored as [`EventStatus::Rejected`] (so it is not
//! fetched again) with the state before it as its state after (a rejected state event changes
//! no state, yet later events may name it as a prev event), and enters no index. Failing 6
//! soft-fails it: stored with its state, but not in the timeline, not a forward extremity,
//! never shown to clients. An accepted event is written in one batch through the same path as a
//! local event (timeline, stream, topology, relations, extremities, memberships); when it does
//! not simply follow every forward extremity, the room's current state becomes the resolution
//! of the states after all forward extremities, and the membership indexes follow it.
//!
//! `outliers.rs` stores events without a place in the graph (auth chains, fetched state) and
//! the state of a room joined through another server; `serve.rs` answers what other servers
//! ask of the graph; `state.rs` holds the state work (states by id, resolution, membership
//! indexes).

mod history;
mod out_of_room;
mod outliers;
mod serve;
mod state;

use std::sync::Arc;

use ruma::events::{StateEventType, TimelineEventType};
use ruma::{CanonicalJsonValue, EventId, OwnedEventId, RoomId};

pub use self::out_of_room::{NewOutOfRoomMembership, OutOfRoomMembership};
use self::state::EventCache;
use super::append::{PendingDurability, Persist, RoomTarget, StateView};
use super::query::RoomHead;
use super::tables::{
    CURRENT_STATE, EVENTS, EXTREMITIES, EventRecord, EventStatus, PREV_REFERENCES, RoomRecord,
    StreamPosition,
};
use super::{RoomError, RoomGuard, Rooms};
use crate::rooms::auth::{check_auth, check_auth_against_auth_events};
use crate::rooms::pdu::Pdu;
use crate::rooms::resolve::StateMap;
use crate::rooms::room_version::RoomVersion;
use crate::rooms::short_ids::{ShortEventId, SnapshotId};
use crate::storage::Json;

/// A room state by ids: `(type, state key)` -> event id.
type IdState = StateMap<OwnedEventId>;

/// What became of a received event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteOutcome {
    /// The event.
    pub event_id: OwnedEventId,
    /// Its verdict: [`EventStatus::Normal`] (accepted), [`EventStatus::SoftFailed`] or
    /// [`EventStatus::Rejected`].
    pub status: EventStatus,
    /// Its stream position, if it entered the timeline.
    pub stream: Option<StreamPosition>,
    /// Whether it was stored already with this verdict, so that nothing was written.
    pub duplicate: bool,
}

/// The state before a received event.
enum StateBefore {
    /// A stored snapshot: the state after its one prev event, or after every prev event when
    /// they all have the same.
    Stored(Option<SnapshotId>),
    /// Resolved here from the states after several prev events, or given by another server;
    /// saved with the event.
    Computed(IdState),
}

/// How a received event is placed.
enum Mode {
    /// A timeline event, with the state before it given by another server or not.
    Timeline(Option<IdState>),
    /// The join event of a room joined through another server: `state` is the state before it,
    /// the join becomes the only forward extremity and its state after the current state.
    Join {
        state: IdState,
        /// The room record to create, for a room not known here yet.
        new_room: Option<RoomRecord>,
    },
}

/// What the room's current state becomes once an accepted event is written.
enum NewCurrent {
    /// The event's state after: it follows every forward extremity.
    EventStateAfter,
    /// A stored snapshot (the state after the one remaining extremity, or unchanged).
    Snapshot(Option<SnapshotId>),
    /// The resolution of the states after the forward extremities.
    Resolved(IdState),
}

impl Rooms {
    /// Checks a PDU received from another server and files it by the verdict (see the module
    /// documentation): accepted, soft-failed or rejected. The caller has checked its format,
    /// signatures and hashes (storing the redacted form on a hash mismatch).
    ///
    /// `guard` must be this service's lock of the event's room, which must be known here.
    /// Receiving an event already stored returns its stored verdict (`duplicate`); an event
    /// stored as an outlier is checked and, if accepted, takes its place in the graph.
    ///
    /// Errors with [`RoomError::MissingEvents`] (writing nothing) when auth events are not
    /// stored, or prev events are unknown or known only as outliers: the caller fetches them
    /// (`/event_auth`, `/get_missing_events`) and retries, or fetches the state before the
    /// event and calls [`Rooms::append_remote_with_state`].
    ///
    /// Returns once the event is durable and, when accepted, published to the stream's
    /// waiters. Synchronous: call it from `spawn_blocking`.
    pub fn append_remote(&self, guard: &RoomGuard, pdu: Pdu) -> Result<RemoteOutcome, RoomError> {
        self.check_guard(guard, pdu.room_id())?;
        let head = self
            .head(pdu.room_id())?
            .ok_or(RoomError::NotFound("room"))?;
        self.receive(head, pdu, Mode::Timeline(None))
    }

    /// [`Rooms::append_remote`] for an event whose prev events are not all here, with `state`,
    /// the state before it as another server gave it (`/state_ids` then `/event`), in place of
    /// the state its prev events would give.
    ///
    /// Each state event is first stored as an outlier, checked against its own auth events
    /// (which must be stored: [`RoomError::MissingEvents`] otherwise); those that fail are
    /// left out of the state. Two state events for one `(type, state key)`, a non-state event
    /// or an event of another room is [`RoomError::InvalidRemoteEvents`].
    pub fn append_remote_with_state(
        &self,
        guard: &RoomGuard,
        pdu: Pdu,
        state: Vec<Pdu>,
    ) -> Result<RemoteOutcome, RoomError> {
        self.check_guard(guard, pdu.room_id())?;
        let head = self
            .head(pdu.room_id())?
            .ok_or(RoomError::NotFound("room"))?;
        let state = self.store_state(&head.room_id, &head.version, state)?;
        self.receive(head, pdu, Mode::Timeline(Some(state)))
    }

    /// The auth events of `pdu` that are stored (for check 4), and the ids of those that are
    /// not.
    fn auth_events_of(
        &self,
        pdu: &Pdu,
        version: &RoomVersion,
        events: &EventCache<'_>,
    ) -> Result<(Vec<Arc<Pdu>>, Vec<OwnedEventId>), RoomError> {
        let mut missing = Vec::new();
        let mut auth_events = Vec::new();
        for auth_id in required_auth_events(pdu, version) {
            match events.get_stored(&auth_id) {
                Some(event) => auth_events.push(event),
                None => missing.push(auth_id),
            }
        }
        events.finish()?;
        Ok((auth_events, missing))
    }

    /// The state before `pdu` from the states after its prev events: the stored snapshot they
    /// share, or their resolution. Prev events not in the graph go to `missing`; one of another
    /// room sets `rejection` (the state is then empty, as nothing will be checked against it).
    fn state_after_prevs(
        &self,
        head: &RoomHead,
        pdu: &Pdu,
        events: &EventCache<'_>,
        missing: &mut Vec<OwnedEventId>,
        rejection: &mut Option<String>,
    ) -> Result<StateBefore, RoomError> {
        let mut snapshots: Vec<Option<SnapshotId>> = Vec::new();
        for prev in pdu.prev_events() {
            match self.prev_state(prev, &head.room_id)? {
                PrevState::Usable(snapshot) => {
                    if !snapshots.contains(&snapshot) {
                        snapshots.push(snapshot);
                    }
                }
                PrevState::Unknown => missing.push(prev.clone()),
                PrevState::OtherRoom => {
                    *rejection = Some(format!("prev event {prev} is in another room"));
                }
            }
        }
        Ok(match (rejection.is_some(), snapshots.as_slice()) {
            (true, _) | (false, []) => StateBefore::Stored(None),
            (false, [one]) => StateBefore::Stored(*one),
            (false, many) => {
                let sets = many
                    .iter()
                    .map(|snapshot| self.snapshot_ids(*snapshot))
                    .collect::<Result<Vec<_>, _>>()?;
                StateBefore::Computed(self.resolve_sets(&head.version, &sets, events)?)
            }
        })
    }

    /// The spec's checks 4 (against its own auth events) and 5 (against the state before
    /// it): why `pdu` is rejected, if it is.
    fn check_before(
        &self,
        version: &RoomVersion,
        pdu: &Pdu,
        auth_events: &[Arc<Pdu>],
        state_before: &StateBefore,
        events: &EventCache<'_>,
    ) -> Result<Option<String>, RoomError> {
        if let Err(err) = check_auth_against_auth_events(version, pdu, auth_events) {
            return Ok(Some(err.reason()));
        }
        let verdict = match state_before {
            StateBefore::Stored(snapshot) => {
                let view = StateView::new(self, *snapshot);
                let verdict = check_auth(version, pdu, |kind: &StateEventType, key: &str| {
                    view.get(kind, key)
                });
                view.finish()?;
                verdict
            }
            StateBefore::Computed(state) => {
                let verdict = check_auth(version, pdu, |kind: &StateEventType, key: &str| {
                    let event_id = state.get(&(kind.clone(), key.to_owned()))?;
                    events.get_stored(event_id)
                });
                events.finish()?;
                verdict
            }
        };
        Ok(verdict.err().map(|err| err.reason()))
    }

    /// The checks on receipt and the write of their verdict, for a room whose lock is held.
    fn receive(&self, head: RoomHead, pdu: Pdu, mode: Mode) -> Result<RemoteOutcome, RoomError> {
        if let Some((_, record)) = self.stored_record(pdu.event_id())?
            && record.status != EventStatus::Outlier
        {
            if record.room_id != head.room_id {
                return Err(RoomError::InvalidRemoteEvents(format!(
                    "{} is an event of {}, not of {}",
                    pdu.event_id(),
                    record.room_id,
                    head.room_id
                )));
            }
            return Ok(RemoteOutcome {
                event_id: pdu.event_id().to_owned(),
                status: record.status,
                stream: record.stream,
                duplicate: true,
            });
        }

        let version = head.version.clone();
        let events = EventCache::new(self, Some(Arc::new(pdu.clone())));
        let (auth_events, mut missing) = self.auth_events_of(&pdu, &version, &events)?;

        let mut rejection = None;
        let state_before = match &mode {
            Mode::Timeline(Some(state)) | Mode::Join { state, .. } => {
                StateBefore::Computed(state.clone())
            }
            Mode::Timeline(None) => {
                self.state_after_prevs(&head, &pdu, &events, &mut missing, &mut rejection)?
            }
        };
        if !missing.is_empty() {
            missing.sort();
            missing.dedup();
            return Err(RoomError::MissingEvents(missing));
        }

        if rejection.is_none() {
            rejection = self.check_before(&version, &pdu, &auth_events, &state_before, &events)?;
        }
        let is_join = matches!(mode, Mode::Join { .. });
        if let Some(reason) = rejection {
            if is_join {
                return Err(RoomError::InvalidRemoteEvents(format!(
                    "the join event {} is not authorised: {reason}",
                    pdu.event_id()
                )));
            }
            return self.store_unaccepted(&head, &pdu, state_before, EventStatus::Rejected(reason));
        }
        // Check 6: against the current state (unless that is the state before it). The state of
        // a room being joined is the state given with the join.
        let state_is_current =
            matches!(state_before, StateBefore::Stored(snapshot) if snapshot == head.current);
        if !is_join
            && !state_is_current
            && !self.passes_current_state(&head, &pdu, &mode, &events)?
        {
            return self.store_unaccepted(&head, &pdu, state_before, EventStatus::SoftFailed);
        }
        self.accept(head, pdu, state_before, mode, &events)
    }

    /// The soft-fail check: whether `pdu` passes the auth rules against the room's current
    /// state.
    ///
    /// For an event whose state before was given by another server (a gap in the graph here),
    /// the current state checked against is the resolution of the states after the forward
    /// extremities and the given state, so that what the gap hides (a ban we have not seen yet,
    /// or the join of a user we have not seen) counts too.
    fn passes_current_state(
        &self,
        head: &RoomHead,
        pdu: &Pdu,
        mode: &Mode,
        events: &EventCache<'_>,
    ) -> Result<bool, RoomError> {
        if let Mode::Timeline(Some(given)) = mode {
            let mut sets = head
                .extremities
                .iter()
                .map(|extremity| {
                    self.state_after_of(*extremity)
                        .and_then(|snapshot| self.snapshot_ids(snapshot))
                })
                .collect::<Result<Vec<_>, _>>()?;
            sets.push(given.clone());
            match self.resolve_sets(&head.version, &sets, events) {
                Ok(state) => {
                    let verdict =
                        check_auth(&head.version, pdu, |kind: &StateEventType, key: &str| {
                            let event_id = state.get(&(kind.clone(), key.to_owned()))?;
                            events.get_stored(event_id)
                        });
                    events.finish()?;
                    return Ok(verdict.is_ok());
                }
                // Version 1 forks that conflict: check against our current state alone.
                Err(RoomError::InvalidRemoteEvents(_)) => {}
                Err(err) => return Err(err),
            }
        }
        let view = StateView::new(self, head.current);
        let verdict = check_auth(&head.version, pdu, |kind: &StateEventType, key: &str| {
            view.get(kind, key)
        });
        view.finish()?;
        Ok(verdict.is_ok())
    }

    /// Writes a rejected or soft-failed event: its record with its state, and nothing else.
    fn store_unaccepted(
        &self,
        head: &RoomHead,
        pdu: &Pdu,
        state_before: StateBefore,
        status: EventStatus,
    ) -> Result<RemoteOutcome, RoomError> {
        let store = &*self.store;
        let mut batch = self.short_ids.begin();
        let short = self
            .short_ids
            .get_or_create_event(store, &mut batch, pdu.event_id())?;
        let before = match state_before {
            StateBefore::Stored(snapshot) => snapshot,
            StateBefore::Computed(state) => self.save_id_state(&mut batch, head.current, &state)?,
        };
        // A rejected state event changes nothing: later events naming it as a prev event see
        // the state before it.
        let after = match (pdu.state_key(), &status) {
            (Some(state_key), EventStatus::SoftFailed) => {
                let kind = StateEventType::from(pdu.kind().to_string());
                let key = self
                    .short_ids
                    .get_or_create_state_key(store, &mut batch, &kind, state_key)?;
                Some(
                    self.states
                        .save_delta(store, &mut batch, before, &[(key, Some(short))])?,
                )
            }
            _ => before,
        };
        let record = event_record(head, pdu, status.clone(), None, before, after);
        EVENTS.put(batch.write_batch(), &short, &Json(record));
        let ticket = batch.commit_unsynced(store, &self.group_sync)?;
        self.group_sync.wait(store, ticket)?;
        Ok(RemoteOutcome {
            event_id: pdu.event_id().to_owned(),
            status,
            stream: None,
            duplicate: false,
        })
    }

    /// Writes an accepted event in one batch, moves the forward extremities and the current
    /// state, then makes it durable and publishes it.
    fn accept(
        &self,
        head: RoomHead,
        pdu: Pdu,
        state_before: StateBefore,
        mode: Mode,
        events: &EventCache<'_>,
    ) -> Result<RemoteOutcome, RoomError> {
        let store = &*self.store;
        let (given_state, new_room) = match mode {
            Mode::Timeline(given) => (given.is_some(), None),
            Mode::Join { new_room, .. } => (true, Some(new_room)),
        };
        let is_join = new_room.is_some();
        let mut prev_shorts = Vec::new();
        for prev in pdu.prev_events() {
            if let Some(short) = self.short_ids.event(store, prev)? {
                prev_shorts.push(short);
            }
        }
        // The forward extremities besides this event, and whether it is one: not if an accepted
        // event already names it as a prev event (it arrived after a child).
        let others: Vec<ShortEventId> = if is_join {
            Vec::new()
        } else {
            head.extremities
                .iter()
                .filter(|extremity| !prev_shorts.contains(extremity))
                .copied()
                .collect()
        };
        let is_extremity =
            is_join || !PREV_REFERENCES.contains(store, &pdu.event_id().to_owned())?;
        let new_current = if is_extremity && others.is_empty() {
            NewCurrent::EventStateAfter
        } else if !is_extremity && (others.is_empty() || others == head.extremities) {
            NewCurrent::Snapshot(head.current)
        } else if let (false, [only]) = (is_extremity, others.as_slice()) {
            NewCurrent::Snapshot(self.state_after_of(*only)?)
        } else {
            let mut sets = others
                .iter()
                .map(|extremity| {
                    self.state_after_of(*extremity)
                        .and_then(|s| self.snapshot_ids(s))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if is_extremity {
                let mut after = match &state_before {
                    StateBefore::Stored(snapshot) => self.snapshot_ids(*snapshot)?,
                    StateBefore::Computed(state) => state.clone(),
                };
                if let Some(state_key) = pdu.state_key() {
                    after.insert(
                        (pdu.kind().to_string().into(), state_key.to_owned()),
                        pdu.event_id().to_owned(),
                    );
                }
                sets.push(after);
            }
            match self.resolve_sets(&head.version, &sets, events) {
                Ok(resolved) => NewCurrent::Resolved(resolved),
                // Version 1 forks that conflict cannot be resolved here: the newest branch wins.
                Err(RoomError::InvalidRemoteEvents(_)) if is_extremity => {
                    NewCurrent::EventStateAfter
                }
                Err(err) => return Err(err),
            }
        };
        let redaction = if is_join {
            None
        } else {
            let view = StateView::new(self, head.current);
            let effect = match self.redaction_effect(&head, &view, &pdu) {
                Ok(effect) => effect,
                // The redaction is accepted but not applied: its sender may not redact the
                // target, or the target is another room's event.
                Err(RoomError::Forbidden(_) | RoomError::InvalidParam(_)) => None,
                Err(err) => return Err(err),
            };
            view.finish()?;
            effect
        };

        // From here to the commit the allocation lock is held: nothing slow.
        let mut batch = self.short_ids.begin();
        let fast_path = matches!(new_current, NewCurrent::EventStateAfter)
            && matches!(state_before, StateBefore::Stored(snapshot) if snapshot == head.current);
        let before = match state_before {
            StateBefore::Stored(snapshot) => snapshot,
            StateBefore::Computed(state) => self.save_id_state(&mut batch, head.current, &state)?,
        };
        let replaced: Vec<ShortEventId> = if is_join {
            head.extremities.clone()
        } else {
            prev_shorts
        };
        let room = match new_room.flatten() {
            Some(record) => RoomTarget::New(record),
            None => RoomTarget::Existing(head.short),
        };
        let persisted = self.persist_into(
            &mut batch,
            Persist {
                room_id: &head.room_id,
                room,
                version: &head.version,
                state_before: before,
                replaced_extremities: &replaced,
                pdu: &pdu,
                redaction,
                transaction: None,
            },
        )?;
        let room_short = persisted.room_short;
        if !is_extremity {
            EXTREMITIES.delete(batch.write_batch(), &(room_short, persisted.short));
        }
        if given_state {
            // Prev events not in the graph yet may arrive later: they are no extremities then.
            for prev in pdu.prev_events() {
                if !self.has_state(prev)? {
                    PREV_REFERENCES.put(batch.write_batch(), prev, &persisted.short);
                }
            }
        }
        let current = match new_current {
            NewCurrent::EventStateAfter => persisted.state_after,
            NewCurrent::Snapshot(snapshot) => snapshot,
            NewCurrent::Resolved(state) => {
                self.save_id_state(&mut batch, persisted.state_after, &state)?
            }
        };
        match current {
            Some(snapshot) => CURRENT_STATE.put(batch.write_batch(), &room_short, &snapshot),
            None => CURRENT_STATE.delete(batch.write_batch(), &room_short),
        }
        if !fast_path {
            self.follow_memberships(&mut batch, &head, current, &pdu, persisted.short)?;
        }
        let ticket = batch.commit_unsynced(store, &self.group_sync)?;
        self.make_durable(PendingDurability {
            stream: persisted.stream,
            ticket,
        })?;
        Ok(RemoteOutcome {
            event_id: pdu.event_id().to_owned(),
            status: EventStatus::Normal,
            stream: Some(persisted.stream),
            duplicate: false,
        })
    }

    /// The stored record of an event, with its short id.
    fn stored_record(
        &self,
        event_id: &EventId,
    ) -> Result<Option<(ShortEventId, EventRecord)>, RoomError> {
        let Some(short) = self.short_ids.event(&*self.store, event_id)? else {
            return Ok(None);
        };
        Ok(EVENTS
            .get(&*self.store, &short)?
            .map(|Json(record)| (short, record)))
    }

    /// Whether an event is stored with a state (in the graph, not an outlier).
    fn has_state(&self, event_id: &EventId) -> Result<bool, RoomError> {
        Ok(self
            .stored_record(event_id)?
            .is_some_and(|(_, record)| record_has_state(&record)))
    }

    /// What a prev event gives the state before its child.
    fn prev_state(&self, prev: &EventId, room_id: &RoomId) -> Result<PrevState, RoomError> {
        Ok(match self.stored_record(prev)? {
            Some((_, record)) if record.room_id != room_id => PrevState::OtherRoom,
            Some((_, record)) if record_has_state(&record) => {
                PrevState::Usable(record.state_after.map(SnapshotId::from))
            }
            _ => PrevState::Unknown,
        })
    }
}

/// What a prev event gives the state before its child.
enum PrevState {
    /// Its state after.
    Usable(Option<SnapshotId>),
    /// Not stored, or stored without a state (an outlier).
    Unknown,
    /// An event of another room: its child is rejected.
    OtherRoom,
}

/// Whether a stored event has a place in the graph, with the state after it.
fn record_has_state(record: &EventRecord) -> bool {
    record.status != EventStatus::Outlier && record.state_after.is_some()
}

/// The record of a received event.
fn event_record(
    head: &RoomHead,
    pdu: &Pdu,
    status: EventStatus,
    stream: Option<StreamPosition>,
    state_before: Option<SnapshotId>,
    state_after: Option<SnapshotId>,
) -> EventRecord {
    let mut event = pdu.json().clone();
    let unsigned = match event.remove("unsigned") {
        Some(CanonicalJsonValue::Object(unsigned)) => Some(unsigned),
        _ => None,
    };
    EventRecord {
        room_id: head.room_id.clone(),
        room_version: head.version.id().clone(),
        status,
        stream,
        state_before: state_before.map(Into::into),
        state_after: state_after.map(Into::into),
        event,
        reference_hash: Some(pdu.reference_hash().to_owned()),
        unsigned,
    }
}

/// The events the auth rules need to check `pdu` against its auth events: its `auth_events`,
/// and in rooms whose id is the create event's (v12), that create event, which events there
/// do not list.
fn required_auth_events(pdu: &Pdu, version: &RoomVersion) -> Vec<OwnedEventId> {
    let mut ids = pdu.auth_events().to_vec();
    if version
        .rules()
        .authorization
        .room_create_event_id_as_room_id
        && *pdu.kind() != TimelineEventType::RoomCreate
        && let Ok(create) = OwnedEventId::try_from(format!("${}", pdu.room_id().strip_sigil()))
        && !ids.contains(&create)
    {
        ids.push(create);
    }
    ids
}
