//! Errors of the storage layer.

/// What can go wrong reading or writing the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The backend failed (I/O error, corruption, a closed database).
    #[error("storage backend error: {0}")]
    Backend(String),
    /// A stored key or value could not be decoded: a bug or a corrupt database.
    #[error("corrupt {what} in column family {cf}: {reason}")]
    Corrupt {
        /// The column family read.
        cf: &'static str,
        /// "key" or "value".
        what: &'static str,
        /// Why decoding failed.
        reason: String,
    },
    /// Another process holds the database's lock: two servers must never share a data
    /// directory.
    #[error(
        "the data directory {} is in use by another axon process (its RocksDB LOCK is held); \
         stop that process or point this one at another directory",
        path.display()
    )]
    InUse {
        /// The database directory.
        path: std::path::PathBuf,
    },
    /// The database was written by a newer Axon, or its schema cannot be migrated.
    #[error("database schema: {0}")]
    Schema(String),
}
