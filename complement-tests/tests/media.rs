//! The media repository: uploads (plain and asynchronous), authenticated and legacy
//! downloads with their protective headers, ranges, limits, the legacy freeze, the config.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    reason = "test helpers report failures by panicking with context"
)]

mod media_support;

use std::time::Duration;

use axon_complement_tests::{Homeserver, ServerOptions, now_ms, wait_until};
use media_support::{
    Raw, get, get_with, legacy_path, media_path, mxc_parts, raw, try_upload, upload, user,
};
use reqwest::Method;

fn assert_protective_headers(response: &Raw) {
    assert!(
        response
            .header("content-security-policy")
            .starts_with("sandbox;"),
        "{:?}",
        response.headers
    );
    assert!(
        response
            .header("content-security-policy")
            .contains("default-src 'none'")
    );
    assert_eq!(response.header("x-content-type-options"), "nosniff");
    assert_eq!(
        response.header("cross-origin-resource-policy"),
        "cross-origin"
    );
}

#[tokio::test]
async fn uploads_download_through_authenticated_and_legacy_endpoints() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let mxc = upload(&hs, &alice, b"hello media", "text/plain", Some("hello.txt")).await;
    assert_eq!(mxc.0, hs.server_name());

    let response = get(&hs, &media_path("download", &mxc), Some(&alice)).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"hello media");
    assert_eq!(response.header("content-type"), "text/plain");
    assert_eq!(
        response.header("content-disposition"),
        "inline; filename=hello.txt"
    );
    assert_protective_headers(&response);

    // The file name in the path replaces the uploaded one.
    let path = format!("{}/other%20name.txt", media_path("download", &mxc));
    let response = get(&hs, &path, Some(&alice)).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-disposition"),
        "inline; filename=\"other name.txt\""
    );

    let response = get(&hs, &legacy_path("download", &mxc), None).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"hello media");
    assert_protective_headers(&response);

    get(&hs, &media_path("download", &mxc), None)
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    let unknown = (hs.server_name(), "NoSuchMedia".to_owned());
    get(&hs, &media_path("download", &unknown), Some(&alice))
        .await
        .assert_error(404, "M_NOT_FOUND");
    // Another server's media is fetched from it: one that cannot be reached is a 502.
    let remote = ("elsewhere.example".to_owned(), "abc".to_owned());
    get(&hs, &media_path("download", &remote), Some(&alice))
        .await
        .assert_error(502, "M_UNKNOWN");
    get(&hs, &legacy_path("download", &remote), None)
        .await
        .assert_error(502, "M_UNKNOWN");
}

#[tokio::test]
async fn active_content_is_served_as_an_attachment() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let html = b"<script>alert(document.cookie)</script>";
    let mxc = upload(&hs, &alice, html, "text/html", Some("naïve.html")).await;
    let response = get(&hs, &media_path("download", &mxc), Some(&alice)).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), "text/html");
    assert_eq!(
        response.header("content-disposition"),
        "attachment; filename*=utf-8''na%C3%AFve.html"
    );
    assert_protective_headers(&response);

    let svg = b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>";
    let mxc = upload(&hs, &alice, svg, "image/svg+xml", None).await;
    let response = get(&hs, &media_path("download", &mxc), Some(&alice)).await;
    assert_eq!(response.header("content-disposition"), "attachment");

    // No declared type: served as opaque bytes.
    let response = raw(
        Method::POST,
        &format!("{}/_matrix/media/v3/upload", hs.base_url()),
        Some(&alice.token),
        None,
        &[],
    )
    .await;
    assert_eq!(response.status, 200);
    let mxc = mxc_parts(response.json()["content_uri"].as_str().unwrap());
    let response = get(&hs, &media_path("download", &mxc), Some(&alice)).await;
    assert_eq!(response.header("content-type"), "application/octet-stream");
}

