//! Other servers' media, cached here after a fetch so later downloads make no request.
//!
//! A cached item is a [`RemoteMediaRecord`] keyed by `(server, media id)`, pointing into the
//! same content-addressed backend and blob reference counts as local media, plus an index by
//! last access that the cleanup walks oldest first. Its thumbnails live in the thumbnail
//! table under [`cache_key`], which cannot collide with a local media id (those have no `/`).
//! A record may exist without content: a thumbnail fetched before the original.
//!
//! Fetching is the homeserver's job (it speaks HTTP); [`Media::lock_remote`] lets it make one
//! request for concurrent downloads of the same item.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use ruma::ServerName;
use serde::{Deserialize, Serialize};

use super::{
    ContentHash, Media, MediaError, StoredContent, THUMBNAILS, Thumbnail, ThumbnailMethod,
    ThumbnailRecord, thumbnail,
};
use crate::accounts::now_ms;
use crate::storage::{Json, Table, WriteBatch, catalogue};

/// (server, media id) -> the cached item.
pub(super) const REMOTE: Table<(String, String), Json<RemoteMediaRecord>> =
    Table::new(&catalogue::MEDIA_REMOTE);
/// (last access ms, server, media id) -> nothing.
pub(super) const REMOTE_BY_ACCESS: Table<(u64, String, String), ()> =
    Table::new(&catalogue::MEDIA_REMOTE_BY_ACCESS);

/// How stale a last-access time may get before a read rewrites it: rewriting it on every
/// download would turn every read into a write, and the cache expires in days.
const ACCESS_GRANULARITY_MS: u64 = 60 * 60 * 1000;

/// What the server keeps of another server's media item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteMediaRecord {
    /// The original's content; `None` while only thumbnails were fetched.
    pub content: Option<StoredContent>,
    /// The MIME type the other server gave.
    pub content_type: Option<String>,
    /// The file name the other server gave.
    pub filename: Option<String>,
    /// When the record was created, in ms since the epoch.
    pub fetched_ts: u64,
    /// When it was last served (to within an hour), in ms since the epoch.
    pub last_access_ts: u64,
    /// Whether it was first cached while the unauthenticated endpoints were frozen.
    pub after_freeze: bool,
}

/// Content fetched from another server, to cache.
#[derive(Clone, Copy, Debug)]
pub struct RemoteMedia<'a> {
    /// The bytes.
    pub content: &'a [u8],
    /// The MIME type the other server gave.
    pub content_type: Option<&'a str>,
    /// The file name the other server gave.
    pub filename: Option<&'a str>,
}

/// The key under which the thumbnails of `server`'s `media_id` are cached.
pub fn cache_key(server: &ServerName, media_id: &str) -> String {
    key_of(server.as_str(), media_id)
}

/// [`cache_key`] of a server name already stored as text.
pub(super) fn key_of(server: &str, media_id: &str) -> String {
    format!("{server}/{media_id}")
}

/// The locks of the remote items being fetched now. Entries are weak, so an item nobody
/// fetches holds no memory past the next lookup.
#[derive(Debug, Default)]
pub(super) struct FetchLocks(Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>);

