//! `/account/password` and `/account/deactivate`.
#![allow(
    clippy::panic,
    reason = "test helpers report failures by panicking with context"
)]

use axon_complement_tests::{Auth, Client, Homeserver, ServerOptions, assert_matrix_error};
use reqwest::Method;
use serde_json::json;

const PASSWORD: &str = "correct-horse-battery-staple";
const NEW_PASSWORD: &str = "tr0ub4dor-and-three";
const CHANGE_PASSWORD: &str = "/_matrix/client/v3/account/password";
const DEACTIVATE: &str = "/_matrix/client/v3/account/deactivate";

#[tokio::test]
async fn password_change_requires_the_old_password() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let alice = client.register("alice", PASSWORD).await;
    let as_alice = client.as_session(&alice);
    let body = json!({ "new_password": NEW_PASSWORD });

    let challenge = as_alice.post(CHANGE_PASSWORD, body.clone()).await;
    challenge.assert_status(401);
    assert!(
        challenge.body["flows"].as_array().is_some_and(|flows| flows
            .iter()
            .any(|f| f["stages"] == json!(["m.login.password"]))),
        "no password flow: {}",
        challenge.describe()
    );
    let wrong = as_alice
        .uiaa(
            Method::POST,
            CHANGE_PASSWORD,
            body,
            &Auth::password(&alice.user_id, "not-the-password"),
        )
        .await;
    wrong.assert_status(401);
    // Nothing changed.
    client.login_password("alice", PASSWORD).await;
    assert_matrix_error(
        &client
            .login(Client::password_login_body("alice", NEW_PASSWORD))
            .await,
        403,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn password_change_logs_out_other_devices_by_default() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let current = client.register("alice", PASSWORD).await;
    let other = client.login_password("alice", PASSWORD).await;

    client
        .as_session(&current)
        .uiaa(
            Method::POST,
            CHANGE_PASSWORD,
            json!({ "new_password": NEW_PASSWORD }),
            &Auth::password(&current.user_id, PASSWORD),
        )
        .await
        .assert_ok();

    client.as_session(&current).whoami().await.assert_ok();
    assert_matrix_error(
        &client.as_session(&other).whoami().await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_matrix_error(
        &client
            .login(Client::password_login_body("alice", PASSWORD))
            .await,
        403,
        "M_FORBIDDEN",
    );
    client.login_password("alice", NEW_PASSWORD).await;
}

#[tokio::test]
async fn password_change_can_keep_other_devices() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let current = client.register("alice", PASSWORD).await;
    let other = client.login_password("alice", PASSWORD).await;

    client
        .as_session(&current)
        .uiaa(
            Method::POST,
            CHANGE_PASSWORD,
            json!({ "new_password": NEW_PASSWORD, "logout_devices": false }),
            &Auth::password(&current.user_id, PASSWORD),
        )
        .await
        .assert_ok();
    client.as_session(&current).whoami().await.assert_ok();
    client.as_session(&other).whoami().await.assert_ok();
    client.login_password("alice", NEW_PASSWORD).await;
}

#[tokio::test]
async fn deactivation_ends_every_session_and_blocks_login() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let current = client.register("alice", PASSWORD).await;
    let other = client.login_password("alice", PASSWORD).await;

    let challenge = client
        .as_session(&current)
        .post(DEACTIVATE, json!({}))
        .await;
    challenge.assert_status(401);
    client.as_session(&current).whoami().await.assert_ok();

    let resp = client
        .as_session(&current)
        .uiaa(
            Method::POST,
            DEACTIVATE,
            json!({}),
            &Auth::password(&current.user_id, PASSWORD),
        )
        .await;
    resp.assert_ok();
    assert!(
        matches!(
            resp.body["id_server_unbind_result"].as_str(),
            Some("success" | "no-support")
        ),
        "{}",
        resp.describe()
    );

    for session in [&current, &other] {
        assert_matrix_error(
            &client.as_session(session).whoami().await,
            401,
            "M_UNKNOWN_TOKEN",
        );
    }
    assert_matrix_error(
        &client
            .login(Client::password_login_body("alice", PASSWORD))
            .await,
        403,
        "M_USER_DEACTIVATED",
    );
    // The user id is never handed out again.
    let again = client
        .register_with(
            json!({ "username": "alice", "password": PASSWORD }),
            &Auth::dummy(),
        )
        .await;
    assert_matrix_error(&again, 400, "M_USER_IN_USE");
    let available = client
        .get("/_matrix/client/v3/register/available?username=alice")
        .await;
    assert_matrix_error(&available, 400, "M_USER_IN_USE");
}
