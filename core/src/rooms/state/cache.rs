//! The in-memory side of the snapshot store: a bounded cache of full states, and the
//! snapshots of a batch that is not written yet.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use lru::LruCache;

use super::StateMap;
use super::format::{ContentHash, SnapshotRecord};
use crate::rooms::short_ids::SnapshotId;

/// Recently loaded or written full states, least recently used evicted first.
///
/// The budget counts state entries, not snapshots: one large room's state weighs as much as
/// many small ones, and entries are what take the memory (roughly 30 bytes each in a map).
/// Snapshots never change once written, so entries never go stale.
pub(super) struct SnapshotCache {
    inner: Mutex<Inner>,
}

struct Inner {
    maps: LruCache<SnapshotId, Arc<StateMap>>,
    /// Sum of the weights of the cached maps.
    weight: usize,
    budget: usize,
}

/// A map's weight: its entries, and at least 1 so empty states are bounded too.
fn weight(map: &StateMap) -> usize {
    map.len().max(1)
}

impl fmt::Debug for SnapshotCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("SnapshotCache")
            .field("snapshots", &inner.maps.len())
            .field("weight", &inner.weight)
            .field("budget", &inner.budget)
            .finish()
    }
}

impl SnapshotCache {
    /// A cache holding at most `budget` state entries in total (0 disables it).
    pub(super) fn new(budget: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                maps: LruCache::unbounded(),
                weight: 0,
                budget,
            }),
        }
    }

    // The lock guards plain data updated in steps that cannot panic halfway, so a poisoned
    // lock still holds a consistent cache.
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached state of `id`, marking it recently used.
    pub(super) fn get(&self, id: SnapshotId) -> Option<Arc<StateMap>> {
        self.lock().maps.get(&id).cloned()
    }

    /// Caches the state of `id`, evicting the least recently used states over the budget. A
    /// state larger than the whole budget is not cached.
    pub(super) fn insert(&self, id: SnapshotId, map: Arc<StateMap>) {
        let mut inner = self.lock();
        let added = weight(&map);
        if added > inner.budget {
            return;
        }
        if let Some(old) = inner.maps.put(id, map) {
            inner.weight -= weight(&old);
        }
        inner.weight += added;
        while inner.weight > inner.budget {
            match inner.maps.pop_lru() {
                Some((_, evicted)) => inner.weight -= weight(&evicted),
                None => break,
            }
        }
    }

    /// Number of cached states and their total weight.
    #[cfg(test)]
    pub(super) fn usage(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.maps.len(), inner.weight)
    }
}

/// Snapshots written into a batch that is not committed yet: readable by the operation that
/// builds the batch, and handed to the cache once the batch is written.
#[derive(Debug, Default)]
pub(crate) struct PendingSnapshots {
    pub(super) records: HashMap<SnapshotId, Arc<SnapshotRecord>>,
    pub(super) by_hash: HashMap<ContentHash, SnapshotId>,
    /// Full states known for new snapshots (not every delta has one).
    pub(super) maps: HashMap<SnapshotId, Arc<StateMap>>,
    /// The cache to publish `maps` to on commit.
    pub(super) cache: Option<Arc<SnapshotCache>>,
}

impl PendingSnapshots {
    /// Called once the batch is written: the new snapshots are real now.
    pub(crate) fn publish(self) {
        if let Some(cache) = self.cache {
            for (id, map) in self.maps {
                cache.insert(id, map);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rooms::short_ids::{ShortEventId, ShortStateKey};

    fn map(len: u64) -> Arc<StateMap> {
        Arc::new(
            (0..len)
                .map(|n| (ShortStateKey(n), ShortEventId(n)))
                .collect(),
        )
    }

    #[test]
    fn cache_stays_within_its_entry_budget() {
        let cache = SnapshotCache::new(100);
        for id in 0..50 {
            cache.insert(SnapshotId(id), map(30));
            assert!(cache.usage().1 <= 100);
        }
        assert_eq!(cache.usage(), (3, 90));
        // The most recent survive, the oldest went.
        assert!(cache.get(SnapshotId(49)).is_some());
        assert!(cache.get(SnapshotId(0)).is_none());
        // Using an entry protects it from the next eviction.
        assert!(cache.get(SnapshotId(47)).is_some());
        cache.insert(SnapshotId(50), map(30));
        assert!(cache.get(SnapshotId(47)).is_some());
        assert!(cache.get(SnapshotId(48)).is_none());
        // Too large to cache at all; empty states still weigh something.
        cache.insert(SnapshotId(99), map(101));
        assert!(cache.get(SnapshotId(99)).is_none());
        let empty = SnapshotCache::new(2);
        for id in 0..10 {
            empty.insert(SnapshotId(id), map(0));
        }
        assert_eq!(empty.usage(), (2, 2));
        // Replacing an entry does not count it twice.
        empty.insert(SnapshotId(9), map(0));
        assert_eq!(empty.usage(), (2, 2));
        let disabled = SnapshotCache::new(0);
        disabled.insert(SnapshotId(1), map(0));
        assert_eq!(disabled.usage(), (0, 0));
    }
}
