use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use super::*;
use crate::rooms::short_ids::ShortIds;
use crate::storage::catalogue::ColumnFamily;
use crate::storage::{
    ColumnFamilyStats, Direction, KeyCodec as _, KeyRange, KvIter, KvSnapshot, MemoryStore,
    RocksOptions, RocksStore, WriteBatch,
};

fn key(n: u64) -> ShortStateKey {
    ShortStateKey(n)
}

fn event(n: u64) -> ShortEventId {
    ShortEventId(n)
}

fn state(pairs: &[(u64, u64)]) -> StateMap {
    pairs.iter().map(|(k, v)| (key(*k), event(*v))).collect()
}

/// Saves one state in its own batch.
fn save(
    states: &StateStore,
    ids: &ShortIds,
    store: &dyn KvStore,
    parent: Option<SnapshotId>,
    new_state: &StateMap,
) -> SnapshotId {
    let mut batch = ids.begin();
    let id = states.save(store, &mut batch, parent, new_state).unwrap();
    batch.commit(store).unwrap();
    id
}

/// Saves one delta in its own batch.
fn save_delta(
    states: &StateStore,
    ids: &ShortIds,
    store: &dyn KvStore,
    parent: Option<SnapshotId>,
    changes: &[(u64, Option<u64>)],
) -> SnapshotId {
    let changes: Vec<_> = changes
        .iter()
        .map(|(k, v)| (key(*k), v.map(event)))
        .collect();
    let mut batch = ids.begin();
    let id = states
        .save_delta(store, &mut batch, parent, &changes)
        .unwrap();
    batch.commit(store).unwrap();
    id
}

/// Checks `load` and `get` of `id` (for every key of `expected` and a few absent ones)
/// against `expected`.
fn check(states: &StateStore, store: &dyn KvStore, id: SnapshotId, expected: &StateMap) {
    assert_eq!(*states.load(store, id).unwrap(), *expected, "load {id:?}");
    let absent = [0, 1, 2, 500, 10_000, u64::MAX].map(key);
    for probe in expected.keys().copied().chain(absent) {
        assert_eq!(
            states.get(store, id, probe).unwrap(),
            expected.get(&probe).copied(),
            "get {probe:?} in {id:?}"
        );
    }
}

#[test]
fn states_round_trip() {
    let store = MemoryStore::new();
    let (ids, states) = (ShortIds::new(), StateStore::new(0));
    let first = state(&[(10, 1), (11, 2), (12, 3)]);
    let a = save(&states, &ids, &store, None, &first);
    check(&states, &store, a, &first);

    let mut second = first.clone();
    second.insert(key(13), event(4));
    second.insert(key(10), event(5));
    let b = save(&states, &ids, &store, Some(a), &second);
    assert_ne!(a, b);
    check(&states, &store, b, &second);
    check(&states, &store, a, &first);

    let empty = save(&states, &ids, &store, None, &StateMap::new());
    check(&states, &store, empty, &StateMap::new());
}

#[test]
fn unchanged_or_known_states_are_not_stored_again() {
    let store = MemoryStore::new();
    let (ids, states) = (ShortIds::new(), StateStore::default());
    let first = state(&[(1, 1), (2, 2), (3, 3), (4, 4)]);
    let a = save(&states, &ids, &store, None, &first);
    // Empty diff: the parent itself.
    assert_eq!(save(&states, &ids, &store, Some(a), &first), a);
    assert_eq!(save_delta(&states, &ids, &store, Some(a), &[]), a);
    assert_eq!(
        save_delta(&states, &ids, &store, Some(a), &[(1, Some(1)), (9, None)]),
        a
    );
    // The same state without a parent: found by its hash.
    assert_eq!(save(&states, &ids, &store, None, &first), a);

    // A change and its undo lead back to the first snapshot, by either path.
    let b = save_delta(&states, &ids, &store, Some(a), &[(5, Some(5))]);
    assert_ne!(a, b);
    assert_eq!(save_delta(&states, &ids, &store, Some(b), &[(5, None)]), a);
    assert_eq!(save(&states, &ids, &store, Some(b), &first), a);
    // Two branches reaching the same state share one snapshot.
    let c = save_delta(&states, &ids, &store, Some(a), &[(2, Some(20))]);
    let d = save_delta(&states, &ids, &store, Some(c), &[(5, Some(5))]);
    let e = save_delta(&states, &ids, &store, Some(b), &[(2, Some(20))]);
    assert_eq!(d, e);
    // Later changes to the same key win.
    let f = save_delta(
        &states,
        &ids,
        &store,
        Some(a),
        &[(2, Some(7)), (2, None), (2, Some(20))],
    );
    assert_eq!(f, c);
    assert_eq!(SNAPSHOTS.count(&store).unwrap(), 4);
}

