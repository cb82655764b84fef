//! Failed-login limits (`login.max_failures`, `login.failure_window_secs`).
#![allow(
    clippy::panic,
    reason = "test helpers report failures by panicking with context"
)]

use std::time::Duration;

use axon_complement_tests::{
    Client, Homeserver, Response, ServerOptions, assert_matrix_error, wait_until,
};

const PASSWORD: &str = "correct-horse-battery-staple";
const MAX_FAILURES: usize = 5;

fn options(window_secs: u64) -> ServerOptions {
    ServerOptions::new().with_toml(&format!(
        "[login]\nmax_failures = {MAX_FAILURES}\nfailure_window_secs = {window_secs}"
    ))
}

async fn attempt(client: &Client, user: &str, password: &str) -> Response {
    client
        .login(Client::password_login_body(user, password))
        .await
}

#[track_caller]
fn assert_limited(resp: &Response, window_secs: u64) {
    assert_matrix_error(resp, 429, "M_LIMIT_EXCEEDED");
    let retry = resp.u64_at("/retry_after_ms");
    assert!(
        retry > 0 && retry <= window_secs * 1000,
        "retry_after_ms {retry} outside (0, {window_secs}s]"
    );
}

#[tokio::test]
async fn failures_below_the_limit_do_not_lock_the_account() {
    let hs = Homeserver::start(options(60)).await;
    let client = hs.client();
    client.register("alice", PASSWORD).await;
    for _ in 0..MAX_FAILURES - 1 {
        assert_matrix_error(
            &attempt(&client, "alice", "wrong-password").await,
            403,
            "M_FORBIDDEN",
        );
    }
    client.login_password("alice", PASSWORD).await;
}

#[tokio::test]
async fn account_is_locked_after_max_failures() {
    let hs = Homeserver::start(options(60)).await;
    let client = hs.client();
    client.register("alice", PASSWORD).await;
    for _ in 0..MAX_FAILURES {
        assert_matrix_error(
            &attempt(&client, "alice", "wrong-password").await,
            403,
            "M_FORBIDDEN",
        );
    }
    // Even the right password is refused now.
    assert_limited(&attempt(&client, "alice", PASSWORD).await, 60);
    assert_limited(&attempt(&client, &hs.user_id("alice"), PASSWORD).await, 60);
}

#[tokio::test]
async fn one_address_failing_against_many_users_is_locked() {
    let hs = Homeserver::start(options(60)).await;
    let client = hs.client();
    let users: Vec<String> = (0..=MAX_FAILURES).map(|i| format!("user{i}")).collect();
    for user in &users {
        client.register(user, PASSWORD).await;
    }
    // One failure per user, so no single account reaches the limit.
    for user in &users[..MAX_FAILURES] {
        assert_matrix_error(
            &attempt(&client, user, "wrong-password").await,
            403,
            "M_FORBIDDEN",
        );
    }
    assert_limited(&attempt(&client, &users[MAX_FAILURES], PASSWORD).await, 60);
}

#[tokio::test]
async fn lock_ends_with_the_failure_window() {
    let window_secs = 2;
    let hs = Homeserver::start(options(window_secs)).await;
    let client = hs.client();
    client.register("alice", PASSWORD).await;
    for _ in 0..MAX_FAILURES {
        assert_matrix_error(
            &attempt(&client, "alice", "wrong-password").await,
            403,
            "M_FORBIDDEN",
        );
    }
    assert_limited(&attempt(&client, "alice", PASSWORD).await, window_secs);
    let session = wait_until("the lock to expire", Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let resp = attempt(&client, "alice", PASSWORD).await;
            match resp.status {
                200 => Some(resp),
                429 => None,
                _ => panic!("unexpected answer while locked: {}", resp.describe()),
            }
        }
    })
    .await;
    assert_eq!(session.str_at("/user_id"), hs.user_id("alice"));
}