#[tokio::test]
async fn single_ranges_are_served_partially() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let content: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let mxc = upload(&hs, &alice, &content, "video/mp4", None).await;
    let path = media_path("download", &mxc);
    let ranged = |range: &'static str| {
        let (hs, alice, path) = (&hs, &alice, path.clone());
        async move { get_with(hs, &path, Some(alice), &[("range", range)]).await }
    };

    let response = ranged("bytes=10-19").await;
    assert_eq!(response.status, 206);
    assert_eq!(response.header("content-range"), "bytes 10-19/1000");
    assert_eq!(response.body, &content[10..20]);
    assert_protective_headers(&response);

    let response = ranged("bytes=990-").await;
    assert_eq!(response.status, 206);
    assert_eq!(response.header("content-range"), "bytes 990-999/1000");
    assert_eq!(response.body, &content[990..]);

    let response = ranged("bytes=-5").await;
    assert_eq!(response.status, 206);
    assert_eq!(response.body, &content[995..]);

    let response = ranged("bytes=1000-").await;
    assert_eq!(response.status, 416);
    assert_eq!(response.header("content-range"), "bytes */1000");

    // Several ranges are not supported: the whole content is served.
    let response = ranged("bytes=0-1,5-6").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, content);

    let response = get(&hs, &path, Some(&alice)).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("accept-ranges"), "bytes");
}

async fn create(hs: &Homeserver, user: &media_support::User) -> Raw {
    let url = format!("{}/_matrix/media/v1/create", hs.base_url());
    raw(Method::POST, &url, Some(&user.token), None, &[]).await
}

async fn put_content(
    hs: &Homeserver,
    user: &media_support::User,
    mxc: &(String, String),
    content: &[u8],
) -> Raw {
    let url = format!(
        "{}/_matrix/media/v3/upload/{}/{}?filename=late.txt",
        hs.base_url(),
        mxc.0,
        mxc.1
    );
    raw(
        Method::PUT,
        &url,
        Some(&user.token),
        Some((content.to_vec(), "text/plain")),
        &[],
    )
    .await
}

#[tokio::test]
async fn asynchronous_uploads_take_one_upload_from_their_creator() {
    let hs =
        Homeserver::start(ServerOptions::new().with_toml("[media]\nmax_pending_uploads = 2")).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;

    let created = create(&hs, &alice).await;
    assert_eq!(created.status, 200);
    let mxc = mxc_parts(created.json()["content_uri"].as_str().unwrap());
    let expires = created.json()["unused_expires_at"].as_u64().unwrap();
    assert!(expires > now_ms());

    let path = media_path("download", &mxc);
    get(&hs, &format!("{path}?timeout_ms=0"), Some(&alice))
        .await
        .assert_error(504, "M_NOT_YET_UPLOADED");

    // A download waiting for the content gets it as soon as it arrives.
    let waiting = {
        let url = format!("{}{path}?timeout_ms=20000", hs.base_url());
        let token = alice.token.clone();
        tokio::spawn(async move { raw(Method::GET, &url, Some(&token), None, &[]).await })
    };

    put_content(&hs, &bob, &mxc, b"intruder")
        .await
        .assert_error(403, "M_FORBIDDEN");
    let response = put_content(&hs, &alice, &mxc, b"finally").await;
    assert_eq!(response.status, 200, "{:?}", response.json());
    assert_eq!(response.json(), serde_json::json!({}));
    put_content(&hs, &alice, &mxc, b"again")
        .await
        .assert_error(409, "M_CANNOT_OVERWRITE_MEDIA");

    let waited = waiting.await.unwrap();
    assert_eq!(waited.status, 200);
    assert_eq!(waited.body, b"finally");
    let response = get(&hs, &path, Some(&alice)).await;
    assert_eq!(response.body, b"finally");
    assert_eq!(
        response.header("content-disposition"),
        "inline; filename=late.txt"
    );

    let unknown = (hs.server_name(), "NeverCreated".to_owned());
    put_content(&hs, &alice, &unknown, b"x")
        .await
        .assert_error(404, "M_NOT_FOUND");

    // At most two reservations waiting for content per user.
    assert_eq!(create(&hs, &alice).await.status, 200);
    assert_eq!(create(&hs, &alice).await.status, 200);
    create(&hs, &alice)
        .await
        .assert_error(429, "M_LIMIT_EXCEEDED");
    assert_eq!(create(&hs, &bob).await.status, 200);
}

