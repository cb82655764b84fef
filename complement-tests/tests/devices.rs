//! `/devices`, `/devices/{deviceId}`, `/delete_devices`.
#![allow(
    clippy::panic,
    reason = "test helpers report failures by panicking with context"
)]

use axon_complement_tests::{
    Auth, Client, Homeserver, ServerOptions, Session, assert_matrix_error,
};
use reqwest::Method;
use serde_json::json;

const PASSWORD: &str = "correct-horse-battery-staple";

async fn login_named(client: &Client, name: &str) -> Session {
    let mut body = Client::password_login_body("alice", PASSWORD);
    body["initial_device_display_name"] = json!(name);
    Session::from_response(&client.login(body).await)
}

/// The device ids and display names listed by `GET /devices`.
async fn list(client: &Client) -> Vec<(String, Option<String>)> {
    let resp = client.get("/_matrix/client/v3/devices").await;
    resp.assert_ok();
    let mut devices: Vec<(String, Option<String>)> = resp.body["devices"]
        .as_array()
        .unwrap_or_else(|| panic!("no devices: {}", resp.describe()))
        .iter()
        .map(|d| {
            (
                d["device_id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("device without id: {d}"))
                    .to_owned(),
                d["display_name"].as_str().map(str::to_owned),
            )
        })
        .collect();
    devices.sort();
    devices
}

fn device_path(device_id: &str) -> String {
    format!("/_matrix/client/v3/devices/{device_id}")
}

#[tokio::test]
async fn devices_lists_every_session_of_the_user() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let first = client.register("alice", PASSWORD).await;
    let phone = login_named(&client, "Phone").await;
    client.register("bob", PASSWORD).await;

    let devices = list(&client.as_session(&first)).await;
    let ids: Vec<&str> = devices.iter().map(|(id, _)| id.as_str()).collect();
    let mut expected = vec![first.device_id.as_str(), phone.device_id.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected);
    assert!(
        devices.contains(&(phone.device_id.clone(), Some("Phone".to_owned()))),
        "{devices:?}"
    );
}

#[tokio::test]
async fn device_can_be_read_and_renamed() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let first = client.register("alice", PASSWORD).await;
    let phone = login_named(&client, "Phone").await;
    let alice = client.as_session(&first);

    let resp = alice.get(&device_path(&phone.device_id)).await;
    resp.assert_ok();
    assert_eq!(resp.str_at("/device_id"), phone.device_id);
    assert_eq!(resp.str_at("/display_name"), "Phone");

    alice
        .put(
            &device_path(&phone.device_id),
            json!({ "display_name": "Old phone" }),
        )
        .await
        .assert_ok();
    let resp = alice.get(&device_path(&phone.device_id)).await;
    resp.assert_ok();
    assert_eq!(resp.str_at("/display_name"), "Old phone");
    // Renaming does not log the device out.
    client.as_session(&phone).whoami().await.assert_ok();
}

#[tokio::test]
async fn a_device_shows_when_and_from_where_it_was_last_used() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let first = client.register("alice", PASSWORD).await;
    let phone = login_named(&client, "Phone").await;
    let before_use = axon_complement_tests::now_ms();
    client.as_session(&phone).whoami().await.assert_ok();

    let resp = client
        .as_session(&first)
        .get(&device_path(&phone.device_id))
        .await;
    resp.assert_ok();
    assert_eq!(
        resp.str_at("/last_seen_ip"),
        "127.0.0.1",
        "{}",
        resp.describe()
    );
    let seen = resp.u64_at("/last_seen_ts");
    assert!(
        seen >= before_use.saturating_sub(1_000) && seen <= axon_complement_tests::now_ms(),
        "last_seen_ts {seen} is not the time of the last request ({before_use})"
    );
}

#[tokio::test]
async fn unknown_and_foreign_devices_are_not_found() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let alice = client.register("alice", PASSWORD).await;
    let bob = client.register("bob", PASSWORD).await;
    let as_alice = client.as_session(&alice);

    assert_matrix_error(
        &as_alice.get(&device_path("NOSUCHDEVICE")).await,
        404,
        "M_NOT_FOUND",
    );
    assert_matrix_error(
        &as_alice
            .put(&device_path("NOSUCHDEVICE"), json!({ "display_name": "x" }))
            .await,
        404,
        "M_NOT_FOUND",
    );
    // Bob's device does not exist as far as alice is concerned.
    assert_matrix_error(
        &as_alice.get(&device_path(&bob.device_id)).await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn deleting_a_device_requires_the_password() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let first = client.register("alice", PASSWORD).await;
    let phone = login_named(&client, "Phone").await;
    let alice = client.as_session(&first);
    let path = device_path(&phone.device_id);

    let challenge = alice.delete(&path, json!({})).await;
    challenge.assert_status(401);
    assert!(
        challenge.body["session"].is_string(),
        "{}",
        challenge.describe()
    );
    let flows = challenge.body["flows"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        flows
            .iter()
            .any(|f| f["stages"] == json!(["m.login.password"])),
        "no password flow: {}",
        challenge.describe()
    );
    client.as_session(&phone).whoami().await.assert_ok();

    let wrong = alice
        .uiaa(
            Method::DELETE,
            &path,
            json!({}),
            &Auth::password(&first.user_id, "not-the-password"),
        )
        .await;
    wrong.assert_status(401);
    assert!(wrong.body["errcode"].is_string(), "{}", wrong.describe());
    client.as_session(&phone).whoami().await.assert_ok();

    alice
        .uiaa(
            Method::DELETE,
            &path,
            json!({}),
            &Auth::password(&first.user_id, PASSWORD),
        )
        .await
        .assert_ok();
    assert_matrix_error(
        &client.as_session(&phone).whoami().await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_matrix_error(&alice.get(&path).await, 404, "M_NOT_FOUND");
    let remaining: Vec<String> = list(&alice).await.into_iter().map(|(id, _)| id).collect();
    assert_eq!(remaining, vec![first.device_id.clone()]);
}

#[tokio::test]
async fn delete_devices_removes_several_at_once() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let first = client.register("alice", PASSWORD).await;
    let phone = login_named(&client, "Phone").await;
    let tablet = login_named(&client, "Tablet").await;
    let alice = client.as_session(&first);

    let body = json!({ "devices": [phone.device_id, tablet.device_id] });
    let challenge = alice
        .post("/_matrix/client/v3/delete_devices", body.clone())
        .await;
    challenge.assert_status(401);
    assert!(
        challenge.body["flows"].is_array(),
        "{}",
        challenge.describe()
    );
    client.as_session(&tablet).whoami().await.assert_ok();

    alice
        .uiaa(
            Method::POST,
            "/_matrix/client/v3/delete_devices",
            body,
            &Auth::password(&first.user_id, PASSWORD),
        )
        .await
        .assert_ok();
    for gone in [&phone, &tablet] {
        assert_matrix_error(
            &client.as_session(gone).whoami().await,
            401,
            "M_UNKNOWN_TOKEN",
        );
    }
    let remaining: Vec<String> = list(&alice).await.into_iter().map(|(id, _)| id).collect();
    assert_eq!(remaining, vec![first.device_id.clone()]);
}
