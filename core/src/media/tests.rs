//! The media repository over an in-memory store and a temporary directory.

use std::future::Future as _;
use std::io::Cursor;
use std::sync::Arc;

use image::{ImageFormat, Rgba, RgbaImage};
use ruma::{OwnedUserId, owned_server_name, owned_user_id};

use super::*;
use crate::storage::MemoryStore;

struct Fixture {
    media: Media,
    _dir: tempfile::TempDir,
}

fn fixture(settings: MediaSettings) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(FsBackend::open(dir.path().join("media")).unwrap());
    let store: Arc<dyn KvStore> = Arc::new(MemoryStore::new());
    let media = Media::new(store, backend, owned_server_name!("example.org"), settings).unwrap();
    Fixture { media, _dir: dir }
}

fn alice() -> OwnedUserId {
    owned_user_id!("@alice:example.org")
}

fn new_media<'a>(user: &'a UserId, content: &'a [u8]) -> NewMedia<'a> {
    NewMedia {
        uploader: user,
        content,
        content_type: Some("text/plain"),
        filename: Some("a.txt"),
    }
}

#[test]
fn uploads_record_their_metadata_and_read_back() {
    let f = fixture(MediaSettings::default());
    let user = alice();
    let id = f.media.upload(new_media(&user, b"hello world")).unwrap();
    assert!(is_valid_media_id(&id));
    let record = f.media.get(&id).unwrap();
    assert_eq!(record.content_type.as_deref(), Some("text/plain"));
    assert_eq!(record.filename.as_deref(), Some("a.txt"));
    assert_eq!(record.uploader, user);
    assert_eq!(record.content.as_ref().unwrap().size, 11);
    assert_eq!(f.media.read(&record).unwrap(), b"hello world");
    assert_eq!(f.media.read_range(&record, 6, 100).unwrap(), b"world");
    assert!(matches!(f.media.get("nope"), Err(MediaError::NotFound)));
}

#[test]
fn identical_content_is_stored_once() {
    let f = fixture(MediaSettings::default());
    let user = alice();
    let first = f.media.upload(new_media(&user, b"same bytes")).unwrap();
    let second = f.media.upload(new_media(&user, b"same bytes")).unwrap();
    assert_ne!(first, second);
    let hash = |id: &str| f.media.get(id).unwrap().content.unwrap().hash;
    assert_eq!(hash(&first), hash(&second));
    assert_eq!(f.media.bytes_stored(), 10);
    f.media.upload(new_media(&user, b"other")).unwrap();
    assert_eq!(f.media.bytes_stored(), 15);
}

#[test]
fn size_limit_and_quota_are_enforced() {
    let f = fixture(MediaSettings {
        max_upload_bytes: 10,
        user_quota_bytes: Some(15),
        ..MediaSettings::default()
    });
    let user = alice();
    assert!(matches!(
        f.media.upload(new_media(&user, &[0; 11])),
        Err(MediaError::TooLarge {
            size: 11,
            limit: 10
        })
    ));
    f.media.upload(new_media(&user, &[1; 10])).unwrap();
    assert!(matches!(
        f.media.upload(new_media(&user, &[2; 6])),
        Err(MediaError::QuotaExceeded { quota: 15 })
    ));
    f.media.upload(new_media(&user, &[3; 5])).unwrap();
    // Another user has a quota of their own.
    let bob = owned_user_id!("@bob:example.org");
    f.media.upload(new_media(&bob, &[4; 10])).unwrap();
    // Server-fetched content is not metered.
    f.media.store_fetched(new_media(&user, &[5; 10])).unwrap();
}

