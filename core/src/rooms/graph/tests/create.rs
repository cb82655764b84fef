use ruma::events::StateEventType;
use ruma::events::room::member::MembershipState;
use ruma::signatures::Verified;
use ruma::{CanonicalJsonValue, RoomVersionId};
use serde_json::json;

use super::*;
use crate::rooms::graph::InitialStateEvent;
use crate::rooms::room_version::supported_room_versions;

#[test]
fn public_chat_room_has_the_spec_state_and_auth_events() {
    let h = Harness::new();
    let room_id = h.public_room(RoomVersionId::V11);
    let events = h.timeline(&room_id);
    let kinds: Vec<String> = events.iter().map(|pdu| pdu.kind().to_string()).collect();
    assert_eq!(
        kinds,
        [
            "m.room.create",
            "m.room.member",
            "m.room.power_levels",
            "m.room.join_rules",
            "m.room.history_visibility",
        ]
    );
    let [create, join, power, join_rules, history] = &events[..] else {
        unreachable!()
    };

    // Each event's auth events are the specification's selection from the state before it.
    assert!(create.auth_events().is_empty());
    let ids = |pdus: &[&Pdu]| sorted_ids(pdus.iter().map(|pdu| pdu.event_id()));
    assert_eq!(
        sorted_ids(join.auth_events().iter().map(|id| &**id)),
        ids(&[create])
    );
    assert_eq!(
        sorted_ids(power.auth_events().iter().map(|id| &**id)),
        ids(&[create, join])
    );
    for later in [join_rules, history] {
        assert_eq!(
            sorted_ids(later.auth_events().iter().map(|id| &**id)),
            ids(&[create, join, power])
        );
    }
    // One linear chain.
    for (depth, pair) in (1_u64..).zip(events.windows(2)) {
        assert_eq!(u64::from(pair[0].depth()), depth);
        assert_eq!(pair[1].prev_events(), [pair[0].event_id().to_owned()]);
    }

    let state = h.state_ids(&room_id);
    assert_eq!(state.len(), 5);
    for pdu in &events {
        assert!(state.iter().any(|(_, _, id)| id == pdu.event_id()));
        assert_eq!(h.verify(pdu), Verified::All);
    }
    assert_eq!(
        join_rules.content_object().get("join_rule"),
        Some(&CanonicalJsonValue::String("public".to_owned()))
    );
    let levels: serde_json::Value = serde_json::from_str(power.content().get()).unwrap();
    assert_eq!(levels["users"], json!({ ALICE: 100 }));
    assert_eq!(levels["invite"], json!(50));
    assert_eq!(levels["state_default"], json!(50));

    let info = h.rooms.room_info(&room_id).unwrap().unwrap();
    assert_eq!(info.creator, user(ALICE));
    assert_eq!(info.version.id(), &RoomVersionId::V11);
    assert_eq!(room_id.server_name(), Some(server_name!("example.org")));
    assert_eq!(
        h.rooms.membership(&room_id, &user(ALICE)).unwrap(),
        Some(MembershipState::Join)
    );
    assert_eq!(
        h.rooms.joined_rooms(&user(ALICE)).unwrap(),
        std::slice::from_ref(&room_id)
    );
    assert_eq!(
        h.rooms.forward_extremities(&room_id).unwrap(),
        [history.event_id().to_owned()]
    );
}

