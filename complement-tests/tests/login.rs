//! `/login`, refresh tokens, login tokens, logout, whoami.
#![allow(
    clippy::panic,
    reason = "test helpers report failures by panicking with context"
)]

use axon_complement_tests::{
    Auth, Client, Homeserver, ServerOptions, Session, assert_matrix_error,
};
use reqwest::Method;
use serde_json::{Value, json};

const PASSWORD: &str = "correct-horse-battery-staple";

#[tokio::test]
async fn login_flows_include_password_and_token() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let resp = hs.client().get("/_matrix/client/v3/login").await;
    resp.assert_ok();
    let types: Vec<&str> = resp.body["flows"]
        .as_array()
        .unwrap_or_else(|| panic!("no flows: {}", resp.describe()))
        .iter()
        .filter_map(|flow| flow["type"].as_str())
        .collect();
    assert!(types.contains(&"m.login.password"), "{types:?}");
    assert!(types.contains(&"m.login.token"), "{types:?}");
}

#[tokio::test]
async fn password_login_accepts_localpart_user_id_and_legacy_user() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let registered = client.register("alice", PASSWORD).await;

    let by_localpart = client.login_password("alice", PASSWORD).await;
    let by_user_id = client.login_password(&registered.user_id, PASSWORD).await;
    let legacy = Session::from_response(
        &client
            .login(json!({ "type": "m.login.password", "user": "alice", "password": PASSWORD }))
            .await,
    );
    let sessions = [&registered, &by_localpart, &by_user_id, &legacy];
    for session in sessions {
        assert_eq!(session.user_id, hs.user_id("alice"));
        let whoami = client.as_session(session).whoami().await;
        whoami.assert_ok();
        assert_eq!(whoami.str_at("/device_id"), session.device_id);
    }
    // Each login without a device_id makes a new device.
    let mut devices: Vec<&str> = sessions.iter().map(|s| s.device_id.as_str()).collect();
    devices.sort_unstable();
    devices.dedup();
    assert_eq!(devices.len(), 4, "{devices:?}");
}

#[tokio::test]
async fn third_party_identifiers_are_refused() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    client.register("alice", PASSWORD).await;
    for identifier in [
        json!({ "type": "m.id.thirdparty", "medium": "email", "address": "alice@example.org" }),
        json!({ "type": "m.id.phone", "country": "GB", "phone": "07700900123" }),
    ] {
        let resp = client
            .login(json!({ "type": "m.login.password", "identifier": identifier, "password": PASSWORD }))
            .await;
        assert_matrix_error(&resp, 403, "M_FORBIDDEN");
    }
}

#[tokio::test]
async fn wrong_password_and_unknown_user_are_forbidden() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    client.register("alice", PASSWORD).await;
    let wrong = client
        .login(Client::password_login_body("alice", "not-the-password"))
        .await;
    assert_matrix_error(&wrong, 403, "M_FORBIDDEN");
    let unknown = client
        .login(Client::password_login_body("nobody", PASSWORD))
        .await;
    assert_matrix_error(&unknown, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn login_with_an_existing_device_id_reuses_the_device() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let alice = client.register("alice", PASSWORD).await;
    let mut body = Client::password_login_body("alice", PASSWORD);
    body["device_id"] = json!("KITCHEN");
    let first = Session::from_response(&client.login(body.clone()).await);
    let second = Session::from_response(&client.login(body).await);
    assert_eq!(first.device_id, "KITCHEN");
    assert_eq!(second.device_id, "KITCHEN");
    client.as_session(&second).whoami().await.assert_ok();

    let devices = client
        .as_session(&alice)
        .get("/_matrix/client/v3/devices")
        .await;
    devices.assert_ok();
    let ids: Vec<&str> = devices.body["devices"]
        .as_array()
        .unwrap_or_else(|| panic!("no devices: {}", devices.describe()))
        .iter()
        .filter_map(|d| d["device_id"].as_str())
        .collect();
    assert_eq!(
        ids.iter().filter(|id| **id == "KITCHEN").count(),
        1,
        "{ids:?}"
    );
    assert_eq!(ids.len(), 2, "{ids:?}");
}

#[tokio::test]
async fn initial_device_display_name_names_the_device() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    client.register("alice", PASSWORD).await;
    let mut body = Client::password_login_body("alice", PASSWORD);
    body["initial_device_display_name"] = json!("Work laptop");
    let session = Session::from_response(&client.login(body).await);
    let device = client
        .as_session(&session)
        .get(&format!("/_matrix/client/v3/devices/{}", session.device_id))
        .await;
    device.assert_ok();
    assert_eq!(device.str_at("/device_id"), session.device_id);
    assert_eq!(device.str_at("/display_name"), "Work laptop");
}

fn refresh_options() -> ServerOptions {
    ServerOptions::new().with_toml("[login]\nrefresh_tokens = true")
}

#[tokio::test]
async fn refresh_token_is_issued_only_on_request() {
    let hs = Homeserver::start(refresh_options()).await;
    let client = hs.client();
    client.register("alice", PASSWORD).await;
    let plain = client.login_password("alice", PASSWORD).await;
    assert_eq!(plain.refresh_token, None);

    let mut body = Client::password_login_body("alice", PASSWORD);
    body["refresh_token"] = json!(true);
    let refreshable = Session::from_response(&client.login(body).await);
    assert!(
        refreshable
            .refresh_token
            .as_deref()
            .is_some_and(|t| !t.is_empty())
    );
    assert!(
        refreshable.expires_in_ms.is_some_and(|ms| ms > 0),
        "{refreshable:?}"
    );
}