#[test]
fn reserved_ids_take_one_upload_from_their_creator() {
    let f = fixture(MediaSettings::default());
    let user = alice();
    let (id, expires) = f.media.reserve(&user).unwrap();
    assert!(expires > crate::accounts::now_ms());
    assert!(matches!(f.media.get(&id), Err(MediaError::NotYetUploaded)));
    let bob = owned_user_id!("@bob:example.org");
    assert!(matches!(
        f.media.upload_reserved(&id, new_media(&bob, b"x")),
        Err(MediaError::NotCreator)
    ));
    let uploads = f.media.subscribe_uploads();
    f.media
        .upload_reserved(&id, new_media(&user, b"x"))
        .unwrap();
    assert!(uploads.has_changed().unwrap());
    assert_eq!(f.media.read(&f.media.get(&id).unwrap()).unwrap(), b"x");
    assert!(matches!(
        f.media.upload_reserved(&id, new_media(&user, b"y")),
        Err(MediaError::AlreadyUploaded)
    ));
    assert!(matches!(
        f.media.upload_reserved("unknown", new_media(&user, b"y")),
        Err(MediaError::NotFound)
    ));
}

#[test]
fn lapsed_reservations_are_not_found() {
    let f = fixture(MediaSettings {
        unused_expiry: Duration::ZERO,
        ..MediaSettings::default()
    });
    let user = alice();
    let (id, _) = f.media.reserve(&user).unwrap();
    assert!(matches!(f.media.get(&id), Err(MediaError::NotFound)));
    assert!(matches!(
        f.media.upload_reserved(&id, new_media(&user, b"late")),
        Err(MediaError::NotFound)
    ));
}

#[test]
fn pending_reservations_are_limited_per_user() {
    let f = fixture(MediaSettings {
        max_pending_uploads: 2,
        ..MediaSettings::default()
    });
    let user = alice();
    let (first, _) = f.media.reserve(&user).unwrap();
    f.media.reserve(&user).unwrap();
    assert!(matches!(
        f.media.reserve(&user),
        Err(MediaError::TooManyPending { limit: 2 })
    ));
    f.media
        .reserve(&owned_user_id!("@bob:example.org"))
        .unwrap();
    // Uploading to a reservation frees its place.
    f.media
        .upload_reserved(&first, new_media(&user, b"done"))
        .unwrap();
    f.media.reserve(&user).unwrap();
}

#[test]
fn media_uploaded_during_a_freeze_stays_off_the_legacy_endpoints() {
    let before = fixture(MediaSettings::default());
    let user = alice();
    let id = before.media.upload(new_media(&user, b"old")).unwrap();
    let record = before.media.get(&id).unwrap();
    assert!(!record.after_freeze);

    let frozen = fixture(MediaSettings {
        freeze_legacy_media: true,
        ..MediaSettings::default()
    });
    assert!(
        frozen.media.legacy_visible(&record),
        "uploaded before the freeze"
    );
    let id = frozen.media.upload(new_media(&user, b"new")).unwrap();
    let record = frozen.media.get(&id).unwrap();
    assert!(record.after_freeze);
    assert!(!frozen.media.legacy_visible(&record));
    assert!(
        before.media.legacy_visible(&record),
        "not frozen: everything is served"
    );
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = RgbaImage::from_pixel(width, height, Rgba([1, 2, 3, 255]));
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn thumbnails_are_generated_once_and_cached() {
    let f = fixture(MediaSettings::default());
    let user = alice();
    let source = png(400, 300);
    let id = f
        .media
        .upload(NewMedia {
            content_type: Some("image/png"),
            ..new_media(&user, &source)
        })
        .unwrap();
    let stored = f.media.bytes_stored();
    let thumb = f
        .media
        .thumbnail(&id, 30, 30, ThumbnailMethod::Crop, false)
        .unwrap();
    assert_eq!(thumb.content_type, "image/png");
    let decoded = image::load_from_memory(&thumb.content).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (32, 32));
    let after_first = f.media.bytes_stored();
    assert!(after_first > stored);
    let again = f
        .media
        .thumbnail(&id, 32, 32, ThumbnailMethod::Crop, false)
        .unwrap();
    assert_eq!(again, thumb);
    assert_eq!(f.media.bytes_stored(), after_first, "served from the cache");
}

