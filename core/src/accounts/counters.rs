//! Exact counts (users, access tokens) kept in `COUNTERS` and updated in the same batch as the
//! change they count, so metrics never need a scan.

use std::collections::BTreeMap;

use super::AccountsGuard;
use crate::storage::{KvStore, StorageError, Table, WriteBatch, catalogue};

const COUNTERS: Table<String, u64> = Table::new(&catalogue::COUNTERS);

/// Every account ever registered (accounts are never removed, only deactivated).
pub(crate) const USERS: &str = "accounts.users";
/// Guest accounts among them.
pub(crate) const GUESTS: &str = "accounts.guests";
/// Deactivated accounts among them.
pub(crate) const DEACTIVATED: &str = "accounts.deactivated";
/// Stored access tokens (including expired ones still awaiting a refresh).
pub(crate) const ACCESS_TOKENS: &str = "accounts.access_tokens";

/// Reads a counter (0 when never written).
pub(crate) fn get(store: &dyn KvStore, name: &str) -> Result<u64, StorageError> {
    Ok(COUNTERS.get(store, &name.to_owned())?.unwrap_or(0))
}

/// Changes to counters accumulated while building one batch.
#[derive(Debug, Default)]
pub(crate) struct CounterDeltas {
    deltas: BTreeMap<&'static str, i64>,
}

impl CounterDeltas {
    /// Adds `delta` to counter `name`.
    pub(crate) fn add(&mut self, name: &'static str, delta: i64) {
        *self.deltas.entry(name).or_default() += delta;
    }

    /// Puts the new counter values into `batch`. Needs the lock: the read and the batch write
    /// must not interleave with another change.
    pub(crate) fn write_into(
        self,
        store: &dyn KvStore,
        _guard: &AccountsGuard<'_>,
        batch: &mut WriteBatch,
    ) -> Result<(), StorageError> {
        for (name, delta) in self.deltas {
            if delta == 0 {
                continue;
            }
            let current = get(store, name)?;
            // Saturating: a counter that would go negative means it was lost (restored from an
            // older backup); clamping keeps metrics sane until a recount.
            let next = current.saturating_add_signed(delta);
            COUNTERS.put(batch, &name.to_owned(), &next);
        }
        Ok(())
    }
}
