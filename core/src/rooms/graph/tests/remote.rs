//! Events received from another server: real PDUs signed by a second server's key, through
//! the checks on receipt, outliers, a room joined through another server, and the queries other
//! servers make.

use std::cell::Cell;
use std::collections::HashSet;
use std::sync::Arc;

use ruma::events::room::member::MembershipState;
use ruma::events::{StateEventType, TimelineEventType};
use ruma::signatures::{PublicKeyMap, PublicKeySet, Verified};
use ruma::{
    CanonicalJsonObject, MilliSecondsSinceUnixEpoch, OwnedEventId, RoomId, RoomVersionId, UInt,
    server_name,
};
use serde_json::{Value, json};

use super::*;
use crate::rooms::graph::{EventStatus, RemoteOutcome, StreamPosition};
use crate::rooms::pdu::{EventReference, PduBuilder};
use crate::rooms::resolve::{StateMap, auth_chain, resolve_state_computing_auth_chains};
use crate::storage::MemoryStore;

const ZARA: &str = "@zara:remote.test";
const DAVE: &str = "@dave:remote.test";
const MALLORY: &str = "@mallory:remote.test";

/// Another server, `remote.test`, that builds and signs its users' events.
struct Remote {
    keys: ServerKeys,
    _key_dir: tempfile::TempDir,
    next_ts: Cell<u64>,
}

/// An event for [`Remote::build`]: what the remote user sends, on which prev events, and the
/// state before it (to pick its auth events from).
struct Draft<'a> {
    sender: &'a str,
    kind: &'a str,
    state_key: Option<&'a str>,
    content: Value,
    prevs: Vec<&'a Pdu>,
    state: Vec<Pdu>,
    origin_server_ts: Option<u64>,
    auth_override: Option<Vec<&'a Pdu>>,
}

impl<'a> Draft<'a> {
    fn message(sender: &'a str, body: &str, prevs: Vec<&'a Pdu>, state: Vec<Pdu>) -> Self {
        Self {
            sender,
            kind: "m.room.message",
            state_key: None,
            content: json!({ "msgtype": "m.text", "body": body }),
            prevs,
            state,
            origin_server_ts: None,
            auth_override: None,
        }
    }

    fn state_event(
        sender: &'a str,
        kind: &'a str,
        state_key: &'a str,
        content: Value,
        prevs: Vec<&'a Pdu>,
        state: Vec<Pdu>,
    ) -> Self {
        Self {
            sender,
            kind,
            state_key: Some(state_key),
            content,
            prevs,
            state,
            origin_server_ts: None,
            auth_override: None,
        }
    }

    fn at(mut self, origin_server_ts: u64) -> Self {
        self.origin_server_ts = Some(origin_server_ts);
        self
    }
}

impl Remote {
    fn new() -> Self {
        let key_dir = tempfile::tempdir().unwrap();
        let keys = ServerKeys::load_or_create(key_dir.path(), server_name!("remote.test")).unwrap();
        Self {
            keys,
            _key_dir: key_dir,
            next_ts: Cell::new(MilliSecondsSinceUnixEpoch::now().0.into()),
        }
    }

    fn public_keys(&self) -> PublicKeyMap {
        let mut key_set = PublicKeySet::new();
        key_set.insert(
            self.keys.key_id().to_string(),
            ruma::serde::Base64::parse(self.keys.public_key_base64()).unwrap(),
        );
        PublicKeyMap::from([("remote.test".to_owned(), key_set)])
    }

    /// Builds and signs `draft` in `room_id`, its auth events selected from its state.
    fn build(&self, room_id: &RoomId, version: &RoomVersion, draft: Draft<'_>) -> Pdu {
        let ts = draft.origin_server_ts.unwrap_or_else(|| {
            let ts = self.next_ts.get() + 1;
            self.next_ts.set(ts);
            ts
        });
        let depth = draft
            .prevs
            .iter()
            .map(|pdu| pdu.depth())
            .max()
            .unwrap_or(UInt::MIN);
        let mut builder = PduBuilder::new(
            Some(room_id.to_owned()),
            user(draft.sender),
            TimelineEventType::from(draft.kind),
            object(draft.content),
        );
        builder.state_key = draft.state_key.map(str::to_owned);
        builder.prev_events = draft.prevs.iter().map(|pdu| pdu.reference()).collect();
        builder.depth = depth + UInt::from(1_u32);
        builder.origin_server_ts = MilliSecondsSinceUnixEpoch(UInt::try_from(ts).unwrap());
        match draft.auth_override {
            Some(auth) => builder.auth_events = auth.iter().map(|pdu| pdu.reference()).collect(),
            None => builder
                .select_auth_events(version, |kind, state_key| {
                    draft
                        .state
                        .iter()
                        .find(|pdu| {
                            pdu.kind().to_string() == kind.to_string()
                                && pdu.state_key() == Some(state_key)
                        })
                        .map(Pdu::reference)
                })
                .unwrap(),
        }
        let pdu = builder.build_pdu(version, &self.keys).unwrap();
        // A real signed PDU, as the federation layer checks it before handing it over.
        assert_eq!(
            crate::rooms::pdu::verify_event_signatures(pdu.json(), version, &self.public_keys())
                .unwrap(),
            Verified::All
        );
        pdu
    }
}

