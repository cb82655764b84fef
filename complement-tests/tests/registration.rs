//! `POST /register`, its user-interactive authentication, username rules,
//! registration tokens, guests.
#![allow(
    clippy::panic,
    reason = "test helpers report failures by panicking with context"
)]

use std::time::Duration;

use axon_complement_tests::{
    Auth, Client, Homeserver, Response, ServerOptions, Session, assert_matrix_error, now_ms,
    wait_until,
};
use serde_json::{Value, json};

const PASSWORD: &str = "correct-horse-battery-staple";
const REGISTER: &str = "/_matrix/client/v3/register";
const NEW_TOKEN: &str = "/_synapse/admin/v1/registration_tokens/new";

fn stages(flow: &Value) -> Vec<&str> {
    flow["stages"]
        .as_array()
        .unwrap_or_else(|| panic!("flow without stages: {flow}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("non-string stage in {flow}"))
        })
        .collect()
}

async fn available(client: &Client, username: &str) -> Response {
    client
        .get(&format!("{REGISTER}/available?username={username}"))
        .await
}

async fn token_validity(client: &Client, token: &str) -> Option<bool> {
    let resp = client
        .get(&format!(
            "/_matrix/client/v1/register/m.login.registration_token/validity?token={token}"
        ))
        .await;
    resp.assert_ok();
    resp.body["valid"].as_bool()
}

async fn register_body(client: &Client, username: &str, auth: &Auth) -> Response {
    client
        .register_with(json!({ "username": username, "password": PASSWORD }), auth)
        .await
}

#[tokio::test]
async fn register_challenges_then_completes_with_dummy_auth() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let body = json!({ "username": "alice", "password": PASSWORD });

    let challenge = client.post(REGISTER, body.clone()).await;
    challenge.assert_status(401);
    let flows = challenge.body["flows"]
        .as_array()
        .unwrap_or_else(|| panic!("no flows: {}", challenge.describe()));
    assert!(
        flows.iter().any(|f| stages(f) == ["m.login.dummy"]),
        "no dummy flow in {flows:?}"
    );
    assert!(
        challenge.body["params"].is_object(),
        "{}",
        challenge.describe()
    );
    let session = challenge.str_at("/session").to_owned();
    assert!(!session.is_empty());
    // Nothing was registered by the challenge.
    available(&client, "alice").await.assert_ok();

    let mut with_auth = body;
    with_auth["auth"] = json!({ "type": "m.login.dummy", "session": session });
    let done = client.post(REGISTER, with_auth).await;
    done.assert_ok();
    assert_eq!(done.str_at("/user_id"), hs.user_id("alice"));
    let alice = Session::from_response(&done);
    assert!(!alice.access_token.is_empty() && !alice.device_id.is_empty());

    let whoami = client.as_session(&alice).whoami().await;
    whoami.assert_ok();
    assert_eq!(whoami.str_at("/user_id"), alice.user_id);
    assert_eq!(whoami.str_at("/device_id"), alice.device_id);
}

#[tokio::test]
async fn register_honours_device_id_and_display_name() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let resp = client
        .register_with(
            json!({
                "username": "alice",
                "password": PASSWORD,
                "device_id": "FIRSTDEVICE",
                "initial_device_display_name": "Alice's laptop",
            }),
            &Auth::dummy(),
        )
        .await;
    let alice = Session::from_response(&resp);
    assert_eq!(alice.device_id, "FIRSTDEVICE");
    let device = client
        .as_session(&alice)
        .get("/_matrix/client/v3/devices/FIRSTDEVICE")
        .await;
    device.assert_ok();
    assert_eq!(device.str_at("/display_name"), "Alice's laptop");
}

