//! EDUs and end-to-end encryption across two `axon` servers over TLS on loopback: a local
//! user's typing, read receipts and presence reach the other server's syncs; keys of a remote
//! user are queried and claimed through its server; to-device messages cross over once; a
//! device list change is announced; a server that cannot be reached is a key query failure.
#![allow(
    clippy::panic,
    reason = "test helpers report failures by panicking with context"
)]

mod e2ee_support;
mod federation_support;

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axon_complement_tests::{Auth, Homeserver, encode_path_segment, wait_until};
use e2ee_support::{
    Device, Key, PASSWORD, User, cross_signing_key, query, second_device, sync, upload,
    upload_device_keys, user, v3,
};
use federation_support::{A, B, Pki, free_port, options};
use reqwest::Method;
use serde_json::{Value, json};

/// How long a change may take to cross over.
const CROSSING: Duration = Duration::from_secs(30);

/// Quick retries, so nothing waits long on a backoff.
const SENDER: &str = "[federation_sender]\nretry_initial_ms = 50\nretry_max_ms = 500\n";

/// Servers A and B, each able to reach the other.
async fn start_pair() -> (Pki, Homeserver, Homeserver) {
    let pki = Pki::new(&[A, B]);
    let (a_port, b_port) = (free_port(), free_port());
    let a = Homeserver::start(options(&pki, A, a_port, &[(B, b_port)], SENDER)).await;
    let b = Homeserver::start(options(&pki, B, b_port, &[(A, a_port)], SENDER)).await;
    (pki, a, b)
}

/// `/_matrix/client/v3/rooms/{room_id}{rest}`.
fn room_path(room_id: &str, rest: &str) -> String {
    v3(&format!("/rooms/{}{rest}", encode_path_segment(room_id)))
}

/// Alice of A creates an encrypted public room `#edus:hs-a.test`, Bob of B joins it by its
/// alias, and both servers see him joined. Returns the room id.
async fn shared_room(alice: &User, bob: &User) -> String {
    let resp = alice
        .client
        .post(
            &v3("/createRoom"),
            json!({
                "preset": "public_chat",
                "room_alias_name": "edus",
                "initial_state": [{
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                }],
            }),
        )
        .await;
    resp.assert_ok();
    let room_id = resp.str_at("/room_id").to_owned();
    let alias = encode_path_segment(&format!("#edus:{A}"));
    bob.client
        .post(&v3(&format!("/join/{alias}")), json!({}))
        .await
        .assert_ok();
    let member = room_path(
        &room_id,
        &format!("/state/m.room.member/{}", encode_path_segment(&bob.user_id)),
    );
    wait_until("A to see Bob joined", CROSSING, || async {
        let resp = alice.client.get(&member).await;
        (resp.status == 200 && resp.body["membership"] == "join").then_some(())
    })
    .await;
    room_id
}

/// The next batch token of a sync response.
fn next_batch(resp: &Value) -> String {
    resp["next_batch"]
        .as_str()
        .unwrap_or_else(|| panic!("no next_batch in {resp}"))
        .to_owned()
}

/// Syncs `reader` from `since` until `found` picks something out of a response.
async fn sync_until<T>(
    reader: &User,
    since: &str,
    what: &str,
    found: impl Fn(&Value) -> Option<T>,
) -> T {
    wait_until(what, CROSSING, || async {
        found(&sync(reader, Some(since)).await.body)
    })
    .await
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The ephemeral event of `kind` of `room_id` in a sync response.
fn ephemeral<'a>(body: &'a Value, room_id: &str, kind: &str) -> Option<&'a Value> {
    body["rooms"]["join"][room_id]["ephemeral"]["events"]
        .as_array()?
        .iter()
        .find(|event| event["type"] == kind)
}

