//! The database's schema version, and the migrations that bring an older database up to date.
//!
//! The version lives in the `META` column family under the key `schema_version` (a `u64`;
//! keys of `META` are strings in the key codec). A fresh database gets the current version
//! and its creation time; an older one is migrated step by step; a newer one is refused, so
//! an old build never reads data whose layout it does not know.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::catalogue::{self, META};
use super::error::StorageError;
use super::kv::{Direction, KeyRange, KvStore, WriteBatch};
use super::rocks::{RocksOptions, RocksStore};
use super::table::Table;

/// The schema version this build reads and writes. Bump it together with a new entry in
/// [`MIGRATIONS`] whenever the meaning of stored keys or values changes incompatibly.
pub const SCHEMA_VERSION: u64 = 1;

/// Database-wide facts, keyed by name.
const META_TABLE: Table<String, u64> = Table::new(&META);
const VERSION_KEY: &str = "schema_version";
/// When the database was created, in milliseconds since the Unix epoch.
const CREATED_AT_KEY: &str = "created_at";

/// One step of the schema: from version `from` to `from + 1`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Migration {
    /// The version this step starts from.
    pub(crate) from: u64,
    /// What the step changes, for the log.
    pub(crate) description: &'static str,
    /// Reads what it needs and returns the changes. They are written in one batch together
    /// with the version bump, so a crash leaves either the old version with the old data or
    /// the new version with the new data. A step too large for one batch may write
    /// intermediate batches itself, but they must be harmless to write again, because the
    /// step reruns from the start if it is interrupted.
    pub(crate) run: fn(&dyn KvStore) -> Result<WriteBatch, StorageError>,
}

/// Every migration, in order: entry `i` migrates from version `i + 1`.
pub(crate) static MIGRATIONS: &[Migration] = &[];

/// Opens the RocksDB database in `path` and brings its schema to [`SCHEMA_VERSION`] (see
/// [`prepare_schema`]).
pub fn open_database(path: &Path, options: RocksOptions) -> Result<Arc<dyn KvStore>, StorageError> {
    let store = RocksStore::open(path, options)?;
    prepare_schema(&store)?;
    Ok(Arc::new(store))
}

/// Checks the schema version of `store` and acts on it: an empty store is stamped with
/// [`SCHEMA_VERSION`] and its creation time; an older one is migrated; a newer one, or one
/// that holds data but no version, is refused with [`StorageError::Schema`].
pub fn prepare_schema(store: &dyn KvStore) -> Result<(), StorageError> {
    upgrade(store, SCHEMA_VERSION, MIGRATIONS).map(|_| ())
}

/// What [`upgrade`] found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Created,
    Current,
    Migrated { from: u64 },
}

fn upgrade(
    store: &dyn KvStore,
    target: u64,
    migrations: &[Migration],
) -> Result<Outcome, StorageError> {
    let Some(found) = META_TABLE.get(store, &VERSION_KEY.to_owned())? else {
        ensure_empty(store)?;
        let mut batch = WriteBatch::new();
        META_TABLE.put(&mut batch, &VERSION_KEY.to_owned(), &target);
        META_TABLE.put(&mut batch, &CREATED_AT_KEY.to_owned(), &now_millis());
        store.write(batch)?;
        tracing::info!(schema = target, "created a new database");
        return Ok(Outcome::Created);
    };
    if found == target {
        return Ok(Outcome::Current);
    }
    if found > target {
        return Err(StorageError::Schema(format!(
            "database was written by a newer Axon (schema {found}, this build knows {target}); \
             run that version or a newer one"
        )));
    }
    if found == 0 {
        return Err(StorageError::Schema(
            "stored schema version 0 is not valid".to_owned(),
        ));
    }
    for version in found..target {
        let step = migrations
            .iter()
            .find(|step| step.from == version)
            .ok_or_else(|| {
                StorageError::Schema(format!(
                    "no migration from schema {version} to {}",
                    version + 1
                ))
            })?;
        tracing::info!(
            from = version,
            to = version + 1,
            step = step.description,
            "migrating"
        );
        let mut batch = (step.run)(store)?;
        META_TABLE.put(&mut batch, &VERSION_KEY.to_owned(), &(version + 1));
        store.write(batch)?;
    }
    tracing::info!(from = found, to = target, "database schema migrated");
    Ok(Outcome::Migrated { from: found })
}