#[tokio::test]
async fn lapsed_reservations_cannot_be_uploaded_to() {
    let hs =
        Homeserver::start(ServerOptions::new().with_toml("[media]\nunused_expiry_secs = 1")).await;
    let alice = user(&hs, "alice").await;
    let created = create(&hs, &alice).await;
    let mxc = mxc_parts(created.json()["content_uri"].as_str().unwrap());
    let path = format!("{}?timeout_ms=0", media_path("download", &mxc));
    wait_until("the reservation to lapse", Duration::from_secs(10), || {
        let (hs, alice, path) = (&hs, &alice, path.clone());
        async move { (get(hs, &path, Some(alice)).await.status == 404).then_some(()) }
    })
    .await;
    put_content(&hs, &alice, &mxc, b"too late")
        .await
        .assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn upload_size_and_quota_come_from_the_media_config() {
    // Uploads have their own limit, above the general request body limit.
    let hs = Homeserver::start(ServerOptions::new().with_toml(
        "[http]\nmax_request_bytes = 400\n[media]\nmax_upload_bytes = 1000\nuser_quota_bytes = 1500",
    ))
    .await;
    let alice = user(&hs, "alice").await;
    upload(&hs, &alice, &[7; 800], "application/octet-stream", None).await;
    try_upload(&hs, &alice, &[7; 1001], "application/octet-stream", None)
        .await
        .assert_error(413, "M_TOO_LARGE");
    try_upload(&hs, &alice, &[8; 800], "application/octet-stream", None)
        .await
        .assert_error(413, "M_TOO_LARGE");
    upload(&hs, &alice, &[9; 700], "application/octet-stream", None).await;
    let bob = user(&hs, "bob").await;
    upload(&hs, &bob, &[7; 1000], "application/octet-stream", None).await;

    for path in [
        "/_matrix/client/v1/media/config",
        "/_matrix/media/v3/config",
    ] {
        let response = get(&hs, path, Some(&alice)).await;
        assert_eq!(response.status, 200);
        assert_eq!(response.json()["m.upload.size"], 1000);
    }
    get(&hs, "/_matrix/client/v1/media/config", None)
        .await
        .assert_error(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn a_frozen_legacy_api_serves_only_older_media() {
    let hs =
        Homeserver::start(ServerOptions::new().with_toml("[media]\nfreeze_legacy_media = true"))
            .await;
    let alice = user(&hs, "alice").await;
    let image = media_support::png(40, 40);
    let mxc = upload(&hs, &alice, &image, "image/png", None).await;
    get(&hs, &legacy_path("download", &mxc), None)
        .await
        .assert_error(404, "M_NOT_FOUND");
    let thumbnail = format!("{}?width=32&height=32", legacy_path("thumbnail", &mxc));
    get(&hs, &thumbnail, None)
        .await
        .assert_error(404, "M_NOT_FOUND");
    assert_eq!(
        get(&hs, &media_path("download", &mxc), Some(&alice))
            .await
            .status,
        200
    );
    let thumbnail = format!("{}?width=32&height=32", media_path("thumbnail", &mxc));
    assert_eq!(get(&hs, &thumbnail, Some(&alice)).await.status, 200);
}

#[tokio::test]
async fn stored_media_bytes_are_a_metric() {
    let hs = Homeserver::start(ServerOptions::new().with_metrics()).await;
    let alice = user(&hs, "alice").await;
    upload(&hs, &alice, &[1; 3000], "application/octet-stream", None).await;
    // The same content again is stored once.
    upload(&hs, &alice, &[1; 3000], "application/octet-stream", None).await;
    let metrics = hs.scrape_metrics().await;
    let value = metrics
        .lines()
        .find_map(|line| line.strip_prefix("axon_media_bytes_stored "))
        .unwrap_or_else(|| panic!("no media gauge in {metrics}"));
    assert_eq!(value.trim(), "3000");
}
