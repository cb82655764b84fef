//! Sending events (with transaction ids), state events, fetching one event, redaction.
#![allow(
    clippy::panic,
    reason = "test helpers report failures by panicking with context"
)]

mod rooms_support;

use axon_complement_tests::{Homeserver, ServerOptions, assert_matrix_error};
use rooms_support::{
    assert_client_format, message_bodies, room_path, second_device, state_path, user,
};
use serde_json::json;

#[tokio::test]
async fn send_returns_an_event_that_can_be_fetched_in_client_format() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let room_id = alice.create_room(json!({})).await;
    let content = json!({ "msgtype": "m.text", "body": "hello" });
    let resp = alice
        .send_with_txn(&room_id, "m.room.message", "txn1", content.clone())
        .await;
    resp.assert_ok();
    let event_id = resp.str_at("/event_id").to_owned();
    assert!(event_id.starts_with('$'), "{}", resp.describe());

    let resp = alice.get_event(&room_id, &event_id).await;
    resp.assert_ok();
    let event = &resp.body;
    assert_client_format(event, &room_id);
    assert_eq!(event["event_id"], event_id.as_str());
    assert_eq!(event["type"], "m.room.message");
    assert_eq!(event["sender"], alice.user_id.as_str());
    assert_eq!(event["content"], content);
    assert!(event.get("state_key").is_none(), "{event}");
    // The sender's own device sees its transaction id.
    assert_eq!(event["unsigned"]["transaction_id"], "txn1", "{event}");
}

#[tokio::test]
async fn the_same_transaction_id_is_idempotent_per_device() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let phone = second_device(&hs, &alice).await;
    let room_id = alice.create_room(json!({})).await;
    let content = json!({ "msgtype": "m.text", "body": "once" });

    let first = alice
        .send_with_txn(&room_id, "m.room.message", "same", content.clone())
        .await;
    first.assert_ok();
    let again = alice
        .send_with_txn(&room_id, "m.room.message", "same", content.clone())
        .await;
    again.assert_ok();
    assert_eq!(first.str_at("/event_id"), again.str_at("/event_id"));

    // Another device of the same user with the same txn id sends a new event.
    let other = phone
        .send_with_txn(&room_id, "m.room.message", "same", content.clone())
        .await;
    other.assert_ok();
    assert_ne!(first.str_at("/event_id"), other.str_at("/event_id"));

    let bodies = message_bodies(&alice.all_messages(&room_id, "b", 10).await);
    assert_eq!(
        bodies,
        vec!["once", "once"],
        "exactly two events were created"
    );

    // The transaction id shows only to the device that used it.
    let seen_by_phone = phone.get_event(&room_id, first.str_at("/event_id")).await;
    seen_by_phone.assert_ok();
    assert!(
        seen_by_phone.body["unsigned"]
            .get("transaction_id")
            .is_none(),
        "{}",
        seen_by_phone.describe()
    );
}

#[tokio::test]
async fn state_events_are_written_and_read_by_type_and_key() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let room_id = alice.create_room(json!({})).await;

    let resp = alice
        .put_state(&room_id, "m.room.topic", "", json!({ "topic": "first" }))
        .await;
    resp.assert_ok();
    assert!(resp.str_at("/event_id").starts_with('$'));
    // The empty state key can also be left out of the path.
    let short = room_path(&room_id, "/state/m.room.topic");
    alice
        .client
        .put(&short, json!({ "topic": "second" }))
        .await
        .assert_ok();
    let resp = alice.client.get(&short).await;
    resp.assert_ok();
    assert_eq!(resp.body, json!({ "topic": "second" }));
    assert_eq!(
        alice.state_content(&room_id, "m.room.topic", "").await,
        json!({ "topic": "second" })
    );

    alice
        .put_state(
            &room_id,
            "org.example.thing",
            "key/with:odd chars",
            json!({ "v": 1 }),
        )
        .await
        .assert_ok();
    assert_eq!(
        alice
            .state_content(&room_id, "org.example.thing", "key/with:odd chars")
            .await,
        json!({ "v": 1 })
    );

    // `format=event` returns the whole event.
    let resp = alice
        .client
        .get(&format!(
            "{}?format=event",
            state_path(&room_id, "m.room.topic", "")
        ))
        .await;
    resp.assert_ok();
    assert_client_format(&resp.body, &room_id);
    assert_eq!(resp.body["state_key"], "");
    assert_eq!(resp.body["content"]["topic"], "second");

    assert_matrix_error(
        &alice.get_state(&room_id, "org.example.absent", "").await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn unknown_events_and_rooms_are_not_found() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let room_id = alice.create_room(json!({})).await;
    assert_matrix_error(
        &alice
            .get_event(&room_id, "$doesnotexist0000000000000000000000000000000")
            .await,
        404,
        "M_NOT_FOUND",
    );
    // An event of another room is not found through this room.
    let other = alice.create_room(json!({})).await;
    let event_id = alice.send_text(&other, "elsewhere").await;
    assert_matrix_error(
        &alice.get_event(&room_id, &event_id).await,
        404,
        "M_NOT_FOUND",
    );
    let nowhere = format!("!nosuchroom:{}", hs.server_name());
    let resp = alice.try_send_text(&nowhere, "x").await;
    assert!(
        matches!(resp.status, 403 | 404),
        "sending into an unknown room: {}",
        resp.describe()
    );
}

