//! Thumbnails: the standard crop and scale sizes of a generated image, the nearest larger
//! size for other requests, animated thumbnails, and non-images.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    reason = "test helpers report failures by panicking with context"
)]

mod media_support;

use axon_complement_tests::{Homeserver, ServerOptions};
use media_support::{
    dimensions, get, gif_frames, jpeg, legacy_path, media_path, png, upload, user,
};

fn thumbnail_path(mxc: &(String, String), query: &str) -> String {
    format!("{}?{query}", media_path("thumbnail", mxc))
}

/// The dimensions of each frame of an animated GIF answer.
fn animation_frames(body: &[u8]) -> Vec<(u32, u32)> {
    use image::AnimationDecoder as _;
    let decoder = image::codecs::gif::GifDecoder::new(std::io::Cursor::new(body)).unwrap();
    decoder
        .into_frames()
        .collect_frames()
        .unwrap()
        .iter()
        .map(|frame| frame.buffer().dimensions())
        .collect()
}

#[tokio::test]
async fn crop_and_scale_serve_the_standard_sizes() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let mxc = upload(&hs, &alice, &png(1000, 500), "image/png", Some("wide.png")).await;

    // (request, the thumbnail's dimensions): crops fill their box exactly, scales keep the
    // 2:1 aspect ratio inside theirs; other requests get the nearest larger standard size.
    let cases = [
        ("width=32&height=32&method=crop", (32, 32)),
        ("width=96&height=96&method=crop", (96, 96)),
        ("width=320&height=240&method=scale", (320, 160)),
        ("width=640&height=480&method=scale", (640, 320)),
        ("width=800&height=600&method=scale", (800, 400)),
        ("width=50&height=50&method=crop", (96, 96)),
        ("width=100&height=100&method=scale", (320, 160)),
        ("width=4000&height=4000&method=scale", (800, 400)),
        ("width=20&height=20", (320, 160)),
    ];
    for (query, expected) in cases {
        let response = get(&hs, &thumbnail_path(&mxc, query), Some(&alice)).await;
        assert_eq!(response.status, 200, "{query}: {:?}", response.json());
        assert_eq!(response.header("content-type"), "image/png", "{query}");
        assert_eq!(dimensions(&response.body), expected, "{query}");
        assert!(
            response
                .header("content-security-policy")
                .starts_with("sandbox;")
        );
        assert_eq!(response.header("x-content-type-options"), "nosniff");
    }

    // Cached thumbnails are served identically.
    let query = "width=32&height=32&method=crop";
    let first = get(&hs, &thumbnail_path(&mxc, query), Some(&alice)).await;
    let second = get(&hs, &thumbnail_path(&mxc, query), Some(&alice)).await;
    assert_eq!(first.body, second.body);

    // The legacy endpoint serves the same thumbnails without a token.
    let legacy = format!("{}?{query}", legacy_path("thumbnail", &mxc));
    let response = get(&hs, &legacy, None).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, first.body);

    get(&hs, &thumbnail_path(&mxc, query), None)
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    get(
        &hs,
        &thumbnail_path(&mxc, "width=0&height=10"),
        Some(&alice),
    )
    .await
    .assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn jpeg_sources_get_jpeg_thumbnails() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let mxc = upload(&hs, &alice, &jpeg(300, 300), "image/jpeg", None).await;
    let response = get(
        &hs,
        &thumbnail_path(&mxc, "width=96&height=96&method=crop"),
        Some(&alice),
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), "image/jpeg");
    assert_eq!(dimensions(&response.body), (96, 96));
}

