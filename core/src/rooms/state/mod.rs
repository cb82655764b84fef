//! Room state snapshots: the state of a room at an event, stored so that storage grows with
//! the number of state *changes*, not with room size times events.
//!
//! A state is a map from an interned `(event type, state key)` to an interned event id
//! ([`StateMap`]). Every snapshot gets a [`SnapshotId`] and is stored either as a *base* (the
//! full map) or as a *delta* (entries added or changed, keys removed) over a parent snapshot.
//! Saving a state
//! - returns the parent's id when nothing changed, and the id of an existing snapshot with
//!   the same full state (found through a content hash, then compared) when there is one;
//! - otherwise stores a delta over the parent while the chain down to the base stays within
//!   [`MAX_CHAIN`] deltas;
//! - at the chain limit, stores the difference from the chain's base instead (depth 1), as
//!   long as that difference stays small next to the state (see [`rebase_limit`]);
//! - and stores a new base when the difference is larger, or when a delta would be more than
//!   half the size of the state itself.
//!
//! So reading any snapshot touches at most `MAX_CHAIN + 1` records, and a state event costs
//! one small delta plus an amortised share of the occasional re-based delta or base.
//!
//! Everything is written through a [`StateBatch`] (the caller's atomic write, under the
//! allocation lock); snapshots saved into a batch are readable through it ([`StateStore::load_in`],
//! [`StateStore::get_in`]) before it is written. Recently used full states stay in a bounded
//! in-memory cache.
//!
//! The stored format is described in `format.rs`.

mod cache;
mod format;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

pub(crate) use self::cache::PendingSnapshots;
use self::cache::SnapshotCache;
use self::format::{Body, ContentHash, SnapshotRecord};
use super::short_ids::{LAST_SNAPSHOT_ID, ShortEventId, ShortStateKey, SnapshotId, StateBatch};
use crate::storage::{KvStore, StorageError, Table, catalogue};

/// A full room state: interned `(event type, state key)` -> interned event id.
pub type StateMap = BTreeMap<ShortStateKey, ShortEventId>;

/// Most deltas between a snapshot and its base: a read walks at most this many records plus
/// the base.
pub const MAX_CHAIN: u32 = 16;

/// Default budget of the full-state cache, in state entries (about 15 MB).
pub const DEFAULT_CACHE_ENTRIES: usize = 500_000;

const SNAPSHOTS: Table<SnapshotId, SnapshotRecord> = Table::new(&catalogue::STATE_SNAPSHOTS);
const BY_HASH: Table<ContentHash, SnapshotId> = Table::new(&catalogue::STATE_SNAPSHOT_BY_HASH);

/// What can go wrong reading or saving snapshots.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The caller named a snapshot that does not exist.
    #[error("no state snapshot {0:?}")]
    UnknownSnapshot(SnapshotId),
    /// The store failed, or holds a corrupt snapshot.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// How a snapshot is stored, for diagnostics and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Entries in the full state.
    pub len: u64,
    /// Deltas between this snapshot and its base, itself included (0: it is a base).
    pub depth: u32,
    /// Entries and removed keys stored in this snapshot's own record.
    pub stored_entries: usize,
}

/// The largest difference from the base that is stored as a re-based delta rather than a new
/// base, for a state of `len` entries.
///
/// Each time a chain reaches [`MAX_CHAIN`], a re-based delta of up to `c` entries is written,
/// and a base of `len` entries is written every time `c` passes the limit. When every change
/// touches a new key (members joining), `c` grows by about one per change, so per change the
/// re-based deltas cost about `c / (2 * MAX_CHAIN)` entries and the bases `len / c`; the sum
/// is smallest at `c = sqrt(2 * MAX_CHAIN * len)`. Changes to the same few keys (topic, power
/// levels) do not grow `c`, so they never need a new base. Never more than half the state: a
/// larger delta saves little over a base.
pub fn rebase_limit(len: u64) -> u64 {
    (2 * u64::from(MAX_CHAIN))
        .saturating_mul(len)
        .isqrt()
        .min(len / 2)
}

/// The snapshot store: saves, dedups and reads room state snapshots.
///
/// Build one per database and share it (its cache is shared through it).
#[derive(Debug)]
pub struct StateStore {
    cache: Arc<SnapshotCache>,
}

