//! Outliers (events known without their place in the room graph: auth chains, state fetched
//! from another server) and joining a room through another server.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use ruma::events::{StateEventType, TimelineEventType};
use ruma::{EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, RoomId};

use super::super::append::room_creators;
use super::super::query::RoomHead;
use super::super::tables::{EVENTS, EventRecord, EventStatus, RoomRecord, ShortRoomId};
use super::{IdState, Mode, RemoteOutcome, required_auth_events};
use crate::rooms::auth::check_auth_against_auth_events;
use crate::rooms::graph::{RoomError, RoomGuard, Rooms};
use crate::rooms::pdu::Pdu;
use crate::rooms::room_version::RoomVersion;
use crate::storage::Json;

/// What to do with an outlier whose auth events are neither given nor stored.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MissingAuth {
    /// Write nothing and report them ([`RoomError::MissingEvents`]).
    Report,
    /// Leave the event out (it cannot be checked, so it is not stored).
    Drop,
}

impl Rooms {
    /// Stores `pdu`, an event of a known room met outside the timeline (an auth event fetched
    /// with `/event_auth`, a state event from `/state`), as an outlier: no state, not in the
    /// timeline, no stream position. It is checked against its own auth events, which must be
    /// stored ([`RoomError::MissingEvents`] otherwise), and stored as
    /// [`EventStatus::Rejected`] if it fails them.
    ///
    /// Idempotent: an event stored already keeps its record. Returns its status. An outlier
    /// later received as a timeline event ([`Rooms::append_remote`]) is checked again and
    /// takes its place in the graph. Synchronous: call it from `spawn_blocking`.
    pub fn persist_outlier(&self, guard: &RoomGuard, pdu: Pdu) -> Result<EventStatus, RoomError> {
        let event_id = pdu.event_id().to_owned();
        let statuses = self.persist_outliers(guard, vec![pdu])?;
        statuses
            .into_iter()
            .find(|(id, _)| *id == event_id)
            .map(|(_, status)| status)
            .ok_or_else(|| RoomError::MissingEvents(vec![event_id]))
    }

    /// [`Rooms::persist_outlier`] for several events of the room of `guard` in one batch, in any
    /// order: each is checked after those of its auth events that are among them (an auth
    /// chain from `/event_auth` or `/state`). Returns each event's status.
    pub fn persist_outliers(
        &self,
        guard: &RoomGuard,
        pdus: Vec<Pdu>,
    ) -> Result<Vec<(OwnedEventId, EventStatus)>, RoomError> {
        let room_id = guard.room_id().to_owned();
        self.check_guard(guard, &room_id)?;
        let version = self
            .room_version(&room_id)?
            .ok_or(RoomError::NotFound("room"))?;
        let statuses = self.store_outliers(&room_id, &version, pdus, MissingAuth::Report)?;
        let mut statuses: Vec<_> = statuses.into_iter().collect();
        statuses.sort_by(|(a, _), (b, _)| a.cmp(b));
        Ok(statuses)
    }

    /// Stores a room joined through another server: `state` (the state before the join, as
    /// the resident server's `send_join` answered) and `auth_chain` as outliers, each checked
    /// against its own auth events (those that fail, or whose auth events are nowhere, are left
    /// out of the state), then `join_event` with that state as the state before it, as the
    /// room's only forward extremity; the room's current state becomes the state after it.
    ///
    /// The caller holds the room's lock (`guard`, taken with [`Rooms::lock`] before the room
    /// exists here). A room not known here is created, with `room_version`; a known one (a
    /// rejoin) keeps its history and moves to the new state. Errors with
    /// [`RoomError::InvalidRemoteEvents`] when the state has no acceptable create event,
    /// events of another room, or does not authorise the join. Synchronous: call it from
    /// `spawn_blocking`.
    pub fn persist_joined_room(
        &self,
        guard: &RoomGuard,
        room_version: &RoomVersion,
        state: Vec<Pdu>,
        auth_chain: Vec<Pdu>,
        join_event: Pdu,
    ) -> Result<RemoteOutcome, RoomError> {
        let room_id = join_event.room_id().to_owned();
        self.check_guard(guard, &room_id)?;
        if *join_event.kind() != TimelineEventType::RoomMember {
            return Err(RoomError::InvalidRemoteEvents(format!(
                "{} is not a member event",
                join_event.event_id()
            )));
        }
        let create = state
            .iter()
            .find(|pdu| *pdu.kind() == TimelineEventType::RoomCreate && pdu.state_key() == Some(""))
            .cloned()
            .ok_or_else(|| {
                RoomError::InvalidRemoteEvents("the room state has no create event".to_owned())
            })?;
        let head = match self.head(&room_id)? {
            Some(head) if head.version != *room_version => {
                return Err(RoomError::InvalidRemoteEvents(format!(
                    "{room_id} is a room v{} here, not v{room_version}",
                    head.version
                )));
            }
            Some(head) => (head, None),
            None => {
                let creator = room_creators(&create, &room_version.rules().authorization)
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| create.sender().to_owned());
                let record = RoomRecord {
                    // Allocated when the join is written.
                    short: ShortRoomId(0),
                    version: room_version.id().clone(),
                    creator,
                    created_at: u64::from(MilliSecondsSinceUnixEpoch::now().0),
                };
                let head = RoomHead {
                    room_id: room_id.clone(),
                    short: ShortRoomId(0),
                    version: room_version.clone(),
                    current: None,
                    extremities: Vec::new(),
                };
                (head, Some(record))
            }
        };
        let (head, new_room) = head;

