//! `/profile/{userId}` and its `displayname` and `avatar_url` fields.
#![allow(
    clippy::panic,
    reason = "test helpers report failures by panicking with context"
)]

use axon_complement_tests::{Homeserver, ServerOptions, assert_matrix_error, encode_path_segment};
use serde_json::json;

const PASSWORD: &str = "correct-horse-battery-staple";

fn profile_path(user_id: &str, field: Option<&str>) -> String {
    let base = format!(
        "/_matrix/client/v3/profile/{}",
        encode_path_segment(user_id)
    );
    match field {
        Some(field) => format!("{base}/{field}"),
        None => base,
    }
}

#[tokio::test]
async fn own_profile_can_be_set_and_read() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let alice = client.register("alice", PASSWORD).await;
    let bob = client.register("bob", PASSWORD).await;
    let as_alice = client.as_session(&alice);

    as_alice
        .put(
            &profile_path(&alice.user_id, Some("displayname")),
            json!({ "displayname": "Alice Liddell" }),
        )
        .await
        .assert_ok();
    as_alice
        .put(
            &profile_path(&alice.user_id, Some("avatar_url")),
            json!({ "avatar_url": "mxc://example.org/rabbit" }),
        )
        .await
        .assert_ok();

    let name = as_alice
        .get(&profile_path(&alice.user_id, Some("displayname")))
        .await;
    name.assert_ok();
    assert_eq!(name.str_at("/displayname"), "Alice Liddell");
    let avatar = as_alice
        .get(&profile_path(&alice.user_id, Some("avatar_url")))
        .await;
    avatar.assert_ok();
    assert_eq!(avatar.str_at("/avatar_url"), "mxc://example.org/rabbit");

    // Another local user sees the same profile.
    let full = client
        .as_session(&bob)
        .get(&profile_path(&alice.user_id, None))
        .await;
    full.assert_ok();
    assert_eq!(full.str_at("/displayname"), "Alice Liddell");
    assert_eq!(full.str_at("/avatar_url"), "mxc://example.org/rabbit");
}

#[tokio::test]
async fn another_users_profile_cannot_be_set() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let alice = client.register("alice", PASSWORD).await;
    let mallory = client.register("mallory", PASSWORD).await;
    let as_alice = client.as_session(&alice);
    let as_mallory = client.as_session(&mallory);
    as_alice
        .put(
            &profile_path(&alice.user_id, Some("displayname")),
            json!({ "displayname": "Alice" }),
        )
        .await
        .assert_ok();

    let resp = as_mallory
        .put(
            &profile_path(&alice.user_id, Some("displayname")),
            json!({ "displayname": "Alice (hacked)" }),
        )
        .await;
    assert_matrix_error(&resp, 403, "M_FORBIDDEN");
    let resp = as_mallory
        .put(
            &profile_path(&alice.user_id, Some("avatar_url")),
            json!({ "avatar_url": "mxc://example.org/evil" }),
        )
        .await;
    assert_matrix_error(&resp, 403, "M_FORBIDDEN");

    let name = as_alice
        .get(&profile_path(&alice.user_id, Some("displayname")))
        .await;
    name.assert_ok();
    assert_eq!(name.str_at("/displayname"), "Alice");
}

#[tokio::test]
async fn unknown_user_has_no_profile() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let alice = client.register("alice", PASSWORD).await;
    let as_alice = client.as_session(&alice);
    let nobody = hs.user_id("nobody");
    for field in [None, Some("displayname"), Some("avatar_url")] {
        let resp = as_alice.get(&profile_path(&nobody, field)).await;
        assert_matrix_error(&resp, 404, "M_NOT_FOUND");
    }
}

#[tokio::test]
async fn setting_the_profile_requires_a_token() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let alice = client.register("alice", PASSWORD).await;
    let resp = client
        .put(
            &profile_path(&alice.user_id, Some("displayname")),
            json!({ "displayname": "Anonymous" }),
        )
        .await;
    assert_matrix_error(&resp, 401, "M_MISSING_TOKEN");
}