#[tokio::test]
async fn invalid_usernames_are_rejected() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    // "@" + localpart + ":" + server name must fit in 255 bytes.
    let longest = 255 - 2 - hs.server_name().len();
    let too_long = "a".repeat(longest + 1);
    for username in [
        "Alice",
        "al ice",
        "al:ice",
        "al@ice",
        "ali\u{e7}e",
        too_long.as_str(),
    ] {
        let resp = register_body(&client, username, &Auth::dummy()).await;
        assert_matrix_error(&resp, 400, "M_INVALID_USERNAME");
    }
    // The boundary and every allowed character are accepted.
    let session = client.register(&"b".repeat(longest), PASSWORD).await;
    assert_eq!(session.user_id.len(), 255);
    let session = client.register("x.y_z=1-2/3+4", PASSWORD).await;
    assert_eq!(session.user_id, hs.user_id("x.y_z=1-2/3+4"));
}

#[tokio::test]
async fn taken_username_is_in_use() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    client.register("alice", PASSWORD).await;
    let resp = register_body(&client, "alice", &Auth::dummy()).await;
    assert_matrix_error(&resp, 400, "M_USER_IN_USE");
}

#[tokio::test]
async fn availability_check_reports_free_taken_and_invalid() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let resp = available(&client, "bob").await;
    resp.assert_ok();
    assert_eq!(resp.body["available"], json!(true));

    client.register("bob", PASSWORD).await;
    assert_matrix_error(&available(&client, "bob").await, 400, "M_USER_IN_USE");
    assert_matrix_error(&available(&client, "Bob").await, 400, "M_INVALID_USERNAME");
}

#[tokio::test]
async fn disabled_registration_is_forbidden() {
    let hs =
        Homeserver::start(ServerOptions::new().with_toml("[registration]\nenabled = false")).await;
    let client = hs.client();
    let resp = client
        .post(
            REGISTER,
            json!({ "username": "alice", "password": PASSWORD }),
        )
        .await;
    assert_matrix_error(&resp, 403, "M_FORBIDDEN");
    // The operator's path still works, and that user can log in.
    let admin = hs.register_admin("admin", PASSWORD).await;
    let login = client.login_password("admin", PASSWORD).await;
    assert_eq!(login.user_id, admin.user_id);
}

#[tokio::test]
async fn registration_token_is_required_and_single_use() {
    let hs =
        Homeserver::start(ServerOptions::new().with_toml("[registration]\nrequire_token = true"))
            .await;
    let client = hs.client();
    let admin = hs.register_admin("admin", PASSWORD).await;

    // Every flow needs the token stage.
    let challenge = client
        .post(
            REGISTER,
            json!({ "username": "alice", "password": PASSWORD }),
        )
        .await;
    challenge.assert_status(401);
    let flows = challenge.body["flows"]
        .as_array()
        .unwrap_or_else(|| panic!("no flows: {}", challenge.describe()));
    assert!(!flows.is_empty());
    for flow in flows {
        assert!(
            stages(flow).contains(&"m.login.registration_token"),
            "flow without the token stage: {flow}"
        );
    }
    let without_token = register_body(&client, "alice", &Auth::dummy()).await;
    without_token.assert_status(401);
    assert!(without_token.body.get("access_token").is_none());

    let created = client
        .as_session(&admin)
        .post(NEW_TOKEN, json!({ "uses_allowed": 1 }))
        .await;
    created.assert_ok();
    let token = created.str_at("/token").to_owned();
    assert_eq!(created.body["uses_allowed"], json!(1));
    assert_eq!(created.body["pending"], json!(0));
    assert_eq!(created.body["completed"], json!(0));

    assert_eq!(token_validity(&client, &token).await, Some(true));
    assert_eq!(token_validity(&client, "NoSuchToken").await, Some(false));

    let alice = client.register_with_token("alice", PASSWORD, &token).await;
    assert_eq!(alice.user_id, hs.user_id("alice"));

    // The only use is spent.
    assert_eq!(token_validity(&client, &token).await, Some(false));
    let again = register_body(
        &client,
        "bob",
        &Auth::dummy().with_registration_token(&token),
    )
    .await;
    again.assert_status(401);
    assert!(again.body["errcode"].is_string(), "{}", again.describe());
    available(&client, "bob").await.assert_ok();
}

