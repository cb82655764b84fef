//! Backfilled history: events from before the earliest event this server has of a room
//! (joined through another server), fetched with `/backfill`, stored as the room's past.
//!
//! A backfilled event passes the same checks 4 and 5 as any received event (its auth events,
//! the state before it, from its prev events or as another server gave it) and gets a state
//! and a place in the room's topological order, so `/messages` pages into it and history
//! visibility is judged on it like on any event. It never enters the sync timeline, the
//! stream index the stream's followers read, the forward extremities, the current state or
//! the membership indexes: it is history, not news. It still takes a stream position, the
//! tie-break of the topological order.

use std::sync::Arc;

use ruma::events::StateEventType;
use ruma::{OwnedEventId, RoomId};

use super::super::append::PendingDurability;
use super::super::tables::{EVENTS, EventStatus, STREAM_COUNTER, StreamPosition, TOPOLOGY};
use super::state::EventCache;
use super::{RemoteOutcome, StateBefore, event_record};
use crate::rooms::graph::{RoomError, RoomGuard, Rooms};
use crate::rooms::pdu::Pdu;
use crate::storage::Json;

/// How many of a room's earliest events are looked at for the edge of its known history.
const EDGE_SCAN: usize = 20;

impl Rooms {
    /// The room's backward extremities: among its earliest events in topological order,
    /// those with a prev event that is not in the graph here. `/backfill` starts from them.
    pub fn backward_extremities(&self, room_id: &RoomId) -> Result<Vec<OwnedEventId>, RoomError> {
        let earliest = self.messages(room_id, None, ruma::api::Direction::Forward, EDGE_SCAN)?;
        let mut edge = Vec::new();
        for (_, pdu) in earliest {
            let mut open = false;
            for prev in pdu.prev_events() {
                if !self.has_state(prev)? {
                    open = true;
                }
            }
            if open {
                edge.push(pdu.event_id().to_owned());
            }
        }
        Ok(edge)
    }