/// Hands `pdu` to the rooms service as the federation layer does, under the room's lock.
fn receive(rooms: &Rooms, pdu: &Pdu) -> Result<RemoteOutcome, RoomError> {
    let guard = rooms.locks().try_lock(pdu.room_id()).unwrap();
    rooms.append_remote(&guard, pdu.clone())
}

fn receive_with_state(
    rooms: &Rooms,
    pdu: &Pdu,
    state: Vec<Pdu>,
) -> Result<RemoteOutcome, RoomError> {
    let guard = rooms.locks().try_lock(pdu.room_id()).unwrap();
    rooms.append_remote_with_state(&guard, pdu.clone(), state)
}

fn accepted(outcome: &RemoteOutcome) -> StreamPosition {
    assert_eq!(outcome.status, EventStatus::Normal, "{outcome:?}");
    assert!(!outcome.duplicate);
    outcome.stream.unwrap()
}

fn last_event(h: &Harness, room_id: &RoomId) -> Pdu {
    h.timeline(room_id).pop().unwrap()
}

fn state_after(h: &Harness, pdu: &Pdu) -> Vec<Pdu> {
    h.rooms.state_at_event(pdu.event_id()).unwrap()
}

fn with_event(mut state: Vec<Pdu>, event: &Pdu) -> Vec<Pdu> {
    state.retain(|pdu| !(pdu.kind() == event.kind() && pdu.state_key() == event.state_key()));
    state.push(event.clone());
    state
}

fn id_set(events: &[Pdu]) -> Vec<OwnedEventId> {
    sorted_ids(events.iter().map(Pdu::event_id))
}

/// Zara of `remote.test` joins alice's public room; returns her join event.
fn zara_joins(h: &Harness, remote: &Remote, room_id: &RoomId) -> Pdu {
    let version = h.rooms.room_version(room_id).unwrap().unwrap();
    let last = last_event(h, room_id);
    let join = remote.build(
        room_id,
        &version,
        Draft::state_event(
            ZARA,
            "m.room.member",
            ZARA,
            json!({ "membership": "join" }),
            vec![&last],
            h.rooms.current_state(room_id).unwrap(),
        ),
    );
    accepted(&receive(&h.rooms, &join).unwrap());
    join
}

/// Alice sets the power levels' users (alice keeps 100).
fn set_users(h: &Harness, room_id: &RoomId, users: Value) -> AppendedEvent {
    let mut users = users;
    users[ALICE] = json!(100);
    h.state(
        room_id,
        ALICE,
        StateEventType::RoomPowerLevels,
        "",
        json!({ "users": users }),
    )
    .unwrap()
}

#[test]
fn a_remote_join_and_message_are_accepted_like_local_events() {
    for version_id in [RoomVersionId::V11, RoomVersionId::V12] {
        let h = Harness::new();
        let remote = Remote::new();
        let room_id = h.public_room(version_id.clone());
        let version = version(version_id);
        let before = h.rooms.current_stream_position();

        let join = zara_joins(&h, &remote, &room_id);
        assert_eq!(
            h.rooms.membership(&room_id, &user(ZARA)).unwrap(),
            Some(MembershipState::Join)
        );
        assert_eq!(
            h.rooms.forward_extremities(&room_id).unwrap(),
            [join.event_id().to_owned()]
        );
        let message = remote.build(
            &room_id,
            &version,
            Draft::message(ZARA, "hello from afar", vec![&join], state_after(&h, &join)),
        );
        let outcome = receive(&h.rooms, &message).unwrap();
        let stream = accepted(&outcome);
        assert!(stream > before);
        assert_eq!(h.rooms.current_stream_position(), stream);
        assert_eq!(last_event(&h, &room_id).event_id(), message.event_id());
        let stored = h.rooms.get_event(message.event_id()).unwrap().unwrap();
        assert_eq!(stored.status, EventStatus::Normal);
        assert_eq!(stored.stream, Some(stream));
        assert_eq!(stored.pdu.json(), message.json());
        let followers = h
            .rooms
            .events_after(before, 10)
            .unwrap()
            .into_iter()
            .map(|(_, event)| event.pdu.event_id().to_owned())
            .collect::<Vec<_>>();
        assert_eq!(
            followers,
            [join.event_id().to_owned(), message.event_id().to_owned()]
        );

        // Receiving it again changes nothing.
        let keys = h.key_count();
        let again = receive(&h.rooms, &message).unwrap();
        assert!(again.duplicate);
        assert_eq!(again.stream, Some(stream));
        assert_eq!(h.key_count(), keys);

        // A local event follows it.
        let reply = h.message(&room_id, ALICE, "welcome").unwrap();
        assert_eq!(reply.pdu.prev_events(), [message.event_id().to_owned()]);
    }
}

