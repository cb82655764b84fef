//! Discovery: `/versions`, `.well-known`, capabilities.
#![allow(
    clippy::panic,
    reason = "test helpers report failures by panicking with context"
)]

use axon_complement_tests::{Homeserver, ServerOptions, assert_matrix_error};

const PASSWORD: &str = "correct-horse-battery-staple";

/// Parses `vX.Y` into `(X, Y)`.
fn parse_version(version: &str) -> Option<(u32, u32)> {
    let (major, minor) = version.strip_prefix('v')?.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[tokio::test]
async fn versions_advertises_the_current_spec() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let resp = hs.client().get("/_matrix/client/versions").await;
    resp.assert_ok();
    let versions: Vec<&str> = resp.body["versions"]
        .as_array()
        .unwrap_or_else(|| panic!("no versions array: {}", resp.describe()))
        .iter()
        .map(|v| {
            v.as_str()
                .unwrap_or_else(|| panic!("non-string version: {v}"))
        })
        .collect();
    for version in &versions {
        assert!(
            parse_version(version).is_some() || version.starts_with("r0."),
            "malformed version {version:?}"
        );
    }
    let newest = versions.iter().filter_map(|v| parse_version(v)).max();
    assert!(
        newest >= Some((1, 16)),
        "expected v1.16 or later among {versions:?}"
    );
    if let Some(features) = resp.body.get("unstable_features") {
        let features = features
            .as_object()
            .unwrap_or_else(|| panic!("unstable_features is not an object: {features}"));
        assert!(features.values().all(|v| v.is_boolean()), "{features:?}");
    }
}

#[tokio::test]
async fn well_known_client_names_the_homeserver() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let resp = hs.client().get("/.well-known/matrix/client").await;
    resp.assert_ok();
    let base_url = resp.str_at("/m.homeserver/base_url");
    assert!(
        base_url.starts_with("http://") || base_url.starts_with("https://"),
        "base_url is not an http(s) URL: {base_url}"
    );
    // Browsers fetch this from other origins.
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
}

#[tokio::test]
async fn well_known_client_serves_the_configured_base_url() {
    let hs = Homeserver::start(
        ServerOptions::new()
            .with_toml("[well_known]\nclient_base_url = \"https://matrix.example.org/\""),
    )
    .await;
    let resp = hs.client().get("/.well-known/matrix/client").await;
    resp.assert_ok();
    assert_eq!(
        resp.str_at("/m.homeserver/base_url").trim_end_matches('/'),
        "https://matrix.example.org"
    );
}

#[tokio::test]
async fn well_known_server_is_absent_unless_configured() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let resp = hs.client().get("/.well-known/matrix/server").await;
    resp.assert_status(404);
    assert!(resp.body.get("m.server").is_none(), "{}", resp.describe());
}

#[tokio::test]
async fn well_known_server_serves_the_configured_delegation() {
    let hs = Homeserver::start(
        ServerOptions::new().with_toml("[well_known]\nserver = \"matrix.example.org:443\""),
    )
    .await;
    let resp = hs.client().get("/.well-known/matrix/server").await;
    resp.assert_ok();
    assert_eq!(resp.str_at("/m.server"), "matrix.example.org:443");
}

#[tokio::test]
async fn capabilities_report_password_change_and_room_versions() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let alice = client.register("alice", PASSWORD).await;

    let resp = client
        .as_session(&alice)
        .get("/_matrix/client/v3/capabilities")
        .await;
    resp.assert_ok();
    let caps = &resp.body["capabilities"];
    // Absent means enabled (the spec's default); if present it must say so.
    if let Some(change_password) = caps.get("m.change_password") {
        assert_eq!(
            change_password["enabled"].as_bool(),
            Some(true),
            "{}",
            resp.describe()
        );
    }
    assert_eq!(resp.str_at("/capabilities/m.room_versions/default"), "11");
    // Versions whose rules are only implemented on a best-effort basis are not offered as
    // stable; the current ones are.
    assert_eq!(
        resp.str_at("/capabilities/m.room_versions/available/1"),
        "unstable"
    );
    assert_eq!(
        resp.str_at("/capabilities/m.room_versions/available/12"),
        "stable"
    );
    assert_eq!(
        resp.str_at("/capabilities/m.room_versions/available/11"),
        "stable"
    );
    let available = caps["m.room_versions"]["available"]
        .as_object()
        .unwrap_or_else(|| panic!("no available room versions: {}", resp.describe()));
    for (version, stability) in available {
        assert!(
            matches!(stability.as_str(), Some("stable" | "unstable")),
            "room version {version} has stability {stability}"
        );
    }
}

#[tokio::test]
async fn capabilities_require_an_access_token() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let resp = hs.client().get("/_matrix/client/v3/capabilities").await;
    assert_matrix_error(&resp, 401, "M_MISSING_TOKEN");
}