#[test]
fn keys_can_be_removed() {
    let store = MemoryStore::new();
    let (ids, states) = (ShortIds::new(), StateStore::new(0));
    let members: Vec<(u64, u64)> = (1..=20).map(|n| (n, n + 100)).collect();
    let a = save(&states, &ids, &store, None, &state(&members));
    let b = save_delta(&states, &ids, &store, Some(a), &[(3, None), (4, None)]);
    let mut expected = state(&members);
    expected.remove(&key(3));
    expected.remove(&key(4));
    check(&states, &store, b, &expected);
    assert_eq!(states.info(&store, b).unwrap().depth, 1);

    // Through `save` too, and down to nothing.
    expected.remove(&key(20));
    let c = save(&states, &ids, &store, Some(b), &expected);
    check(&states, &store, c, &expected);
    let d = save(&states, &ids, &store, Some(c), &StateMap::new());
    check(&states, &store, d, &StateMap::new());
    // Re-adding a removed key.
    let e = save_delta(&states, &ids, &store, Some(c), &[(3, Some(7))]);
    expected.insert(key(3), event(7));
    check(&states, &store, e, &expected);
}

#[test]
fn unknown_snapshots_are_errors() {
    let store = MemoryStore::new();
    let (ids, states) = (ShortIds::new(), StateStore::default());
    assert!(matches!(
        states.load(&store, SnapshotId(5)),
        Err(StateError::UnknownSnapshot(SnapshotId(5)))
    ));
    assert!(matches!(
        states.get(&store, SnapshotId(5), key(1)),
        Err(StateError::UnknownSnapshot(_))
    ));
    let mut batch = ids.begin();
    assert!(matches!(
        states.save_delta(&store, &mut batch, Some(SnapshotId(5)), &[(key(1), None)]),
        Err(StateError::UnknownSnapshot(_))
    ));
    assert!(matches!(
        states.save(&store, &mut batch, Some(SnapshotId(5)), &StateMap::new()),
        Err(StateError::UnknownSnapshot(_))
    ));
}

#[test]
fn corrupt_chains_are_errors_not_panics() {
    let store = MemoryStore::new();
    let (ids, states) = (ShortIds::new(), StateStore::new(0));
    let a = save(
        &states,
        &ids,
        &store,
        None,
        &state(&[(1, 1), (2, 2), (3, 3)]),
    );
    let b = save_delta(&states, &ids, &store, Some(a), &[(4, Some(4))]);
    // The base vanishes.
    store
        .delete(&catalogue::STATE_SNAPSHOTS, &a.to_key_bytes())
        .unwrap();
    assert!(matches!(
        states.load(&store, b),
        Err(StateError::Storage(StorageError::Corrupt { .. }))
    ));
    assert!(matches!(
        states.get(&store, b, key(1)),
        Err(StateError::Storage(StorageError::Corrupt { .. }))
    ));
    // A delta that points at itself.
    let looped = SnapshotRecord {
        hash: ContentHash::EMPTY,
        len: 0,
        body: Body::Delta {
            parent: SnapshotId(9),
            base: SnapshotId(1),
            depth: 1,
            added: Vec::new(),
            removed: Vec::new(),
        },
    };
    let mut write = WriteBatch::new();
    SNAPSHOTS.put(&mut write, &SnapshotId(9), &looped);
    store.write(write).unwrap();
    assert!(states.load(&store, SnapshotId(9)).is_err());
    assert!(states.get(&store, SnapshotId(9), key(1)).is_err());
}