#[test]
fn a_remote_power_levels_change_becomes_the_current_state() {
    let h = Harness::new();
    let remote = Remote::new();
    let room_id = h.public_room(RoomVersionId::V11);
    let version = version(RoomVersionId::V11);
    zara_joins(&h, &remote, &room_id);
    let promoted = set_users(&h, &room_id, json!({ ZARA: 100 }));

    let change = remote.build(
        &room_id,
        &version,
        Draft::state_event(
            ZARA,
            "m.room.power_levels",
            "",
            json!({ "users": { ALICE: 100, ZARA: 100, CAROL: 50 } }),
            vec![&promoted.pdu],
            state_after(&h, &promoted.pdu),
        ),
    );
    accepted(&receive(&h.rooms, &change).unwrap());
    let current = h
        .rooms
        .state_event(&room_id, &StateEventType::RoomPowerLevels, "")
        .unwrap()
        .unwrap();
    assert_eq!(current.event_id(), change.event_id());
    assert_eq!(
        h.rooms.forward_extremities(&room_id).unwrap(),
        [change.event_id().to_owned()]
    );
}

#[test]
fn concurrent_power_level_changes_resolve_by_state_resolution_v2() {
    // Alice (local) and zara (remote) both have power 100 and change the power levels at the
    // same point of the graph.
    for remote_is_later in [false, true] {
        let h = Harness::new();
        let remote = Remote::new();
        let room_id = h.public_room(RoomVersionId::V11);
        let version = version(RoomVersionId::V11);
        zara_joins(&h, &remote, &room_id);
        let fork = set_users(&h, &room_id, json!({ ZARA: 100 }));

        let local = set_users(&h, &room_id, json!({ ZARA: 100, BOB: 50 }));
        let local_ts = u64::from(local.pdu.origin_server_ts().0);
        let remote_ts = if remote_is_later {
            local_ts + 1_000
        } else {
            local_ts - 1_000
        };
        let concurrent = remote.build(
            &room_id,
            &version,
            Draft::state_event(
                ZARA,
                "m.room.power_levels",
                "",
                json!({ "users": { ALICE: 100, ZARA: 100, CAROL: 50 } }),
                vec![&fork.pdu],
                state_after(&h, &fork.pdu),
            )
            .at(remote_ts),
        );
        accepted(&receive(&h.rooms, &concurrent).unwrap());

        let mut extremities = h.rooms.forward_extremities(&room_id).unwrap();
        extremities.sort();
        assert_eq!(
            extremities,
            sorted_ids([local.pdu.event_id(), concurrent.event_id()])
        );
        // The whole current state is what state resolution v2 gives for the two branches.
        let as_map = |events: Vec<Pdu>| -> StateMap<OwnedEventId> {
            events
                .into_iter()
                .map(|pdu| {
                    (
                        (
                            pdu.kind().to_string().into(),
                            pdu.state_key().unwrap().to_owned(),
                        ),
                        pdu.event_id().to_owned(),
                    )
                })
                .collect()
        };
        let sets = [
            as_map(state_after(&h, &local.pdu)),
            as_map(state_after(&h, &concurrent)),
        ];
        let fetch = |event_id: &ruma::EventId| {
            h.rooms
                .get_event(event_id)
                .unwrap()
                .map(|stored| Arc::new(stored.pdu))
        };
        let resolved = resolve_state_computing_auth_chains(&version, &sets, fetch).unwrap();
        let mut resolved: Vec<OwnedEventId> = resolved.into_values().collect();
        resolved.sort();
        assert_eq!(id_set(&h.rooms.current_state(&room_id).unwrap()), resolved);

        // Zara's join is in the state of both branches, so it stays out of the auth
        // difference (each branch's chain counts its own state, as Synapse counts it): the
        // two changes tie on power and the later one is applied last and wins.
        let winner = if remote_is_later {
            concurrent.event_id()
        } else {
            local.pdu.event_id()
        };
        let power = h
            .rooms
            .state_event(&room_id, &StateEventType::RoomPowerLevels, "")
            .unwrap()
            .unwrap();
        assert_eq!(power.event_id(), winner, "remote later: {remote_is_later}");

        // The next local event merges the branches, on the resolved state.
        let merge = h.message(&room_id, ALICE, "merged").unwrap();
        let mut prevs = merge.pdu.prev_events().to_vec();
        prevs.sort();
        assert_eq!(prevs, extremities);
        assert_eq!(
            id_set(&h.rooms.state_before_event(&merge.event_id).unwrap()),
            resolved
        );
    }
}

