//! The accounts write lock and the guard proving it is held.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// The lock serialising account changes.
///
/// Account changes are read-modify-write: a registration checks the user id is free, a refresh
/// reads the refresh token before rotating it, counters are read before they are bumped. The
/// store offers atomic batches, not transactions, so these changes are serialised by this lock,
/// owned by the [`Accounts`](super::Accounts) service (never a global). Every writing function
/// demands an [`AccountsGuard`].
///
/// Reads (authenticating a token, listing devices) take no lock. When several processes share
/// a distributed store, this lock becomes the store's transaction or compare-and-swap.
#[derive(Debug, Default)]
pub struct AccountsLock {
    mutex: Mutex<()>,
}

impl AccountsLock {
    /// A new, unlocked lock.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits for the lock.
    pub fn lock(&self) -> AccountsGuard<'_> {
        // The mutex guards no data, so a panic while it was held leaves nothing inconsistent
        // in memory (a batch is written whole or not at all): poisoning is ignored.
        AccountsGuard {
            _guard: self.mutex.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }
}

/// Proof that the accounts write lock is held; released on drop.
#[derive(Debug)]
pub struct AccountsGuard<'a> {
    _guard: MutexGuard<'a, ()>,
}