/// A store that counts reads of snapshot records.
#[derive(Debug, Default)]
struct CountingStore {
    inner: MemoryStore,
    snapshot_reads: AtomicUsize,
}

impl CountingStore {
    fn new() -> Self {
        Self {
            inner: MemoryStore::new(),
            snapshot_reads: AtomicUsize::new(0),
        }
    }

    fn take_reads(&self) -> usize {
        self.snapshot_reads.swap(0, Ordering::SeqCst)
    }
}

impl KvStore for CountingStore {
    fn get(&self, cf: &'static ColumnFamily, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        if cf == &catalogue::STATE_SNAPSHOTS {
            self.snapshot_reads.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.get(cf, key)
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        self.inner.write(batch)
    }

    fn iter(
        &self,
        cf: &'static ColumnFamily,
        range: KeyRange,
        direction: Direction,
    ) -> Result<KvIter<'_>, StorageError> {
        self.inner.iter(cf, range, direction)
    }

    fn snapshot(&self) -> Box<dyn KvSnapshot + '_> {
        self.inner.snapshot()
    }

    fn stats(&self, cf: &'static ColumnFamily) -> Result<ColumnFamilyStats, StorageError> {
        self.inner.stats(cf)
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.inner.flush()
    }
}

#[test]
fn chains_stay_bounded() {
    let store = CountingStore::new();
    // No cache, so every read goes to the store.
    let (ids, states) = (ShortIds::new(), StateStore::new(0));
    let mut model = state(&[(1, 1)]);
    let mut snapshots = vec![(save(&states, &ids, &store, None, &model), model.clone())];
    let mut rng = StdRng::seed_from_u64(7);
    for n in 0..1_000_u64 {
        let parent = snapshots.last().map(|(id, _)| *id);
        // Mostly new keys (joins), sometimes the same few keys again (topic, power levels).
        let changed = if n % 3 == 0 {
            rng.random_range(1..4)
        } else {
            100 + n
        };
        model.insert(key(changed), event(10_000 + n));
        let id = save_delta(
            &states,
            &ids,
            &store,
            parent,
            &[(changed, Some(10_000 + n))],
        );
        snapshots.push((id, model.clone()));
    }
    let mut longest = 0;
    for (id, expected) in &snapshots {
        store.take_reads();
        assert_eq!(*states.load(&store, *id).unwrap(), *expected);
        let reads = store.take_reads();
        longest = longest.max(reads);
        assert!(reads <= MAX_CHAIN as usize + 1, "{reads} reads for {id:?}");
        states.get(&store, *id, key(1)).unwrap();
        assert!(store.take_reads() <= MAX_CHAIN as usize + 1);
        assert!(states.info(&store, *id).unwrap().depth <= MAX_CHAIN);
    }
    // The chains do grow to the limit: the bound is exercised, not avoided by bases.
    assert_eq!(longest, MAX_CHAIN as usize + 1);
}

#[test]
fn state_changes_cost_a_delta_not_a_copy() {
    let store = MemoryStore::new();
    let (ids, states) = (ShortIds::new(), StateStore::default());
    let members: Vec<(u64, u64)> = (1_000..2_000).map(|n| (n, n + 50_000)).collect();
    let mut current = save(&states, &ids, &store, None, &state(&members));
    let before = store.stats(&catalogue::STATE_SNAPSHOTS).unwrap().bytes;
    // 500 changes of two keys (topic, power levels) in a 1,000-entry state.
    for n in 0..500 {
        current = save_delta(
            &states,
            &ids,
            &store,
            Some(current),
            &[(n % 2, Some(90_000 + n))],
        );
        // No new base is ever needed: the difference from the base stays two keys.
        let info = states.info(&store, current).unwrap();
        assert!(info.depth >= 1 && info.stored_entries <= 2, "{info:?}");
    }
    let grown = store.stats(&catalogue::STATE_SNAPSHOTS).unwrap().bytes - before;
    // A full copy would be over 2 KB per change; a delta record is a few dozen bytes.
    assert!(grown < 500 * 64, "{grown} bytes for 500 changes");
    let mut expected = state(&members);
    expected.insert(key(0), event(90_498));
    expected.insert(key(1), event(90_499));
    check(&states, &store, current, &expected);
}