#[test]
fn an_unauthorised_event_is_rejected_and_kept_out_of_the_room() {
    let h = Harness::new();
    let remote = Remote::new();
    let room_id = h.public_room(RoomVersionId::V11);
    let version = version(RoomVersionId::V11);
    let join = zara_joins(&h, &remote, &room_id);
    let power_before = h
        .rooms
        .state_event(&room_id, &StateEventType::RoomPowerLevels, "")
        .unwrap()
        .unwrap();
    let position = h.rooms.current_stream_position();

    // Zara, at power 0, makes herself admin.
    let grab = remote.build(
        &room_id,
        &version,
        Draft::state_event(
            ZARA,
            "m.room.power_levels",
            "",
            json!({ "users": { ALICE: 100, ZARA: 100 } }),
            vec![&join],
            state_after(&h, &join),
        ),
    );
    let outcome = receive(&h.rooms, &grab).unwrap();
    assert!(
        matches!(&outcome.status, EventStatus::Rejected(reason) if reason.contains("power")),
        "{outcome:?}"
    );
    assert_eq!(outcome.stream, None);
    let stored = h.rooms.get_event(grab.event_id()).unwrap().unwrap();
    assert!(matches!(stored.status, EventStatus::Rejected(_)));
    assert!(stored.pdu.is_rejected());
    assert_eq!(h.rooms.current_stream_position(), position);
    assert!(
        h.timeline(&room_id)
            .iter()
            .all(|pdu| pdu.event_id() != grab.event_id())
    );
    assert_eq!(
        h.rooms
            .state_event(&room_id, &StateEventType::RoomPowerLevels, "")
            .unwrap()
            .unwrap()
            .event_id(),
        power_before.event_id()
    );
    assert_eq!(
        h.rooms.forward_extremities(&room_id).unwrap(),
        [join.event_id().to_owned()]
    );
    // Known now: receiving it again gives the same verdict without checking it again.
    let again = receive(&h.rooms, &grab).unwrap();
    assert!(again.duplicate && matches!(again.status, EventStatus::Rejected(_)));

    // An event after the rejected one is accepted if it passes on its own, on the state before
    // the rejected event (which changed nothing).
    let next = remote.build(
        &room_id,
        &version,
        Draft::message(ZARA, "never mind", vec![&grab], state_after(&h, &join)),
    );
    accepted(&receive(&h.rooms, &next).unwrap());
    assert_eq!(
        id_set(&h.rooms.state_before_event(next.event_id()).unwrap()),
        id_set(&state_after(&h, &join))
    );

    // Auth events that are not the ones the rules select are rejected too.
    let topic = h
        .state(
            &room_id,
            ALICE,
            StateEventType::RoomTopic,
            "",
            json!({ "topic": "rules" }),
        )
        .unwrap();
    let state = state_after(&h, &topic.pdu);
    let find = |kind: &str, state_key: &str| {
        state
            .iter()
            .find(|pdu| pdu.kind().to_string() == kind && pdu.state_key() == Some(state_key))
            .unwrap()
    };
    let mut draft = Draft::message(ZARA, "odd auth", vec![&topic.pdu], state.clone());
    draft.auth_override = Some(vec![
        find("m.room.create", ""),
        find("m.room.power_levels", ""),
        find("m.room.member", ZARA),
        find("m.room.topic", ""),
    ]);
    let odd = remote.build(&room_id, &version, draft);
    let outcome = receive(&h.rooms, &odd).unwrap();
    assert!(
        matches!(outcome.status, EventStatus::Rejected(_)),
        "{outcome:?}"
    );
}

