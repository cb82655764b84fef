//! `/messages` with a `filter`, lazy-loaded members, and `/members?at=`.
#![allow(
    clippy::panic,
    reason = "test helpers report failures by panicking with context"
)]

mod rooms_support;

use std::collections::HashSet;

use axon_complement_tests::{Homeserver, ServerOptions, assert_matrix_error, encode_path_segment};
use rooms_support::{User, event_ids, message_bodies, room_path, user};
use serde_json::{Value, json};

/// Every event of `/messages` backwards under `filter`, in pages of `limit`, checking that no
/// page is over the limit and no event comes twice.
async fn filtered(user: &User, room_id: &str, filter: &Value, limit: usize) -> Vec<Value> {
    let filter = encode_path_segment(&filter.to_string());
    let mut events = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..1_000 {
        let mut query = format!("dir=b&limit={limit}&filter={filter}");
        if let Some(from) = &from {
            query.push_str(&format!("&from={}", encode_path_segment(from)));
        }
        let resp = user.messages(room_id, &query).await;
        resp.assert_ok();
        let chunk = resp.body["chunk"].as_array().cloned().unwrap_or_default();
        assert!(chunk.len() <= limit, "over the limit: {}", resp.describe());
        events.extend(chunk);
        match resp.body["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => break,
        }
    }
    let ids = event_ids(&events);
    assert_eq!(
        ids.len(),
        ids.iter().collect::<HashSet<_>>().len(),
        "{ids:?}"
    );
    events
}