impl Default for StateStore {
    fn default() -> Self {
        Self::new(DEFAULT_CACHE_ENTRIES)
    }
}

/// A snapshot-to-be: its difference from the parent, and what is known of its full state.
struct NewState {
    parent: Option<(SnapshotId, Arc<SnapshotRecord>)>,
    added: Vec<(ShortStateKey, ShortEventId)>,
    removed: Vec<ShortStateKey>,
    hash: ContentHash,
    len: u64,
    /// The full state, when the caller gave it or it was derived already.
    full: Option<Arc<StateMap>>,
}

impl StateStore {
    /// A store whose full-state cache holds at most `cache_entries` state entries in total
    /// (0 disables the cache).
    pub fn new(cache_entries: usize) -> Self {
        Self {
            cache: Arc::new(SnapshotCache::new(cache_entries)),
        }
    }

    /// Saves `new_state` as a snapshot derived from `parent` (the state it was computed from,
    /// typically the state before the event), returning its id. Returns `parent` itself when
    /// the state is unchanged, or an existing snapshot holding the same state.
    pub fn save(
        &self,
        store: &dyn KvStore,
        batch: &mut StateBatch<'_>,
        parent: Option<SnapshotId>,
        new_state: &StateMap,
    ) -> Result<SnapshotId, StateError> {
        let new = match parent {
            None => NewState {
                parent: None,
                added: new_state.iter().map(|(k, v)| (*k, *v)).collect(),
                removed: Vec::new(),
                hash: ContentHash::of(new_state),
                len: new_state.len() as u64,
                full: Some(Arc::new(new_state.clone())),
            },
            Some(parent) => {
                let record = self.top_record(store, batch, parent)?;
                let parent_map = self.load_with(store, Some(&batch.snapshots), parent)?;
                let (added, removed) = diff(&parent_map, new_state);
                if added.is_empty() && removed.is_empty() {
                    return Ok(parent);
                }
                let mut hash = record.hash;
                for (key, event) in &added {
                    hash = hash.with(*key, parent_map.get(key).copied(), Some(*event));
                }
                for key in &removed {
                    hash = hash.with(*key, parent_map.get(key).copied(), None);
                }
                NewState {
                    parent: Some((parent, record)),
                    added,
                    removed,
                    hash,
                    len: new_state.len() as u64,
                    full: Some(Arc::new(new_state.clone())),
                }
            }
        };
        self.store_new(store, batch, new)
    }

    /// Saves the state `parent` with `changes` applied (`None` removes the key; a later change
    /// to the same key wins), without building the full state when a delta will do: the usual
    /// case of one state event on top of the state before it. Returns `parent` when nothing
    /// changes.
    pub fn save_delta(
        &self,
        store: &dyn KvStore,
        batch: &mut StateBatch<'_>,
        parent: Option<SnapshotId>,
        changes: &[(ShortStateKey, Option<ShortEventId>)],
    ) -> Result<SnapshotId, StateError> {
        let changes: BTreeMap<ShortStateKey, Option<ShortEventId>> =
            changes.iter().copied().collect();
        let Some(parent) = parent else {
            let state: StateMap = changes
                .into_iter()
                .filter_map(|(key, event)| Some((key, event?)))
                .collect();
            return self.save(store, batch, None, &state);
        };
        let record = self.top_record(store, batch, parent)?;
        // A few keys are cheaper to look up one by one than to load the whole parent state.
        let parent_map = if changes.len() > 4 {
            Some(self.load_with(store, Some(&batch.snapshots), parent)?)
        } else {
            self.cached(Some(&batch.snapshots), parent)
        };
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        let (mut hash, mut len) = (record.hash, record.len);
        for (key, new) in changes {
            let old = match &parent_map {
                Some(map) => map.get(&key).copied(),
                None => self.get_with(store, Some(&batch.snapshots), parent, key)?,
            };
            if old == new {
                continue;
            }
            hash = hash.with(key, old, new);
            match (old, new) {
                (None, Some(event)) => {
                    len += 1;
                    added.push((key, event));
                }
                (Some(_), Some(event)) => added.push((key, event)),
                (Some(_), None) => {
                    len = len.saturating_sub(1);
                    removed.push(key);
                }
                (None, None) => {}
            }
        }
        if added.is_empty() && removed.is_empty() {
            return Ok(parent);
        }
        // The full state is left unbuilt (it costs a copy of the whole state): a delta does
        // not need it, and a read rebuilds it from the nearest cached ancestor if asked.
        let new = NewState {
            parent: Some((parent, record)),
            added,
            removed,
            hash,
            len,
            full: None,
        };
        self.store_new(store, batch, new)
    }

