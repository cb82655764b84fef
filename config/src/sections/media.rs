//! `[media]`: the media repository (uploads, downloads, thumbnails, URL previews).

use std::time::Duration;

use crate::checks;
use crate::error::Issues;
use crate::schema::raw_section;

raw_section! {
    /// The media repository: files users upload (kept under `data_dir`/media), their
    /// thumbnails, and URL previews.
    RawMedia {
        /// Largest file a user may upload, in bytes. Uploads have their own limit and are
        /// not bound by `http.max_request_bytes`. Must be at least 1. The default is 50 MiB.
        max_upload_bytes: u64 = 50 * 1024 * 1024;
        /// Bytes each user may have uploaded in total; unset means no quota.
        user_quota_bytes: Option<u64> = None, example "1073741824";
        /// How many media ids reserved with `POST /_matrix/media/v1/create` and not yet
        /// uploaded a user may hold at once. Must be at least 1.
        max_pending_uploads: u64 = 10;
        /// Seconds a media id reserved with `POST /_matrix/media/v1/create` stays valid for
        /// its upload. Must be at least 1. The default is 24 hours.
        unused_expiry_secs: u64 = 24 * 60 * 60;
        /// Freeze the unauthenticated `/_matrix/media/v3/download` and `/thumbnail`
        /// endpoints: media uploaded while this is on is served only through the
        /// authenticated `/_matrix/client/v1/media/...` endpoints; media uploaded before
        /// stays reachable on both, as the Matrix spec's move to authenticated media asks.
        freeze_legacy_media: bool = false;
        /// Largest width or height, in pixels, of an image the server decodes to make a
        /// thumbnail. Larger images get no thumbnail. Must be at least 1.
        thumbnail_max_dimension: u32 = 16384;
        /// Most memory one image decode may allocate, in bytes, so a small file declaring a
        /// huge image cannot exhaust memory. Must be at least 1. The default is 256 MiB.
        thumbnail_max_decode_bytes: u64 = 256 * 1024 * 1024;
        /// Largest animated image, in bytes, given an animated thumbnail when a client asks
        /// for one; larger ones get a still thumbnail. Default 4 MiB.
        animated_thumbnail_max_bytes: u64 = 4 * 1024 * 1024;
        /// Most frames an animation may have to get an animated thumbnail; longer ones get a
        /// still thumbnail. Must be at least 1.
        animated_thumbnail_max_frames: u32 = 300;
        /// Most pixels one animated thumbnail may process, over all frames (each frame counts
        /// its full decoded size and its thumbnail's), so a many-frame animation cannot take
        /// unbounded work; past it, a still thumbnail. Must be at least 1. Default 50 million.
        animated_thumbnail_max_pixels: u64 = 50_000_000;
        /// Whether `preview_url` fetches web pages to preview them. Off by default: the
        /// server then makes outbound requests to any URL a user names.
        url_previews: bool = false;
        /// Whether URL previews may fetch from private, loopback, link-local and
        /// unique-local addresses. Leave off outside test rigs: it lets users probe the
        /// server's own network.
        url_preview_allow_private: bool = false;
        /// Largest page or image a URL preview downloads, in bytes. Must be at least 1.
        /// The default is 10 MiB.
        url_preview_max_bytes: u64 = 10 * 1024 * 1024;
        /// Seconds a URL preview may take to fetch, redirects included. Must be at least 1.
        url_preview_timeout_secs: u64 = 10;
        /// Days after which other servers' media cached here is deleted if no one downloaded
        /// it meanwhile (it is fetched again on the next request, if its server still has
        /// it). Unset keeps the cache forever. Must be at least 1 when set.
        remote_cache_max_age_days: Option<u64> = None, example "30";
        /// Seconds between two runs of the media cleanup, which removes expired cached remote
        /// media (see `remote_cache_max_age_days`) and media ids reserved for an upload that
        /// never came. Must be at least 1. The default is one hour.
        cleanup_interval_secs: u64 = 60 * 60;
    }
}

/// The validated `[media]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MediaConfig {
    /// Largest upload in bytes; at least 1.
    pub max_upload_bytes: u64,
    /// Per-user total of uploaded bytes; `None` for no quota.
    pub user_quota_bytes: Option<u64>,
    /// Reserved, not yet uploaded media ids per user; at least 1.
    pub max_pending_uploads: u64,
    /// Seconds a reserved media id stays valid; at least 1.
    pub unused_expiry_secs: u64,
    /// Whether the unauthenticated download endpoints are frozen.
    pub freeze_legacy_media: bool,
    /// Largest image width or height decoded for thumbnails; at least 1.
    pub thumbnail_max_dimension: u32,
    /// Most bytes one image decode may allocate; at least 1.
    pub thumbnail_max_decode_bytes: u64,
    /// Largest animated image given an animated thumbnail.
    pub animated_thumbnail_max_bytes: u64,
    /// Most frames of an animation given an animated thumbnail; at least 1.
    pub animated_thumbnail_max_frames: u32,
    /// Most pixels one animated thumbnail may process; at least 1.
    pub animated_thumbnail_max_pixels: u64,
    /// Whether URL previews are served.
    pub url_previews: bool,
    /// Whether URL previews may reach private addresses.
    pub url_preview_allow_private: bool,
    /// Largest download of a URL preview; at least 1.
    pub url_preview_max_bytes: u64,
    /// Seconds a URL preview may take; at least 1.
    pub url_preview_timeout_secs: u64,
    /// Days cached remote media is kept after its last download; `None` keeps it forever.
    pub remote_cache_max_age_days: Option<u64>,
    /// Seconds between media cleanup runs; at least 1.
    pub cleanup_interval_secs: u64,
}