#[test]
fn thumbnails_of_non_images_are_refused() {
    let f = fixture(MediaSettings::default());
    let user = alice();
    let id = f.media.upload(new_media(&user, b"plain text")).unwrap();
    let result = f.media.thumbnail(&id, 32, 32, ThumbnailMethod::Crop, false);
    assert!(
        matches!(
            result,
            Err(MediaError::Thumbnail(ThumbnailError::NotAnImage(_)))
        ),
        "{result:?}"
    );
}

#[test]
fn previews_are_cached_for_their_lifetime() {
    let f = fixture(MediaSettings::default());
    let data = serde_json::json!({"og:title": "Hello"});
    assert_eq!(
        f.media
            .cached_preview("http://x/", Duration::from_secs(3600))
            .unwrap(),
        None
    );
    f.media.store_preview("http://x/", &data).unwrap();
    assert_eq!(
        f.media
            .cached_preview("http://x/", Duration::from_secs(3600))
            .unwrap(),
        Some(data)
    );
    assert_eq!(
        f.media.cached_preview("http://x/", Duration::ZERO).unwrap(),
        None
    );
}

#[test]
fn media_ids_are_checked_against_the_grammar() {
    assert!(is_valid_media_id("abc_DEF-123"));
    assert!(!is_valid_media_id(""));
    assert!(!is_valid_media_id("../etc"));
    assert!(!is_valid_media_id("a b"));
}

fn remote_media(content: &[u8]) -> RemoteMedia<'_> {
    RemoteMedia {
        content,
        content_type: Some("image/png"),
        filename: Some("remote.png"),
    }
}

#[test]
fn remote_media_is_cached_and_shares_blobs_with_local_media() {
    let f = fixture(MediaSettings::default());
    let server = owned_server_name!("remote.test");
    assert_eq!(f.media.remote(&server, "abc").unwrap(), None);
    let bytes = png(40, 20);
    let record = f
        .media
        .store_remote(&server, "abc", remote_media(&bytes))
        .unwrap();
    assert_eq!(record.filename.as_deref(), Some("remote.png"));
    assert_eq!(
        f.media.remote(&server, "abc").unwrap(),
        Some(record.clone())
    );
    let content = record.content.as_ref().unwrap();
    assert_eq!(f.media.read_content(content).unwrap(), bytes);
    // Storing it again (a second fetch) keeps the first record.
    let again = f
        .media
        .store_remote(&server, "abc", remote_media(b"other"))
        .unwrap();
    assert_eq!(again, record);
    // The same bytes uploaded here are one blob.
    let stored = f.media.bytes_stored();
    let user = alice();
    f.media.upload(new_media(&user, &bytes)).unwrap();
    assert_eq!(f.media.bytes_stored(), stored);
    // Local and remote ids live apart.
    assert!(matches!(f.media.get("abc"), Err(MediaError::NotFound)));
}

#[test]
fn remote_media_over_the_size_limit_is_refused() {
    let f = fixture(MediaSettings {
        max_upload_bytes: 4,
        ..MediaSettings::default()
    });
    let server = owned_server_name!("remote.test");
    assert!(matches!(
        f.media.store_remote(&server, "big", remote_media(b"12345")),
        Err(MediaError::TooLarge { .. })
    ));
    assert_eq!(f.media.remote(&server, "big").unwrap(), None);
}