#[test]
fn an_event_valid_before_a_ban_but_not_after_it_is_soft_failed() {
    let h = Harness::new();
    let remote = Remote::new();
    let room_id = h.public_room(RoomVersionId::V11);
    let version = version(RoomVersionId::V11);
    let join = zara_joins(&h, &remote, &room_id);
    let ban = h.member(&room_id, ALICE, ZARA, "ban").unwrap();
    let position = h.rooms.current_stream_position();
    let state = h.state_ids(&room_id);

    // Sent by zara before she saw the ban: fine at its prev event, not in the current state.
    let late = remote.build(
        &room_id,
        &version,
        Draft::message(
            ZARA,
            "sent before the ban",
            vec![&join],
            state_after(&h, &join),
        ),
    );
    let outcome = receive(&h.rooms, &late).unwrap();
    assert_eq!(outcome.status, EventStatus::SoftFailed);
    assert_eq!(outcome.stream, None);
    let stored = h.rooms.get_event(late.event_id()).unwrap().unwrap();
    assert_eq!(stored.status, EventStatus::SoftFailed);
    assert_eq!(stored.stream, None);
    assert_eq!(h.rooms.current_stream_position(), position);
    assert_eq!(last_event(&h, &room_id).event_id(), ban.pdu.event_id());
    assert_eq!(
        h.rooms.forward_extremities(&room_id).unwrap(),
        std::slice::from_ref(&ban.event_id)
    );
    assert_eq!(h.state_ids(&room_id), state);
    // Its state is kept: other servers may build on it.
    assert_eq!(
        id_set(&h.rooms.state_before_event(late.event_id()).unwrap()),
        id_set(&state_after(&h, &join))
    );
    assert_eq!(
        h.rooms.membership(&room_id, &user(ZARA)).unwrap(),
        Some(MembershipState::Ban)
    );
}

#[test]
fn missing_prev_and_auth_events_are_reported_and_nothing_is_written() {
    let h = Harness::new();
    let remote = Remote::new();
    let room_id = h.public_room(RoomVersionId::V11);
    let version = version(RoomVersionId::V11);
    let join = zara_joins(&h, &remote, &room_id);
    let keys = h.key_count();

    let unseen = remote.build(
        &room_id,
        &version,
        Draft::message(ZARA, "lost", vec![&join], state_after(&h, &join)),
    );
    let after = remote.build(
        &room_id,
        &version,
        Draft::message(
            ZARA,
            "after the lost one",
            vec![&unseen],
            state_after(&h, &join),
        ),
    );
    let err = receive(&h.rooms, &after).unwrap_err();
    assert!(
        matches!(&err, RoomError::MissingEvents(ids) if *ids == [unseen.event_id().to_owned()]),
        "{err}"
    );

    // Dave joined on the remote side only: his message needs his join as auth and prev event.
    let dave_join = remote.build(
        &room_id,
        &version,
        Draft::state_event(
            DAVE,
            "m.room.member",
            DAVE,
            json!({ "membership": "join" }),
            vec![&join],
            state_after(&h, &join),
        ),
    );
    let dave_says = remote.build(
        &room_id,
        &version,
        Draft::message(
            DAVE,
            "hi",
            vec![&dave_join],
            with_event(state_after(&h, &join), &dave_join),
        ),
    );
    let err = receive(&h.rooms, &dave_says).unwrap_err();
    assert!(
        matches!(&err, RoomError::MissingEvents(ids) if *ids == [dave_join.event_id().to_owned()]),
        "{err}"
    );
    assert_eq!(h.key_count(), keys);
    assert!(h.rooms.get_event(after.event_id()).unwrap().is_none());

    // Once the gap is filled, both go in, in order.
    accepted(&receive(&h.rooms, &unseen).unwrap());
    accepted(&receive(&h.rooms, &after).unwrap());
}