#[tokio::test]
async fn animated_thumbnails_serve_the_animation() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let animation = gif_frames(3, 1, 1);
    let mxc = upload(&hs, &alice, &animation, "image/gif", None).await;

    let response = get(
        &hs,
        &thumbnail_path(&mxc, "width=32&height=32&method=crop&animated=true"),
        Some(&alice),
    )
    .await;
    assert_eq!(response.status, 200, "{:?}", response.json());
    assert_eq!(response.header("content-type"), "image/gif");
    assert_eq!(animation_frames(&response.body), vec![(32, 32); 3]);

    // Without `animated`, a still thumbnail.
    let response = get(
        &hs,
        &thumbnail_path(&mxc, "width=32&height=32&method=crop"),
        Some(&alice),
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), "image/png");
    assert_eq!(dimensions(&response.body), (32, 32));

    // A still image asked for as animated gets a still thumbnail.
    let still = upload(&hs, &alice, &png(64, 64), "image/png", None).await;
    let response = get(
        &hs,
        &thumbnail_path(&still, "width=32&height=32&method=crop&animated=true"),
        Some(&alice),
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(dimensions(&response.body), (32, 32));
}

#[tokio::test]
async fn animations_over_the_size_limit_get_a_still_thumbnail() {
    let hs = Homeserver::start(
        ServerOptions::new().with_toml("[media]\nanimated_thumbnail_max_bytes = 100"),
    )
    .await;
    let alice = user(&hs, "alice").await;
    let animation = gif_frames(10, 1, 1);
    assert!(animation.len() > 100);
    let mxc = upload(&hs, &alice, &animation, "image/gif", None).await;
    let response = get(
        &hs,
        &thumbnail_path(&mxc, "width=32&height=32&method=crop&animated=true"),
        Some(&alice),
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), "image/png");
}

#[tokio::test]
async fn non_images_have_no_thumbnail() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let mxc = upload(&hs, &alice, b"just some text", "text/plain", None).await;
    get(
        &hs,
        &thumbnail_path(&mxc, "width=32&height=32"),
        Some(&alice),
    )
    .await
    .assert_error(400, "M_UNKNOWN");
}

#[tokio::test]
async fn animated_thumbnails_are_scaled_frame_by_frame_and_cached_apart() {
    let hs = Homeserver::start(
        ServerOptions::new().with_toml("[media]\nanimated_thumbnail_max_frames = 8"),
    )
    .await;
    let alice = user(&hs, "alice").await;
    // A 400x200 canvas of 4 frames: scaled into 320x240, every frame is 320x160.
    let animation = gif_frames(4, 400, 200);
    let mxc = upload(&hs, &alice, &animation, "image/gif", None).await;
    let query = "width=320&height=240&method=scale&animated=true";
    let animated = get(&hs, &thumbnail_path(&mxc, query), Some(&alice)).await;
    assert_eq!(animated.status, 200, "{:?}", animated.json());
    assert_eq!(animated.header("content-type"), "image/gif");
    assert_eq!(animation_frames(&animated.body), vec![(320, 160); 4]);

    // The still thumbnail of the same size is filed apart, and each is served again as it
    // was made.
    let still_query = "width=320&height=240&method=scale&animated=false";
    let still = get(&hs, &thumbnail_path(&mxc, still_query), Some(&alice)).await;
    assert_eq!(still.status, 200);
    assert_eq!(still.header("content-type"), "image/png");
    assert_eq!(dimensions(&still.body), (320, 160));
    let again = get(&hs, &thumbnail_path(&mxc, query), Some(&alice)).await;
    assert_eq!(again.body, animated.body);
    let still_again = get(&hs, &thumbnail_path(&mxc, still_query), Some(&alice)).await;
    assert_eq!(still_again.body, still.body);

    // More frames than the server processes: a still thumbnail, not an error.
    let long = gif_frames(50, 64, 64);
    let mxc = upload(&hs, &alice, &long, "image/gif", None).await;
    let response = get(
        &hs,
        &thumbnail_path(&mxc, "width=32&height=32&method=crop&animated=true"),
        Some(&alice),
    )
    .await;
    assert_eq!(response.status, 200, "{:?}", response.json());
    assert_eq!(response.header("content-type"), "image/png");
    assert_eq!(dimensions(&response.body), (32, 32));
}
