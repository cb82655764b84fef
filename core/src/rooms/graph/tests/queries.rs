use ruma::RoomVersionId;
use ruma::api::Direction;

use super::*;
use crate::rooms::graph::{StreamPosition, TopoPosition};
use crate::storage::{RocksOptions, RocksStore};

/// A room with its creation events and 10 messages; returns the room and the messages' ids.
fn room_with_messages(h: &Harness) -> (OwnedRoomId, Vec<OwnedEventId>) {
    let room_id = h.public_room(RoomVersionId::V11);
    let ids = (0..10)
        .map(|n| h.message(&room_id, ALICE, &n.to_string()).unwrap().event_id)
        .collect();
    (room_id, ids)
}

fn ids<T>(page: &[(T, Pdu)]) -> Vec<OwnedEventId> {
    page.iter()
        .map(|(_, pdu)| pdu.event_id().to_owned())
        .collect()
}

#[test]
fn timeline_pages_in_both_directions() {
    let h = Harness::new();
    let (room_id, messages) = room_with_messages(&h);
    let all: Vec<OwnedEventId> = h
        .timeline(&room_id)
        .iter()
        .map(|p| p.event_id().to_owned())
        .collect();
    assert_eq!(all.len(), 15);
    assert_eq!(all[5..], messages[..]);

    // Forward from the start, 4 at a time, each page continuing after the last position.
    let mut from = None;
    let mut seen = Vec::new();
    loop {
        let page = h
            .rooms
            .timeline(&room_id, from, Direction::Forward, 4)
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 4);
        from = Some(page.last().unwrap().0);
        seen.extend(ids(&page));
    }
    assert_eq!(seen, all);

    // Backward from the end, newest first.
    let page = h
        .rooms
        .timeline(&room_id, None, Direction::Backward, 3)
        .unwrap();
    assert_eq!(
        ids(&page),
        [&all[14], &all[13], &all[12]].map(|id| id.clone())
    );
    let next = h
        .rooms
        .timeline(&room_id, Some(page[2].0), Direction::Backward, 2)
        .unwrap();
    assert_eq!(ids(&next), [all[11].clone(), all[10].clone()]);
    // Since a position: only what came after it (what a sync since then returns).
    let since = h.rooms.get_event(&messages[7]).unwrap().unwrap().stream;
    let newer = h
        .rooms
        .timeline(&room_id, since, Direction::Forward, 100)
        .unwrap();
    assert_eq!(ids(&newer), messages[8..]);
    let before_all = h
        .rooms
        .timeline(&room_id, Some(StreamPosition(0)), Direction::Backward, 10)
        .unwrap();
    assert!(before_all.is_empty());
}

#[test]
fn messages_page_in_topological_order() {
    let h = Harness::new();
    let (room_id, messages) = room_with_messages(&h);
    let other = h.public_room(RoomVersionId::V11);
    h.message(&other, ALICE, "not in the first room").unwrap();

    let backward = h
        .rooms
        .messages(&room_id, None, Direction::Backward, 4)
        .unwrap();
    let expected: Vec<OwnedEventId> = messages.iter().rev().take(4).cloned().collect();
    assert_eq!(ids(&backward), expected);
    let depths: Vec<u64> = backward
        .iter()
        .map(|(position, _)| position.depth)
        .collect();
    assert_eq!(depths, [15, 14, 13, 12]);

    // Continue from the last one, then turn around.
    let token = backward[3].0;
    let older = h
        .rooms
        .messages(&room_id, Some(token), Direction::Backward, 100)
        .unwrap();
    assert_eq!(older.len(), 11);
    assert_eq!(older.last().unwrap().0.depth, 1);
    let forward = h
        .rooms
        .messages(&room_id, Some(token), Direction::Forward, 2)
        .unwrap();
    assert_eq!(ids(&forward), messages[7..9]);

    // A stored event's position is a token next to it.
    let stored = h.rooms.get_event(&messages[0]).unwrap().unwrap();
    let position = stored.topo_position().unwrap();
    assert_eq!(
        position,
        TopoPosition {
            depth: 6,
            stream: stored.stream.unwrap()
        }
    );
    let after = h
        .rooms
        .messages(&room_id, Some(position), Direction::Forward, 1)
        .unwrap();
    assert_eq!(ids(&after), messages[1..2]);
}

