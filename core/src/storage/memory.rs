//! An in-memory backend of the storage trait, for unit tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use super::catalogue::{self, ColumnFamily};
use super::error::StorageError;
use super::kv::{
    BatchOp, ColumnFamilyStats, Direction, KeyRange, KeyValue, KvIter, KvSnapshot, KvStore,
    WriteBatch,
};

type Families = HashMap<&'static str, BTreeMap<Vec<u8>, Vec<u8>>>;

/// A store that lives in memory and is gone when dropped.
#[derive(Debug, Default)]
pub struct MemoryStore {
    families: RwLock<Arc<Families>>,
}

impl MemoryStore {
    /// An empty store with every catalogued column family.
    pub fn new() -> Self {
        let families = catalogue::ALL
            .iter()
            .map(|cf| (cf.name, BTreeMap::new()))
            .collect();
        Self {
            families: RwLock::new(Arc::new(families)),
        }
    }

    fn current(&self) -> Result<Arc<Families>, StorageError> {
        self.families
            .read()
            .map(|guard| Arc::clone(&guard))
            .map_err(|_| StorageError::Backend("memory store lock poisoned".to_owned()))
    }
}

fn family<'a>(
    families: &'a Families,
    cf: &'static ColumnFamily,
) -> Result<&'a BTreeMap<Vec<u8>, Vec<u8>>, StorageError> {
    families
        .get(cf.name)
        .ok_or_else(|| StorageError::Backend(format!("unknown column family {}", cf.name)))
}

fn scan(
    families: &Families,
    cf: &'static ColumnFamily,
    range: KeyRange,
    direction: Direction,
) -> Result<Vec<KeyValue>, StorageError> {
    let map = family(families, cf)?;
    // `BTreeMap::range` panics on inverted bounds; an empty range simply has no entries.
    if range.is_empty() {
        return Ok(Vec::new());
    }
    let entries = map.range::<Vec<u8>, _>((range.start, range.end));
    let pairs = entries.map(|(key, value)| (key.clone(), value.clone()));
    Ok(match direction {
        Direction::Forward => pairs.collect(),
        Direction::Reverse => pairs.rev().collect(),
    })
}

impl KvStore for MemoryStore {
    fn get(&self, cf: &'static ColumnFamily, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let families = self.current()?;
        Ok(family(&families, cf)?.get(key).cloned())
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let mut guard = self
            .families
            .write()
            .map_err(|_| StorageError::Backend("memory store lock poisoned".to_owned()))?;
        // Copy-on-write keeps snapshots taken earlier unchanged, and applying to a copy makes
        // the batch all-or-nothing.
        let mut next: Families = (**guard).clone();
        for op in batch.into_ops() {
            let (cf, key) = match &op {
                BatchOp::Put { cf, key, .. } | BatchOp::Delete { cf, key } => (*cf, key.clone()),
            };
            let map = next.get_mut(cf.name).ok_or_else(|| {
                StorageError::Backend(format!("unknown column family {}", cf.name))
            })?;
            match op {
                BatchOp::Put { value, .. } => {
                    map.insert(key, value);
                }
                BatchOp::Delete { .. } => {
                    map.remove(&key);
                }
            }
        }
        *guard = Arc::new(next);
        Ok(())
    }

    fn iter(
        &self,
        cf: &'static ColumnFamily,
        range: KeyRange,
        direction: Direction,
    ) -> Result<KvIter<'_>, StorageError> {
        let families = self.current()?;
        let pairs = scan(&families, cf, range, direction)?;
        Ok(Box::new(pairs.into_iter().map(Ok)))
    }

    fn snapshot(&self) -> Box<dyn KvSnapshot + '_> {
        Box::new(MemorySnapshot {
            families: self.current(),
        })
    }

    fn stats(&self, cf: &'static ColumnFamily) -> Result<ColumnFamilyStats, StorageError> {
        let families = self.current()?;
        let map = family(&families, cf)?;
        let bytes = map
            .iter()
            .map(|(key, value)| (key.len() + value.len()) as u64)
            .sum();
        Ok(ColumnFamilyStats {
            estimated_keys: map.len() as u64,
            bytes,
        })
    }

    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }
}

struct MemorySnapshot {
    families: Result<Arc<Families>, StorageError>,
}

impl MemorySnapshot {
    fn families(&self) -> Result<&Families, StorageError> {
        self.families
            .as_deref()
            .map_err(|_| StorageError::Backend("memory store lock poisoned".to_owned()))
    }
}

impl KvSnapshot for MemorySnapshot {
    fn get(&self, cf: &'static ColumnFamily, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(family(self.families()?, cf)?.get(key).cloned())
    }

    fn iter(
        &self,
        cf: &'static ColumnFamily,
        range: KeyRange,
        direction: Direction,
    ) -> Result<KvIter<'_>, StorageError> {
        let pairs = scan(self.families()?, cf, range, direction)?;
        Ok(Box::new(pairs.into_iter().map(Ok)))
    }
}