#[tokio::test]
async fn expired_registration_token_is_rejected() {
    let hs =
        Homeserver::start(ServerOptions::new().with_toml("[registration]\nrequire_token = true"))
            .await;
    let client = hs.client();
    let admin = hs.register_admin("admin", PASSWORD).await;
    let created = client
        .as_session(&admin)
        .post(NEW_TOKEN, json!({ "expiry_time": now_ms() + 3_000 }))
        .await;
    created.assert_ok();
    let token = created.str_at("/token").to_owned();
    assert_eq!(token_validity(&client, &token).await, Some(true));

    wait_until("the token to expire", Duration::from_secs(30), || {
        let client = client.clone();
        let token = token.clone();
        async move { (token_validity(&client, &token).await == Some(false)).then_some(()) }
    })
    .await;
    let resp = register_body(
        &client,
        "alice",
        &Auth::dummy().with_registration_token(&token),
    )
    .await;
    resp.assert_status(401);
    assert!(resp.body.get("access_token").is_none());
    available(&client, "alice").await.assert_ok();
}

#[tokio::test]
async fn guests_register_when_allowed() {
    let hs =
        Homeserver::start(ServerOptions::new().with_toml("[registration]\nallow_guests = true"))
            .await;
    let client = hs.client();
    let resp = client
        .post(&format!("{REGISTER}?kind=guest"), json!({}))
        .await;
    let guest = Session::from_response(&resp);
    assert!(
        guest.user_id.ends_with(&format!(":{}", hs.server_name())),
        "{}",
        guest.user_id
    );
    let whoami = client.as_session(&guest).whoami().await;
    whoami.assert_ok();
    assert_eq!(whoami.body["is_guest"], json!(true));
}

#[tokio::test]
async fn guests_are_refused_when_not_allowed() {
    let hs =
        Homeserver::start(ServerOptions::new().with_toml("[registration]\nallow_guests = false"))
            .await;
    let resp = hs
        .client()
        .post(&format!("{REGISTER}?kind=guest"), json!({}))
        .await;
    // The spec's example for a refused kind of account is M_FORBIDDEN;
    // M_GUEST_ACCESS_FORBIDDEN says the same more precisely.
    let errcode = resp.body["errcode"].as_str().unwrap_or_default();
    assert!(
        resp.status == 403 && matches!(errcode, "M_FORBIDDEN" | "M_GUEST_ACCESS_FORBIDDEN"),
        "{}",
        resp.describe()
    );
    assert!(resp.body.get("access_token").is_none());
}

#[tokio::test]
async fn inhibit_login_creates_the_account_without_a_session() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let resp = client
        .register_with(
            json!({ "username": "alice", "password": PASSWORD, "inhibit_login": true }),
            &Auth::dummy(),
        )
        .await;
    resp.assert_ok();
    assert_eq!(resp.str_at("/user_id"), hs.user_id("alice"));
    assert!(resp.body["access_token"].is_null(), "{}", resp.describe());
    assert!(resp.body["device_id"].is_null(), "{}", resp.describe());
    let login = client.login_password("alice", PASSWORD).await;
    assert_eq!(login.user_id, hs.user_id("alice"));
    // No device was created by the registration: the login's is the only one.
    let devices = client
        .as_session(&login)
        .get("/_matrix/client/v3/devices")
        .await;
    devices.assert_ok();
    assert_eq!(
        devices.body["devices"].as_array().map(Vec::len),
        Some(1),
        "{}",
        devices.describe()
    );
}

#[tokio::test]
async fn short_password_is_weak() {
    let hs =
        Homeserver::start(ServerOptions::new().with_toml("[passwords]\nminimum_length = 12")).await;
    let client = hs.client();
    let resp = client
        .register_with(
            json!({ "username": "alice", "password": "short1" }),
            &Auth::dummy(),
        )
        .await;
    assert_matrix_error(&resp, 400, "M_WEAK_PASSWORD");
    available(&client, "alice").await.assert_ok();
    client.register("alice", "twelve-chars").await;
}