    /// The full state of snapshot `id`.
    pub fn load(&self, store: &dyn KvStore, id: SnapshotId) -> Result<Arc<StateMap>, StateError> {
        self.load_with(store, None, id)
    }

    /// The event at `key` in snapshot `id`: walks the chain newest first and stops at the
    /// first record that mentions the key, without building the full state.
    pub fn get(
        &self,
        store: &dyn KvStore,
        id: SnapshotId,
        key: ShortStateKey,
    ) -> Result<Option<ShortEventId>, StateError> {
        self.get_with(store, None, id, key)
    }

    /// [`load`](Self::load), also seeing the snapshots saved into `batch` so far.
    pub fn load_in(
        &self,
        store: &dyn KvStore,
        batch: &StateBatch<'_>,
        id: SnapshotId,
    ) -> Result<Arc<StateMap>, StateError> {
        self.load_with(store, Some(&batch.snapshots), id)
    }

    /// [`get`](Self::get), also seeing the snapshots saved into `batch` so far.
    pub fn get_in(
        &self,
        store: &dyn KvStore,
        batch: &StateBatch<'_>,
        id: SnapshotId,
        key: ShortStateKey,
    ) -> Result<Option<ShortEventId>, StateError> {
        self.get_with(store, Some(&batch.snapshots), id, key)
    }

    /// How snapshot `id` is stored.
    pub fn info(&self, store: &dyn KvStore, id: SnapshotId) -> Result<SnapshotInfo, StateError> {
        let record = self
            .record(store, None, id)?
            .ok_or(StateError::UnknownSnapshot(id))?;
        let stored_entries = match &record.body {
            Body::Base { entries } => entries.len(),
            Body::Delta { added, removed, .. } => added.len() + removed.len(),
        };
        Ok(SnapshotInfo {
            len: record.len,
            depth: record.depth(),
            stored_entries,
        })
    }

    fn cached(&self, pending: Option<&PendingSnapshots>, id: SnapshotId) -> Option<Arc<StateMap>> {
        if let Some(pending) = pending
            && let Some(map) = pending.maps.get(&id)
        {
            return Some(Arc::clone(map));
        }
        self.cache.get(id)
    }

    fn record(
        &self,
        store: &dyn KvStore,
        pending: Option<&PendingSnapshots>,
        id: SnapshotId,
    ) -> Result<Option<Arc<SnapshotRecord>>, StorageError> {
        if let Some(pending) = pending
            && let Some(record) = pending.records.get(&id)
        {
            return Ok(Some(Arc::clone(record)));
        }
        Ok(SNAPSHOTS.get(store, &id)?.map(Arc::new))
    }

    /// The record of a snapshot the caller named.
    fn top_record(
        &self,
        store: &dyn KvStore,
        batch: &StateBatch<'_>,
        id: SnapshotId,
    ) -> Result<Arc<SnapshotRecord>, StateError> {
        self.record(store, Some(&batch.snapshots), id)?
            .ok_or(StateError::UnknownSnapshot(id))
    }

    /// The record of `id`, which a chain link points at: missing means corruption.
    fn linked_record(
        &self,
        store: &dyn KvStore,
        pending: Option<&PendingSnapshots>,
        id: SnapshotId,
        depth: u32,
    ) -> Result<Arc<SnapshotRecord>, StateError> {
        let record = self
            .record(store, pending, id)?
            .ok_or_else(|| corrupt(format!("chain link to missing snapshot {}", id.0)))?;
        if record.depth() != depth {
            return Err(corrupt(format!(
                "snapshot {} has depth {} where its child expects {depth}",
                id.0,
                record.depth()
            ))
            .into());
        }
        Ok(record)
    }