#[test]
fn unknown_rooms_and_events() {
    let h = Harness::new();
    let room = ruma::room_id!("!unknown:example.org");
    let event = ruma::event_id!("$unknown");
    assert!(h.rooms.room_info(room).unwrap().is_none());
    assert!(h.rooms.room_version(room).unwrap().is_none());
    assert!(h.rooms.get_event(event).unwrap().is_none());
    assert!(matches!(
        h.rooms.current_state(room),
        Err(RoomError::NotFound("room"))
    ));
    assert!(matches!(
        h.rooms.timeline(room, None, Direction::Forward, 1),
        Err(RoomError::NotFound("room"))
    ));
    assert!(matches!(
        h.rooms.state_at_event(event),
        Err(RoomError::NotFound("event"))
    ));
    assert!(h.rooms.membership(room, &user(ALICE)).unwrap().is_none());
    assert!(h.rooms.members(room, None).unwrap().is_empty());
}

#[test]
fn rooms_survive_a_reopen_of_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let options = RocksOptions::default();
    let key_dir = tempfile::tempdir().unwrap();
    let keys =
        Arc::new(ServerKeys::load_or_create(key_dir.path(), server_name!("example.org")).unwrap());
    let open =
        || -> Arc<dyn KvStore> { Arc::new(RocksStore::open(dir.path(), options.clone()).unwrap()) };

    let (room_id, before, position) = {
        let store = open();
        let rooms = Rooms::new(Arc::clone(&store), Arc::clone(&keys)).unwrap();
        let mut request = CreateRoom::new(user(ALICE), version(RoomVersionId::V11));
        request.preset = RoomPreset::PublicChat;
        let room_id = rooms.create_room(request).unwrap();
        let guard = rooms.locks().try_lock(&room_id).unwrap();
        rooms
            .append_local(
                &guard,
                NewEvent::message(
                    room_id.clone(),
                    user(ALICE),
                    TimelineEventType::RoomMessage,
                    object(serde_json::json!({ "body": "persisted" })),
                ),
            )
            .unwrap();
        let before = rooms
            .timeline(&room_id, None, Direction::Forward, 100)
            .unwrap();
        (room_id, before, rooms.current_stream_position())
    };

    let store = open();
    let rooms = Rooms::new(Arc::clone(&store), keys).unwrap();
    assert_eq!(rooms.current_stream_position(), position);
    let after = rooms
        .timeline(&room_id, None, Direction::Forward, 100)
        .unwrap();
    assert_eq!(
        after
            .iter()
            .map(|(s, p)| (*s, p.json().clone()))
            .collect::<Vec<_>>(),
        before
            .iter()
            .map(|(s, p)| (*s, p.json().clone()))
            .collect::<Vec<_>>()
    );
    assert_eq!(rooms.current_state(&room_id).unwrap().len(), 5);
    assert_eq!(
        rooms.joined_rooms(&user(ALICE)).unwrap(),
        std::slice::from_ref(&room_id)
    );

    // Appending continues the chain after the restart.
    let guard = rooms.locks().try_lock(&room_id).unwrap();
    let next = rooms
        .append_local(
            &guard,
            NewEvent::message(
                room_id.clone(),
                user(ALICE),
                TimelineEventType::RoomMessage,
                object(serde_json::json!({ "body": "after restart" })),
            ),
        )
        .unwrap();
    assert_eq!(next.stream, StreamPosition(position.0 + 1));
    assert_eq!(
        next.pdu.prev_events(),
        [before.last().unwrap().1.event_id().to_owned()]
    );
}

