use std::time::Duration;

use ruma::events::StateEventType;
use ruma::events::room::member::MembershipState;
use ruma::signatures::Verified;
use ruma::{CanonicalJsonValue, RoomVersionId, room_id};
use serde_json::json;

use super::*;
use crate::rooms::graph::{EventStatus, StreamPosition};

#[test]
fn messages_get_increasing_positions_and_follow_each_other() {
    let h = Harness::new();
    let room_id = h.public_room(RoomVersionId::V11);
    let mut last = h.timeline(&room_id).pop().unwrap();
    let mut position = h.rooms.current_stream_position();
    for n in 0..5 {
        let sent = h.message(&room_id, ALICE, &format!("message {n}")).unwrap();
        assert!(sent.stream > position);
        assert_eq!(h.rooms.current_stream_position(), sent.stream);
        assert_eq!(sent.pdu.prev_events(), [last.event_id().to_owned()]);
        assert_eq!(u64::from(sent.pdu.depth()), u64::from(last.depth()) + 1);
        let stored = h.rooms.get_event(&sent.event_id).unwrap().unwrap();
        assert_eq!(stored.stream, Some(sent.stream));
        assert_eq!(stored.status, EventStatus::Normal);
        assert_eq!(stored.pdu.json(), sent.pdu.json());
        // A message changes no state.
        assert_eq!(
            h.rooms.state_at_event(&sent.event_id).unwrap().len(),
            h.rooms.state_before_event(&sent.event_id).unwrap().len()
        );
        position = sent.stream;
        last = sent.pdu;
    }
}

#[test]
fn a_non_member_is_forbidden_and_nothing_is_written() {
    let h = Harness::new();
    let room_id = h.public_room(RoomVersionId::V11);
    let keys = h.key_count();
    let position = h.rooms.current_stream_position();
    let err = h.message(&room_id, BOB, "let me in").unwrap_err();
    assert!(
        matches!(&err, RoomError::Forbidden(reason) if reason.contains("join")),
        "{err}"
    );
    assert_eq!(h.key_count(), keys);
    assert_eq!(h.rooms.current_stream_position(), position);
}

#[test]
fn a_client_transaction_is_recorded_with_its_event_or_not_at_all() {
    use crate::rooms::transactions::{Transaction, event_transaction, transaction_event};
    let h = Harness::new();
    let room_id = h.public_room(RoomVersionId::V11);
    let transaction = |sender: &str| Transaction {
        user_id: user(sender),
        device_id: "PHONE".into(),
        txn_id: "txn1".to_owned(),
    };
    let content = object(json!({ "msgtype": "m.text", "body": "hello" }));

    let mut sent = NewEvent::message(
        room_id.clone(),
        user(ALICE),
        "m.room.message".into(),
        content.clone(),
    );
    sent.transaction = Some(transaction(ALICE));
    let appended = h.send(sent).unwrap();
    let recorded = transaction_event(&*h.store, &user(ALICE), "PHONE".into(), "txn1").unwrap();
    assert_eq!(recorded, Some(appended.event_id.clone()));
    assert_eq!(
        event_transaction(&*h.store, &appended.event_id).unwrap(),
        Some(transaction(ALICE))
    );

    // A refused event leaves no transaction behind, so the client can retry it.
    let mut refused = NewEvent::message(room_id, user(BOB), "m.room.message".into(), content);
    refused.transaction = Some(transaction(BOB));
    assert!(matches!(h.send(refused), Err(RoomError::Forbidden(_))));
    assert_eq!(
        transaction_event(&*h.store, &user(BOB), "PHONE".into(), "txn1").unwrap(),
        None
    );
}

#[test]
fn power_levels_guard_state_events() {
    let h = Harness::new();
    let room_id = h.public_room(RoomVersionId::V11);
    h.member(&room_id, BOB, BOB, "join").unwrap();
    let keys = h.key_count();
    let err = h
        .state(
            &room_id,
            BOB,
            StateEventType::RoomTopic,
            "",
            json!({ "topic": "mine" }),
        )
        .unwrap_err();
    assert!(matches!(err, RoomError::Forbidden(_)), "{err}");
    assert_eq!(h.key_count(), keys);
    // Bob may talk; alice (100) may set the topic.
    h.message(&room_id, BOB, "hi").unwrap();
    let topic = h
        .state(
            &room_id,
            ALICE,
            StateEventType::RoomTopic,
            "",
            json!({ "topic": "ours" }),
        )
        .unwrap();
    let current = h
        .rooms
        .state_event(&room_id, &StateEventType::RoomTopic, "")
        .unwrap()
        .unwrap();
    assert_eq!(current.event_id(), topic.event_id);
    let before: Vec<_> = h.rooms.state_before_event(&topic.event_id).unwrap();
    assert!(
        before
            .iter()
            .all(|pdu| pdu.kind().to_string() != "m.room.topic")
    );
    let after = h.rooms.state_at_event(&topic.event_id).unwrap();
    assert_eq!(after.len(), before.len() + 1);
}

