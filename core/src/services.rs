//! The set of core services a running server holds, built once at start-up and passed down.

use std::fmt;
use std::sync::Arc;

use crate::accounts::Accounts;
use crate::keys::ServerKeys;
use crate::rooms::graph::Rooms;
use crate::storage::KvStore;

/// Every core service, constructed by the server's start-up code and shared by the API layer.
pub struct Services {
    /// The database.
    pub store: Arc<dyn KvStore>,
    /// The server's signing key (shared with the services that sign).
    pub keys: Arc<ServerKeys>,
    /// Users, devices, tokens, registration.
    pub accounts: Accounts,
    /// Rooms: the event store, the append pipeline, the room locks and the stream notifier.
    pub rooms: Rooms,
}

impl fmt::Debug for Services {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Services")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}