#[test]
fn stored_events_read_back_as_sent_with_or_without_their_stored_hash() {
    use crate::rooms::graph::tables::EVENTS;
    use crate::storage::{Json, WriteBatch};

    // v1 names events by an `event_id` field, v11 and v12 by the reference hash.
    for version_id in [RoomVersionId::V1, RoomVersionId::V11, RoomVersionId::V12] {
        let h = Harness::new();
        let room_id = h.public_room(version_id.clone());
        let sent = h.message(&room_id, ALICE, "hello").unwrap();
        let read = h.rooms.get_event(&sent.event_id).unwrap().unwrap().pdu;
        assert_eq!(read.event_id(), sent.event_id, "{version_id}");
        let short = h
            .rooms
            .short_ids
            .event(&*h.store, &sent.event_id)
            .unwrap()
            .unwrap();
        let Json(mut record) = EVENTS.get(&*h.store, &short).unwrap().unwrap();
        assert_eq!(
            record.reference_hash.as_deref(),
            Some(read.reference_hash()),
            "{version_id}"
        );

        // A record from before the hash was stored is hashed on read, to the same event.
        record.reference_hash = None;
        let mut batch = WriteBatch::new();
        EVENTS.put(&mut batch, &short, &Json(record));
        h.store.write(batch).unwrap();
        let reread = h.rooms.get_event(&sent.event_id).unwrap().unwrap().pdu;
        assert_eq!(reread.event_id(), read.event_id(), "{version_id}");
        assert_eq!(reread.reference_hash(), read.reference_hash());
        assert_eq!(reread.json(), read.json());
    }
}

#[test]
fn single_state_entries_before_and_at_an_event() {
    let h = Harness::new();
    let room_id = h.public_room(RoomVersionId::V11);
    let member = StateEventType::RoomMember;
    let bob_join = h.member(&room_id, BOB, BOB, "join").unwrap();
    let said = h.message(&room_id, BOB, "hi").unwrap();
    let entry_ids = |pdus: Vec<Pdu>| -> Vec<OwnedEventId> {
        pdus.iter().map(|pdu| pdu.event_id().to_owned()).collect()
    };

    // Before bob's join he has no entry; at it, the join is his entry.
    let before_join = h
        .rooms
        .state_entries_before_event(&bob_join.event_id, &member, &[BOB, ALICE])
        .unwrap();
    assert_eq!(before_join.len(), 1);
    assert_eq!(before_join[0].state_key(), Some(ALICE));
    assert_eq!(
        entry_ids(
            h.rooms
                .state_entries_at_event(&bob_join.event_id, &member, &[BOB])
                .unwrap()
        ),
        vec![bob_join.event_id.clone()]
    );

    // The entries agree with the full state, in the order asked for; unknown keys and other
    // types are simply absent.
    let entries = h
        .rooms
        .state_entries_before_event(&said.event_id, &member, &[BOB, "@nobody:x", ALICE])
        .unwrap();
    let full = h.rooms.state_before_event(&said.event_id).unwrap();
    let expected: Vec<OwnedEventId> = [BOB, ALICE]
        .iter()
        .map(|who| {
            full.iter()
                .find(|pdu| {
                    pdu.kind().to_string() == "m.room.member" && pdu.state_key() == Some(*who)
                })
                .unwrap()
                .event_id()
                .to_owned()
        })
        .collect();
    assert_eq!(entry_ids(entries), expected);
    assert!(
        h.rooms
            .state_entries_before_event(&said.event_id, &StateEventType::RoomTopic, &[BOB])
            .unwrap()
            .is_empty()
    );
    let unknown = EventId::parse("$unknown:example.org").unwrap();
    assert!(matches!(
        h.rooms
            .state_entries_before_event(&unknown, &member, &[BOB]),
        Err(RoomError::NotFound(_))
    ));
}