    fn load_with(
        &self,
        store: &dyn KvStore,
        pending: Option<&PendingSnapshots>,
        id: SnapshotId,
    ) -> Result<Arc<StateMap>, StateError> {
        if let Some(map) = self.cached(pending, id) {
            return Ok(map);
        }
        let top = self
            .record(store, pending, id)?
            .ok_or(StateError::UnknownSnapshot(id))?;
        // Walk down to the base or to a cached ancestor, then apply the deltas oldest first.
        let mut deltas = Vec::new();
        let mut record = Arc::clone(&top);
        let mut map = loop {
            let (parent, depth) = match &record.body {
                Body::Base { entries } => break entries.iter().copied().collect(),
                Body::Delta { parent, depth, .. } => (*parent, *depth),
            };
            deltas.push(record);
            if let Some(map) = self.cached(pending, parent) {
                break StateMap::clone(&map);
            }
            record = self.linked_record(store, pending, parent, depth - 1)?;
        };
        for delta in deltas.iter().rev() {
            if let Body::Delta { added, removed, .. } = &delta.body {
                for key in removed {
                    map.remove(key);
                }
                map.extend(added.iter().copied());
            }
        }
        if map.len() as u64 != top.len {
            return Err(corrupt(format!(
                "snapshot {} rebuilt with {} entries but records {}",
                id.0,
                map.len(),
                top.len
            ))
            .into());
        }
        let map = Arc::new(map);
        let is_pending = pending.is_some_and(|pending| pending.records.contains_key(&id));
        if !is_pending {
            self.cache.insert(id, Arc::clone(&map));
        }
        Ok(map)
    }

    fn get_with(
        &self,
        store: &dyn KvStore,
        pending: Option<&PendingSnapshots>,
        id: SnapshotId,
        key: ShortStateKey,
    ) -> Result<Option<ShortEventId>, StateError> {
        if let Some(map) = self.cached(pending, id) {
            return Ok(map.get(&key).copied());
        }
        let mut record = self
            .record(store, pending, id)?
            .ok_or(StateError::UnknownSnapshot(id))?;
        loop {
            let (parent, depth) = match &record.body {
                Body::Base { entries } => {
                    return Ok(entries
                        .binary_search_by_key(&key, |(k, _)| *k)
                        .ok()
                        .map(|index| entries[index].1));
                }
                Body::Delta {
                    parent,
                    depth,
                    added,
                    removed,
                    ..
                } => {
                    if let Ok(index) = added.binary_search_by_key(&key, |(k, _)| *k) {
                        return Ok(Some(added[index].1));
                    }
                    if removed.binary_search(&key).is_ok() {
                        return Ok(None);
                    }
                    (*parent, *depth)
                }
            };
            if let Some(map) = self.cached(pending, parent) {
                return Ok(map.get(&key).copied());
            }
            record = self.linked_record(store, pending, parent, depth - 1)?;
        }
    }

    /// The full state of `new`, derived from its parent when not known yet.
    fn full_state(
        &self,
        store: &dyn KvStore,
        pending: &PendingSnapshots,
        new: &mut NewState,
    ) -> Result<Arc<StateMap>, StateError> {
        if let Some(full) = &new.full {
            return Ok(Arc::clone(full));
        }
        let parent_map = match &new.parent {
            Some((parent, _)) => self.load_with(store, Some(pending), *parent)?,
            None => Arc::default(),
        };
        let full = Arc::new(apply(&parent_map, &new.added, &new.removed));
        new.full = Some(Arc::clone(&full));
        Ok(full)
    }