#[tokio::test]
async fn typing_receipts_presence_and_to_device_messages_cross_over() {
    let (_pki, a, b) = start_pair().await;
    let alice = user(&a, "alice").await;
    let bob = user(&b, "bob").await;
    let room_id = shared_room(&alice, &bob).await;
    let since = next_batch(&sync(&bob, None).await.body);

    // Typing.
    alice
        .client
        .put(
            &room_path(
                &room_id,
                &format!("/typing/{}", encode_path_segment(&alice.user_id)),
            ),
            json!({"typing": true, "timeout": 30000}),
        )
        .await
        .assert_ok();
    sync_until(&bob, &since, "Bob to see Alice typing", |body| {
        let typing = ephemeral(body, &room_id, "m.typing")?;
        typing["content"]["user_ids"]
            .as_array()?
            .contains(&Value::from(alice.user_id.as_str()))
            .then_some(())
    })
    .await;

    // A read receipt, for a message Bob's server has.
    let resp = alice
        .client
        .put(
            &room_path(&room_id, "/send/m.room.message/receipt-target"),
            json!({"msgtype": "m.text", "body": "read me"}),
        )
        .await;
    resp.assert_ok();
    let event_id = resp.str_at("/event_id").to_owned();
    let event_path = room_path(
        &room_id,
        &format!("/event/{}", encode_path_segment(&event_id)),
    );
    wait_until("B to have Alice's message", CROSSING, || async {
        (bob.client.get(&event_path).await.status == 200).then_some(())
    })
    .await;
    alice
        .client
        .post(
            &room_path(
                &room_id,
                &format!("/receipt/m.read/{}", encode_path_segment(&event_id)),
            ),
            json!({}),
        )
        .await
        .assert_ok();
    sync_until(&bob, &since, "Bob to see Alice's read receipt", |body| {
        let receipt = ephemeral(body, &room_id, "m.receipt")?;
        receipt["content"][event_id.as_str()]["m.read"]
            .get(alice.user_id.as_str())
            .map(|_| ())
    })
    .await;

    // Presence, with a status message.
    alice
        .client
        .put(
            &v3(&format!(
                "/presence/{}/status",
                encode_path_segment(&alice.user_id)
            )),
            json!({"presence": "online", "status_msg": "across the wire"}),
        )
        .await
        .assert_ok();
    let presence = v3(&format!(
        "/presence/{}/status",
        encode_path_segment(&alice.user_id)
    ));
    wait_until("B to know Alice's status", CROSSING, || async {
        let resp = bob.client.get(&presence).await;
        (resp.status == 200 && resp.body["status_msg"] == "across the wire").then_some(())
    })
    .await;

    // To-device: a transaction sent twice, then another; once the second arrives the first
    // has been handled too (one queue, in order), and it arrived exactly once.
    let alice_since = next_batch(&sync(&alice, None).await.body);
    for (txn, n) in [("t1", 1), ("t1", 1), ("t2", 2)] {
        bob.client
            .put(
                &v3(&format!("/sendToDevice/m.test.ping/{txn}")),
                json!({"messages": {
                    alice.user_id.as_str(): {alice.device_id.as_str(): {"n": n}},
                }}),
            )
            .await
            .assert_ok();
    }
    // To-device messages are served once per token: follow the tokens, collecting.
    let collected = Mutex::new((alice_since, Vec::<Value>::new()));
    wait_until(
        "the second to-device message to arrive",
        CROSSING,
        || async {
            let since = lock(&collected).0.clone();
            let body = sync(&alice, Some(&since)).await.body;
            let mut collected = lock(&collected);
            collected.0 = next_batch(&body);
            collected.1.extend(
                body["to_device"]["events"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            );
            collected
                .1
                .iter()
                .any(|event| event["content"]["n"] == 2)
                .then_some(())
        },
    )
    .await;
    let received = lock(&collected).1.clone();
    let pings: Vec<&Value> = received
        .iter()
        .filter(|event| event["type"] == "m.test.ping")
        .collect();
    assert_eq!(pings.len(), 2, "{received:?}");
    assert_eq!(pings[0]["content"]["n"], 1);
    assert!(
        pings
            .iter()
            .all(|event| event["sender"] == bob.user_id.as_str())
    );
}

#[tokio::test]
async fn keys_of_remote_users_are_queried_claimed_and_their_changes_announced() {
    let (_pki, a, b) = start_pair().await;
    let alice = user(&a, "alice").await;
    let bob = user(&b, "bob").await;

    // Alice's device keys, a one-time key and cross-signing keys.
    let device = Device::of(&alice);
    upload(
        &alice,
        json!({
            "device_keys": device.device_keys(),
            "one_time_keys": {"signed_curve25519:AAAAAQ": device.signed_key(false)},
        }),
    )
    .await
    .assert_ok();
    let (master, self_signing) = (Key::new(), Key::new());
    alice
        .client
        .post(
            &v3("/keys/device_signing/upload"),
            json!({
                "master_key": cross_signing_key(&master, &alice.user_id, "master", None),
                "self_signing_key": cross_signing_key(
                    &self_signing, &alice.user_id, "self_signing", Some(&master)),
            }),
        )
        .await
        .assert_ok();

    // Bob's server asks Alice's.
    let resp = query(&bob, &[&alice.user_id]).await;
    let keys = &resp.body["device_keys"][alice.user_id.as_str()][alice.device_id.as_str()];
    assert_eq!(
        keys["keys"][device.key_id().as_str()],
        device.key.public(),
        "{}",
        resp.describe()
    );
    let master_id = format!("ed25519:{}", master.public());
    assert_eq!(
        resp.body["master_keys"][alice.user_id.as_str()]["keys"][master_id.as_str()],
        master.public(),
        "{}",
        resp.describe()
    );
    assert_eq!(
        resp.body["self_signing_keys"][alice.user_id.as_str()]["usage"],
        json!(["self_signing"]),
        "{}",
        resp.describe()
    );
    assert!(resp.body.get("failures").is_none_or(|f| f == &json!({})));

    // Bob claims the one-time key through Alice's server; it is gone after.
    let claim = json!({"one_time_keys": {
        alice.user_id.as_str(): {alice.device_id.as_str(): "signed_curve25519"},
    }});
    let resp = bob.client.post(&v3("/keys/claim"), claim.clone()).await;
    resp.assert_ok();
    let claimed = &resp.body["one_time_keys"][alice.user_id.as_str()][alice.device_id.as_str()];
    assert!(
        claimed.get("signed_curve25519:AAAAAQ").is_some(),
        "{}",
        resp.describe()
    );
    let resp = bob.client.post(&v3("/keys/claim"), claim).await;
    resp.assert_ok();
    let again = &resp.body["one_time_keys"][alice.user_id.as_str()][alice.device_id.as_str()];
    assert!(
        again.get("signed_curve25519:AAAAAQ").is_none(),
        "{}",
        resp.describe()
    );

    // A server that does not exist is a failure, beside the answers of those that do.
    let resp = bob
        .client
        .post(
            &v3("/keys/query"),
            json!({
                "timeout": 5000,
                "device_keys": {"@ghost:nowhere.invalid": [], alice.user_id.as_str(): []},
            }),
        )
        .await;
    resp.assert_ok();
    assert!(
        resp.body["failures"].get("nowhere.invalid").is_some(),
        "{}",
        resp.describe()
    );
    assert!(
        resp.body["device_keys"][alice.user_id.as_str()]
            .get(alice.device_id.as_str())
            .is_some(),
        "{}",
        resp.describe()
    );

    // Sharing a room, Bob hears of Alice's new device.
    shared_room(&alice, &bob).await;
    let since = next_batch(&sync(&bob, None).await.body);
    let laptop = second_device(&a, &alice).await;
    upload_device_keys(&laptop, &Device::of(&laptop)).await;
    sync_until(&bob, &since, "Bob to see Alice's devices changed", |body| {
        changed(body, &alice.user_id)
    })
    .await;
    let resp = query(&bob, &[&alice.user_id]).await;
    assert!(
        resp.body["device_keys"][alice.user_id.as_str()]
            .get(laptop.device_id.as_str())
            .is_some(),
        "{}",
        resp.describe()
    );

    // A renamed device and a deleted one are announced too.
    let since = next_batch(&sync(&bob, None).await.body);
    alice
        .client
        .put(
            &v3(&format!("/devices/{}", alice.device_id)),
            json!({"display_name": "Alice's phone"}),
        )
        .await
        .assert_ok();
    sync_until(&bob, &since, "Bob to hear of the rename", |body| {
        changed(body, &alice.user_id)
    })
    .await;
    let since = next_batch(&sync(&bob, None).await.body);
    alice
        .client
        .uiaa(
            Method::DELETE,
            &v3(&format!("/devices/{}", laptop.device_id)),
            json!({}),
            &Auth::password(&alice.user_id, PASSWORD),
        )
        .await
        .assert_ok();
    sync_until(&bob, &since, "Bob to hear of the deletion", |body| {
        changed(body, &alice.user_id)
    })
    .await;
    let resp = query(&bob, &[&alice.user_id]).await;
    let devices = &resp.body["device_keys"][alice.user_id.as_str()];
    assert!(
        devices.get(laptop.device_id.as_str()).is_none(),
        "{}",
        resp.describe()
    );
    assert_eq!(
        devices[alice.device_id.as_str()]["unsigned"]["device_display_name"],
        "Alice's phone",
        "{}",
        resp.describe()
    );
}

/// `Some` when `user` is in the sync response's `device_lists.changed`.
fn changed(body: &Value, user: &str) -> Option<()> {
    body["device_lists"]["changed"]
        .as_array()?
        .contains(&Value::from(user))
        .then_some(())
}