#[test]
fn state_from_another_server_fills_a_gap_and_outliers_are_upgraded() {
    let h = Harness::new();
    let remote = Remote::new();
    let room_id = h.public_room(RoomVersionId::V11);
    let version = version(RoomVersionId::V11);
    let join = zara_joins(&h, &remote, &room_id);

    let dave_join = remote.build(
        &room_id,
        &version,
        Draft::state_event(
            DAVE,
            "m.room.member",
            DAVE,
            json!({ "membership": "join" }),
            vec![&join],
            state_after(&h, &join),
        ),
    );
    let dave_state = with_event(state_after(&h, &join), &dave_join);
    let dave_says = remote.build(
        &room_id,
        &version,
        Draft::message(DAVE, "hi", vec![&dave_join], dave_state.clone()),
    );

    // An outlier needs its auth events, is stored apart, and is idempotent.
    let guard = h.rooms.locks().try_lock(&room_id).unwrap();
    let orphan = remote.build(
        &room_id,
        &version,
        Draft::message(DAVE, "orphan", vec![&dave_join], dave_state.clone()),
    );
    let err = h.rooms.persist_outlier(&guard, orphan).unwrap_err();
    assert!(matches!(err, RoomError::MissingEvents(_)), "{err}");
    drop(guard);

    // The message arrives without its prev event; the state before it comes from the remote.
    assert!(matches!(
        receive(&h.rooms, &dave_says),
        Err(RoomError::MissingEvents(_))
    ));
    accepted(&receive_with_state(&h.rooms, &dave_says, dave_state.clone()).unwrap());
    let outlier = h.rooms.get_event(dave_join.event_id()).unwrap().unwrap();
    assert_eq!(outlier.status, EventStatus::Outlier);
    assert_eq!(outlier.stream, None);
    assert!(matches!(
        h.rooms.state_ids_at(dave_join.event_id()),
        Err(RoomError::NotFound(_))
    ));
    assert_eq!(
        id_set(&h.rooms.state_before_event(dave_says.event_id()).unwrap()),
        id_set(&dave_state)
    );
    // The forks' states resolve to a state with dave in it, and his membership follows.
    assert_eq!(
        h.rooms.membership(&room_id, &user(DAVE)).unwrap(),
        Some(MembershipState::Join)
    );
    assert_eq!(
        id_set(&h.rooms.current_state(&room_id).unwrap()),
        id_set(&dave_state)
    );
    let mut extremities = h.rooms.forward_extremities(&room_id).unwrap();
    extremities.sort();
    assert_eq!(
        extremities,
        sorted_ids([join.event_id(), dave_says.event_id()])
    );

    // Storing it as an outlier again changes nothing.
    let guard = h.rooms.locks().try_lock(&room_id).unwrap();
    assert_eq!(
        h.rooms.persist_outlier(&guard, dave_join.clone()).unwrap(),
        EventStatus::Outlier
    );
    drop(guard);

    // The join itself arrives later (backfill, missing events): it takes its place in the
    // graph, behind its child, which stays the only forward extremity.
    let stream = accepted(&receive(&h.rooms, &dave_join).unwrap());
    let upgraded = h.rooms.get_event(dave_join.event_id()).unwrap().unwrap();
    assert_eq!(upgraded.status, EventStatus::Normal);
    assert_eq!(upgraded.stream, Some(stream));
    assert!(
        h.timeline(&room_id)
            .iter()
            .any(|pdu| pdu.event_id() == dave_join.event_id())
    );
    assert_eq!(
        h.rooms.forward_extremities(&room_id).unwrap(),
        [dave_says.event_id().to_owned()]
    );
    assert_eq!(
        id_set(&h.rooms.current_state(&room_id).unwrap()),
        id_set(&dave_state)
    );
    let guard = h.rooms.locks().try_lock(&room_id).unwrap();
    assert_eq!(
        h.rooms.persist_outlier(&guard, dave_join.clone()).unwrap(),
        EventStatus::Normal
    );
}

/// A rooms service of `remote.test`, where zara creates a public room with some history.
struct RemoteRoom {
    rooms: Rooms,
    room_id: ruma::OwnedRoomId,
    version: RoomVersion,
}

impl RemoteRoom {
    fn new(remote: &Remote) -> Self {
        // The same key as `remote`'s (loaded from its directory).
        let keys = Arc::new(
            ServerKeys::load_or_create(remote._key_dir.path(), server_name!("remote.test"))
                .unwrap(),
        );
        let rooms = Rooms::new(Arc::new(MemoryStore::new()), keys).unwrap();
        let version = version(RoomVersionId::V11);
        let mut request = CreateRoom::new(user(ZARA), version.clone());
        request.preset = RoomPreset::PublicChat;
        request.topic = Some("remote things".to_owned());
        let room_id = rooms.create_room(request).unwrap();
        for n in 0..3 {
            let guard = rooms.locks().try_lock(&room_id).unwrap();
            rooms
                .append_local(
                    &guard,
                    NewEvent::message(
                        room_id.clone(),
                        user(ZARA),
                        TimelineEventType::RoomMessage,
                        object(json!({ "msgtype": "m.text", "body": format!("old {n}") })),
                    ),
                )
                .unwrap();
        }
        Self {
            rooms,
            room_id,
            version,
        }
    }
}

/// Alice's join of the remote room, built and signed by us on the remote's head (what
/// `make_join` and `send_join` exchange).
fn local_join(h: &Harness, room: &RemoteRoom) -> Pdu {
    let prevs: Vec<EventReference> = room
        .rooms
        .forward_extremities(&room.room_id)
        .unwrap()
        .into_iter()
        .map(|event_id| {
            room.rooms
                .get_event(&event_id)
                .unwrap()
                .unwrap()
                .pdu
                .reference()
        })
        .collect();
    let depth = room
        .rooms
        .timeline(&room.room_id, None, ruma::api::Direction::Backward, 1)
        .unwrap()[0]
        .1
        .depth();
    let mut builder = PduBuilder::new(
        Some(room.room_id.clone()),
        user(ALICE),
        TimelineEventType::RoomMember,
        object(json!({ "membership": "join" })),
    );
    builder.state_key = Some(ALICE.to_owned());
    builder.prev_events = prevs;
    builder.depth = depth + UInt::from(1_u32);
    builder.origin_server_ts = MilliSecondsSinceUnixEpoch::now();
    builder
        .select_auth_events(&room.version, |kind, state_key| {
            room.rooms
                .state_event(&room.room_id, kind, state_key)
                .unwrap()
                .map(|pdu| pdu.reference())
        })
        .unwrap();
    builder.build_pdu(&room.version, &h.keys).unwrap()
}

