//! Lazy-loaded members in `/sync`: a sender's member event comes with their first message
//! the device sees, not again with later ones (unless `include_redundant_members`), again
//! when it changes, and again for a sync repeated from an older token.
#![allow(
    clippy::panic,
    reason = "test helpers report failures by panicking with context"
)]

mod rooms_support;
mod sync_support;

use axon_complement_tests::{Homeserver, ServerOptions};
use rooms_support::{second_device, user};
use serde_json::{Value, json};
use sync_support::{events, filter_param, initial_with, joined_room, next_batch, since};

/// The member events in a room section's `section` (`state` or `timeline`) for `member`:
/// their event ids and display names.
fn members_of(room: &Value, section: &str, member: &str) -> Vec<(String, String)> {
    events(&room[section])
        .iter()
        .filter(|event| event["type"] == "m.room.member" && event["state_key"] == member)
        .map(|event| {
            (
                event["event_id"].as_str().unwrap_or_default().to_owned(),
                event["content"]["displayname"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

fn lazy(include_redundant_members: bool) -> String {
    filter_param(&json!({
        "room": {
            "state": {
                "lazy_load_members": true,
                "include_redundant_members": include_redundant_members
            },
            "timeline": { "limit": 1 }
        }
    }))
}

#[tokio::test]
async fn lazy_loading_sends_each_member_event_once_per_device() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let laptop = second_device(&hs, &alice).await;
    let bob = user(&hs, "bob").await;
    let room_id = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room_id).await;
    // The initial timeline (one event) is alice's, so bob's join is not in it.
    alice.send_text(&room_id, "welcome").await;
    let body = initial_with(&alice, &lazy(false)).await;
    assert!(
        members_of(joined_room(&body, &room_id), "state", &bob.user_id).is_empty(),
        "{body}"
    );
    let t0 = next_batch(&body);

    // Bob's first message brings his member event.
    bob.send_text(&room_id, "one").await;
    let body = since(&alice, &t0, &lazy(false)).await;
    let bob_join = members_of(joined_room(&body, &room_id), "state", &bob.user_id);
    assert_eq!(bob_join.len(), 1, "{body}");
    let t1 = next_batch(&body);

    // His second does not: the device has it.
    bob.send_text(&room_id, "two").await;
    let body = since(&alice, &t1, &lazy(false)).await;
    let room = joined_room(&body, &room_id);
    assert!(members_of(room, "state", &bob.user_id).is_empty(), "{room}");
    // Unless the filter wants redundant members.
    let body = since(&alice, &t1, &lazy(true)).await;
    let room = joined_room(&body, &room_id);
    assert_eq!(members_of(room, "state", &bob.user_id), bob_join, "{room}");
    // Another device of alice's was never sent it.
    let body = since(&laptop, &t1, &lazy(false)).await;
    let room = joined_room(&body, &room_id);
    assert_eq!(members_of(room, "state", &bob.user_id), bob_join, "{room}");

    // A sync repeated from the older token (its response lost) is sent it again, and the
    // syncs that follow from the repeated one's token are not.
    let body = since(&alice, &t0, &lazy(false)).await;
    let room = joined_room(&body, &room_id);
    assert_eq!(members_of(room, "state", &bob.user_id), bob_join, "{room}");
    let t2 = next_batch(&body);
    bob.send_text(&room_id, "three").await;
    let body = since(&alice, &t2, &lazy(false)).await;
    let room = joined_room(&body, &room_id);
    assert!(members_of(room, "state", &bob.user_id).is_empty(), "{room}");
    let t3 = next_batch(&body);

    // A new display name is a new member event: it comes (in the state, as the one-event
    // timeline holds the message after it), once.
    bob.put_state(
        &room_id,
        "m.room.member",
        &bob.user_id,
        json!({ "membership": "join", "displayname": "Robert" }),
    )
    .await
    .assert_ok();
    bob.send_text(&room_id, "four").await;
    let body = since(&alice, &t3, &lazy(false)).await;
    let room = joined_room(&body, &room_id);
    let renamed = members_of(room, "state", &bob.user_id);
    assert_eq!(renamed.len(), 1, "{room}");
    assert_eq!(renamed[0].1, "Robert", "{room}");
    assert_ne!(renamed, bob_join);
    let t4 = next_batch(&body);
    bob.send_text(&room_id, "five").await;
    let body = since(&alice, &t4, &lazy(false)).await;
    let room = joined_room(&body, &room_id);
    assert!(members_of(room, "state", &bob.user_id).is_empty(), "{room}");

    // A member event seen in the timeline is not sent again in the state either.
    let t5 = next_batch(&body);
    bob.put_state(
        &room_id,
        "m.room.member",
        &bob.user_id,
        json!({ "membership": "join", "displayname": "Bobby" }),
    )
    .await
    .assert_ok();
    let body = since(&alice, &t5, &lazy(false)).await;
    let room = joined_room(&body, &room_id);
    let in_timeline = members_of(room, "timeline", &bob.user_id);
    assert_eq!(in_timeline.len(), 1, "{room}");
    let t6 = next_batch(&body);
    bob.send_text(&room_id, "six").await;
    let body = since(&alice, &t6, &lazy(false)).await;
    let room = joined_room(&body, &room_id);
    assert!(members_of(room, "state", &bob.user_id).is_empty(), "{room}");

    // An initial sync starts again: bob's member comes with his next message (the initial
    // timeline is alice's, so it does not bring it).
    alice.send_text(&room_id, "hello again").await;
    let body = initial_with(&alice, &lazy(false)).await;
    assert!(
        members_of(joined_room(&body, &room_id), "state", &bob.user_id).is_empty(),
        "{body}"
    );
    let t7 = next_batch(&body);
    bob.send_text(&room_id, "seven").await;
    let body = since(&alice, &t7, &lazy(false)).await;
    let room = joined_room(&body, &room_id);
    assert_eq!(members_of(room, "state", &bob.user_id).len(), 1, "{room}");
}