impl MediaConfig {
    /// [`MediaConfig::unused_expiry_secs`] as a [`Duration`].
    pub fn unused_expiry(&self) -> Duration {
        Duration::from_secs(self.unused_expiry_secs)
    }

    /// [`MediaConfig::url_preview_timeout_secs`] as a [`Duration`].
    pub fn url_preview_timeout(&self) -> Duration {
        Duration::from_secs(self.url_preview_timeout_secs)
    }

    /// [`MediaConfig::remote_cache_max_age_days`] as a [`Duration`].
    pub fn remote_cache_max_age(&self) -> Option<Duration> {
        self.remote_cache_max_age_days
            .map(|days| Duration::from_secs(days.saturating_mul(24 * 60 * 60)))
    }

    /// [`MediaConfig::cleanup_interval_secs`] as a [`Duration`].
    pub fn cleanup_interval(&self) -> Duration {
        Duration::from_secs(self.cleanup_interval_secs)
    }
}

pub(crate) fn validate(raw: RawMedia, issues: &mut Issues) -> MediaConfig {
    for (key, value, what) in [
        (
            "media.max_upload_bytes",
            raw.max_upload_bytes,
            "a size in bytes of at least 1",
        ),
        (
            "media.max_pending_uploads",
            raw.max_pending_uploads,
            "a count of at least 1",
        ),
        (
            "media.unused_expiry_secs",
            raw.unused_expiry_secs,
            "a number of seconds of at least 1",
        ),
        (
            "media.thumbnail_max_dimension",
            u64::from(raw.thumbnail_max_dimension),
            "a number of pixels of at least 1",
        ),
        (
            "media.thumbnail_max_decode_bytes",
            raw.thumbnail_max_decode_bytes,
            "a size in bytes of at least 1",
        ),
        (
            "media.animated_thumbnail_max_frames",
            u64::from(raw.animated_thumbnail_max_frames),
            "a count of at least 1",
        ),
        (
            "media.animated_thumbnail_max_pixels",
            raw.animated_thumbnail_max_pixels,
            "a number of pixels of at least 1",
        ),
        (
            "media.url_preview_max_bytes",
            raw.url_preview_max_bytes,
            "a size in bytes of at least 1",
        ),
        (
            "media.url_preview_timeout_secs",
            raw.url_preview_timeout_secs,
            "a number of seconds of at least 1",
        ),
        (
            "media.cleanup_interval_secs",
            raw.cleanup_interval_secs,
            "a number of seconds of at least 1",
        ),
    ] {
        checks::positive(issues, key, value, what);
    }
    if let Some(days) = raw.remote_cache_max_age_days {
        checks::positive(
            issues,
            "media.remote_cache_max_age_days",
            days,
            "a number of days of at least 1",
        );
    }
    MediaConfig {
        max_upload_bytes: raw.max_upload_bytes,
        user_quota_bytes: raw.user_quota_bytes,
        max_pending_uploads: raw.max_pending_uploads,
        unused_expiry_secs: raw.unused_expiry_secs,
        freeze_legacy_media: raw.freeze_legacy_media,
        thumbnail_max_dimension: raw.thumbnail_max_dimension,
        thumbnail_max_decode_bytes: raw.thumbnail_max_decode_bytes,
        animated_thumbnail_max_bytes: raw.animated_thumbnail_max_bytes,
        animated_thumbnail_max_frames: raw.animated_thumbnail_max_frames,
        animated_thumbnail_max_pixels: raw.animated_thumbnail_max_pixels,
        url_previews: raw.url_previews,
        url_preview_allow_private: raw.url_preview_allow_private,
        url_preview_max_bytes: raw.url_preview_max_bytes,
        url_preview_timeout_secs: raw.url_preview_timeout_secs,
        remote_cache_max_age_days: raw.remote_cache_max_age_days,
        cleanup_interval_secs: raw.cleanup_interval_secs,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::error::Issues;

    use super::{RawMedia, validate};

    #[test]
    fn defaults_are_valid_and_previews_are_off() {
        let mut issues = Issues::default();
        let config = validate(RawMedia::default(), &mut issues);
        assert!(issues.is_empty());
        assert!(!config.url_previews);
        assert!(!config.url_preview_allow_private);
        assert_eq!(config.user_quota_bytes, None);
        assert_eq!(
            config.remote_cache_max_age(),
            None,
            "the cache is kept by default"
        );
    }

    #[test]
    fn a_zero_cache_age_is_refused_and_days_convert() {
        let mut issues = Issues::default();
        let raw = RawMedia {
            remote_cache_max_age_days: Some(0),
            ..RawMedia::default()
        };
        validate(raw, &mut issues);
        assert!(!issues.is_empty());

        let mut issues = Issues::default();
        let raw = RawMedia {
            remote_cache_max_age_days: Some(2),
            ..RawMedia::default()
        };
        let config = validate(raw, &mut issues);
        assert!(issues.is_empty());
        assert_eq!(
            config.remote_cache_max_age(),
            Some(Duration::from_secs(2 * 24 * 60 * 60))
        );
    }

    #[test]
    fn zero_limits_are_refused() {
        let mut issues = Issues::default();
        let raw = RawMedia {
            max_upload_bytes: 0,
            ..RawMedia::default()
        };
        validate(raw, &mut issues);
        assert!(!issues.is_empty());
    }
}
