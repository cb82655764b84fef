//! What can go wrong in the push service.

use crate::accounts::AccountError;
use crate::rooms::graph::RoomError;
use crate::storage::StorageError;
use crate::sync::SyncError;

/// An error of the push service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Reading rooms or writing at a stream position failed.
    #[error(transparent)]
    Room(#[from] RoomError),
    /// Reading read receipts failed (pruning notifications).
    #[error(transparent)]
    Receipts(#[from] SyncError),
    /// Reading an account failed (pruning notifications).
    #[error(transparent)]
    Accounts(#[from] AccountError),
    /// The rule, pusher or position asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is not valid (a reserved rule id, an unknown rule kind, a bad token...).
    #[error("{0}")]
    InvalidParam(String),
}