#[tokio::test]
async fn filters_select_events_without_counting_the_others() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let room_id = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room_id).await;
    for i in 0..6 {
        alice.send_text(&room_id, &format!("a{i}")).await;
        bob.send_text(&room_id, &format!("b{i}")).await;
    }
    let image = json!({ "msgtype": "m.image", "body": "pic", "url": "mxc://localhost/pic" });
    alice
        .client
        .put(&room_path(&room_id, "/send/m.room.message/img1"), image)
        .await
        .assert_ok();
    alice
        .client
        .put(
            &room_path(&room_id, "/send/org.example.custom/c1"),
            json!({ "x": 1 }),
        )
        .await
        .assert_ok();

    // Senders: bob's messages only, newest first, in pages of two.
    let events = filtered(
        &alice,
        &room_id,
        &json!({ "senders": [bob.user_id], "types": ["m.room.message"] }),
        2,
    )
    .await;
    assert_eq!(
        message_bodies(&events),
        (0..6).rev().map(|i| format!("b{i}")).collect::<Vec<_>>()
    );
    // not_senders is the complement among messages.
    let events = filtered(
        &alice,
        &room_id,
        &json!({ "not_senders": [bob.user_id], "types": ["m.room.message"] }),
        3,
    )
    .await;
    let mut expected = vec!["pic".to_owned()];
    expected.extend((0..6).rev().map(|i| format!("a{i}")));
    assert_eq!(message_bodies(&events), expected);
    // Types with a wildcard, and not_types.
    let events = filtered(&alice, &room_id, &json!({ "types": ["org.example.*"] }), 5).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "org.example.custom");
    let events = filtered(
        &alice,
        &room_id,
        &json!({ "not_types": ["m.room.message", "org.example.*"] }),
        4,
    )
    .await;
    assert!(
        events.iter().all(|e| e["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("m.room.") && t != "m.room.message")),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e["type"] == "m.room.create"));
    // contains_url.
    let events = filtered(&alice, &room_id, &json!({ "contains_url": true }), 10).await;
    assert_eq!(message_bodies(&events), ["pic"]);
    let events = filtered(
        &alice,
        &room_id,
        &json!({ "contains_url": false, "types": ["m.room.message"] }),
        10,
    )
    .await;
    assert_eq!(events.len(), 12);
    // The filter's own limit lowers the page size.
    let filter = encode_path_segment(&json!({ "limit": 3 }).to_string());
    let resp = alice
        .messages(&room_id, &format!("dir=b&limit=10&filter={filter}"))
        .await;
    resp.assert_ok();
    assert_eq!(resp.body["chunk"].as_array().map(Vec::len), Some(3));
    // A filter that is not JSON is refused.
    let resp = alice.messages(&room_id, "dir=b&filter=notjson").await;
    assert_eq!(resp.status, 400, "{}", resp.describe());
}

#[tokio::test]
async fn lazy_loading_returns_the_members_of_the_chunk_senders() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let carol = user(&hs, "carol").await;
    let room_id = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room_id).await;
    carol.join(&room_id).await;
    carol.send_text(&room_id, "old from carol").await;
    bob.client
        .put(
            &rooms_support::state_path(&room_id, "m.room.member", &bob.user_id),
            json!({ "membership": "join", "displayname": "Bobby" }),
        )
        .await
        .assert_ok();
    alice.send_text(&room_id, "hi").await;
    bob.send_text(&room_id, "hello").await;

    let filter = encode_path_segment(
        &json!({ "lazy_load_members": true, "types": ["m.room.message"] }).to_string(),
    );
    let resp = alice
        .messages(&room_id, &format!("dir=b&limit=2&filter={filter}"))
        .await;
    resp.assert_ok();
    assert_eq!(
        message_bodies(resp.body["chunk"].as_array().map_or(&[][..], Vec::as_slice)),
        ["hello", "hi"]
    );
    let state = resp.body["state"].as_array().cloned().unwrap_or_default();
    let mut members: Vec<&str> = state
        .iter()
        .map(|event| {
            assert_eq!(event["type"], "m.room.member", "{event}");
            event["state_key"].as_str().unwrap_or_default()
        })
        .collect();
    members.sort_unstable();
    let mut expected = [alice.user_id.as_str(), bob.user_id.as_str()];
    expected.sort_unstable();
    assert_eq!(members, expected, "carol sent nothing in this chunk");
    let bob_member = state
        .iter()
        .find(|event| event["state_key"] == bob.user_id.as_str())
        .cloned()
        .unwrap_or_default();
    assert_eq!(bob_member["content"]["displayname"], "Bobby");

    // Without lazy loading there is no state.
    let resp = alice.messages(&room_id, "dir=b&limit=2").await;
    resp.assert_ok();
    assert!(
        resp.body
            .get("state")
            .is_none_or(|state| state.as_array().is_some_and(Vec::is_empty)),
        "{}",
        resp.describe()
    );
}

#[tokio::test]
async fn members_at_a_token_are_the_members_of_that_moment() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let room_id = alice.create_room(json!({ "preset": "public_chat" })).await;
    alice.send_text(&room_id, "before bob").await;
    let resp = alice.messages(&room_id, "dir=b&limit=1").await;
    resp.assert_ok();
    let before_bob = resp.str_at("/start").to_owned();
    bob.join(&room_id).await;
    alice.send_text(&room_id, "with bob").await;

    let at = |token: &str| format!("at={}", encode_path_segment(token));
    let join = "join".to_owned();
    assert_eq!(
        alice.members(&room_id, &at(&before_bob)).await,
        [(alice.user_id.clone(), join.clone())]
    );
    let mut now = vec![
        (alice.user_id.clone(), join.clone()),
        (bob.user_id.clone(), join),
    ];
    now.sort();
    assert_eq!(alice.members(&room_id, "").await, now);
    let resp = alice.messages(&room_id, "dir=b&limit=1").await;
    resp.assert_ok();
    assert_eq!(
        alice.members(&room_id, &at(resp.str_at("/start"))).await,
        now
    );
    // A malformed token is refused.
    let resp = alice
        .client
        .get(&room_path(&room_id, "/members?at=garbage"))
        .await;
    assert_matrix_error(&resp, 400, "M_INVALID_PARAM");
}