#[test]
fn large_differences_start_a_new_base() {
    let store = MemoryStore::new();
    let (ids, states) = (ShortIds::new(), StateStore::new(0));
    let a = save(
        &states,
        &ids,
        &store,
        None,
        &state(&[(1, 1), (2, 2), (3, 3), (4, 4)]),
    );
    let replaced = state(&[(1, 1), (5, 5), (6, 6), (7, 7)]);
    let b = save(&states, &ids, &store, Some(a), &replaced);
    let info = states.info(&store, b).unwrap();
    assert_eq!((info.depth, info.stored_entries), (0, 4));
    check(&states, &store, b, &replaced);
}

#[test]
fn batch_sees_its_own_snapshots_and_cache_never_sees_dropped_ones() {
    let store = MemoryStore::new();
    let (ids, states) = (ShortIds::new(), StateStore::default());
    let base = state(&[(1, 1), (2, 2), (3, 3)]);
    let mut batch = ids.begin();
    let a = states.save(&store, &mut batch, None, &base).unwrap();
    let b = states
        .save_delta(&store, &mut batch, Some(a), &[(key(4), Some(event(4)))])
        .unwrap();
    let c = states
        .save_delta(&store, &mut batch, Some(b), &[(key(1), None)])
        .unwrap();
    // Saving the same state again inside the batch finds it.
    assert_eq!(states.save(&store, &mut batch, None, &base).unwrap(), a);
    let expected = state(&[(2, 2), (3, 3), (4, 4)]);
    assert_eq!(*states.load_in(&store, &batch, c).unwrap(), expected);
    assert_eq!(
        states.get_in(&store, &batch, c, key(4)).unwrap(),
        Some(event(4))
    );
    assert_eq!(states.get_in(&store, &batch, c, key(1)).unwrap(), None);
    assert!(matches!(
        states.load(&store, c),
        Err(StateError::UnknownSnapshot(_))
    ));
    // Dropped: nothing written, and the ids come round again for a different state, which
    // must not be confused with the discarded one.
    drop(batch);
    assert_eq!(SNAPSHOTS.count(&store).unwrap(), 0);
    let other = state(&[(9, 9)]);
    let again = save(&states, &ids, &store, None, &other);
    assert_eq!(again, a);
    check(&states, &store, again, &other);

    // Committed: visible to everyone, from the cache and from the store.
    let mut batch = ids.begin();
    let d = states.save(&store, &mut batch, Some(again), &base).unwrap();
    let e = states
        .save_delta(&store, &mut batch, Some(d), &[(key(4), Some(event(4)))])
        .unwrap();
    batch.commit(&store).unwrap();
    check(
        &states,
        &store,
        e,
        &state(&[(1, 1), (2, 2), (3, 3), (4, 4)]),
    );
    check(
        &StateStore::new(0),
        &store,
        e,
        &state(&[(1, 1), (2, 2), (3, 3), (4, 4)]),
    );
    assert!(states.cache.get(d).is_some());
}

#[test]
fn cache_is_bounded() {
    let store = MemoryStore::new();
    let (ids, states) = (ShortIds::new(), StateStore::new(50));
    let mut current = None;
    for n in 0..200 {
        // States of up to 20 entries: two fit in the budget.
        let id = save_delta(&states, &ids, &store, current, &[(n % 20, Some(n))]);
        states.load(&store, id).unwrap();
        assert!(states.cache.usage().1 <= 50);
        current = Some(id);
    }
    // The newest states are what stays.
    assert_eq!(states.cache.usage(), (2, 40));
    assert!(states.cache.get(current.unwrap()).is_some());
}

