//! `[storage]`: the RocksDB database under `data_dir`.

use crate::error::Issues;
use crate::schema::raw_section;

raw_section! {
    /// The database (RocksDB) kept under `data_dir`.
    RawStorage {
        /// Whether every write batch is flushed to disk (fsync) before it is acknowledged.
        /// On (the default), a write the server has acknowledged survives a power loss or
        /// kernel crash. Off, writes are faster, and still survive a crash of the process
        /// itself, but the last few seconds of writes can be lost if the machine goes down.
        sync_writes: bool = true;
        /// Size of the block cache (decompressed data blocks kept in memory), in MiB.
        /// 0 turns the cache off.
        block_cache_mb: u64 = 256;
        /// How many database files RocksDB keeps open at once: -1 for all of them, or a
        /// number of at least 20. -1 is the fastest but needs an open-file limit
        /// (`ulimit -n`) well above the number of database files plus connections; the
        /// default of 1024 stays within the common limits.
        max_open_files: i32 = 1024;
    }
}

/// The validated `[storage]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StorageConfig {
    /// Whether each write batch is fsynced before it is acknowledged.
    pub sync_writes: bool,
    /// Block cache size in MiB; 0 means no cache.
    pub block_cache_mb: u64,
    /// RocksDB's `max_open_files`: -1 (unlimited) or at least 20.
    pub max_open_files: i32,
}

impl StorageConfig {
    /// [`StorageConfig::block_cache_mb`] in bytes (saturating).
    pub fn block_cache_bytes(&self) -> u64 {
        self.block_cache_mb.saturating_mul(1024 * 1024)
    }
}

pub(crate) fn validate(raw: RawStorage, issues: &mut Issues) -> StorageConfig {
    // RocksDB silently raises smaller limits to 20; refusing them keeps the file honest.
    if raw.max_open_files != -1 && raw.max_open_files < 20 {
        issues.invalid(
            "storage.max_open_files",
            &raw.max_open_files.to_string(),
            "-1 (no limit) or a number of at least 20",
        );
    }
    StorageConfig {
        sync_writes: raw.sync_writes,
        block_cache_mb: raw.block_cache_mb,
        max_open_files: raw.max_open_files,
    }
}
