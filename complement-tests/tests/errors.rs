//! The standard error responses and CORS.
#![allow(
    clippy::panic,
    reason = "test helpers report failures by panicking with context"
)]

use axon_complement_tests::{Homeserver, ServerOptions, assert_matrix_error};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn unknown_endpoint_is_unrecognized() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let resp = client.get("/_matrix/client/v3/no_such_endpoint").await;
    assert_matrix_error(&resp, 404, "M_UNRECOGNIZED");
    let resp = client
        .post("/_matrix/client/v3/definitely/not/here", json!({}))
        .await;
    assert_matrix_error(&resp, 404, "M_UNRECOGNIZED");
}

#[tokio::test]
async fn known_path_with_wrong_method_is_unrecognized() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let resp = client.put("/_matrix/client/versions", json!({})).await;
    assert_matrix_error(&resp, 405, "M_UNRECOGNIZED");
    let resp = client
        .send(Method::DELETE, "/_matrix/client/v3/login", None, &[])
        .await;
    assert_matrix_error(&resp, 405, "M_UNRECOGNIZED");
}

#[tokio::test]
async fn malformed_json_is_not_json() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let resp = hs
        .client()
        .send(
            Method::POST,
            "/_matrix/client/v3/login",
            Some((
                b"{\"type\": \"m.login.password\",".to_vec(),
                "application/json",
            )),
            &[],
        )
        .await;
    assert_matrix_error(&resp, 400, "M_NOT_JSON");
}

#[tokio::test]
async fn json_of_the_wrong_shape_is_bad_json() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    // Valid JSON, but an array where an object is required.
    let resp = client.post("/_matrix/client/v3/login", json!([1, 2])).await;
    assert_matrix_error(&resp, 400, "M_BAD_JSON");
    // An object whose field has the wrong type.
    let alice = client
        .register("alice", "correct-horse-battery-staple")
        .await;
    let path = format!(
        "/_matrix/client/v3/profile/{}/displayname",
        axon_complement_tests::encode_path_segment(&alice.user_id)
    );
    let resp = client
        .as_session(&alice)
        .put(&path, json!({ "displayname": 42 }))
        .await;
    assert_matrix_error(&resp, 400, "M_BAD_JSON");
}

#[tokio::test]
async fn oversized_body_is_too_large() {
    let hs =
        Homeserver::start(ServerOptions::new().with_toml("[http]\nmax_request_bytes = 4096")).await;
    let client = hs.client();
    let big = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": "alice" },
        "password": "x".repeat(16 * 1024),
    });
    let resp = client.post("/_matrix/client/v3/login", big).await;
    assert_matrix_error(&resp, 413, "M_TOO_LARGE");
    // A body under the limit is read normally (and fails for a different
    // reason: there is no such user).
    let small = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": "alice" },
        "password": "x".repeat(100),
    });
    let resp = client.post("/_matrix/client/v3/login", small).await;
    assert_matrix_error(&resp, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn missing_access_token_is_rejected() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let resp = hs.client().whoami().await;
    assert_matrix_error(&resp, 401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn unknown_access_token_is_rejected() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let resp = hs.client().with_token("not_a_real_token").whoami().await;
    assert_matrix_error(&resp, 401, "M_UNKNOWN_TOKEN");
}

#[tokio::test]
async fn cors_preflight_allows_any_origin() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let resp = hs
        .client()
        .send(
            Method::OPTIONS,
            "/_matrix/client/v3/login",
            None,
            &[
                ("Origin", "https://app.example.org"),
                ("Access-Control-Request-Method", "POST"),
                (
                    "Access-Control-Request-Headers",
                    "authorization, content-type",
                ),
            ],
        )
        .await;
    assert!(
        (200..300).contains(&resp.status),
        "preflight failed: {}",
        resp.describe()
    );
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
    let methods = resp
        .header("access-control-allow-methods")
        .unwrap_or_default()
        .to_ascii_uppercase();
    for method in ["GET", "POST", "PUT", "DELETE", "OPTIONS"] {
        assert!(
            methods.contains(method) || methods == "*",
            "{method} missing from allow-methods {methods:?}"
        );
    }
    let headers = resp
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    for header in ["authorization", "content-type"] {
        assert!(
            headers.contains(header) || headers == "*",
            "{header} missing from allow-headers {headers:?}"
        );
    }
}

#[tokio::test]
async fn responses_carry_the_cors_header() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let origin = [("Origin", "https://app.example.org")];
    let ok = client
        .send(Method::GET, "/_matrix/client/versions", None, &origin)
        .await;
    ok.assert_ok();
    assert_eq!(ok.header("access-control-allow-origin"), Some("*"));
    // Errors too, or browsers cannot read them.
    let err = client
        .send(
            Method::GET,
            "/_matrix/client/v3/account/whoami",
            None,
            &origin,
        )
        .await;
    assert_matrix_error(&err, 401, "M_MISSING_TOKEN");
    assert_eq!(err.header("access-control-allow-origin"), Some("*"));
}