#[test]
fn private_chat_with_invites_initial_state_name_and_topic() {
    let h = Harness::new();
    let mut request = CreateRoom::new(user(ALICE), version(RoomVersionId::V10));
    request.name = Some("Lunch".to_owned());
    request.topic = Some("Where to eat".to_owned());
    request.invites = vec![user(BOB), user(ALICE), user(BOB)];
    request.is_direct = true;
    request.creator_displayname = Some("Alice".to_owned());
    request.initial_state = vec![
        InitialStateEvent {
            kind: StateEventType::RoomHistoryVisibility,
            state_key: String::new(),
            content: object(json!({ "history_visibility": "joined" })),
        },
        InitialStateEvent {
            kind: StateEventType::from("org.example.custom"),
            state_key: "k".to_owned(),
            content: object(json!({ "x": 1 })),
        },
    ];
    let room_id = h.rooms.create_room(request).unwrap();
    let kinds: Vec<(String, Option<String>)> = h
        .timeline(&room_id)
        .iter()
        .map(|pdu| (pdu.kind().to_string(), pdu.state_key().map(str::to_owned)))
        .collect();
    let expected = [
        ("m.room.create", ""),
        ("m.room.member", ALICE),
        ("m.room.power_levels", ""),
        ("m.room.join_rules", ""),
        ("m.room.guest_access", ""),
        ("m.room.history_visibility", ""),
        ("org.example.custom", "k"),
        ("m.room.name", ""),
        ("m.room.topic", ""),
        ("m.room.member", BOB),
    ]
    .map(|(kind, key)| (kind.to_owned(), Some(key.to_owned())));
    assert_eq!(kinds, expected);

    let state = |kind: StateEventType, key: &str| {
        h.rooms
            .state_event(&room_id, &kind, key)
            .unwrap()
            .unwrap()
            .content_object()
            .clone()
    };
    assert_eq!(
        state(StateEventType::RoomHistoryVisibility, "")["history_visibility"],
        CanonicalJsonValue::String("joined".to_owned())
    );
    assert_eq!(
        state(StateEventType::RoomJoinRules, "")["join_rule"],
        CanonicalJsonValue::String("invite".to_owned())
    );
    assert_eq!(
        state(StateEventType::RoomMember, BOB)["is_direct"],
        CanonicalJsonValue::Bool(true)
    );
    assert_eq!(
        state(StateEventType::RoomMember, ALICE)["displayname"],
        CanonicalJsonValue::String("Alice".to_owned())
    );
    assert_eq!(
        state(StateEventType::RoomPowerLevels, "")["invite"],
        CanonicalJsonValue::Integer(0_u32.into())
    );
    // Pre-v11 create events name the creator.
    assert_eq!(
        state(StateEventType::RoomCreate, "")["creator"],
        CanonicalJsonValue::String(ALICE.to_owned())
    );
    assert_eq!(
        h.rooms.membership(&room_id, &user(BOB)).unwrap(),
        Some(MembershipState::Invite)
    );
    assert!(h.rooms.joined_rooms(&user(BOB)).unwrap().is_empty());
    assert_eq!(
        h.rooms.rooms_of_user(&user(BOB)).unwrap(),
        [(room_id.clone(), MembershipState::Invite)]
    );
    // Bob accepts.
    h.member(&room_id, BOB, BOB, "join").unwrap();
    assert_eq!(h.rooms.joined_rooms(&user(BOB)).unwrap(), [room_id]);
}

#[test]
fn v12_rooms_take_their_id_from_the_create_event_and_privilege_creators() {
    let h = Harness::new();
    let mut request = CreateRoom::new(user(ALICE), version(RoomVersionId::V12));
    request.preset = RoomPreset::TrustedPrivateChat;
    request.invites = vec![user(BOB)];
    let room_id = h.rooms.create_room(request).unwrap();
    let events = h.timeline(&room_id);
    let create = &events[0];
    assert_eq!(
        room_id.as_str(),
        format!("!{}", create.event_id().as_str().trim_start_matches('$'))
    );
    assert!(room_id.server_name().is_none());
    assert!(!create.json().contains_key("room_id"));
    // The creator's join needs no auth event: v12 events do not list the create event.
    assert!(events[1].auth_events().is_empty());
    let levels = h
        .rooms
        .state_event(&room_id, &StateEventType::RoomPowerLevels, "")
        .unwrap()
        .unwrap();
    let levels: serde_json::Value = serde_json::from_str(levels.content().get()).unwrap();
    assert_eq!(levels["users"], json!({}));
    assert_eq!(levels["events"]["m.room.tombstone"], json!(150));
    assert_eq!(
        create.content_object().get("additional_creators"),
        Some(&CanonicalJsonValue::Array(vec![
            CanonicalJsonValue::String(BOB.to_owned())
        ]))
    );
    // The creator has unlimited power: changing the power levels needs level 100.
    h.state(
        &room_id,
        ALICE,
        StateEventType::RoomPowerLevels,
        "",
        json!({ "users": { CAROL: 100 } }),
    )
    .unwrap();
    for pdu in h.timeline(&room_id) {
        assert_eq!(h.verify(&pdu), Verified::All);
    }
}