    /// Dedups `new` against existing snapshots, or stores it as a delta or a base.
    fn store_new(
        &self,
        store: &dyn KvStore,
        batch: &mut StateBatch<'_>,
        mut new: NewState,
    ) -> Result<SnapshotId, StateError> {
        let known = match batch.snapshots.by_hash.get(&new.hash) {
            Some(id) => Some(*id),
            None => BY_HASH.get(store, &new.hash)?,
        };
        if let Some(candidate) = known {
            // The hash only nominates a candidate: compare the states before reusing it.
            let full = self.full_state(store, &batch.snapshots, &mut new)?;
            let existing = self.load_with(store, Some(&batch.snapshots), candidate)?;
            if existing == full {
                return Ok(candidate);
            }
        }

        let body = self.choose_body(store, &batch.snapshots, &mut new)?;
        let record = Arc::new(SnapshotRecord {
            hash: new.hash,
            len: new.len,
            body,
        });
        let id = SnapshotId(batch.allocate(store, LAST_SNAPSHOT_ID)?);
        SNAPSHOTS.put(batch.write_batch(), &id, &record);
        if known.is_none() {
            BY_HASH.put(batch.write_batch(), &new.hash, &id);
            batch.snapshots.by_hash.insert(new.hash, id);
        }
        batch.snapshots.records.insert(id, record);
        if let Some(full) = new.full {
            batch.snapshots.maps.insert(id, full);
        }
        batch.snapshots.cache = Some(Arc::clone(&self.cache));
        Ok(id)
    }

    fn choose_body(
        &self,
        store: &dyn KvStore,
        pending: &PendingSnapshots,
        new: &mut NewState,
    ) -> Result<Body, StateError> {
        let Some((parent, parent_record)) = new.parent.clone() else {
            return self.base(store, pending, new);
        };
        let stored = (new.added.len() + new.removed.len()) as u64;
        if stored * 2 > new.len {
            return self.base(store, pending, new);
        }
        let depth = parent_record.depth();
        if depth < MAX_CHAIN {
            let base = match parent_record.body {
                Body::Base { .. } => parent,
                Body::Delta { base, .. } => base,
            };
            return Ok(Body::Delta {
                parent,
                base,
                depth: depth + 1,
                added: std::mem::take(&mut new.added),
                removed: std::mem::take(&mut new.removed),
            });
        }
        // The chain is full: store the difference from its base instead, if that is small.
        let Body::Delta { base, .. } = parent_record.body else {
            return self.base(store, pending, new);
        };
        let full = self.full_state(store, pending, new)?;
        let base_map = self.load_with(store, Some(pending), base)?;
        let (added, removed) = diff(&base_map, &full);
        if (added.len() + removed.len()) as u64 > rebase_limit(new.len) {
            return self.base(store, pending, new);
        }
        Ok(Body::Delta {
            parent: base,
            base,
            depth: 1,
            added,
            removed,
        })
    }

    fn base(
        &self,
        store: &dyn KvStore,
        pending: &PendingSnapshots,
        new: &mut NewState,
    ) -> Result<Body, StateError> {
        let full = self.full_state(store, pending, new)?;
        Ok(Body::Base {
            entries: full.iter().map(|(k, v)| (*k, *v)).collect(),
        })
    }
}

fn corrupt(reason: String) -> StorageError {
    StorageError::Corrupt {
        cf: catalogue::STATE_SNAPSHOTS.name,
        what: "value",
        reason,
    }
}

/// What turns `old` into `new`: entries added or changed, and keys removed, both sorted.
fn diff(
    old: &StateMap,
    new: &StateMap,
) -> (Vec<(ShortStateKey, ShortEventId)>, Vec<ShortStateKey>) {
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    let mut old_entries = old.iter().peekable();
    let mut new_entries = new.iter().peekable();
    loop {
        match (old_entries.peek(), new_entries.peek()) {
            (None, None) => break,
            (Some((old_key, _)), None) => {
                removed.push(**old_key);
                old_entries.next();
            }
            (None, Some((new_key, new_event))) => {
                added.push((**new_key, **new_event));
                new_entries.next();
            }
            (Some((old_key, old_event)), Some((new_key, new_event))) => {
                match old_key.cmp(new_key) {
                    std::cmp::Ordering::Less => {
                        removed.push(**old_key);
                        old_entries.next();
                    }
                    std::cmp::Ordering::Greater => {
                        added.push((**new_key, **new_event));
                        new_entries.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if old_event != new_event {
                            added.push((**new_key, **new_event));
                        }
                        old_entries.next();
                        new_entries.next();
                    }
                }
            }
        }
    }
    (added, removed)
}

/// `state` with a difference applied.
fn apply(
    state: &StateMap,
    added: &[(ShortStateKey, ShortEventId)],
    removed: &[ShortStateKey],
) -> StateMap {
    let mut next = state.clone();
    for key in removed {
        next.remove(key);
    }
    next.extend(added.iter().copied());
    next
}