/// Random operations against a plain map per snapshot.
fn random_operations(states: &StateStore, store: &dyn KvStore, seed: u64, rounds: usize) {
    let ids = ShortIds::new();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut known: Vec<(SnapshotId, StateMap)> = Vec::new();
    let mut by_content: BTreeMap<StateMap, SnapshotId> = BTreeMap::new();
    for _ in 0..rounds {
        let mut batch = ids.begin();
        let mut made: Vec<(SnapshotId, StateMap)> = Vec::new();
        for _ in 0..rng.random_range(1..4) {
            let pool = known.len() + made.len();
            let parent = if pool == 0 || rng.random_bool(0.05) {
                None
            } else {
                let index = rng.random_range(0..pool);
                known.iter().chain(&made).nth(index).cloned()
            };
            let mut next = parent
                .as_ref()
                .map(|(_, map)| map.clone())
                .unwrap_or_default();
            let mut changes = Vec::new();
            let most = if rng.random_bool(0.1) { 40 } else { 4 };
            for _ in 0..rng.random_range(0..most) {
                // A small key space, so keys are changed, removed and re-added often.
                let changed = key(rng.random_range(0..60));
                let value = rng.random_bool(0.8).then(|| event(rng.random_range(0..8)));
                changes.push((changed, value));
                match value {
                    Some(value) => next.insert(changed, value),
                    None => next.remove(&changed),
                };
            }
            let parent_id = parent.as_ref().map(|(id, _)| *id);
            let id = if rng.random_bool(0.5) {
                states.save(store, &mut batch, parent_id, &next).unwrap()
            } else {
                states
                    .save_delta(store, &mut batch, parent_id, &changes)
                    .unwrap()
            };
            if let Some((parent_id, parent_map)) = &parent
                && *parent_map == next
            {
                assert_eq!(id, *parent_id, "an unchanged state is its parent");
            }
            // Equal states share one snapshot, including across batches.
            if let Some(existing) = by_content.get(&next) {
                assert_eq!(id, *existing, "duplicate snapshot of one state");
            }
            assert_eq!(*states.load_in(store, &batch, id).unwrap(), next);
            let probe = key(rng.random_range(0..60));
            assert_eq!(
                states.get_in(store, &batch, id, probe).unwrap(),
                next.get(&probe).copied()
            );
            if !made.iter().any(|(made_id, _)| *made_id == id) {
                made.push((id, next.clone()));
                by_content.insert(next, id);
            }
        }
        if rng.random_bool(0.9) {
            batch.commit(store).unwrap();
            known.extend(made);
        } else {
            drop(batch);
            for (_, map) in made {
                by_content.remove(&map);
            }
            // Snapshots found by content in earlier batches stay.
            for (id, map) in &known {
                by_content.insert(map.clone(), *id);
            }
        }
    }
    for (id, expected) in &known {
        check(states, store, *id, expected);
        assert!(states.info(store, *id).unwrap().depth <= MAX_CHAIN);
    }
}

#[test]
fn random_operations_match_a_plain_map() {
    for seed in 0..4 {
        random_operations(&StateStore::new(0), &MemoryStore::new(), seed, 300);
        random_operations(&StateStore::new(200), &MemoryStore::new(), seed + 100, 300);
    }
}

#[test]
fn snapshots_and_ids_survive_reopen_on_rocksdb() {
    let dir = tempfile::tempdir().unwrap();
    let options = RocksOptions {
        sync_writes: false,
        ..RocksOptions::default()
    };
    let mut expected = Vec::new();
    {
        let store = RocksStore::open(dir.path(), options.clone()).unwrap();
        let (ids, states) = (ShortIds::new(), StateStore::default());
        let mut model = state(&[(1, 1)]);
        let mut current = save(&states, &ids, &store, None, &model);
        expected.push((current, model.clone()));
        for n in 2..60 {
            model.insert(key(n), event(n));
            current = save_delta(&states, &ids, &store, Some(current), &[(n, Some(n))]);
            expected.push((current, model.clone()));
        }
    }
    let store = RocksStore::open(dir.path(), options).unwrap();
    let (ids, states) = (ShortIds::new(), StateStore::default());
    for (id, map) in &expected {
        check(&states, &store, *id, map);
    }
    // New snapshot ids continue after the last one written before the restart.
    let last = expected
        .iter()
        .map(|(id, _)| *id)
        .max()
        .unwrap_or(SnapshotId(0));
    let fresh = save(&states, &ids, &store, None, &state(&[(7, 7), (8, 8)]));
    assert_eq!(fresh, SnapshotId(last.0 + 1));
    // And an old state is found, not stored again.
    let (old_id, old_map) = &expected[10];
    assert_eq!(save(&states, &ids, &store, None, old_map), *old_id);
}
