//! Synapse-compatible shared-secret registration
//! (`/_synapse/admin/v1/register`) and registration-token creation
//! (`/_synapse/admin/v1/registration_tokens/new`).
#![allow(
    clippy::panic,
    reason = "test helpers report failures by panicking with context"
)]

use axon_complement_tests::{
    Client, Homeserver, Response, ServerOptions, Session, assert_matrix_error, shared_secret_mac,
};
use serde_json::json;

const PASSWORD: &str = "correct-horse-battery-staple";
const REGISTER: &str = "/_synapse/admin/v1/register";
const NEW_TOKEN: &str = "/_synapse/admin/v1/registration_tokens/new";

async fn fetch_nonce(client: &Client) -> String {
    let resp = client.get(REGISTER).await;
    resp.assert_ok();
    resp.str_at("/nonce").to_owned()
}

async fn post_register(
    client: &Client,
    nonce: &str,
    username: &str,
    admin: bool,
    mac: &str,
) -> Response {
    client
        .post(
            REGISTER,
            json!({
                "nonce": nonce,
                "username": username,
                "password": PASSWORD,
                "admin": admin,
                "mac": mac,
            }),
        )
        .await
}

async fn assert_not_registered(client: &Client, username: &str) {
    let resp = client
        .get(&format!(
            "/_matrix/client/v3/register/available?username={username}"
        ))
        .await;
    resp.assert_ok();
    assert_eq!(resp.body["available"], json!(true));
}

#[tokio::test]
async fn nonces_are_fresh() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let first = fetch_nonce(&client).await;
    let second = fetch_nonce(&client).await;
    assert!(!first.is_empty());
    assert_ne!(first, second);
}

#[tokio::test]
async fn shared_secret_registration_creates_an_admin() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let resp = hs.shared_secret_register("root", PASSWORD, true).await;
    let admin = Session::from_response(&resp);
    assert_eq!(admin.user_id, hs.user_id("root"));
    let whoami = client.as_session(&admin).whoami().await;
    whoami.assert_ok();
    assert_eq!(whoami.str_at("/user_id"), admin.user_id);
    assert_eq!(whoami.str_at("/device_id"), admin.device_id);
    // The password was set, and the admin can use the admin API.
    client.login_password("root", PASSWORD).await;
    client
        .as_session(&admin)
        .post(NEW_TOKEN, json!({}))
        .await
        .assert_ok();
}

#[tokio::test]
async fn shared_secret_registration_can_create_a_normal_user() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let user = Session::from_response(&hs.shared_secret_register("carol", PASSWORD, false).await);
    assert_eq!(user.user_id, hs.user_id("carol"));
    let resp = client.as_session(&user).post(NEW_TOKEN, json!({})).await;
    assert_matrix_error(&resp, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn wrong_mac_is_refused() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let nonce = fetch_nonce(&client).await;
    // Right shape, wrong key.
    let mac = shared_secret_mac("not-the-secret", &nonce, "eve", PASSWORD, true);
    let resp = post_register(&client, &nonce, "eve", true, &mac).await;
    resp.assert_status(403);
    assert!(resp.body["errcode"].is_string(), "{}", resp.describe());
    // A MAC for "notadmin" does not register an admin.
    let Some(secret) = hs.options().shared_secret() else {
        panic!("the default options have a shared secret");
    };
    let nonce2 = fetch_nonce(&client).await;
    let mac = shared_secret_mac(secret, &nonce2, "eve", PASSWORD, false);
    let resp = post_register(&client, &nonce2, "eve", true, &mac).await;
    resp.assert_status(403);
    assert_not_registered(&client, "eve").await;
}

#[tokio::test]
async fn nonce_is_single_use() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let Some(secret) = hs.options().shared_secret().map(str::to_owned) else {
        panic!("the default options have a shared secret");
    };
    let nonce = fetch_nonce(&client).await;
    let mac = shared_secret_mac(&secret, &nonce, "first", PASSWORD, false);
    post_register(&client, &nonce, "first", false, &mac)
        .await
        .assert_ok();

    let mac = shared_secret_mac(&secret, &nonce, "second", PASSWORD, false);
    let reused = post_register(&client, &nonce, "second", false, &mac).await;
    reused.assert_status(400);
    assert!(reused.body["errcode"].is_string(), "{}", reused.describe());
    assert_not_registered(&client, "second").await;

    let mac = shared_secret_mac(&secret, "made-up-nonce", "third", PASSWORD, false);
    let unknown = post_register(&client, "made-up-nonce", "third", false, &mac).await;
    unknown.assert_status(400);
    assert_not_registered(&client, "third").await;
}

#[tokio::test]
async fn shared_secret_registration_is_off_without_a_secret() {
    let hs = Homeserver::start(ServerOptions::new().without_shared_secret()).await;
    let client = hs.client();
    let resp = client.get(REGISTER).await;
    assert!(
        matches!(resp.status, 400 | 404) && resp.body.get("nonce").is_none(),
        "{}",
        resp.describe()
    );
    assert!(resp.body["errcode"].is_string(), "{}", resp.describe());
    let mac = shared_secret_mac("", "nonce", "eve", PASSWORD, true);
    let resp = post_register(&client, "nonce", "eve", true, &mac).await;
    assert!(matches!(resp.status, 400 | 404), "{}", resp.describe());
    assert_not_registered(&client, "eve").await;
}

#[tokio::test]
async fn registration_tokens_can_be_created_as_asked() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let admin = hs.register_admin("root", PASSWORD).await;
    let as_admin = client.as_session(&admin);

    let named = as_admin
        .post(
            NEW_TOKEN,
            json!({ "token": "Welcome-2025_ok.", "uses_allowed": 3 }),
        )
        .await;
    named.assert_ok();
    assert_eq!(named.str_at("/token"), "Welcome-2025_ok.");
    assert_eq!(named.body["uses_allowed"], json!(3));
    assert_eq!(named.body["pending"], json!(0));
    assert_eq!(named.body["completed"], json!(0));
    assert_eq!(named.body["expiry_time"], json!(null));

    let sized = as_admin.post(NEW_TOKEN, json!({ "length": 24 })).await;
    sized.assert_ok();
    assert_eq!(sized.str_at("/token").len(), 24);
    assert_eq!(sized.body["uses_allowed"], json!(null));

    let duplicate = as_admin
        .post(NEW_TOKEN, json!({ "token": "Welcome-2025_ok." }))
        .await;
    assert_matrix_error(&duplicate, 400, "M_INVALID_PARAM");

    let anonymous = client.post(NEW_TOKEN, json!({})).await;
    assert_matrix_error(&anonymous, 401, "M_MISSING_TOKEN");
}