/// Refuses a store without a schema version that nevertheless holds data: it was not
/// written by Axon, and stamping it would hide that.
fn ensure_empty(store: &dyn KvStore) -> Result<(), StorageError> {
    for cf in catalogue::ALL {
        if store
            .iter(cf, KeyRange::all(), Direction::Forward)?
            .next()
            .transpose()?
            .is_some()
        {
            return Err(StorageError::Schema(format!(
                "the database has data (in column family {}) but no schema version: \
                 it was not written by Axon or is damaged",
                cf.name
            )));
        }
    }
    Ok(())
}

fn now_millis() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStore;
    use crate::storage::catalogue::USERS;

    fn version(store: &dyn KvStore) -> Option<u64> {
        META_TABLE.get(store, &VERSION_KEY.to_owned()).unwrap()
    }

    fn created_at(store: &dyn KvStore) -> Option<u64> {
        META_TABLE.get(store, &CREATED_AT_KEY.to_owned()).unwrap()
    }

    fn at_version(version: u64) -> MemoryStore {
        let store = MemoryStore::new();
        let mut batch = WriteBatch::new();
        META_TABLE.put(&mut batch, &VERSION_KEY.to_owned(), &version);
        store.write(batch).unwrap();
        store
    }

    /// v1 -> v2: user records move from key `old/<name>` to `new/<name>`.
    fn rename_users(store: &dyn KvStore) -> Result<WriteBatch, StorageError> {
        let mut batch = WriteBatch::new();
        for entry in store.scan_prefix(&USERS, b"old/")? {
            let (key, value) = entry?;
            let mut renamed = b"new/".to_vec();
            renamed.extend_from_slice(&key[b"old/".len()..]);
            batch.delete(&USERS, key);
            batch.put(&USERS, renamed, value);
        }
        Ok(batch)
    }

    /// v2 -> v3: needs what v1 -> v2 produced.
    fn count_users(store: &dyn KvStore) -> Result<WriteBatch, StorageError> {
        let count = store.scan_prefix(&USERS, b"new/")?.count() as u64;
        let mut batch = WriteBatch::new();
        batch.put(&USERS, b"count".to_vec(), count.to_be_bytes().to_vec());
        Ok(batch)
    }

    fn failing(store: &dyn KvStore) -> Result<WriteBatch, StorageError> {
        let _ = store;
        Err(StorageError::Backend(
            "migration failed half-way".to_owned(),
        ))
    }

    const RENAME: Migration = Migration {
        from: 1,
        description: "rename users",
        run: rename_users,
    };
    const COUNT: Migration = Migration {
        from: 2,
        description: "count users",
        run: count_users,
    };

    #[test]
    fn migration_list_is_contiguous_up_to_the_current_version() {
        for (index, step) in MIGRATIONS.iter().enumerate() {
            assert_eq!(step.from, index as u64 + 1, "{}", step.description);
        }
        assert_eq!(MIGRATIONS.len() as u64 + 1, SCHEMA_VERSION);
    }

    #[test]
    fn fresh_store_is_stamped_then_left_alone() {
        let store = MemoryStore::new();
        assert_eq!(upgrade(&store, 1, &[]).unwrap(), Outcome::Created);
        assert_eq!(version(&store), Some(1));
        let created = created_at(&store).unwrap();
        assert!(created > 1_600_000_000_000, "{created}");

        assert_eq!(upgrade(&store, 1, &[]).unwrap(), Outcome::Current);
        assert_eq!(created_at(&store), Some(created));
    }

    #[test]
    fn older_store_is_migrated_in_order_with_its_data() {
        let store = at_version(1);
        store.put(&USERS, b"old/alice", b"A").unwrap();
        store.put(&USERS, b"old/bob", b"B").unwrap();

        // Listed out of order on purpose: steps are chosen by their `from` version.
        assert_eq!(
            upgrade(&store, 3, &[COUNT, RENAME]).unwrap(),
            Outcome::Migrated { from: 1 }
        );
        assert_eq!(version(&store), Some(3));
        assert_eq!(store.get(&USERS, b"old/alice").unwrap(), None);
        assert_eq!(
            store.get(&USERS, b"new/alice").unwrap(),
            Some(b"A".to_vec())
        );
        assert_eq!(store.get(&USERS, b"new/bob").unwrap(), Some(b"B".to_vec()));
        assert_eq!(
            store.get(&USERS, b"count").unwrap(),
            Some(2_u64.to_be_bytes().to_vec())
        );
        assert_eq!(
            upgrade(&store, 3, &[COUNT, RENAME]).unwrap(),
            Outcome::Current
        );
    }

    #[test]
    fn failed_migration_changes_nothing_of_its_step() {
        let store = at_version(1);
        store.put(&USERS, b"old/alice", b"A").unwrap();
        let broken = Migration {
            from: 2,
            description: "broken",
            run: failing,
        };

        assert!(upgrade(&store, 3, &[RENAME, broken]).is_err());
        // The first step completed and is recorded; the failed one left version 2.
        assert_eq!(version(&store), Some(2));
        assert_eq!(
            store.get(&USERS, b"new/alice").unwrap(),
            Some(b"A".to_vec())
        );
        // A fixed build resumes from there.
        assert_eq!(
            upgrade(&store, 3, &[RENAME, COUNT]).unwrap(),
            Outcome::Migrated { from: 2 }
        );
        assert_eq!(
            store.get(&USERS, b"count").unwrap(),
            Some(1_u64.to_be_bytes().to_vec())
        );
    }

    #[test]
    fn missing_migration_is_refused_without_changes() {
        let store = at_version(1);
        let err = upgrade(&store, 3, &[RENAME]).unwrap_err();
        assert!(
            err.to_string().contains("no migration from schema 2 to 3"),
            "{err}"
        );
        assert_eq!(version(&store), Some(2));
        let err = upgrade(&at_version(1), 2, &[]).unwrap_err();
        assert!(
            err.to_string().contains("no migration from schema 1 to 2"),
            "{err}"
        );
    }

    #[test]
    fn newer_store_is_refused() {
        let store = at_version(7);
        let err = upgrade(&store, 3, &[RENAME, COUNT]).unwrap_err();
        assert!(matches!(err, StorageError::Schema(_)), "{err:?}");
        assert!(
            err.to_string()
                .contains("written by a newer Axon (schema 7, this build knows 3)"),
            "{err}"
        );
        assert_eq!(version(&store), Some(7));
    }

    #[test]
    fn data_without_a_version_is_refused() {
        let store = MemoryStore::new();
        store.put(&USERS, b"stray", b"x").unwrap();
        let err = upgrade(&store, 1, &[]).unwrap_err();
        assert!(err.to_string().contains("no schema version"), "{err}");
        assert_eq!(version(&store), None);
        assert!(upgrade(&at_version(0), 1, &[]).is_err());
    }

    #[test]
    fn open_database_stamps_reopens_and_refuses_newer() {
        let dir = tempfile::tempdir().unwrap();
        let options = RocksOptions {
            sync_writes: false,
            ..RocksOptions::default()
        };
        let created = {
            let store = open_database(dir.path(), options.clone()).unwrap();
            assert_eq!(version(&*store), Some(SCHEMA_VERSION));
            store.put(&USERS, b"kept", b"1").unwrap();
            created_at(&*store).unwrap()
        };
        {
            let store = open_database(dir.path(), options.clone()).unwrap();
            assert_eq!(created_at(&*store), Some(created));
            assert_eq!(store.get(&USERS, b"kept").unwrap(), Some(b"1".to_vec()));
            let newer = SCHEMA_VERSION + 1;
            let mut batch = WriteBatch::new();
            META_TABLE.put(&mut batch, &VERSION_KEY.to_owned(), &newer);
            store.write(batch).unwrap();
        }
        let err = open_database(dir.path(), options).unwrap_err();
        let expected = format!(
            "database was written by a newer Axon (schema {}, this build knows {SCHEMA_VERSION})",
            SCHEMA_VERSION + 1
        );
        assert!(err.to_string().contains(&expected), "{err}");
    }
}