#[tokio::test]
async fn non_members_cannot_send_or_read() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let eve = user(&hs, "eve").await;
    let room_id = alice.create_room(json!({ "preset": "public_chat" })).await;
    let event_id = alice.send_text(&room_id, "members only").await;

    assert_matrix_error(&eve.try_send_text(&room_id, "hi").await, 403, "M_FORBIDDEN");
    assert_matrix_error(
        &eve.put_state(&room_id, "m.room.topic", "", json!({ "topic": "x" }))
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_matrix_error(
        &eve.get_state(&room_id, "m.room.topic", "").await,
        403,
        "M_FORBIDDEN",
    );
    assert_matrix_error(
        &eve.client.get(&room_path(&room_id, "/state")).await,
        403,
        "M_FORBIDDEN",
    );
    let resp = eve.get_event(&room_id, &event_id).await;
    assert!(
        matches!(resp.status, 403 | 404),
        "a non-member read an event: {}",
        resp.describe()
    );
    assert_matrix_error(&eve.messages(&room_id, "dir=b").await, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn power_levels_guard_state_and_messages() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let room_id = alice
        .create_room(json!({
            "preset": "public_chat",
            "room_version": "11",
            "power_level_content_override": { "events": { "org.example.guarded": 50 } },
        }))
        .await;
    bob.join(&room_id).await;

    // public_chat leaves the usual state_default of 50: bob (0) cannot change the topic.
    let resp = bob
        .put_state(&room_id, "m.room.topic", "", json!({ "topic": "mine" }))
        .await;
    assert_matrix_error(&resp, 403, "M_FORBIDDEN");
    assert!(!resp.str_at("/error").is_empty());
    let resp = bob
        .send_with_txn(&room_id, "org.example.guarded", "t1", json!({}))
        .await;
    assert_matrix_error(&resp, 403, "M_FORBIDDEN");
    // But he may send messages.
    bob.send_text(&room_id, "allowed").await;

    // Raised to 50, he can set the topic.
    let mut power = alice
        .state_content(&room_id, "m.room.power_levels", "")
        .await;
    power["users"][&bob.user_id] = json!(50);
    alice
        .put_state(&room_id, "m.room.power_levels", "", power.clone())
        .await
        .assert_ok();
    bob.put_state(&room_id, "m.room.topic", "", json!({ "topic": "mine" }))
        .await
        .assert_ok();
    // He cannot give himself more than he has.
    power["users"][&bob.user_id] = json!(100);
    assert_matrix_error(
        &bob.put_state(&room_id, "m.room.power_levels", "", power)
            .await,
        403,
        "M_FORBIDDEN",
    );
    // Nor may a user set another user's member event.
    assert_matrix_error(
        &bob.put_state(
            &room_id,
            "m.room.member",
            &alice.user_id,
            json!({ "membership": "leave" }),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn redaction_removes_the_content() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let room_id = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room_id).await;
    let secret = alice.send_text(&room_id, "oops, a secret").await;
    let bobs = bob.send_text(&room_id, "bob's words").await;

    // Bob (power 0) may not redact alice's event; alice (100) may redact anyone's.
    let path = |event_id: &str, txn: &str| {
        room_path(
            &room_id,
            &format!(
                "/redact/{}/{txn}",
                axon_complement_tests::encode_path_segment(event_id)
            ),
        )
    };
    assert_matrix_error(
        &bob.client.put(&path(&secret, "r0"), json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    let resp = alice
        .client
        .put(&path(&secret, "r1"), json!({ "reason": "leaked" }))
        .await;
    resp.assert_ok();
    let redaction_id = resp.str_at("/event_id").to_owned();
    // Retrying the same transaction returns the same redaction.
    let again = alice
        .client
        .put(&path(&secret, "r1"), json!({ "reason": "leaked" }))
        .await;
    again.assert_ok();
    assert_eq!(again.str_at("/event_id"), redaction_id);

    let resp = bob.get_event(&room_id, &secret).await;
    resp.assert_ok();
    assert_eq!(resp.body["content"], json!({}), "{}", resp.describe());
    assert_eq!(resp.body["type"], "m.room.message");
    assert_eq!(
        resp.body["unsigned"]["redacted_because"]["event_id"],
        redaction_id,
        "{}",
        resp.describe()
    );
    // /messages serves the redacted form too.
    let events = alice.all_messages(&room_id, "b", 10).await;
    assert!(!message_bodies(&events).contains(&"oops, a secret".to_owned()));
    let redaction = events
        .iter()
        .find(|event| event["event_id"] == redaction_id.as_str())
        .unwrap_or_else(|| panic!("no redaction event in {events:?}"));
    assert_eq!(redaction["type"], "m.room.redaction");
    assert_eq!(redaction["content"]["redacts"], secret.as_str());

    // A user may redact their own event.
    bob.client
        .put(&path(&bobs, "r2"), json!({}))
        .await
        .assert_ok();
    assert_eq!(
        bob.get_event(&room_id, &bobs).await.body["content"],
        json!({})
    );
}

#[tokio::test]
async fn a_transaction_is_remembered_across_a_restart() {
    let mut hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let room_id = alice.create_room(json!({})).await;
    let content = json!({ "msgtype": "m.text", "body": "durable" });
    let first = alice
        .send_with_txn(&room_id, "m.room.message", "restart-txn", content.clone())
        .await;
    first.assert_ok();

    hs.restart().await;
    let again = alice
        .send_with_txn(&room_id, "m.room.message", "restart-txn", content)
        .await;
    again.assert_ok();
    assert_eq!(again.str_at("/event_id"), first.str_at("/event_id"));
    let bodies = message_bodies(&alice.all_messages(&room_id, "b", 10).await);
    assert_eq!(bodies, ["durable"]);
}