#[test]
fn a_room_joined_through_another_server_takes_the_given_state() {
    let h = Harness::new();
    let remote = Remote::new();
    let room = RemoteRoom::new(&remote);
    let join = local_join(&h, &room);
    // The resident server accepts our join (as `send_join` does) and answers with the state
    // before it and its auth chain.
    accepted(&receive(&room.rooms, &join).unwrap());
    let state = room.rooms.state_before_event(join.event_id()).unwrap();
    let (state_ids, chain_ids) = room.rooms.state_ids_at(join.event_id()).unwrap();
    assert_eq!(state_ids, id_set(&state));
    let chain = room.rooms.auth_chain(&state_ids).unwrap();
    assert_eq!(id_set(&chain), sorted_ids(chain_ids.iter().map(|id| &**id)));

    // A forged topic by a stranger slipped into the state is checked and left out.
    let forged = remote.build(
        &room.room_id,
        &room.version,
        Draft::state_event(
            MALLORY,
            "m.room.topic",
            "",
            json!({ "topic": "forged" }),
            vec![&join],
            state.clone(),
        ),
    );
    let mut given = state.clone();
    given.retain(|pdu| *pdu.kind() != TimelineEventType::RoomTopic);
    given.push(forged.clone());

    let guard = h.rooms.locks().try_lock(&room.room_id).unwrap();
    // Without a create event there is no room.
    let no_create: Vec<Pdu> = given
        .iter()
        .filter(|pdu| *pdu.kind() != TimelineEventType::RoomCreate)
        .cloned()
        .collect();
    assert!(matches!(
        h.rooms.persist_joined_room(
            &guard,
            &room.version,
            no_create,
            chain.clone(),
            join.clone()
        ),
        Err(RoomError::InvalidRemoteEvents(_))
    ));
    let outcome = h
        .rooms
        .persist_joined_room(&guard, &room.version, given, chain, join.clone())
        .unwrap();
    drop(guard);
    accepted(&outcome);

    let info = h.rooms.room_info(&room.room_id).unwrap().unwrap();
    assert_eq!(info.version, room.version);
    assert_eq!(info.creator, user(ZARA));
    assert!(matches!(
        h.rooms
            .get_event(forged.event_id())
            .unwrap()
            .unwrap()
            .status,
        EventStatus::Rejected(_)
    ));
    let mut expected: Vec<Pdu> = state
        .iter()
        .filter(|pdu| *pdu.kind() != TimelineEventType::RoomTopic)
        .cloned()
        .collect();
    expected.push(join.clone());
    assert_eq!(
        id_set(&h.rooms.current_state(&room.room_id).unwrap()),
        id_set(&expected)
    );
    assert_eq!(
        h.rooms.forward_extremities(&room.room_id).unwrap(),
        [join.event_id().to_owned()]
    );
    assert_eq!(
        h.timeline(&room.room_id)
            .iter()
            .map(|pdu| pdu.event_id().to_owned())
            .collect::<Vec<_>>(),
        [join.event_id().to_owned()]
    );
    for (member, membership) in [
        (ALICE, MembershipState::Join),
        (ZARA, MembershipState::Join),
    ] {
        assert_eq!(
            h.rooms.membership(&room.room_id, &user(member)).unwrap(),
            Some(membership)
        );
    }
    assert_eq!(
        h.rooms.joined_rooms(&user(ALICE)).unwrap(),
        std::slice::from_ref(&room.room_id)
    );

    // Alice speaks in the joined room, and the resident server accepts it.
    let hello = h
        .message(&room.room_id, ALICE, "hello, remote room")
        .unwrap();
    assert_eq!(hello.pdu.prev_events(), [join.event_id().to_owned()]);
    accepted(&receive(&room.rooms, &hello.pdu).unwrap());
    // And the other way round.
    let answer = {
        let guard = room.rooms.locks().try_lock(&room.room_id).unwrap();
        room.rooms
            .append_local(
                &guard,
                NewEvent::message(
                    room.room_id.clone(),
                    user(ZARA),
                    TimelineEventType::RoomMessage,
                    object(json!({ "msgtype": "m.text", "body": "welcome" })),
                ),
            )
            .unwrap()
    };
    accepted(&receive(&h.rooms, &answer.pdu).unwrap());
    assert_eq!(
        last_event(&h, &room.room_id).event_id(),
        answer.pdu.event_id()
    );
}

