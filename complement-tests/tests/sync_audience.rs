//! Waiting syncs and what ends them: typing in a room the user is not in and key changes of
//! users they share no room with do not; typing in their rooms, a room mate's new device keys
//! and cross-signing keys do.
#![allow(
    clippy::panic,
    reason = "test helpers report failures by panicking with context"
)]

mod e2ee_support;
mod rooms_support;
mod sync_support;

use axon_complement_tests::{Homeserver, ServerOptions, encode_path_segment};
use e2ee_support::{Device, Key, cross_signing_key};
use rooms_support::{User, event_ids, room_path, user};
use serde_json::{Value, json};
use sync_support::{ephemeral, joined, joined_room, long_poll, next_batch, timeline, token};

/// How long a poll may wait: far longer than any test step, so an answer before it means
/// something woke the poll.
const POLL_MS: u64 = 20_000;

/// Starts a long poll of `user` from `since`, to be awaited after the test acts.
fn poll(user: &User, since: &str) -> tokio::task::JoinHandle<Value> {
    let (user, since) = (user.clone(), since.to_owned());
    tokio::spawn(async move { long_poll(&user, &since, POLL_MS, "").await })
}

async fn answer(poll: tokio::task::JoinHandle<Value>) -> Value {
    poll.await.unwrap_or_else(|err| panic!("poll task: {err}"))
}

async fn type_in(user: &User, room_id: &str) {
    user.client
        .put(
            &room_path(
                room_id,
                &format!("/typing/{}", encode_path_segment(&user.user_id)),
            ),
            json!({ "typing": true, "timeout": 30_000 }),
        )
        .await
        .assert_ok();
}

/// The user ids of a room section's `m.typing` event, if it has one.
fn typing_users(room: &Value) -> Option<Vec<Value>> {
    ephemeral(room, "m.typing").map(|event| {
        event["content"]["user_ids"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    })
}

/// Uploads fresh device keys for `user`'s device.
async fn upload_device_keys(user: &User) {
    let device = Device {
        user_id: user.user_id.clone(),
        device_id: user.device_id.clone(),
        key: Key::new(),
    };
    user.client
        .post(
            &rooms_support::v3("/keys/upload"),
            json!({ "device_keys": device.device_keys() }),
        )
        .await
        .assert_ok();
}

fn changed(body: &Value) -> Vec<Value> {
    body["device_lists"]["changed"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn typing_ends_a_poll_only_in_the_users_rooms() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let carol = user(&hs, "carol").await;
    let here = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&here).await;
    let elsewhere = carol.create_room(json!({ "preset": "public_chat" })).await;
    let start = token(&bob).await;

    // Carol types where bob is not: his poll goes on until a message of his room ends it.
    let waiting = poll(&bob, &start);
    type_in(&carol, &elsewhere).await;
    let event_id = alice.send_text(&here, "after the typing elsewhere").await;
    let body = answer(waiting).await;
    let room = joined_room(&body, &here);
    assert_eq!(event_ids(&timeline(room)), vec![event_id], "{body}");
    assert_eq!(typing_users(room), None, "{body}");
    assert!(joined(&body, &elsewhere).is_none(), "{body}");

    // Typing in his room ends it.
    let waiting = poll(&bob, &next_batch(&body));
    type_in(&alice, &here).await;
    let body = answer(waiting).await;
    assert_eq!(
        typing_users(joined_room(&body, &here)),
        Some(vec![Value::from(alice.user_id.clone())]),
        "{body}"
    );
}

#[tokio::test]
async fn a_room_mates_key_changes_end_a_poll_and_a_strangers_do_not() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let carol = user(&hs, "carol").await;
    let room_id = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room_id).await;
    let start = token(&bob).await;

    // Carol shares no room with bob: only alice's new device keys end his poll.
    let waiting = poll(&bob, &start);
    upload_device_keys(&carol).await;
    let phone = rooms_support::second_device(&hs, &alice).await;
    upload_device_keys(&phone).await;
    let body = answer(waiting).await;
    assert_eq!(
        changed(&body),
        vec![Value::from(alice.user_id.clone())],
        "{body}"
    );

    // Her cross-signing keys too.
    let waiting = poll(&bob, &next_batch(&body));
    let master = Key::new();
    alice
        .client
        .post(
            &rooms_support::v3("/keys/device_signing/upload"),
            json!({ "master_key": cross_signing_key(&master, &alice.user_id, "master", None) }),
        )
        .await
        .assert_ok();
    let body = answer(waiting).await;
    assert_eq!(
        changed(&body),
        vec![Value::from(alice.user_id.clone())],
        "{body}"
    );
}
