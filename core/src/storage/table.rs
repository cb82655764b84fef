//! Typed table handles over a column family.

use std::fmt;
use std::marker::PhantomData;

use super::catalogue::ColumnFamily;
use super::codec::{KeyCodec, ValueCodec};
use super::error::StorageError;
use super::kv::{Direction, KeyRange, KvStore, WriteBatch};

/// A typed view of one column family: keys of type `K`, values of type `V`.
///
/// Declare tables as constants next to the code that owns them:
/// `const USERS: Table<OwnedUserId, Json<UserRecord>> = Table::new(&catalogue::USERS);`
pub struct Table<K, V> {
    cf: &'static ColumnFamily,
    types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> fmt::Debug for Table<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Table").field(&self.cf.name).finish()
    }
}

impl<K, V> Clone for Table<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, V> Copy for Table<K, V> {}

impl<K: KeyCodec, V: ValueCodec> Table<K, V> {
    /// A handle on `cf`.
    pub const fn new(cf: &'static ColumnFamily) -> Self {
        Self {
            cf,
            types: PhantomData,
        }
    }

    /// The column family behind this table.
    pub fn column_family(&self) -> &'static ColumnFamily {
        self.cf
    }

    /// The value at `key`.
    pub fn get(&self, store: &dyn KvStore, key: &K) -> Result<Option<V>, StorageError> {
        store
            .get(self.cf, &key.to_key_bytes())?
            .map(|bytes| self.decode_value(&bytes))
            .transpose()
    }

    /// Whether `key` is present.
    pub fn contains(&self, store: &dyn KvStore, key: &K) -> Result<bool, StorageError> {
        Ok(store.get(self.cf, &key.to_key_bytes())?.is_some())
    }

    /// Adds a put of `key` to `batch`.
    pub fn put(&self, batch: &mut WriteBatch, key: &K, value: &V) {
        batch.put(self.cf, key.to_key_bytes(), value.encode_value());
    }

    /// Adds a delete of `key` to `batch`.
    pub fn delete(&self, batch: &mut WriteBatch, key: &K) {
        batch.delete(self.cf, key.to_key_bytes());
    }

    /// Every entry whose key starts with the encoding of `prefix` (a leading part of `K`,
    /// typically a shorter tuple), in key order.
    pub fn scan_prefix<P: KeyCodec>(
        &self,
        store: &dyn KvStore,
        prefix: &P,
    ) -> Result<Vec<(K, V)>, StorageError> {
        self.collect(
            store,
            KeyRange::prefix(&prefix.to_key_bytes()),
            Direction::Forward,
            None,
        )
    }

    /// Up to `limit` entries of `range` in `direction`.
    pub fn collect(
        &self,
        store: &dyn KvStore,
        range: KeyRange,
        direction: Direction,
        limit: Option<usize>,
    ) -> Result<Vec<(K, V)>, StorageError> {
        let mut out = Vec::new();
        for entry in store.iter(self.cf, range, direction)? {
            if limit.is_some_and(|limit| out.len() >= limit) {
                break;
            }
            let (key, value) = entry?;
            out.push((self.decode_key(&key)?, self.decode_value(&value)?));
        }
        Ok(out)
    }

    /// Number of entries in the table (a full scan: for tests and admin tools, not hot paths).
    pub fn count(&self, store: &dyn KvStore) -> Result<u64, StorageError> {
        let mut count = 0;
        for entry in store.iter(self.cf, KeyRange::all(), Direction::Forward)? {
            entry?;
            count += 1;
        }
        Ok(count)
    }

    fn decode_key(&self, bytes: &[u8]) -> Result<K, StorageError> {
        K::from_key_bytes(bytes).map_err(|err| StorageError::Corrupt {
            cf: self.cf.name,
            what: "key",
            reason: err.0,
        })
    }

    fn decode_value(&self, bytes: &[u8]) -> Result<V, StorageError> {
        V::decode_value(bytes).map_err(|err| StorageError::Corrupt {
            cf: self.cf.name,
            what: "value",
            reason: err.0,
        })
    }
}
