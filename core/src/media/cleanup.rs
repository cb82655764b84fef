//! Expiry: cached remote media not served for a while, and reserved media ids whose upload
//! window lapsed.
//!
//! Each item goes in its own batch (record, indexes, thumbnails and blob references together),
//! and files are removed only after that batch is written, so a crash leaves at worst an
//! unreferenced file, never a record pointing at nothing. Files are removed under the write
//! lock, after checking no writer referenced the same content again.

use super::remote::{REMOTE, REMOTE_BY_ACCESS, key_of};
use super::{ContentHash, MEDIA, Media, MediaError, PENDING, THUMBNAILS};
use crate::storage::{Direction, Json, KeyCodec as _, KeyRange, WriteBatch};

/// What one cleanup pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Cached remote media items removed (with their thumbnails).
    pub remote_removed: u64,
    /// Lapsed reservations removed.
    pub reservations_removed: u64,
    /// Bytes of files removed.
    pub bytes_freed: u64,
}

impl Media {
    /// Removes up to `limit` cached remote media items last served before `cutoff_ms` (ms
    /// since the epoch), oldest first, with their thumbnails.
    pub fn remove_stale_remote(
        &self,
        cutoff_ms: u64,
        limit: usize,
    ) -> Result<CleanupReport, MediaError> {
        let range = KeyRange::half_open(Vec::new(), (cutoff_ms,).to_key_bytes());
        let stale =
            REMOTE_BY_ACCESS.collect(&*self.store, range, Direction::Forward, Some(limit))?;
        let mut report = CleanupReport::default();
        for ((last_access, server, media_id), ()) in stale {
            let _guard = self.lock();
            let key = (server.clone(), media_id.clone());
            let Some(Json(record)) = REMOTE.get(&*self.store, &key)? else {
                continue;
            };
            if record.last_access_ts != last_access {
                // Served again since the index was read.
                continue;
            }
            let mut batch = WriteBatch::new();
            REMOTE.delete(&mut batch, &key);
            REMOTE_BY_ACCESS.delete(&mut batch, &(last_access, server.clone(), media_id.clone()));
            let mut hashes: Vec<ContentHash> = record
                .content
                .as_ref()
                .and_then(|content| content.stored())
                .map(|(hash, _)| hash)
                .into_iter()
                .collect();
            let thumbnail_key = key_of(&server, &media_id);
            for (thumbnail, Json(thumb)) in
                THUMBNAILS.scan_prefix(&*self.store, &(thumbnail_key,))?
            {
                THUMBNAILS.delete(&mut batch, &thumbnail);
                if let Some(hash) = ContentHash::from_hex(&thumb.hash) {
                    hashes.push(hash);
                }
            }
            let freed = self.release_blob_refs(&mut batch, &hashes)?;
            self.store.write(batch)?;
            self.remove_freed(&freed)?;
            report.remote_removed += 1;
            report.bytes_freed += freed.iter().map(|(_, size)| size).sum::<u64>();
        }
        Ok(report)
    }

    /// Removes up to `limit` reservations (media ids from `/create`) whose upload window
    /// ended before `now_ms`, with their content-less records.
    pub fn remove_lapsed_reservations(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<CleanupReport, MediaError> {
        let lapsed: Vec<_> = PENDING
            .collect(&*self.store, KeyRange::all(), Direction::Forward, None)?
            .into_iter()
            .filter(|(_, expires)| *expires <= now_ms)
            .take(limit)
            .collect();
        let mut report = CleanupReport::default();
        for ((user, media_id), _) in lapsed {
            let _guard = self.lock();
            let mut batch = WriteBatch::new();
            PENDING.delete(&mut batch, &(user, media_id.clone()));
            if let Some(Json(record)) = MEDIA.get(&*self.store, &media_id)?
                && record.content.is_none()
            {
                MEDIA.delete(&mut batch, &media_id);
            }
            self.store.write(batch)?;
            report.reservations_removed += 1;
        }
        Ok(report)
    }
}