/// Held while one remote item is fetched: others asking for it wait, then find it cached.
#[derive(Debug)]
pub struct RemoteFetchGuard {
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Media {
    /// Waits until no one else fetches `server`'s `media_id`, and holds that until the guard
    /// is dropped. A caller checks the cache again after taking it.
    pub async fn lock_remote(&self, server: &ServerName, media_id: &str) -> RemoteFetchGuard {
        let key = cache_key(server, media_id);
        let lock = {
            let mut locks = self
                .remote_fetches
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            locks.retain(|_, lock| lock.strong_count() > 0);
            match locks.get(&key).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(key, Arc::downgrade(&lock));
                    lock
                }
            }
        };
        RemoteFetchGuard {
            _guard: lock.lock_owned().await,
        }
    }

    /// The cached record of `server`'s `media_id`, if any, counting this as an access.
    pub fn remote(
        &self,
        server: &ServerName,
        media_id: &str,
    ) -> Result<Option<RemoteMediaRecord>, MediaError> {
        let key = (server.to_string(), media_id.to_owned());
        let Some(Json(record)) = REMOTE.get(&*self.store, &key)? else {
            return Ok(None);
        };
        let now = now_ms();
        if now.saturating_sub(record.last_access_ts) < ACCESS_GRANULARITY_MS {
            return Ok(Some(record));
        }
        let _guard = self.lock();
        // Re-read under the lock: the cleanup may have removed it meanwhile.
        let Some(Json(record)) = REMOTE.get(&*self.store, &key)? else {
            return Ok(None);
        };
        let touched = RemoteMediaRecord {
            last_access_ts: now,
            ..record.clone()
        };
        let mut batch = WriteBatch::new();
        put_record(&mut batch, &key, Some(&record), &touched);
        self.store.write(batch)?;
        Ok(Some(touched))
    }

    /// Caches the original of `server`'s `media_id`; returns the record now stored. When the
    /// original is already cached (another fetch won), that record is kept.
    pub fn store_remote(
        &self,
        server: &ServerName,
        media_id: &str,
        media: RemoteMedia<'_>,
    ) -> Result<RemoteMediaRecord, MediaError> {
        self.check_size(media.content.len())?;
        let hash = ContentHash::of(media.content);
        let size = u64::try_from(media.content.len()).unwrap_or(u64::MAX);
        self.backend.put(&hash, media.content)?;

        let key = (server.to_string(), media_id.to_owned());
        let _guard = self.lock();
        self.ensure_content(&hash, media.content)?;
        let existing = REMOTE.get(&*self.store, &key)?.map(|Json(record)| record);
        if let Some(record) = &existing
            && record.content.is_some()
        {
            return Ok(record.clone());
        }
        let now = now_ms();
        let record = RemoteMediaRecord {
            content: Some(StoredContent {
                hash: hash.to_hex(),
                size,
            }),
            content_type: media.content_type.map(str::to_owned),
            filename: media.filename.map(str::to_owned),
            fetched_ts: existing.as_ref().map_or(now, |record| record.fetched_ts),
            last_access_ts: now,
            after_freeze: existing
                .as_ref()
                .map_or(self.settings.freeze_legacy_media, |record| {
                    record.after_freeze
                }),
        };
        let mut batch = WriteBatch::new();
        put_record(&mut batch, &key, existing.as_ref(), &record);
        let new_blob = self.add_blob_ref(&mut batch, &hash, size)?;
        self.store.write(batch)?;
        if new_blob {
            self.bytes_stored.fetch_add(size, Ordering::Relaxed);
        }
        Ok(record)
    }

    /// The cached thumbnail of `server`'s `media_id` in the standard size chosen for
    /// `width` x `height` with `method`, if one was generated or fetched.
    pub fn cached_remote_thumbnail(
        &self,
        server: &ServerName,
        media_id: &str,
        width: u32,
        height: u32,
        method: ThumbnailMethod,
    ) -> Result<Option<Thumbnail>, MediaError> {
        let size = thumbnail::choose_size(width, height, method);
        let key = (
            cache_key(server, media_id),
            size.width,
            size.height,
            size.method.as_str().to_owned(),
        );
        let Some(Json(cached)) = THUMBNAILS.get(&*self.store, &key)? else {
            return Ok(None);
        };
        let Some(hash) = ContentHash::from_hex(&cached.hash) else {
            return Ok(None);
        };
        Ok(self.backend.get(&hash)?.map(|content| Thumbnail {
            content,
            content_type: cached.content_type,
        }))
    }

    /// Caches a thumbnail of `server`'s `media_id` fetched from that server for a request of
    /// `width` x `height` with `method`, under the standard size that request maps to (so
    /// later requests mapping to it are served from here).
    pub fn store_remote_thumbnail(
        &self,
        server: &ServerName,
        media_id: &str,
        width: u32,
        height: u32,
        method: ThumbnailMethod,
        fetched: &Thumbnail,
    ) -> Result<(), MediaError> {
        self.check_size(fetched.content.len())?;
        let size = thumbnail::choose_size(width, height, method);
        let hash = ContentHash::of(&fetched.content);
        let bytes = u64::try_from(fetched.content.len()).unwrap_or(u64::MAX);
        self.backend.put(&hash, &fetched.content)?;

        let record_key = (server.to_string(), media_id.to_owned());
        let thumbnail_key = (
            cache_key(server, media_id),
            size.width,
            size.height,
            size.method.as_str().to_owned(),
        );
        let _guard = self.lock();
        self.ensure_content(&hash, &fetched.content)?;
        if THUMBNAILS.contains(&*self.store, &thumbnail_key)? {
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        let existing = REMOTE.get(&*self.store, &record_key)?.map(|Json(r)| r);
        if existing.is_none() {
            // The record is what the cleanup finds the thumbnails by.
            let now = now_ms();
            let record = RemoteMediaRecord {
                content: None,
                content_type: None,
                filename: None,
                fetched_ts: now,
                last_access_ts: now,
                after_freeze: self.settings.freeze_legacy_media,
            };
            put_record(&mut batch, &record_key, None, &record);
        }
        let (width, height) = thumbnail::dimensions(&fetched.content, self.settings.decode_limits)
            .unwrap_or((size.width, size.height));
        THUMBNAILS.put(
            &mut batch,
            &thumbnail_key,
            &Json(ThumbnailRecord {
                hash: hash.to_hex(),
                content_type: fetched.content_type.clone(),
                width,
                height,
            }),
        );
        let new_blob = self.add_blob_ref(&mut batch, &hash, bytes)?;
        self.store.write(batch)?;
        if new_blob {
            self.bytes_stored.fetch_add(bytes, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Puts `record` under `key` with its access index entry, replacing `previous`'s.
fn put_record(
    batch: &mut WriteBatch,
    key: &(String, String),
    previous: Option<&RemoteMediaRecord>,
    record: &RemoteMediaRecord,
) {
    let (server, media_id) = key;
    if let Some(previous) = previous {
        REMOTE_BY_ACCESS.delete(
            batch,
            &(previous.last_access_ts, server.clone(), media_id.clone()),
        );
    }
    REMOTE_BY_ACCESS.put(
        batch,
        &(record.last_access_ts, server.clone(), media_id.clone()),
        &(),
    );
    REMOTE.put(batch, key, &Json(record.clone()));
}
