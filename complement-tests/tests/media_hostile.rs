//! Hostile images: decompression bombs, truncated files, garbage labelled as an image, and
//! animations with huge frame counts or canvases. Thumbnailing them gives a clear error (or
//! a harmless thumbnail), and the server stays up and keeps serving.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    reason = "test helpers report failures by panicking with context"
)]

mod media_support;

use axon_complement_tests::{Homeserver, ServerOptions};
use media_support::{User, dimensions, get, gif_frames, jpeg, media_path, png, upload, user};
use rand::RngCore;

/// The CRC-32 (ISO-HDLC) that PNG chunks end with.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(data.len()).unwrap().to_be_bytes().to_vec();
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
    out
}

/// A PNG whose header declares `width` x `height` RGBA pixels, followed by a scrap of
/// compressed data: a few hundred bytes that would decode to gigabytes.
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = width.to_be_bytes().to_vec();
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[8, 6, 0, 0, 0]);
    png.extend(chunk(b"IHDR", &header));
    // A zlib stream of zeros (a run that inflates far beyond its size).
    let mut idat = vec![0x78, 0x9c];
    idat.extend_from_slice(&[0xed, 0xc1, 0x01, 0x01, 0x00, 0x00, 0x00, 0x80, 0x90, 0xfe]);
    idat.extend(std::iter::repeat_n(0u8, 256));
    png.extend(chunk(b"IDAT", &idat));
    png.extend(chunk(b"IEND", &[]));
    png
}

fn truncated(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.truncate(bytes.len() / 2);
    bytes
}

async fn thumbnail(
    hs: &Homeserver,
    alice: &User,
    content: &[u8],
    content_type: &str,
    query: &str,
) -> media_support::Raw {
    let mxc = upload(hs, alice, content, content_type, None).await;
    let path = format!("{}?{query}", media_path("thumbnail", &mxc));
    get(hs, &path, Some(alice)).await
}

/// The server still answers, and still makes thumbnails of good images.
async fn assert_still_serving(hs: &Homeserver, alice: &User) {
    let response = thumbnail(
        hs,
        alice,
        &png(50, 50),
        "image/png",
        "width=32&height=32&method=crop",
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(dimensions(&response.body), (32, 32));
}

#[tokio::test]
async fn decompression_bombs_are_refused_from_their_headers() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    // Past the dimension limit, and within it but past the memory limit (16000 x 16000
    // RGBA is about 1 GiB).
    for (width, height) in [(100_000, 100_000), (16_000, 16_000), (1, 1_000_000)] {
        let bomb = png_declaring(width, height);
        for query in [
            "width=32&height=32&method=crop",
            "width=800&height=600&method=scale",
        ] {
            thumbnail(&hs, &alice, &bomb, "image/png", query)
                .await
                .assert_error(413, "M_TOO_LARGE");
        }
    }
    assert_still_serving(&hs, &alice).await;
}

#[tokio::test]
async fn truncated_and_garbage_images_give_a_clear_error() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let mut random = vec![0u8; 4096];
    rand::rng().fill_bytes(&mut random);
    let corpus: [(&str, Vec<u8>, &str); 5] = [
        ("truncated PNG", truncated(png(300, 300)), "image/png"),
        ("truncated JPEG", truncated(jpeg(300, 300)), "image/jpeg"),
        ("truncated GIF", truncated(gif_frames(1, 1, 1)), "image/gif"),
        ("random bytes", random, "image/png"),
        (
            "PNG signature alone",
            b"\x89PNG\r\n\x1a\n".to_vec(),
            "image/png",
        ),
    ];
    for (what, content, content_type) in corpus {
        let response = thumbnail(
            &hs,
            &alice,
            &content,
            content_type,
            "width=96&height=96&method=crop",
        )
        .await;
        // A truncated JPEG may still decode (the missing part reads as grey); anything
        // else is a 400 M_UNKNOWN. Never a 5xx.
        if response.status == 200 {
            assert_eq!(what, "truncated JPEG", "{what} made a thumbnail");
            assert_eq!(dimensions(&response.body), (96, 96));
        } else {
            response.assert_error(400, "M_UNKNOWN");
        }
    }
    assert_still_serving(&hs, &alice).await;
}

#[tokio::test]
async fn animations_with_huge_frame_counts_or_canvases_are_contained() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    // 40 000 frames: only the first is decoded for a still thumbnail; an animated one stops
    // at the frame budget and falls back to the still thumbnail.
    let many_frames = gif_frames(40_000, 1, 1);
    let response = thumbnail(
        &hs,
        &alice,
        &many_frames,
        "image/gif",
        "width=32&height=32&method=crop",
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(dimensions(&response.body), (32, 32));
    let response = thumbnail(
        &hs,
        &alice,
        &many_frames,
        "image/gif",
        "width=32&height=32&method=crop&animated=true",
    )
    .await;
    assert_eq!(response.status, 200);
    assert_ne!(response.body, many_frames);
    assert_eq!(dimensions(&response.body), (32, 32));

    // A canvas of 65535 x 65535 pixels is refused before it is allocated.
    let huge_canvas = gif_frames(3, u16::MAX, u16::MAX);
    for query in [
        "width=32&height=32&method=crop",
        "width=32&height=32&method=crop&animated=true",
    ] {
        let response = thumbnail(&hs, &alice, &huge_canvas, "image/gif", query).await;
        response.assert_error(413, "M_TOO_LARGE");
    }
    assert_still_serving(&hs, &alice).await;
}