#[test]
fn other_servers_get_auth_chains_state_backfill_and_missing_events() {
    let h = Harness::new();
    let remote = Remote::new();
    let room_id = h.public_room(RoomVersionId::V11);
    let version = version(RoomVersionId::V11);
    let join = zara_joins(&h, &remote, &room_id);
    let messages: Vec<AppendedEvent> = (0..4)
        .map(|n| h.message(&room_id, ALICE, &format!("m{n}")).unwrap())
        .collect();
    let [m0, m1, m2, m3] = [0, 1, 2, 3].map(|n| messages[n].pdu.clone());

    // The auth chain, as resolve's walk finds it, oldest first.
    let chain = h.rooms.auth_chain(&[m3.event_id().to_owned()]).unwrap();
    let fetch = |event_id: &ruma::EventId| h.rooms.get_event(event_id).unwrap().map(|e| e.pdu);
    let expected: HashSet<OwnedEventId> = auth_chain([m3.event_id().to_owned()], fetch).unwrap();
    assert_eq!(id_set(&chain), {
        let mut ids: Vec<_> = expected.into_iter().collect();
        ids.sort();
        ids
    });
    assert!(
        chain
            .windows(2)
            .all(|pair| pair[0].depth() <= pair[1].depth())
    );
    assert_eq!(*chain[0].kind(), TimelineEventType::RoomCreate);

    // The state at an event is the state before it: zara's join is not in the state at it.
    let (state, auth) = h.rooms.state_ids_at(join.event_id()).unwrap();
    assert!(!state.contains(&join.event_id().to_owned()));
    assert_eq!(
        state,
        id_set(&h.rooms.state_before_event(join.event_id()).unwrap())
    );
    assert!(
        auth.iter()
            .all(|id| h.rooms.get_event(id).unwrap().is_some())
    );
    let (state, _) = h.rooms.state_ids_at(m2.event_id()).unwrap();
    assert!(state.contains(&join.event_id().to_owned()));

    // Backfill walks back from the given events, newest first, the given ones included.
    let page = h
        .rooms
        .backfill(&room_id, &[m3.event_id().to_owned()], 3)
        .unwrap();
    assert_eq!(
        page.iter()
            .map(|pdu| pdu.event_id().to_owned())
            .collect::<Vec<_>>(),
        [m3.event_id(), m2.event_id(), m1.event_id()].map(ToOwned::to_owned)
    );
    let everything = h
        .rooms
        .backfill(&room_id, &[m3.event_id().to_owned()], 100)
        .unwrap();
    assert_eq!(everything.len(), h.timeline(&room_id).len());
    assert_eq!(
        *everything.last().unwrap().kind(),
        TimelineEventType::RoomCreate
    );

    // Missing events: between what the asker has (m0) and what it got (m3), oldest first.
    let between = |limit: usize, min_depth: u64| {
        h.rooms
            .missing_events(
                &room_id,
                &[m0.event_id().to_owned()],
                &[m3.event_id().to_owned()],
                limit,
                min_depth,
            )
            .unwrap()
            .iter()
            .map(|pdu| pdu.event_id().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        between(10, 0),
        [m1.event_id(), m2.event_id()].map(ToOwned::to_owned)
    );
    assert_eq!(between(1, 0), [m2.event_id().to_owned()]);
    assert_eq!(
        between(10, u64::from(m2.depth())),
        [m2.event_id().to_owned()]
    );

    // Events in the federation format: the signed PDU, without local `unsigned` data; a
    // redacted event in its redacted form, its signatures still good.
    let json = h
        .rooms
        .pdu_json_for_federation(join.event_id())
        .unwrap()
        .unwrap();
    assert_eq!(json, *join.json());
    h.send(NewEvent::redaction(
        room_id.clone(),
        user(ALICE),
        m1.event_id().to_owned(),
        CanonicalJsonObject::new(),
    ))
    .unwrap();
    let redacted = h
        .rooms
        .pdu_json_for_federation(m1.event_id())
        .unwrap()
        .unwrap();
    assert!(!redacted.contains_key("unsigned"));
    assert_eq!(
        crate::rooms::pdu::verify_event_signatures(&redacted, &version, &h.public_keys()).unwrap(),
        Verified::Signatures
    );
    assert!(
        h.rooms
            .pdu_json_for_federation(ruma::event_id!("$nope:example.org"))
            .unwrap()
            .is_none()
    );
}
