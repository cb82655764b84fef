//! Behaviour every backend of [`KvStore`] must have; each backend's tests run these.

use std::ops::Bound::{self, Excluded, Included, Unbounded};

use super::catalogue::{DEVICES, USERS};
use super::kv::{Direction, KeyRange, KvIter, KvStore, WriteBatch};

/// Runs every conformance check against `store`, which must be empty.
pub(crate) fn check_backend(store: &dyn KvStore) {
    batch_is_applied_whole(store);
    later_op_in_batch_wins(store);
    ordered_iteration_both_ways(store);
    snapshot_does_not_see_later_writes(store);
    column_families_are_separate(store);
    empty_batch_is_a_no_op(store);
    bounds_are_honoured_exactly(store);
    snapshot_scans_both_ways(store);
}

fn batch_is_applied_whole(store: &dyn KvStore) {
    let mut batch = WriteBatch::new();
    batch
        .put(&USERS, b"a".to_vec(), b"1".to_vec())
        .put(&DEVICES, b"a".to_vec(), b"2".to_vec());
    store.write(batch).unwrap();
    assert_eq!(store.get(&USERS, b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(store.get(&DEVICES, b"a").unwrap(), Some(b"2".to_vec()));
    store.delete(&USERS, b"a").unwrap();
    store.delete(&DEVICES, b"a").unwrap();
    assert_eq!(store.get(&USERS, b"a").unwrap(), None);
}

fn later_op_in_batch_wins(store: &dyn KvStore) {
    let mut batch = WriteBatch::new();
    batch.put(&USERS, b"k".to_vec(), b"first".to_vec());
    batch.delete(&USERS, b"k".to_vec());
    batch.put(&USERS, b"k".to_vec(), b"last".to_vec());
    store.write(batch).unwrap();
    assert_eq!(store.get(&USERS, b"k").unwrap(), Some(b"last".to_vec()));
    store.delete(&USERS, b"k").unwrap();
}

fn ordered_iteration_both_ways(store: &dyn KvStore) {
    for key in [&b"p\x01"[..], b"p\x00", b"p\x02", b"q", b"o"] {
        store.put(&DEVICES, key, key).unwrap();
    }
    let keys = |direction| -> Vec<Vec<u8>> {
        store
            .iter(&DEVICES, KeyRange::prefix(b"p"), direction)
            .unwrap()
            .map(|entry| entry.unwrap().0)
            .collect()
    };
    assert_eq!(
        keys(Direction::Forward),
        vec![b"p\x00".to_vec(), b"p\x01".to_vec(), b"p\x02".to_vec()]
    );
    assert_eq!(
        keys(Direction::Reverse),
        vec![b"p\x02".to_vec(), b"p\x01".to_vec(), b"p\x00".to_vec()]
    );
    let all: Vec<_> = store
        .scan_prefix(&DEVICES, b"")
        .unwrap()
        .map(|e| e.unwrap().0)
        .collect();
    assert_eq!(all.len(), 5);
    let mut batch = WriteBatch::new();
    for key in all {
        batch.delete(&DEVICES, key);
    }
    store.write(batch).unwrap();
}

fn snapshot_does_not_see_later_writes(store: &dyn KvStore) {
    store.put(&USERS, b"s", b"before").unwrap();
    let snapshot = store.snapshot();
    store.put(&USERS, b"s", b"after").unwrap();
    store.put(&USERS, b"t", b"new").unwrap();
    assert_eq!(
        snapshot.get(&USERS, b"s").unwrap(),
        Some(b"before".to_vec())
    );
    assert_eq!(snapshot.get(&USERS, b"t").unwrap(), None);
    let seen: Vec<_> = snapshot
        .iter(&USERS, KeyRange::all(), Direction::Forward)
        .unwrap()
        .map(|e| e.unwrap().0)
        .collect();
    assert_eq!(seen, vec![b"s".to_vec()]);
    drop(snapshot);
    store.delete(&USERS, b"s").unwrap();
    store.delete(&USERS, b"t").unwrap();
}

fn column_families_are_separate(store: &dyn KvStore) {
    store.put(&USERS, b"same", b"users").unwrap();
    assert_eq!(store.get(&DEVICES, b"same").unwrap(), None);
    store.delete(&USERS, b"same").unwrap();
}

fn empty_batch_is_a_no_op(store: &dyn KvStore) {
    store.write(WriteBatch::new()).unwrap();
    assert_eq!(
        keys(
            store
                .iter(&USERS, KeyRange::all(), Direction::Forward)
                .unwrap()
        ),
        Vec::<Vec<u8>>::new()
    );
}

fn keys(iter: KvIter<'_>) -> Vec<Vec<u8>> {
    iter.map(|entry| entry.unwrap().0).collect()
}

/// Keys chosen to sit on every edge of the byte order: the empty key, `0x00` successors,
/// a key and its extensions, and `0xFF` runs (whose prefix has no successor).
const EDGE_KEYS: [&[u8]; 9] = [
    b"",
    b"\0",
    b"a",
    b"a\0",
    b"a\0\0",
    b"ab",
    b"b",
    b"\xFF",
    b"\xFF\xFF",
];

fn bounds_are_honoured_exactly(store: &dyn KvStore) {
    let mut batch = WriteBatch::new();
    for key in EDGE_KEYS {
        batch.put(&DEVICES, key.to_vec(), b"v".to_vec());
    }
    store.write(batch).unwrap();

    let bounds = |key: &[u8]| -> [Bound<Vec<u8>>; 3] {
        [Included(key.to_vec()), Excluded(key.to_vec()), Unbounded]
    };
    // Every pair of bounds over the stored keys (inverted and empty ranges included) and a
    // few keys that are not stored, both ways, against the definition of the range.
    let mut probes: Vec<&[u8]> = EDGE_KEYS.to_vec();
    probes.extend([&b"a\x01"[..], b"aa", b"c", b"\xFF\xFF\xFF"]);
    for low in &probes {
        for high in &probes {
            for start in bounds(low) {
                for end in bounds(high) {
                    let range = KeyRange {
                        start: start.clone(),
                        end,
                    };
                    let expected: Vec<Vec<u8>> = EDGE_KEYS
                        .iter()
                        .filter(|key| range.contains(key))
                        .map(|key| key.to_vec())
                        .collect();
                    let forward = keys(
                        store
                            .iter(&DEVICES, range.clone(), Direction::Forward)
                            .unwrap(),
                    );
                    assert_eq!(forward, expected, "forward over {range:?}");
                    let mut reverse = keys(
                        store
                            .iter(&DEVICES, range.clone(), Direction::Reverse)
                            .unwrap(),
                    );
                    reverse.reverse();
                    assert_eq!(reverse, expected, "reverse over {range:?}");
                }
            }
        }
    }

    let prefixed = keys(
        store
            .iter(&DEVICES, KeyRange::prefix(b"\xFF"), Direction::Reverse)
            .unwrap(),
    );
    assert_eq!(prefixed, vec![b"\xFF\xFF".to_vec(), b"\xFF".to_vec()]);
    let prefixed = keys(store.scan_prefix(&DEVICES, b"a").unwrap());
    assert_eq!(
        prefixed,
        vec![
            b"a".to_vec(),
            b"a\0".to_vec(),
            b"a\0\0".to_vec(),
            b"ab".to_vec()
        ]
    );

    let mut batch = WriteBatch::new();
    for key in EDGE_KEYS {
        batch.delete(&DEVICES, key.to_vec());
    }
    store.write(batch).unwrap();
    assert_eq!(
        keys(
            store
                .iter(&DEVICES, KeyRange::all(), Direction::Reverse)
                .unwrap()
        ),
        Vec::<Vec<u8>>::new()
    );
}

fn snapshot_scans_both_ways(store: &dyn KvStore) {
    for key in [&b"k1"[..], b"k2", b"k3"] {
        store.put(&USERS, key, b"old").unwrap();
    }
    let snapshot = store.snapshot();
    store.delete(&USERS, b"k2").unwrap();
    store.put(&USERS, b"k4", b"new").unwrap();
    store.put(&USERS, b"k1", b"changed").unwrap();

    let range = KeyRange {
        start: Excluded(b"k1".to_vec()),
        end: Included(b"k4".to_vec()),
    };
    let reverse = keys(
        snapshot
            .iter(&USERS, range.clone(), Direction::Reverse)
            .unwrap(),
    );
    assert_eq!(reverse, vec![b"k3".to_vec(), b"k2".to_vec()]);
    let inverted = KeyRange {
        start: Included(b"k3".to_vec()),
        end: Excluded(b"k1".to_vec()),
    };
    assert!(keys(snapshot.iter(&USERS, inverted, Direction::Forward).unwrap()).is_empty());
    assert_eq!(snapshot.get(&USERS, b"k1").unwrap(), Some(b"old".to_vec()));
    assert_eq!(
        keys(store.iter(&USERS, range, Direction::Forward).unwrap()),
        vec![b"k3".to_vec(), b"k4".to_vec()]
    );
    drop(snapshot);

    let mut batch = WriteBatch::new();
    for key in [&b"k1"[..], b"k3", b"k4"] {
        batch.delete(&USERS, key.to_vec());
    }
    store.write(batch).unwrap();
}

#[test]
fn memory_backend_conforms() {
    check_backend(&super::MemoryStore::new());
}