        let mut all = auth_chain;
        all.extend(state.iter().cloned());
        let statuses = self.store_outliers(&room_id, room_version, all, MissingAuth::Drop)?;
        let state = state_map(&state, &statuses)?;
        if !state.contains_key(&(StateEventType::RoomCreate, String::new())) {
            return Err(RoomError::InvalidRemoteEvents(format!(
                "the create event {} fails the auth rules",
                create.event_id()
            )));
        }
        self.receive(head, join_event, Mode::Join { state, new_room })
    }

    /// Stores `state` (the state before an event, given by another server) as outliers and
    /// returns it without the events that fail their auth events.
    pub(super) fn store_state(
        &self,
        room_id: &RoomId,
        version: &RoomVersion,
        state: Vec<Pdu>,
    ) -> Result<IdState, RoomError> {
        let statuses = self.store_outliers(room_id, version, state.clone(), MissingAuth::Report)?;
        state_map(&state, &statuses)
    }

    /// Checks `pdus` against their auth events (among them or stored) and writes those not
    /// stored yet as outliers, or rejected, in one batch. Returns the status of every event
    /// stored now or before (events left out by [`MissingAuth::Drop`] have none).
    fn store_outliers(
        &self,
        room_id: &RoomId,
        version: &RoomVersion,
        pdus: Vec<Pdu>,
        on_missing: MissingAuth,
    ) -> Result<HashMap<OwnedEventId, EventStatus>, RoomError> {
        let store = &*self.store;
        let mut given: HashMap<OwnedEventId, Pdu> = HashMap::new();
        for pdu in pdus {
            if pdu.room_id() != room_id {
                return Err(RoomError::InvalidRemoteEvents(format!(
                    "{} is an event of {}, not of {room_id}",
                    pdu.event_id(),
                    pdu.room_id()
                )));
            }
            given.insert(pdu.event_id().to_owned(), pdu);
        }

        let mut statuses = HashMap::new();
        // Events checked so far (rejected ones marked), for the checks of those after them.
        let mut checked: HashMap<OwnedEventId, Arc<Pdu>> = HashMap::new();
        let mut writes: Vec<(Pdu, EventStatus)> = Vec::new();
        let mut missing = Vec::new();
        for event_id in auth_order(&given, version) {
            let Some(pdu) = given.remove(&event_id) else {
                continue;
            };
            if let Some(stored) = self.get_event(&event_id)? {
                checked.insert(event_id.clone(), Arc::new(stored.pdu));
                statuses.insert(event_id, stored.status);
                continue;
            }
            let mut auth_events = Vec::new();
            let mut unknown = Vec::new();
            for auth_id in required_auth_events(&pdu, version) {
                if let Some(event) = checked.get(&auth_id) {
                    auth_events.push(Arc::clone(event));
                } else if let Some(stored) = self.get_event(&auth_id)? {
                    let stored = Arc::new(stored.pdu);
                    checked.insert(auth_id, Arc::clone(&stored));
                    auth_events.push(stored);
                } else {
                    unknown.push(auth_id);
                }
            }
            if !unknown.is_empty() {
                missing.extend(unknown);
                continue;
            }
            let status = match check_auth_against_auth_events(version, &pdu, &auth_events) {
                Ok(()) => EventStatus::Outlier,
                Err(err) => EventStatus::Rejected(err.reason()),
            };
            let mut checked_pdu = pdu.clone();
            checked_pdu.set_rejected(matches!(status, EventStatus::Rejected(_)));
            checked.insert(event_id.clone(), Arc::new(checked_pdu));
            statuses.insert(event_id, status.clone());
            writes.push((pdu, status));
        }
        // Events left in `given` are in a cycle of auth events: they cannot be checked.
        if on_missing == MissingAuth::Report {
            missing.extend(given.into_keys());
            if !missing.is_empty() {
                missing.sort();
                missing.dedup();
                return Err(RoomError::MissingEvents(missing));
            }
        }
        if writes.is_empty() {
            return Ok(statuses);
        }

        let mut batch = self.short_ids.begin();
        for (pdu, status) in writes {
            let short = self
                .short_ids
                .get_or_create_event(store, &mut batch, pdu.event_id())?;
            let reference_hash = Some(pdu.reference_hash().to_owned());
            let mut event = pdu.into_json();
            let unsigned = match event.remove("unsigned") {
                Some(ruma::CanonicalJsonValue::Object(unsigned)) => Some(unsigned),
                _ => None,
            };
            let record = EventRecord {
                room_id: room_id.to_owned(),
                room_version: version.id().clone(),
                status,
                stream: None,
                state_before: None,
                state_after: None,
                event,
                reference_hash,
                unsigned,
            };
            EVENTS.put(batch.write_batch(), &short, &Json(record));
        }
        let ticket = batch.commit_unsynced(store, &self.group_sync)?;
        self.group_sync.wait(store, ticket)?;
        Ok(statuses)
    }
}