    /// Stores `pdu`, an event from before the room's known history (see the module
    /// documentation), checked against its auth events and the state before it: the state
    /// after its prev events when they are in the graph, else `state` (the state before it as
    /// another server gave it, stored as outliers first).
    ///
    /// [`RoomError::MissingEvents`] (nothing written) when auth events are not stored, or prev
    /// events are not in the graph and no `state` is given. An event already in the graph is
    /// a `duplicate`; one that fails the checks is stored as rejected. Synchronous: call it
    /// from `spawn_blocking`.
    pub fn append_backfilled(
        &self,
        guard: &RoomGuard,
        pdu: Pdu,
        state: Option<Vec<Pdu>>,
    ) -> Result<RemoteOutcome, RoomError> {
        self.check_guard(guard, pdu.room_id())?;
        let head = self
            .head(pdu.room_id())?
            .ok_or(RoomError::NotFound("room"))?;
        if let Some((_, record)) = self.stored_record(pdu.event_id())?
            && record.status != EventStatus::Outlier
        {
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
        if !missing.is_empty() {
            return Err(RoomError::MissingEvents(missing));
        }

        let mut rejection = None;
        let state_before = match state {
            Some(given) => {
                StateBefore::Computed(self.store_state(&head.room_id, &version, given)?)
            }
            None => {
                let state =
                    self.state_after_prevs(&head, &pdu, &events, &mut missing, &mut rejection)?;
                if !missing.is_empty() && rejection.is_none() {
                    return Err(RoomError::MissingEvents(missing));
                }
                state
            }
        };

        // Check 4: against its own auth events; check 5: against the state before it.
        if rejection.is_none() {
            rejection = self.check_before(&version, &pdu, &auth_events, &state_before, &events)?;
        }
        if let Some(reason) = rejection {
            return self.store_unaccepted(&head, &pdu, state_before, EventStatus::Rejected(reason));
        }

        // The write: the record with its states, and the topological index only.
        let store = &*self.store;
        let mut batch = self.short_ids.begin();
        let short = self
            .short_ids
            .get_or_create_event(store, &mut batch, pdu.event_id())?;
        let before = match state_before {
            StateBefore::Stored(snapshot) => snapshot,
            StateBefore::Computed(state) => self.save_id_state(&mut batch, head.current, &state)?,
        };
        let after = match pdu.state_key() {
            Some(state_key) => {
                let kind = StateEventType::from(pdu.kind().to_string());
                let key = self
                    .short_ids
                    .get_or_create_state_key(store, &mut batch, &kind, state_key)?;
                Some(
                    self.states
                        .save_delta(store, &mut batch, before, &[(key, Some(short))])?,
                )
            }
            None => before,
        };
        let stream = StreamPosition(batch.allocate(store, STREAM_COUNTER)?);
        let record = event_record(
            &head,
            &pdu,
            EventStatus::Normal,
            Some(stream),
            before,
            after,
        );
        let writes = batch.write_batch();
        EVENTS.put(writes, &short, &Json(record));
        TOPOLOGY.put(
            writes,
            &(head.short, u64::from(pdu.depth()), stream),
            &short,
        );
        let ticket = batch.commit_unsynced(store, &self.group_sync)?;
        self.make_durable(PendingDurability { stream, ticket })?;
        Ok(RemoteOutcome {
            event_id: pdu.event_id().to_owned(),
            status: EventStatus::Normal,
            stream: Some(stream),
            duplicate: false,
        })
    }

    /// Whether the room's earliest event in topological order is its create event (nothing
    /// before it to backfill).
    pub fn history_is_complete(&self, room_id: &RoomId) -> Result<bool, RoomError> {
        let first = self.messages(room_id, None, ruma::api::Direction::Forward, 1)?;
        Ok(first
            .first()
            .is_none_or(|(_, pdu)| pdu.prev_events().is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use ruma::RoomVersionId;
    use ruma::api::Direction;

    use super::super::super::tests::{ALICE, BOB, Harness, version};
    use super::*;

    /// Server "A" with a public room holding `messages` messages, then bob's join; server "B"
    /// that joined the room through A with that join, knowing nothing before it.
    fn joined_through_a(messages: usize) -> (Harness, Harness, ruma::OwnedRoomId, Pdu) {
        let a = Harness::new();
        let room_id = a.public_room(RoomVersionId::V11);
        for n in 0..messages {
            a.message(&room_id, ALICE, &format!("m{n}")).unwrap();
        }
        let join = a.member(&room_id, BOB, BOB, "join").unwrap().pdu;
        let state = a.rooms.state_before_event(join.event_id()).unwrap();
        let mut ids: Vec<OwnedEventId> = state.iter().map(|e| e.event_id().to_owned()).collect();
        ids.push(join.event_id().to_owned());
        let chain = a.rooms.auth_chain(&ids).unwrap();
        let b = Harness::new();
        let guard = b.rooms.locks().try_lock(&room_id).unwrap();
        b.rooms
            .persist_joined_room(
                &guard,
                &version(RoomVersionId::V11),
                state,
                chain,
                join.clone(),
            )
            .unwrap();
        (a, b, room_id, join)
    }

    #[test]
    fn backfilled_history_is_paged_but_never_news() {
        let (a, b, room_id, join) = joined_through_a(3);
        assert_eq!(
            b.rooms.backward_extremities(&room_id).unwrap(),
            [join.event_id().to_owned()]
        );
        assert!(!b.rooms.history_is_complete(&room_id).unwrap());
        let published = b.rooms.current_stream_position();

        let mut history = a
            .rooms
            .backfill(&room_id, &[join.event_id().to_owned()], 100)
            .unwrap();
        history.sort_by_key(|pdu| pdu.depth());
        let guard = b.rooms.locks().try_lock(&room_id).unwrap();
        let mut stored = 0;
        for pdu in history {
            let outcome = b.rooms.append_backfilled(&guard, pdu, None).unwrap();
            assert_eq!(outcome.status, EventStatus::Normal);
            if !outcome.duplicate {
                stored += 1;
            }
        }
        assert!(stored > 3, "{stored}");

        // `/messages` sees the same history as A, in the same order.
        let ids = |h: &Harness| -> Vec<OwnedEventId> {
            h.rooms
                .messages(&room_id, None, Direction::Forward, 100)
                .unwrap()
                .into_iter()
                .map(|(_, pdu)| pdu.event_id().to_owned())
                .collect()
        };
        assert_eq!(ids(&b), ids(&a));
        assert!(b.rooms.history_is_complete(&room_id).unwrap());
        assert!(b.rooms.backward_extremities(&room_id).unwrap().is_empty());
        // Not news: the sync timeline and the stream index still hold the join alone.
        let timeline = b
            .rooms
            .timeline(&room_id, None, Direction::Forward, 100)
            .unwrap();
        assert_eq!(timeline.len(), 1);
        assert!(b.rooms.events_after(published, 100).unwrap().is_empty());
        assert_eq!(
            b.rooms.forward_extremities(&room_id).unwrap(),
            [join.event_id().to_owned()]
        );
        // Again: duplicates, nothing written.
        let again = a
            .rooms
            .backfill(&room_id, &[join.event_id().to_owned()], 1)
            .unwrap();
        let outcome = b
            .rooms
            .append_backfilled(&guard, again[0].clone(), None)
            .unwrap();
        assert!(outcome.duplicate);
    }

    #[test]
    fn an_event_without_its_prev_events_needs_the_state_before_it() {
        let (a, b, room_id, join) = joined_through_a(2);
        let latest = a
            .rooms
            .backfill(&room_id, &[join.event_id().to_owned()], 2)
            .unwrap()
            .pop()
            .unwrap();
        assert_ne!(latest.event_id(), join.event_id());
        let guard = b.rooms.locks().try_lock(&room_id).unwrap();
        let result = b.rooms.append_backfilled(&guard, latest.clone(), None);
        assert!(
            matches!(&result, Err(RoomError::MissingEvents(ids)) if ids == latest.prev_events()),
            "{result:?}"
        );
        // With the state before it, as A has it, it is stored.
        let state = a.rooms.state_before_event(latest.event_id()).unwrap();
        let outcome = b
            .rooms
            .append_backfilled(&guard, latest.clone(), Some(state))
            .unwrap();
        assert_eq!(outcome.status, EventStatus::Normal);
        let pages = b
            .rooms
            .messages(&room_id, None, Direction::Forward, 10)
            .unwrap();
        assert_eq!(pages.len(), 2);
        assert_eq!(pages[0].1.event_id(), latest.event_id());
    }
}
