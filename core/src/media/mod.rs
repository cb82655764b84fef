//! The media repository: files users upload, their thumbnails, and cached URL previews.
//!
//! Content lives in a [`MediaBackend`], addressed by its SHA-256 ([`ContentHash`]), so equal
//! uploads share one file; the metadata (media id -> hash, type, file name, size, uploader,
//! time) lives in the key-value store. Each change of metadata is one write batch: the media
//! record, the blob's reference count and the uploader's byte total move together.
//!
//! The order of a write is content first, metadata second: a crash between the two leaves
//! an unreferenced file (harmless garbage), never a record pointing at nothing.
//!
//! Other servers' media is cached in the same content-addressed store, under its own
//! records keyed by `(server, media id)` ([`remote`]); [`cleanup`] expires that cache and
//! lapsed reservations.

pub mod backend;
pub mod cleanup;
pub mod disposition;
pub mod remote;
pub mod thumbnail;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::Rng;
use rand::distr::Alphanumeric;
use ruma::{OwnedServerName, OwnedUserId, ServerName, UserId};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use self::backend::{ContentHash, FsBackend, MediaBackend};
pub use self::cleanup::CleanupReport;
pub use self::remote::{RemoteFetchGuard, RemoteMedia, RemoteMediaRecord};
pub use self::thumbnail::{
    AnimatedThumbnail, AnimationLimits, DecodeLimits, ThumbnailError, ThumbnailMethod,
    ThumbnailSize,
};
use crate::accounts::now_ms;
use crate::storage::{
    Direction, Json, KeyRange, KvStore, StorageError, Table, WriteBatch, catalogue,
};

/// Length of the media ids this server makes.
const MEDIA_ID_LENGTH: usize = 24;

const MEDIA: Table<String, Json<MediaRecord>> = Table::new(&catalogue::MEDIA);
/// Keyed by the raw 32-byte digest.
const BLOBS: Table<Vec<u8>, Json<BlobRecord>> = Table::new(&catalogue::MEDIA_BLOBS);
const USAGE: Table<OwnedUserId, u64> = Table::new(&catalogue::MEDIA_USAGE);
const PENDING: Table<(OwnedUserId, String), u64> = Table::new(&catalogue::MEDIA_PENDING);
/// (media id or remote cache key, width, height, method name with `+animated` for
/// animated thumbnails).
const THUMBNAILS: Table<ThumbnailKey, Json<ThumbnailRecord>> =
    Table::new(&catalogue::MEDIA_THUMBNAILS);
const PREVIEWS: Table<String, Json<PreviewRecord>> = Table::new(&catalogue::MEDIA_PREVIEWS);

/// The limits and switches the media repository works under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaSettings {
    /// Largest upload in bytes.
    pub max_upload_bytes: u64,
    /// Most bytes one user may have uploaded in total; `None` for no quota.
    pub user_quota_bytes: Option<u64>,
    /// Most reserved, not yet uploaded media ids per user.
    pub max_pending_uploads: u64,
    /// How long a reserved media id waits for its upload.
    pub unused_expiry: Duration,
    /// Whether media uploaded now is kept off the unauthenticated endpoints.
    pub freeze_legacy_media: bool,
    /// Decode limits for thumbnailing.
    pub decode_limits: DecodeLimits,
    /// Largest animated image, in bytes, given an animated thumbnail when a client asks
    /// for one; larger ones get a still thumbnail.
    pub animated_max_bytes: u64,
    /// How much of an animation one animated thumbnail may process; past it, a still
    /// thumbnail.
    pub animation_limits: AnimationLimits,
}

impl Default for MediaSettings {
    fn default() -> Self {
        Self {
            max_upload_bytes: 50 * 1024 * 1024,
            user_quota_bytes: None,
            max_pending_uploads: 10,
            unused_expiry: Duration::from_secs(24 * 60 * 60),
            freeze_legacy_media: false,
            decode_limits: DecodeLimits {
                max_dimension: 16384,
                max_alloc_bytes: 256 * 1024 * 1024,
            },
            animated_max_bytes: 4 * 1024 * 1024,
            animation_limits: AnimationLimits {
                max_frames: 300,
                max_pixels: 50_000_000,
            },
        }
    }
}

