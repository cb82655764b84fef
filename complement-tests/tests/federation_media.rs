//! Media across two `axon` servers over TLS on loopback: a user of B downloads and thumbnails
//! media uploaded on A through B (fetched with `/_matrix/federation/v1/media/...` and cached),
//! still gets it once A is down, and `allow_remote=false`, unknown media and unsigned
//! federation requests are refused.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    reason = "test helpers report failures by panicking with context"
)]

mod federation_support;
mod media_support;

use federation_support::{A, B, ServerSigner, start_pair};
use media_support::{dimensions, get, legacy_path, media_path, png, upload, user};
use reqwest::Method;

#[tokio::test]
async fn media_of_one_server_is_served_by_the_other_and_cached() {
    let (_pki, mut a, b) = start_pair("").await;
    let alice = user(&a, "alice").await;
    let bob = user(&b, "bob").await;
    let image = png(400, 200);
    let mxc = upload(&a, &alice, &image, "image/png", Some("cat.png")).await;
    assert_eq!(mxc.0, A);

    // A thumbnail first: B has nothing cached, so it asks A's federation thumbnail endpoint.
    let thumbnail_query = "width=32&height=32&method=crop";
    let thumbnail_path = format!("{}?{thumbnail_query}", media_path("thumbnail", &mxc));
    let thumbnail = get(&b, &thumbnail_path, Some(&bob)).await;
    assert_eq!(thumbnail.status, 200, "{:?}", thumbnail.json());
    assert_eq!(thumbnail.header("content-type"), "image/png");
    assert_eq!(dimensions(&thumbnail.body), (32, 32));

    // The original, through B: same bytes, type and file name.
    let download = get(&b, &media_path("download", &mxc), Some(&bob)).await;
    assert_eq!(download.status, 200, "{:?}", download.json());
    assert_eq!(download.body, image);
    assert_eq!(download.header("content-type"), "image/png");
    assert_eq!(
        download.header("content-disposition"),
        "inline; filename=cat.png"
    );
    assert!(
        download
            .header("content-security-policy")
            .starts_with("sandbox;")
    );

    // Media B has not cached is not fetched for `allow_remote=false`...
    let second = upload(&a, &alice, b"plain words", "text/plain", Some("notes.txt")).await;
    let no_remote = format!("{}?allow_remote=false", legacy_path("download", &second));
    get(&b, &no_remote, None)
        .await
        .assert_error(404, "M_NOT_FOUND");
    // ...which is what kept it from the cache: once fetched, it is served that way too.
    let fetched = get(&b, &media_path("download", &second), Some(&bob)).await;
    assert_eq!(fetched.body, b"plain words");
    let cached = get(&b, &no_remote, None).await;
    assert_eq!(cached.status, 200);
    assert_eq!(cached.body, b"plain words");
    assert_eq!(
        cached.header("content-disposition"),
        "inline; filename=notes.txt"
    );

    // An id A does not have.
    let unknown = (A.to_owned(), "NoSuchMediaHere".to_owned());
    get(&b, &media_path("download", &unknown), Some(&bob))
        .await
        .assert_error(404, "M_NOT_FOUND");

    // With A gone, B serves what it cached: the original, and thumbnails made from it.
    // Killed rather than stopped: a graceful stop waits for B's pooled connections to close.
    a.kill9();
    let again = get(&b, &media_path("download", &mxc), Some(&bob)).await;
    assert_eq!(again.status, 200, "{:?}", again.json());
    assert_eq!(again.body, image);
    assert_eq!(again.header("content-type"), "image/png");
    let thumbnail = get(&b, &thumbnail_path, Some(&bob)).await;
    assert_eq!(thumbnail.status, 200, "{:?}", thumbnail.json());
    assert_eq!(dimensions(&thumbnail.body), (32, 32));
    let scaled = format!(
        "{}?width=100&height=100&method=scale",
        media_path("thumbnail", &mxc)
    );
    let thumbnail = get(&b, &scaled, Some(&bob)).await;
    assert_eq!(thumbnail.status, 200, "{:?}", thumbnail.json());
    assert_eq!(dimensions(&thumbnail.body), (320, 160));

    // What B never cached cannot be had while A is down: a gateway error, not a 404.
    let third = (A.to_owned(), "NeverFetchedMedia".to_owned());
    let unreachable = get(&b, &media_path("download", &third), Some(&bob)).await;
    assert_eq!(unreachable.status, 502, "{:?}", unreachable.json());
    assert_eq!(unreachable.json()["errcode"], "M_UNKNOWN");
}

#[tokio::test]
async fn the_federation_media_endpoints_need_a_valid_signature() {
    let (_pki, a, b) = start_pair("").await;
    let alice = user(&a, "alice").await;
    let image = png(40, 20);
    let (_, media_id) = upload(&a, &alice, &image, "image/png", Some("dot.png")).await;
    let download = format!("/_matrix/federation/v1/media/download/{media_id}");
    let thumbnail = format!("/_matrix/federation/v1/media/thumbnail/{media_id}?width=32&height=32");
    let b_signer = ServerSigner::of(&b, B);

    // Signed by B: a multipart answer with the JSON metadata and the image.
    let answer = b_signer.request(&a, A, Method::GET, &download, None).await;
    answer.assert_ok();
    let content_type = answer.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("multipart/mixed; boundary="),
        "{content_type}"
    );
    assert!(answer.text.contains("application/json"), "{}", answer.text);
    assert!(
        answer
            .text
            .to_ascii_lowercase()
            .contains("content-type: image/png")
    );
    let answer = b_signer.request(&a, A, Method::GET, &thumbnail, None).await;
    answer.assert_ok();

    // Unknown media is a Matrix 404.
    let missing = "/_matrix/federation/v1/media/download/NoSuchMedia";
    let answer = b_signer.request(&a, A, Method::GET, missing, None).await;
    answer.assert_status(404);
    assert_eq!(answer.body["errcode"], "M_NOT_FOUND");

    // Signed with a key that is not B's, or not signed at all: refused.
    let forged = b_signer
        .impostor()
        .request(&a, A, Method::GET, &download, None)
        .await;
    forged.assert_status(401);
    let unsigned = a.client().send(Method::GET, &thumbnail, None, &[]).await;
    unsigned.assert_status(401);
}
