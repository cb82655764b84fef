use std::collections::HashSet;

use ruma::RoomVersionId;
use serde_json::json;

use super::*;

const TASKS: usize = 8;
const MESSAGES_PER_TASK: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_to_one_room_make_one_linear_chain() {
    let h = Harness::new();
    let room_id = h.public_room(RoomVersionId::V11);
    let created = h.timeline(&room_id).len();

    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let rooms = Arc::clone(&h.rooms);
            let room_id = room_id.clone();
            tokio::spawn(async move {
                for n in 0..MESSAGES_PER_TASK {
                    let guard = rooms.lock(&room_id).await;
                    let event = NewEvent::message(
                        room_id.clone(),
                        user(ALICE),
                        TimelineEventType::RoomMessage,
                        object(json!({ "body": format!("{task}/{n}") })),
                    );
                    rooms.append_local(&guard, event).unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }

    let timeline = h
        .rooms
        .timeline(&room_id, None, ruma::api::Direction::Forward, usize::MAX)
        .unwrap();
    assert_eq!(timeline.len(), created + TASKS * MESSAGES_PER_TASK);
    let messages = timeline
        .iter()
        .filter(|(_, pdu)| pdu.kind().to_string() == "m.room.message")
        .count();
    assert_eq!(messages, TASKS * MESSAGES_PER_TASK);
    let bodies: HashSet<String> = timeline
        .iter()
        .filter_map(|(_, pdu)| match pdu.content_object().get("body") {
            Some(ruma::CanonicalJsonValue::String(body)) => Some(body.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(bodies.len(), TASKS * MESSAGES_PER_TASK);

    // One chain: each event follows exactly the one before it, one level deeper, at a later
    // stream position.
    for pair in timeline.windows(2) {
        let ((earlier_stream, earlier), (later_stream, later)) = (&pair[0], &pair[1]);
        assert!(later_stream > earlier_stream);
        assert_eq!(later.prev_events(), [earlier.event_id().to_owned()]);
        assert_eq!(u64::from(later.depth()), u64::from(earlier.depth()) + 1);
    }
    assert_eq!(u64::from(timeline[0].1.depth()), 1);
    let streams: HashSet<_> = timeline.iter().map(|(stream, _)| *stream).collect();
    assert_eq!(streams.len(), timeline.len());
    assert_eq!(
        h.rooms.forward_extremities(&room_id).unwrap(),
        [timeline.last().unwrap().1.event_id().to_owned()]
    );
    assert_eq!(
        h.rooms.current_stream_position(),
        timeline.last().unwrap().0
    );
    // Every lock was released and its entry removed.
    assert!(h.rooms.locks().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_to_different_rooms_share_one_stream() {
    let h = Harness::new();
    let rooms: Vec<OwnedRoomId> = (0..4).map(|_| h.public_room(RoomVersionId::V11)).collect();
    let tasks: Vec<_> = rooms
        .iter()
        .map(|room_id| {
            let service = Arc::clone(&h.rooms);
            let room_id = room_id.clone();
            tokio::spawn(async move {
                let mut positions = Vec::new();
                for n in 0..25 {
                    let guard = service.lock(&room_id).await;
                    let event = NewEvent::message(
                        room_id.clone(),
                        user(ALICE),
                        TimelineEventType::RoomMessage,
                        object(json!({ "body": n.to_string() })),
                    );
                    positions.push(service.append_local(&guard, event).unwrap().stream);
                }
                positions
            })
        })
        .collect();
    let mut all = HashSet::new();
    for task in tasks {
        let positions = task.await.unwrap();
        assert!(positions.windows(2).all(|pair| pair[0] < pair[1]));
        for position in positions {
            assert!(all.insert(position), "{position:?} given twice");
        }
    }
    assert_eq!(all.len(), 100);
    assert_eq!(
        h.rooms.current_stream_position(),
        all.into_iter().max().unwrap()
    );
}