#[test]
fn bad_requests_are_refused_before_anything_is_written() {
    let h = Harness::new();
    let before = h.key_count();

    let mut request = CreateRoom::new(user(ALICE), version(RoomVersionId::V12));
    request.power_level_content_override = Some(object(json!({ "users": { ALICE: 100 } })));
    assert!(matches!(
        h.rooms.create_room(request),
        Err(RoomError::InvalidParam(_))
    ));

    let mut request = CreateRoom::new(user(ALICE), version(RoomVersionId::V11));
    request.initial_state = vec![InitialStateEvent {
        kind: StateEventType::RoomCreate,
        state_key: String::new(),
        content: object(json!({})),
    }];
    assert!(matches!(
        h.rooms.create_room(request),
        Err(RoomError::InvalidParam(_))
    ));

    let mut request = CreateRoom::new(user(ALICE), version(RoomVersionId::V12));
    request.creation_content = Some(object(json!({ "additional_creators": ["not a user"] })));
    assert!(matches!(
        h.rooms.create_room(request),
        Err(RoomError::InvalidParam(_))
    ));

    // A creator of another server cannot be signed for.
    let request = CreateRoom::new(user("@mallory:evil.example"), version(RoomVersionId::V11));
    assert!(matches!(
        h.rooms.create_room(request),
        Err(RoomError::Pdu(_))
    ));
    assert_eq!(h.key_count(), before);
}

#[test]
fn power_level_override_and_initial_power_levels_apply() {
    let h = Harness::new();
    let mut request = CreateRoom::new(user(ALICE), version(RoomVersionId::V11));
    request.initial_state = vec![InitialStateEvent {
        kind: StateEventType::RoomPowerLevels,
        state_key: String::new(),
        content: object(json!({ "users": { ALICE: 100 }, "state_default": 10 })),
    }];
    request.power_level_content_override = Some(object(json!({ "events_default": 5 })));
    let room_id = h.rooms.create_room(request).unwrap();
    let levels = h
        .rooms
        .state_event(&room_id, &StateEventType::RoomPowerLevels, "")
        .unwrap()
        .unwrap();
    let levels: serde_json::Value = serde_json::from_str(levels.content().get()).unwrap();
    assert_eq!(
        levels,
        json!({ "users": { ALICE: 100 }, "state_default": 10, "events_default": 5 })
    );
    // Sent once, in the power levels' place.
    let count = h
        .timeline(&room_id)
        .iter()
        .filter(|pdu| pdu.kind().to_string() == "m.room.power_levels")
        .count();
    assert_eq!(count, 1);
}

#[test]
fn every_supported_version_creates_rooms_whose_events_verify() {
    for room_version in supported_room_versions() {
        let h = Harness::new();
        let room_id = h.public_room(room_version.id().clone());
        h.message(&room_id, ALICE, "hello").unwrap();
        let events = h.timeline(&room_id);
        assert_eq!(events.len(), 6, "room v{room_version}");
        for pdu in &events {
            assert_eq!(h.verify(pdu), Verified::All, "room v{room_version}");
        }
        // The stored events parse back to the same ids (v1 and v2 carry theirs).
        for pdu in &events {
            let stored = h.rooms.get_event(pdu.event_id()).unwrap().unwrap();
            assert_eq!(stored.pdu.event_id(), pdu.event_id());
            assert_eq!(stored.room_id, room_id);
        }
    }
}