#[tokio::test]
async fn refresh_rotates_the_tokens() {
    let hs = Homeserver::start(refresh_options()).await;
    let client = hs.client();
    client.register("alice", PASSWORD).await;
    let mut body = Client::password_login_body("alice", PASSWORD);
    body["refresh_token"] = json!(true);
    let session = Session::from_response(&client.login(body).await);
    let old_refresh = session
        .refresh_token
        .clone()
        .unwrap_or_else(|| panic!("no refresh token: {session:?}"));

    let refreshed = client
        .post(
            "/_matrix/client/v3/refresh",
            json!({ "refresh_token": old_refresh }),
        )
        .await;
    refreshed.assert_ok();
    let new_access = refreshed.str_at("/access_token").to_owned();
    let new_refresh = refreshed.str_at("/refresh_token").to_owned();
    assert!(refreshed.u64_at("/expires_in_ms") > 0);
    assert_ne!(new_access, session.access_token);
    assert_ne!(new_refresh, old_refresh);

    let whoami = client.with_token(&new_access).whoami().await;
    whoami.assert_ok();
    assert_eq!(whoami.str_at("/user_id"), session.user_id);
    assert_eq!(whoami.str_at("/device_id"), session.device_id);

    let reused = client
        .post(
            "/_matrix/client/v3/refresh",
            json!({ "refresh_token": old_refresh }),
        )
        .await;
    assert_matrix_error(&reused, 401, "M_UNKNOWN_TOKEN");
    let bogus = client
        .post(
            "/_matrix/client/v3/refresh",
            json!({ "refresh_token": "not-a-refresh-token" }),
        )
        .await;
    assert_matrix_error(&bogus, 401, "M_UNKNOWN_TOKEN");
    // The rotated refresh token still works.
    client
        .post(
            "/_matrix/client/v3/refresh",
            json!({ "refresh_token": new_refresh }),
        )
        .await
        .assert_ok();
}

#[tokio::test]
async fn login_token_logs_in_once() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let alice = client.register("alice", PASSWORD).await;

    let unauthenticated = client
        .post("/_matrix/client/v1/login/get_token", json!({}))
        .await;
    assert_matrix_error(&unauthenticated, 401, "M_MISSING_TOKEN");

    // Minting a login for another device is re-authenticated.
    let challenge = client
        .as_session(&alice)
        .post("/_matrix/client/v1/login/get_token", json!({}))
        .await;
    challenge.assert_status(401);
    assert!(
        challenge.body["flows"].as_array().is_some_and(|flows| flows
            .iter()
            .any(|f| f["stages"] == json!(["m.login.password"]))),
        "no password flow: {}",
        challenge.describe()
    );

    let resp = client
        .as_session(&alice)
        .uiaa(
            Method::POST,
            "/_matrix/client/v1/login/get_token",
            json!({}),
            &Auth::password(&alice.user_id, PASSWORD),
        )
        .await;
    resp.assert_ok();
    let login_token = resp.str_at("/login_token").to_owned();
    assert!(resp.u64_at("/expires_in_ms") > 0);

    let body = json!({ "type": "m.login.token", "token": login_token });
    let new_session = Session::from_response(&client.login(body.clone()).await);
    assert_eq!(new_session.user_id, alice.user_id);
    assert_ne!(new_session.device_id, alice.device_id);
    client.as_session(&new_session).whoami().await.assert_ok();

    let second_use = client.login(body).await;
    assert_matrix_error(&second_use, 403, "M_FORBIDDEN");
    let bogus = client
        .login(json!({ "type": "m.login.token", "token": "not-a-login-token" }))
        .await;
    assert_matrix_error(&bogus, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn logout_invalidates_only_that_token() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let first = client.register("alice", PASSWORD).await;
    let second = client.login_password("alice", PASSWORD).await;

    client.as_session(&first).logout().await.assert_ok();
    assert_matrix_error(
        &client.as_session(&first).whoami().await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    client.as_session(&second).whoami().await.assert_ok();
    // The logged-out device is gone.
    let devices = client
        .as_session(&second)
        .get(&format!("/_matrix/client/v3/devices/{}", first.device_id))
        .await;
    assert_matrix_error(&devices, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn logout_all_invalidates_every_token() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let sessions = [
        client.register("alice", PASSWORD).await,
        client.login_password("alice", PASSWORD).await,
        client.login_password("alice", PASSWORD).await,
    ];
    let bob = client.register("bob", PASSWORD).await;

    client
        .as_session(&sessions[1])
        .post("/_matrix/client/v3/logout/all", json!({}))
        .await
        .assert_ok();
    for session in &sessions {
        assert_matrix_error(
            &client.as_session(session).whoami().await,
            401,
            "M_UNKNOWN_TOKEN",
        );
    }
    // Other users are untouched, and alice can log in again.
    client.as_session(&bob).whoami().await.assert_ok();
    client.login_password("alice", PASSWORD).await;
}

#[tokio::test]
async fn whoami_describes_the_session() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let alice = client.register("alice", PASSWORD).await;
    let resp = client.as_session(&alice).whoami().await;
    resp.assert_ok();
    assert_eq!(resp.str_at("/user_id"), hs.user_id("alice"));
    assert_eq!(resp.str_at("/device_id"), alice.device_id);
    // The spec lets the server omit `is_guest` for a non-guest.
    assert!(
        matches!(resp.body.get("is_guest"), None | Some(Value::Bool(false))),
        "{}",
        resp.describe()
    );
}