/// Where a media item's bytes are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredContent {
    /// The content's SHA-256, hex.
    pub hash: String,
    /// Its size in bytes.
    pub size: u64,
}

/// What the server knows of one media item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRecord {
    /// The content; `None` while the id is reserved and not yet uploaded.
    pub content: Option<StoredContent>,
    /// The MIME type the uploader declared.
    pub content_type: Option<String>,
    /// The file name the uploader gave.
    pub filename: Option<String>,
    /// Who uploaded (or reserved) it.
    pub uploader: OwnedUserId,
    /// When it was created, in ms since the epoch.
    pub created_ts: u64,
    /// For a reserved id: when the reservation lapses, in ms since the epoch.
    pub expires_ts: Option<u64>,
    /// Whether it was uploaded while the unauthenticated endpoints were frozen.
    pub after_freeze: bool,
}

impl MediaRecord {
    /// The content's hash and size, when uploaded.
    pub fn stored(&self) -> Option<(ContentHash, u64)> {
        self.content.as_ref()?.stored()
    }
}

impl StoredContent {
    /// The content's hash and size; `None` when the hash is not valid hex.
    pub fn stored(&self) -> Option<(ContentHash, u64)> {
        Some((ContentHash::from_hex(&self.hash)?, self.size))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct BlobRecord {
    size: u64,
    refs: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct ThumbnailRecord {
    hash: String,
    content_type: String,
    width: u32,
    height: u32,
}

impl ThumbnailRecord {
    fn of(generated: &thumbnail::Generated) -> ThumbnailRecord {
        ThumbnailRecord {
            hash: ContentHash::of(&generated.content).to_hex(),
            content_type: generated.content_type.to_owned(),
            width: generated.width,
            height: generated.height,
        }
    }
}

/// A thumbnail's key: the media's cache key, the standard size, and the method, suffixed
/// for animated thumbnails.
type ThumbnailKey = (String, u32, u32, String);

/// The key a thumbnail of `cache_key` in `size` is filed under. Animated thumbnails share
/// the media's prefix, so removing the media's thumbnails by prefix removes them too.
fn thumbnail_key(cache_key: &str, size: ThumbnailSize, animated: bool) -> ThumbnailKey {
    let method = size.method.as_str();
    let method = if animated {
        format!("{method}+animated")
    } else {
        method.to_owned()
    };
    (cache_key.to_owned(), size.width, size.height, method)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct PreviewRecord {
    fetched_ts: u64,
    data: serde_json::Value,
}

/// A thumbnail (still or animated) ready to serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Thumbnail {
    /// The encoded image.
    pub content: Vec<u8>,
    /// Its MIME type.
    pub content_type: String,
}

/// What a thumbnail request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThumbnailRequest {
    /// The width asked for.
    pub width: u32,
    /// The height asked for.
    pub height: u32,
    /// How the image fits the box.
    pub method: ThumbnailMethod,
    /// Whether an animated image gets an animated thumbnail.
    pub animated: bool,
}

/// A new piece of media.
#[derive(Clone, Copy, Debug)]
pub struct NewMedia<'a> {
    /// Who uploads it.
    pub uploader: &'a UserId,
    /// The bytes.
    pub content: &'a [u8],
    /// The declared MIME type.
    pub content_type: Option<&'a str>,
    /// The file name.
    pub filename: Option<&'a str>,
}

/// What can go wrong in the media repository.
///
/// The comment on each variant names the client API's answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// No such media (or its reservation lapsed). 404 `M_NOT_FOUND`.
    #[error("media not found")]
    NotFound,
    /// The upload is larger than allowed. 413 `M_TOO_LARGE`.
    #[error("the upload is {size} bytes; the largest allowed is {limit} bytes")]
    TooLarge {
        /// The upload's size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The upload would take the user past their quota. 413 `M_TOO_LARGE`.
    #[error("the upload would exceed the quota of {quota} bytes")]
    QuotaExceeded {
        /// The quota.
        quota: u64,
    },
    /// Someone other than the creator of a reserved id tried to upload to it. 403
    /// `M_FORBIDDEN`.
    #[error("only the user who reserved this media id may upload to it")]
    NotCreator,
    /// The reserved id already has content. 409 `M_CANNOT_OVERWRITE_MEDIA`.
    #[error("this media id already has content")]
    AlreadyUploaded,
    /// The id is reserved but its content has not arrived. 504 `M_NOT_YET_UPLOADED`.
    #[error("the media has not been uploaded yet")]
    NotYetUploaded,
    /// The user holds too many reserved ids. 429 `M_LIMIT_EXCEEDED`.
    #[error("too many media ids are reserved and not uploaded (at most {limit})")]
    TooManyPending {
        /// The limit.
        limit: u64,
    },
    /// No thumbnail can be made of the content.
    #[error(transparent)]
    Thumbnail(#[from] ThumbnailError),
    /// A record names content the backend does not have. 500.
    #[error("content {0} is missing from the media backend")]
    MissingContent(ContentHash),
    /// The key-value store failed. 500.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The media backend failed. 500.
    #[error("media backend: {0}")]
    Io(#[from] std::io::Error),
}

/// The media repository service.
pub struct Media {
    store: Arc<dyn KvStore>,
    backend: Arc<dyn MediaBackend>,
    server_name: OwnedServerName,
    settings: MediaSettings,
    /// Serialises read-check-write sequences on the metadata (quota, reference counts,
    /// reservations), so two uploads cannot both pass a check only one of them may pass.
    write_lock: Mutex<()>,
    /// Bytes of distinct content stored, kept current for the metrics.
    bytes_stored: AtomicU64,
    /// Bumped whenever a reserved id receives its content, for downloads waiting on it.
    uploads: watch::Sender<u64>,
    /// One lock per remote media item being fetched, so concurrent downloads of it make one
    /// request (see [`Media::lock_remote`]).
    remote_fetches: remote::FetchLocks,
}

impl fmt::Debug for Media {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Media")
            .field("backend", &self.backend)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl Media {
    /// The repository over `store` and `backend`, for the media of `server_name`.
    pub fn new(
        store: Arc<dyn KvStore>,
        backend: Arc<dyn MediaBackend>,
        server_name: OwnedServerName,
        settings: MediaSettings,
    ) -> Result<Self, MediaError> {
        // A full scan, once at start-up: the gauge is then kept current as blobs are added.
        let bytes = BLOBS
            .collect(&*store, KeyRange::all(), Direction::Forward, None)?
            .into_iter()
            .fold(0u64, |total, (_, Json(blob))| {
                total.saturating_add(blob.size)
            });
        Ok(Self {
            store,
            backend,
            server_name,
            settings,
            write_lock: Mutex::new(()),
            bytes_stored: AtomicU64::new(bytes),
            uploads: watch::Sender::new(0),
            remote_fetches: remote::FetchLocks::default(),
        })
    }

    /// The server whose media this is.
    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    /// The settings.
    pub fn settings(&self) -> &MediaSettings {
        &self.settings
    }

    /// Bytes of distinct content stored (uploads and thumbnails).
    pub fn bytes_stored(&self) -> u64 {
        self.bytes_stored.load(Ordering::Relaxed)
    }

    /// A receiver that changes whenever a reserved media id receives its content.
    pub fn subscribe_uploads(&self) -> watch::Receiver<u64> {
        self.uploads.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores an upload and returns its new media id, after checking the size limit and
    /// the uploader's quota.
    pub fn upload(&self, media: NewMedia<'_>) -> Result<String, MediaError> {
        self.check_size(media.content.len())?;
        let media_id = new_media_id();
        self.store_content(&media_id, media, None, true)?;
        Ok(media_id)
    }

    /// Stores content the server fetched itself (a URL preview's image): not counted
    /// against the requesting user's quota.
    pub fn store_fetched(&self, media: NewMedia<'_>) -> Result<String, MediaError> {
        self.check_size(media.content.len())?;
        let media_id = new_media_id();
        self.store_content(&media_id, media, None, false)?;
        Ok(media_id)
    }

    /// Reserves a media id for `uploader` to upload to later; returns the id and when the
    /// reservation lapses (ms since the epoch).
    pub fn reserve(&self, uploader: &UserId) -> Result<(String, u64), MediaError> {
        let now = now_ms();
        let expiry = u64::try_from(self.settings.unused_expiry.as_millis()).unwrap_or(u64::MAX);
        let expires_ts = now.saturating_add(expiry);
        let media_id = new_media_id();
        let _guard = self.lock();
        let mut batch = WriteBatch::new();
        let mut live = 0u64;
        for ((user, id), expires) in PENDING.scan_prefix(&*self.store, &(uploader.to_owned(),))? {
            if expires <= now {
                // Lapsed reservations stop counting, and their content-less records go.
                if let Some(Json(record)) = MEDIA.get(&*self.store, &id)?
                    && record.content.is_none()
                {
                    MEDIA.delete(&mut batch, &id);
                }
                PENDING.delete(&mut batch, &(user, id));
            } else {
                live += 1;
            }
        }
        if live >= self.settings.max_pending_uploads {
            self.store.write(batch)?;
            return Err(MediaError::TooManyPending {
                limit: self.settings.max_pending_uploads,
            });
        }
        let record = MediaRecord {
            content: None,
            content_type: None,
            filename: None,
            uploader: uploader.to_owned(),
            created_ts: now,
            expires_ts: Some(expires_ts),
            after_freeze: self.settings.freeze_legacy_media,
        };
        MEDIA.put(&mut batch, &media_id, &Json(record));
        PENDING.put(
            &mut batch,
            &(uploader.to_owned(), media_id.clone()),
            &expires_ts,
        );
        self.store.write(batch)?;
        Ok((media_id, expires_ts))
    }

    /// Uploads the content of a reserved media id: only by the user who reserved it, only
    /// once, and only before the reservation lapses.
    pub fn upload_reserved(&self, media_id: &str, media: NewMedia<'_>) -> Result<(), MediaError> {
        let record = MEDIA
            .get(&*self.store, &media_id.to_owned())?
            .map(|Json(record)| record)
            .ok_or(MediaError::NotFound)?;
        if record.uploader != media.uploader {
            return Err(MediaError::NotCreator);
        }
        if record.content.is_some() {
            return Err(MediaError::AlreadyUploaded);
        }
        if record.expires_ts.is_some_and(|expires| expires <= now_ms()) {
            return Err(MediaError::NotFound);
        }
        self.check_size(media.content.len())?;
        self.store_content(media_id, media, Some(&record), true)?;
        self.uploads
            .send_modify(|count| *count = count.wrapping_add(1));
        Ok(())
    }

    fn check_size(&self, size: usize) -> Result<(), MediaError> {
        let size = u64::try_from(size).unwrap_or(u64::MAX);
        if size > self.settings.max_upload_bytes {
            return Err(MediaError::TooLarge {
                size,
                limit: self.settings.max_upload_bytes,
            });
        }
        Ok(())
    }

    /// Writes the content, then (under the lock) checks the quota and writes the record, the
    /// blob reference and the uploader's total in one batch. With `reserved`, the record
    /// must still be that reservation, or another upload won the race.
    fn store_content(
        &self,
        media_id: &str,
        media: NewMedia<'_>,
        reserved: Option<&MediaRecord>,
        metered: bool,
    ) -> Result<(), MediaError> {
        let hash = ContentHash::of(media.content);
        let size = u64::try_from(media.content.len()).unwrap_or(u64::MAX);
        self.backend.put(&hash, media.content)?;

        let _guard = self.lock();
        self.ensure_content(&hash, media.content)?;
        let mut batch = WriteBatch::new();
        if let Some(reserved) = reserved {
            let current = MEDIA
                .get(&*self.store, &media_id.to_owned())?
                .map(|Json(record)| record);
            if current.as_ref() != Some(reserved) {
                return Err(MediaError::AlreadyUploaded);
            }
            PENDING.delete(
                &mut batch,
                &(media.uploader.to_owned(), media_id.to_owned()),
            );
        }
        if metered {
            let used = USAGE
                .get(&*self.store, &media.uploader.to_owned())?
                .unwrap_or(0);
            if let Some(quota) = self.settings.user_quota_bytes
                && used.saturating_add(size) > quota
            {
                return Err(MediaError::QuotaExceeded { quota });
            }
            USAGE.put(
                &mut batch,
                &media.uploader.to_owned(),
                &used.saturating_add(size),
            );
        }
        let record = MediaRecord {
            content: Some(StoredContent {
                hash: hash.to_hex(),
                size,
            }),
            content_type: media.content_type.map(str::to_owned),
            filename: media.filename.map(str::to_owned),
            uploader: media.uploader.to_owned(),
            created_ts: reserved.map_or_else(now_ms, |record| record.created_ts),
            expires_ts: None,
            after_freeze: reserved.map_or(self.settings.freeze_legacy_media, |record| {
                record.after_freeze
            }),
        };
        MEDIA.put(&mut batch, &media_id.to_owned(), &Json(record));
        let new_blob = self.add_blob_ref(&mut batch, &hash, size)?;
        self.store.write(batch)?;
        if new_blob {
            self.bytes_stored.fetch_add(size, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Adds one reference to the blob `hash` to `batch`; true when the blob is new. The
    /// caller holds the write lock.
    fn add_blob_ref(
        &self,
        batch: &mut WriteBatch,
        hash: &ContentHash,
        size: u64,
    ) -> Result<bool, MediaError> {
        let key = hash.as_bytes().to_vec();
        let existing = BLOBS.get(&*self.store, &key)?.map(|Json(blob)| blob);
        let new = existing.is_none();
        let blob = existing.map_or(BlobRecord { size, refs: 1 }, |blob| BlobRecord {
            refs: blob.refs.saturating_add(1),
            ..blob
        });
        BLOBS.put(batch, &key, &Json(blob));
        Ok(new)
    }

    /// Writes `content` again if its file is gone while no record references it: the cleanup
    /// may have removed it between this writer's first `put` (a no-op, the file was there)
    /// and its taking the lock. The caller holds the write lock, as the cleanup does when it
    /// removes files, so the file then stays until the reference is written.
    fn ensure_content(&self, hash: &ContentHash, content: &[u8]) -> Result<(), MediaError> {
        if !BLOBS.contains(&*self.store, &hash.as_bytes().to_vec())?
            && !self.backend.exists(hash)?
        {
            self.backend.put(hash, content)?;
        }
        Ok(())
    }

    /// Drops one reference to each blob in `hashes` (a hash listed twice loses two) in
    /// `batch`; returns the blobs left unreferenced, whose rows the batch deletes and whose
    /// files the caller removes after writing it. The caller holds the write lock.
    fn release_blob_refs(
        &self,
        batch: &mut WriteBatch,
        hashes: &[ContentHash],
    ) -> Result<Vec<(ContentHash, u64)>, MediaError> {
        let mut counts: HashMap<ContentHash, u64> = HashMap::new();
        for hash in hashes {
            *counts.entry(*hash).or_default() += 1;
        }
        let mut freed = Vec::new();
        for (hash, drop_count) in counts {
            let key = hash.as_bytes().to_vec();
            let Some(Json(blob)) = BLOBS.get(&*self.store, &key)? else {
                continue;
            };
            let refs = blob.refs.saturating_sub(drop_count);
            if refs == 0 {
                BLOBS.delete(batch, &key);
                freed.push((hash, blob.size));
            } else {
                BLOBS.put(batch, &key, &Json(BlobRecord { refs, ..blob }));
            }
        }
        Ok(freed)
    }

    /// Removes the files of `freed` blobs (after the batch that released them was written),
    /// unless a writer referenced the same content again meanwhile. The caller holds the
    /// write lock.
    fn remove_freed(&self, freed: &[(ContentHash, u64)]) -> Result<(), MediaError> {
        for (hash, size) in freed {
            if BLOBS.contains(&*self.store, &hash.as_bytes().to_vec())? {
                continue;
            }
            self.backend.delete(hash)?;
            self.bytes_stored.fetch_sub(
                (*size).min(self.bytes_stored.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
        }
        Ok(())
    }

    /// The record of a media item with content: `NotFound` for unknown or lapsed ids,
    /// `NotYetUploaded` for reserved ids still waiting for their content.
    pub fn get(&self, media_id: &str) -> Result<MediaRecord, MediaError> {
        let record = MEDIA
            .get(&*self.store, &media_id.to_owned())?
            .map(|Json(record)| record)
            .ok_or(MediaError::NotFound)?;
        if record.content.is_some() {
            return Ok(record);
        }
        match record.expires_ts {
            Some(expires) if expires > now_ms() => Err(MediaError::NotYetUploaded),
            _ => Err(MediaError::NotFound),
        }
    }

    /// Whether the unauthenticated (legacy) endpoints may serve `record`: always, unless it
    /// was uploaded while they were frozen and they still are.
    pub fn legacy_visible(&self, record: &MediaRecord) -> bool {
        !(self.settings.freeze_legacy_media && record.after_freeze)
    }

    /// The whole content of `record`.
    pub fn read(&self, record: &MediaRecord) -> Result<Vec<u8>, MediaError> {
        self.read_content(record.content.as_ref().ok_or(MediaError::NotFound)?)
    }

    /// The whole of `content` (of a local or a cached remote item).
    pub fn read_content(&self, content: &StoredContent) -> Result<Vec<u8>, MediaError> {
        let (hash, _) = content.stored().ok_or(MediaError::NotFound)?;
        self.backend
            .get(&hash)?
            .ok_or(MediaError::MissingContent(hash))
    }

    /// `len` bytes of `record`'s content from `start` (fewer at its end).
    pub fn read_range(
        &self,
        record: &MediaRecord,
        start: u64,
        len: u64,
    ) -> Result<Vec<u8>, MediaError> {
        self.read_content_range(
            record.content.as_ref().ok_or(MediaError::NotFound)?,
            start,
            len,
        )
    }

    /// `len` bytes of `content` from `start` (fewer at its end).
    pub fn read_content_range(
        &self,
        content: &StoredContent,
        start: u64,
        len: u64,
    ) -> Result<Vec<u8>, MediaError> {
        let (hash, _) = content.stored().ok_or(MediaError::NotFound)?;
        self.backend
            .range(&hash, start, len)?
            .ok_or(MediaError::MissingContent(hash))
    }

    /// A thumbnail of the media `media_id` for a request of `width` x `height` with
    /// `method`, made on first request in the nearest standard size and cached. With
    /// `animated`, an animation within the size limit and the animation budget gets an
    /// animated thumbnail (cached apart from the still one).
    ///
    /// CPU-heavy on a cache miss: call it on a blocking thread.
    pub fn thumbnail(
        &self,
        media_id: &str,
        width: u32,
        height: u32,
        method: ThumbnailMethod,
        animated: bool,
    ) -> Result<Thumbnail, MediaError> {
        let record = self.get(media_id)?;
        self.thumbnail_of(media_id, &record, width, height, method, animated)
    }

    /// [`Media::thumbnail`] for a record already read.
    pub fn thumbnail_of(
        &self,
        media_id: &str,
        record: &MediaRecord,
        width: u32,
        height: u32,
        method: ThumbnailMethod,
        animated: bool,
    ) -> Result<Thumbnail, MediaError> {
        let content = record.content.as_ref().ok_or(MediaError::NotFound)?;
        let request = ThumbnailRequest {
            width,
            height,
            method,
            animated,
        };
        self.thumbnail_for(media_id, content, request)
    }

    /// A thumbnail of `content`, cached under `cache_key`: the
    /// media id for local media, [`remote::cache_key`] for cached remote media.
    ///
    /// CPU-heavy on a cache miss: call it on a blocking thread.
    pub fn thumbnail_for(
        &self,
        cache_key: &str,
        content: &StoredContent,
        request: ThumbnailRequest,
    ) -> Result<Thumbnail, MediaError> {
        let ThumbnailRequest {
            width,
            height,
            method,
            animated,
        } = request;
        let (_, original_size) = content.stored().ok_or(MediaError::NotFound)?;
        let limits = self.settings.decode_limits;
        let size = thumbnail::choose_size(width, height, method);
        let still_key = thumbnail_key(cache_key, size, false);
        if !animated || original_size > self.settings.animated_max_bytes {
            let (record, content) = self.still_thumbnail(&still_key, content, None, size)?;
            return Ok(Thumbnail {
                content,
                content_type: record.content_type,
            });
        }
        // Animated requests are filed apart from still ones. What is filed is the animated
        // thumbnail of an animation, and the still thumbnail of anything else (a still
        // image, an animation past the budget), so a repeated request decodes nothing.
        let animated_key = thumbnail_key(cache_key, size, true);
        if let Some((record, content)) = self.cached_thumbnail(&animated_key)? {
            return Ok(Thumbnail {
                content,
                content_type: record.content_type,
            });
        }
        let original = self.read_content(content)?;
        let budget = self.settings.animation_limits;
        let (record, thumbnail) =
            match thumbnail::generate_animated(&original, size, limits, budget)? {
                AnimatedThumbnail::Animated(generated) => {
                    let record = ThumbnailRecord::of(&generated);
                    (record, generated.content)
                }
                AnimatedThumbnail::NotAnimated | AnimatedThumbnail::OverBudget(_) => {
                    self.still_thumbnail(&still_key, content, Some(&original), size)?
                }
            };
        self.file_thumbnail(&animated_key, &thumbnail, &record)?;
        Ok(Thumbnail {
            content: thumbnail,
            content_type: record.content_type,
        })
    }

    /// The still thumbnail of `content` in `size`, filed under `key`: from the cache, else
    /// made from `original` (read from the backend when not given) and filed.
    fn still_thumbnail(
        &self,
        key: &ThumbnailKey,
        content: &StoredContent,
        original: Option<&[u8]>,
        size: ThumbnailSize,
    ) -> Result<(ThumbnailRecord, Vec<u8>), MediaError> {
        if let Some(found) = self.cached_thumbnail(key)? {
            return Ok(found);
        }
        let read;
        let original = match original {
            Some(original) => original,
            None => {
                read = self.read_content(content)?;
                &read
            }
        };
        let generated = thumbnail::generate(original, size, self.settings.decode_limits)?;
        let record = ThumbnailRecord::of(&generated);
        self.file_thumbnail(key, &generated.content, &record)?;
        Ok((record, generated.content))
    }

    /// The thumbnail filed under `key` and its bytes, when both are there.
    fn cached_thumbnail(
        &self,
        key: &ThumbnailKey,
    ) -> Result<Option<(ThumbnailRecord, Vec<u8>)>, MediaError> {
        let Some(Json(record)) = THUMBNAILS.get(&*self.store, key)? else {
            return Ok(None);
        };
        let Some(hash) = ContentHash::from_hex(&record.hash) else {
            return Ok(None);
        };
        Ok(self.backend.get(&hash)?.map(|content| (record, content)))
    }

    /// Files `thumbnail` (described by `record`) under `key`, unless a concurrent request
    /// filed one first; each filed record holds a reference to its content.
    fn file_thumbnail(
        &self,
        key: &ThumbnailKey,
        thumbnail: &[u8],
        record: &ThumbnailRecord,
    ) -> Result<(), MediaError> {
        let hash = ContentHash::of(thumbnail);
        let thumb_size = u64::try_from(thumbnail.len()).unwrap_or(u64::MAX);
        self.backend.put(&hash, thumbnail)?;
        let _guard = self.lock();
        self.ensure_content(&hash, thumbnail)?;
        if THUMBNAILS.contains(&*self.store, key)? {
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        THUMBNAILS.put(&mut batch, key, &Json(record.clone()));
        let new_blob = self.add_blob_ref(&mut batch, &hash, thumb_size)?;
        self.store.write(batch)?;
        if new_blob {
            self.bytes_stored.fetch_add(thumb_size, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The cached preview of `url`, if fetched less than `max_age` ago.
    pub fn cached_preview(
        &self,
        url: &str,
        max_age: Duration,
    ) -> Result<Option<serde_json::Value>, MediaError> {
        let max_age = u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX);
        let now = now_ms();
        Ok(PREVIEWS
            .get(&*self.store, &url.to_owned())?
            .filter(|Json(record)| now.saturating_sub(record.fetched_ts) < max_age)
            .map(|Json(record)| record.data))
    }

    /// Caches the preview `data` of `url`, fetched now.
    pub fn store_preview(&self, url: &str, data: &serde_json::Value) -> Result<(), MediaError> {
        let mut batch = WriteBatch::new();
        PREVIEWS.put(
            &mut batch,
            &url.to_owned(),
            &Json(PreviewRecord {
                fetched_ts: now_ms(),
                data: data.clone(),
            }),
        );
        self.store.write(batch)?;
        Ok(())
    }
}

/// A fresh random media id: 24 ASCII letters and digits (the spec allows `[A-Za-z0-9_-]`).
fn new_media_id() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(MEDIA_ID_LENGTH)
        .map(char::from)
        .collect()
}

/// Whether `media_id` has the spec's grammar for media ids (`[A-Za-z0-9_-]+`), so ids from
/// a request path can be rejected before they reach storage.
pub fn is_valid_media_id(media_id: &str) -> bool {
    !media_id.is_empty()
        && media_id.len() <= 255
        && media_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