#[test]
fn join_leave_and_rejoin_a_public_room() {
    let h = Harness::new();
    let room_id = h.public_room(RoomVersionId::V11);
    let membership = |who: &str| h.rooms.membership(&room_id, &user(who)).unwrap();
    assert_eq!(membership(BOB), None);

    let join = h.member(&room_id, BOB, BOB, "join").unwrap();
    assert_eq!(membership(BOB), Some(MembershipState::Join));
    // The join was authorised by the join rules, power levels, create and no prior membership.
    assert_eq!(join.pdu.auth_events().len(), 3);
    let joined = h
        .rooms
        .members(&room_id, Some(&MembershipState::Join))
        .unwrap();
    assert_eq!(
        joined,
        [
            (user(ALICE), MembershipState::Join),
            (user(BOB), MembershipState::Join)
        ]
    );

    h.member(&room_id, BOB, BOB, "leave").unwrap();
    assert_eq!(membership(BOB), Some(MembershipState::Leave));
    assert!(h.rooms.joined_rooms(&user(BOB)).unwrap().is_empty());
    assert_eq!(h.rooms.members(&room_id, None).unwrap().len(), 2);
    assert!(h.message(&room_id, BOB, "still here?").is_err());

    h.member(&room_id, BOB, BOB, "join").unwrap();
    assert_eq!(membership(BOB), Some(MembershipState::Join));
    h.message(&room_id, BOB, "back").unwrap();
}

#[test]
fn a_ban_prevents_rejoining() {
    let h = Harness::new();
    let room_id = h.public_room(RoomVersionId::V11);
    h.member(&room_id, BOB, BOB, "join").unwrap();
    // Bob (0) cannot ban alice; alice (100) can ban bob.
    assert!(matches!(
        h.member(&room_id, BOB, ALICE, "ban"),
        Err(RoomError::Forbidden(_))
    ));
    h.member(&room_id, ALICE, BOB, "ban").unwrap();
    assert_eq!(
        h.rooms.membership(&room_id, &user(BOB)).unwrap(),
        Some(MembershipState::Ban)
    );
    let keys = h.key_count();
    assert!(matches!(
        h.member(&room_id, BOB, BOB, "join"),
        Err(RoomError::Forbidden(_))
    ));
    assert_eq!(h.key_count(), keys);
    // Unbanned (leave), he may join again.
    h.member(&room_id, ALICE, BOB, "leave").unwrap();
    h.member(&room_id, BOB, BOB, "join").unwrap();
}

#[test]
fn redactions_replace_the_stored_event_with_its_redacted_form() {
    for room_version in [RoomVersionId::V6, RoomVersionId::V11] {
        let h = Harness::new();
        let room_id = h.public_room(room_version.clone());
        h.member(&room_id, BOB, BOB, "join").unwrap();
        let alices = h.message(&room_id, ALICE, "oops").unwrap();
        let bobs = h.message(&room_id, BOB, "spam").unwrap();
        let redact = |sender: &str, target: &EventId| {
            h.send(NewEvent::redaction(
                room_id.clone(),
                user(sender),
                target.to_owned(),
                object(json!({ "reason": "no" })),
            ))
        };

        // Bob (0) may not redact alice's event: nothing is written.
        let keys = h.key_count();
        assert!(matches!(
            redact(BOB, &alices.event_id),
            Err(RoomError::Forbidden(_))
        ));
        assert_eq!(h.key_count(), keys);

        // Bob may redact his own, alice (100) anyone's.
        for (sender, target) in [(BOB, &bobs), (ALICE, &alices)] {
            let redaction = redact(sender, &target.event_id).unwrap();
            assert_eq!(
                redaction.pdu.redacts(),
                Some(&*target.event_id),
                "room v{room_version}"
            );
            let stored = h.rooms.get_event(&target.event_id).unwrap().unwrap().pdu;
            assert!(stored.content_object().is_empty(), "room v{room_version}");
            let because = match stored.unsigned().and_then(|u| u.get("redacted_because")) {
                Some(CanonicalJsonValue::Object(because)) => because.clone(),
                other => panic!("no redacted_because: {other:?}"),
            };
            assert_eq!(
                because.get("event_id"),
                Some(&CanonicalJsonValue::String(redaction.event_id.to_string()))
            );
            // Same event, same signatures; only the content hash no longer matches.
            assert_eq!(stored.event_id(), target.event_id);
            assert_eq!(h.verify(&stored), Verified::Signatures);
            // The timeline serves the redacted form.
            let in_timeline = h
                .timeline(&room_id)
                .into_iter()
                .find(|pdu| pdu.event_id() == target.event_id)
                .unwrap();
            assert!(in_timeline.content_object().is_empty());
        }
    }
}