#[test]
fn stale_remote_media_goes_with_its_thumbnails_and_files() {
    let f = fixture(MediaSettings::default());
    let server = owned_server_name!("remote.test");
    let bytes = png(400, 200);
    let record = f
        .media
        .store_remote(&server, "old", remote_media(&bytes))
        .unwrap();
    let content = record.content.clone().unwrap();
    let request = ThumbnailRequest {
        width: 32,
        height: 32,
        method: ThumbnailMethod::Crop,
        animated: false,
    };
    let key = remote::cache_key(&server, "old");
    f.media.thumbnail_for(&key, &content, request).unwrap();
    assert!(
        f.media
            .cached_remote_thumbnail(&server, "old", 32, 32, ThumbnailMethod::Crop)
            .unwrap()
            .is_some()
    );
    assert!(f.media.bytes_stored() > content.size);

    // Accessed at the cutoff is not older than it.
    let kept = f
        .media
        .remove_stale_remote(record.last_access_ts, 10)
        .unwrap();
    assert_eq!(kept.remote_removed, 0);

    let report = f
        .media
        .remove_stale_remote(record.last_access_ts + 1, 10)
        .unwrap();
    assert_eq!(report.remote_removed, 1);
    assert!(report.bytes_freed > content.size);
    assert_eq!(f.media.remote(&server, "old").unwrap(), None);
    assert!(
        f.media
            .cached_remote_thumbnail(&server, "old", 32, 32, ThumbnailMethod::Crop)
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        f.media.read_content(&content),
        Err(MediaError::MissingContent(_))
    ));
    assert_eq!(f.media.bytes_stored(), 0);
    // Cached again, it is fetched and stored anew.
    f.media
        .store_remote(&server, "old", remote_media(&bytes))
        .unwrap();
    assert_eq!(f.media.read_content(&content).unwrap(), bytes);
}

#[test]
fn removing_remote_media_keeps_content_local_media_shares() {
    let f = fixture(MediaSettings::default());
    let server = owned_server_name!("remote.test");
    let user = alice();
    let id = f.media.upload(new_media(&user, b"shared bytes")).unwrap();
    let record = f
        .media
        .store_remote(&server, "twin", remote_media(b"shared bytes"))
        .unwrap();
    let report = f
        .media
        .remove_stale_remote(record.last_access_ts + 1, 10)
        .unwrap();
    assert_eq!(report.remote_removed, 1);
    assert_eq!(report.bytes_freed, 0);
    let local = f.media.get(&id).unwrap();
    assert_eq!(f.media.read(&local).unwrap(), b"shared bytes");
}

#[test]
fn fetched_thumbnails_are_filed_under_the_standard_size() {
    let f = fixture(MediaSettings::default());
    let server = owned_server_name!("remote.test");
    let fetched = Thumbnail {
        content: png(96, 96),
        content_type: "image/png".to_owned(),
    };
    f.media
        .store_remote_thumbnail(&server, "thumbed", 50, 50, ThumbnailMethod::Crop, &fetched)
        .unwrap();
    // 40x40 and 50x50 crops both map to the 96x96 crop.
    let cached = f
        .media
        .cached_remote_thumbnail(&server, "thumbed", 40, 40, ThumbnailMethod::Crop)
        .unwrap()
        .unwrap();
    assert_eq!(cached, fetched);
    assert!(
        f.media
            .cached_remote_thumbnail(&server, "thumbed", 40, 40, ThumbnailMethod::Scale)
            .unwrap()
            .is_none()
    );
    // The original is not cached, but the record the cleanup finds the thumbnail by is.
    let record = f.media.remote(&server, "thumbed").unwrap().unwrap();
    assert_eq!(record.content, None);
    let report = f
        .media
        .remove_stale_remote(record.last_access_ts + 1, 10)
        .unwrap();
    assert_eq!(report.remote_removed, 1);
    assert!(
        f.media
            .cached_remote_thumbnail(&server, "thumbed", 40, 40, ThumbnailMethod::Crop)
            .unwrap()
            .is_none()
    );
    assert_eq!(f.media.bytes_stored(), 0);
}

#[test]
fn lapsed_reservations_are_removed() {
    let f = fixture(MediaSettings::default());
    let user = alice();
    let (lapsing, expires) = f.media.reserve(&user).unwrap();
    let report = f.media.remove_lapsed_reservations(expires - 1, 10).unwrap();
    assert_eq!(report.reservations_removed, 0);
    assert!(matches!(
        f.media.get(&lapsing),
        Err(MediaError::NotYetUploaded)
    ));
    let report = f.media.remove_lapsed_reservations(expires, 10).unwrap();
    assert_eq!(report.reservations_removed, 1);
    assert!(matches!(f.media.get(&lapsing), Err(MediaError::NotFound)));
    assert!(matches!(
        f.media.upload_reserved(&lapsing, new_media(&user, b"late")),
        Err(MediaError::NotFound)
    ));
    // An uploaded reservation is not touched.
    let (kept, expires) = f.media.reserve(&user).unwrap();
    f.media
        .upload_reserved(&kept, new_media(&user, b"on time"))
        .unwrap();
    let report = f.media.remove_lapsed_reservations(expires + 1, 10).unwrap();
    assert_eq!(report.reservations_removed, 0);
    assert!(f.media.get(&kept).is_ok());
}