/// The state given as `state`, without the events that are rejected or were left out.
fn state_map(
    state: &[Pdu],
    statuses: &HashMap<OwnedEventId, EventStatus>,
) -> Result<IdState, RoomError> {
    let mut map = IdState::new();
    for pdu in state {
        let Some(state_key) = pdu.state_key() else {
            return Err(RoomError::InvalidRemoteEvents(format!(
                "{} in the room state is not a state event",
                pdu.event_id()
            )));
        };
        match statuses.get(pdu.event_id()) {
            None | Some(EventStatus::Rejected(_)) => continue,
            Some(_) => {}
        }
        let key = (
            StateEventType::from(pdu.kind().to_string()),
            state_key.to_owned(),
        );
        if let Some(other) = map.insert(key, pdu.event_id().to_owned())
            && other != pdu.event_id()
        {
            return Err(RoomError::InvalidRemoteEvents(format!(
                "{other} and {} are both the room's {} {state_key:?}",
                pdu.event_id(),
                pdu.kind()
            )));
        }
    }
    Ok(map)
}

/// The given events in an order where each comes after those of its auth events that are
/// given too (Kahn's algorithm; ties by depth, then id). Events in a cycle are left out.
fn auth_order(given: &HashMap<OwnedEventId, Pdu>, version: &RoomVersion) -> Vec<OwnedEventId> {
    let mut waiting_on: HashMap<&EventId, usize> = HashMap::new();
    let mut dependents: HashMap<&EventId, Vec<&EventId>> = HashMap::new();
    for (event_id, pdu) in given {
        let mut count = 0;
        for auth_id in required_auth_events(pdu, version) {
            if let Some((auth_id, _)) = given.get_key_value(&auth_id)
                && auth_id != event_id
            {
                count += 1;
                dependents.entry(auth_id).or_default().push(event_id);
            }
        }
        waiting_on.insert(event_id, count);
    }
    let mut ready: Vec<&EventId> = waiting_on
        .iter()
        .filter(|(_, count)| **count == 0)
        .map(|(event_id, _)| *event_id)
        .collect();
    let key = |event_id: &EventId| {
        let depth = given.get(event_id).map(|pdu| u64::from(pdu.depth()));
        (depth, event_id.to_owned())
    };
    ready.sort_by_key(|event_id| key(event_id));
    let mut queue: VecDeque<&EventId> = ready.into();
    let mut order = Vec::with_capacity(given.len());
    while let Some(event_id) = queue.pop_front() {
        order.push(event_id.to_owned());
        let mut next: Vec<&EventId> = Vec::new();
        for dependent in dependents.get(event_id).into_iter().flatten() {
            if let Some(count) = waiting_on.get_mut(dependent) {
                *count -= 1;
                if *count == 0 {
                    next.push(dependent);
                }
            }
        }
        next.sort_by_key(|event_id| key(event_id));
        queue.extend(next);
    }
    order
}