#[test]
fn redacting_elsewhere_is_refused_and_unknown_targets_are_no_error() {
    let h = Harness::new();
    let room = h.public_room(RoomVersionId::V11);
    let other = h.public_room(RoomVersionId::V11);
    let elsewhere = h.message(&other, ALICE, "elsewhere").unwrap();
    let err = h
        .send(NewEvent::redaction(
            room.clone(),
            user(ALICE),
            elsewhere.event_id.clone(),
            object(json!({})),
        ))
        .unwrap_err();
    assert!(matches!(err, RoomError::InvalidParam(_)), "{err}");
    let unknown = EventId::parse("$unknownunknownunknownunknownunknownunknown00").unwrap();
    h.send(NewEvent::redaction(
        room,
        user(ALICE),
        unknown,
        object(json!({})),
    ))
    .unwrap();
    let untouched = h.rooms.get_event(&elsewhere.event_id).unwrap().unwrap();
    assert!(!untouched.pdu.content_object().is_empty());
}

#[test]
fn the_guard_must_lock_the_room_written_to() {
    let h = Harness::new();
    let room = h.public_room(RoomVersionId::V11);
    let other = h.public_room(RoomVersionId::V11);
    let event = NewEvent::message(
        room.clone(),
        user(ALICE),
        TimelineEventType::RoomMessage,
        object(json!({ "body": "x" })),
    );
    let wrong_room = h.rooms.locks().try_lock(&other).unwrap();
    assert!(matches!(
        h.rooms.append_local(&wrong_room, event.clone()),
        Err(RoomError::LockMismatch { .. })
    ));
    // A guard of another service's locks proves nothing here.
    let foreign_locks = crate::rooms::graph::RoomLocks::new();
    let foreign = foreign_locks.try_lock(&room).unwrap();
    assert!(matches!(
        h.rooms.append_local(&foreign, event.clone()),
        Err(RoomError::LockMismatch { .. })
    ));
    drop((wrong_room, foreign));

    let unknown = NewEvent {
        room_id: room_id!("!nowhere:example.org").to_owned(),
        ..event
    };
    assert!(matches!(h.send(unknown), Err(RoomError::NotFound("room"))));
}

#[tokio::test]
async fn the_notifier_wakes_waiters_when_an_event_is_persisted() {
    let h = Harness::new();
    let room_id = h.public_room(RoomVersionId::V11);
    let since = h.rooms.current_stream_position();
    let mut receiver = h.rooms.subscribe();
    let waiter = {
        let rooms = Arc::clone(&h.rooms);
        tokio::spawn(async move { rooms.notifier().wait_after(since).await })
    };
    let sent = {
        let rooms = Arc::clone(&h.rooms);
        let guard = rooms.lock(&room_id).await;
        let event = NewEvent::message(
            room_id.clone(),
            user(ALICE),
            TimelineEventType::RoomMessage,
            object(json!({ "body": "wake up" })),
        );
        tokio::task::spawn_blocking(move || rooms.append_local(&guard, event))
            .await
            .unwrap()
            .unwrap()
    };
    let woke_at = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(woke_at, sent.stream);
    assert!(receiver.has_changed().unwrap());
    assert_eq!(*receiver.borrow_and_update(), sent.stream);
    assert!(sent.stream > since && since > StreamPosition(0));
}

#[test]
fn a_second_create_event_is_refused() {
    let h = Harness::new();
    let room_id = h.public_room(RoomVersionId::V11);
    let keys = h.key_count();
    let err = h
        .state(
            &room_id,
            ALICE,
            StateEventType::RoomCreate,
            "",
            json!({ "room_version": "11" }),
        )
        .unwrap_err();
    assert!(matches!(err, RoomError::Forbidden(_)), "{err}");
    assert_eq!(h.key_count(), keys);
}