#[test]
fn one_fetch_of_a_remote_item_at_a_time() {
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    let f = fixture(MediaSettings::default());
    let server = owned_server_name!("remote.test");
    let mut cx = Context::from_waker(Waker::noop());
    let first = match pin!(f.media.lock_remote(&server, "item")).poll(&mut cx) {
        Poll::Ready(guard) => guard,
        Poll::Pending => panic!("the first fetch must not wait"),
    };
    {
        let mut second = pin!(f.media.lock_remote(&server, "item"));
        assert!(second.as_mut().poll(&mut cx).is_pending());
        // Another item is not held up.
        let mut other = pin!(f.media.lock_remote(&server, "other"));
        assert!(other.as_mut().poll(&mut cx).is_ready());
        drop(first);
        assert!(second.as_mut().poll(&mut cx).is_ready());
    }
}

/// An animated GIF of `frames` frames of `width` x `height`.
fn animated_gif(width: u32, height: u32, frames: u8) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new_with_speed(&mut out, 30);
        for index in 0..frames {
            let image = RgbaImage::from_pixel(width, height, Rgba([index, 100, 200, 255]));
            encoder.encode_frame(image::Frame::new(image)).unwrap();
        }
    }
    out
}

#[test]
fn animated_thumbnails_are_cached_apart_from_still_ones() {
    let f = fixture(MediaSettings::default());
    let user = alice();
    let source = animated_gif(100, 80, 3);
    let id = f
        .media
        .upload(NewMedia {
            content_type: Some("image/gif"),
            ..new_media(&user, &source)
        })
        .unwrap();
    let animated = f
        .media
        .thumbnail(&id, 32, 32, ThumbnailMethod::Crop, true)
        .unwrap();
    assert_eq!(animated.content_type, "image/gif");
    let still = f
        .media
        .thumbnail(&id, 32, 32, ThumbnailMethod::Crop, false)
        .unwrap();
    assert_eq!(still.content_type, "image/png");
    let after = f.media.bytes_stored();
    assert_eq!(
        f.media
            .thumbnail(&id, 32, 32, ThumbnailMethod::Crop, true)
            .unwrap(),
        animated
    );
    assert_eq!(
        f.media
            .thumbnail(&id, 32, 32, ThumbnailMethod::Crop, false)
            .unwrap(),
        still
    );
    assert_eq!(f.media.bytes_stored(), after, "both served from the cache");
}

#[test]
fn animations_past_the_budget_and_stills_get_still_thumbnails() {
    let f = fixture(MediaSettings {
        animation_limits: AnimationLimits {
            max_frames: 2,
            max_pixels: 1_000_000,
        },
        ..MediaSettings::default()
    });
    let user = alice();
    for (source, kind) in [
        (animated_gif(40, 40, 3), "image/gif"),
        (png(40, 40), "image/png"),
    ] {
        let id = f
            .media
            .upload(NewMedia {
                content_type: Some(kind),
                ..new_media(&user, &source)
            })
            .unwrap();
        let asked_animated = f
            .media
            .thumbnail(&id, 32, 32, ThumbnailMethod::Crop, true)
            .unwrap();
        assert_eq!(asked_animated.content_type, "image/png", "{kind}");
        let still = f
            .media
            .thumbnail(&id, 32, 32, ThumbnailMethod::Crop, false)
            .unwrap();
        assert_eq!(asked_animated, still, "{kind}");
    }
}
