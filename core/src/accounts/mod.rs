//! Accounts: users, passwords, devices, tokens, registration tokens, login throttling and
//! user-interactive auth sessions.
//!
//! The functions of each submodule are synchronous and work on any [`KvStore`]; the ones that
//! write take an [`AccountsGuard`], proof that the accounts write lock is held (see
//! [`AccountsLock`] for why). Every multi-key change is one atomic batch. [`Accounts`] bundles
//! the store, the settings, the lock and the in-memory state into the service the HTTP layer
//! calls.
//!
//! Password hashing and verification are CPU-heavy: the methods that do them say so, and the
//! HTTP layer runs them with `spawn_blocking`.
//!
//! Code map:
//! - [`settings`]: the policy, filled from the server configuration.
//! - [`passwords`]: password policy and argon2id hashing.
//! - [`tokens`]: secret token generation and hashing.
//! - [`users`]: user id rules, registration, password change, deactivation, profile.
//! - [`devices`]: devices and their deletion with their tokens.
//! - [`sessions`]: login, access-token authentication, refresh, logout, login tokens.
//! - [`registration_tokens`]: Synapse-style registration tokens.
//! - [`throttle`]: failed-login throttling (memory only).
//! - [`uiaa`]: user-interactive auth sessions (memory only).
//!
//! [`KvStore`]: crate::storage::KvStore

mod counters;
pub mod devices;
mod error;
mod lock;
pub mod passwords;
pub mod registration_tokens;
mod service;
pub mod sessions;
pub mod settings;
pub mod throttle;
pub mod tokens;
pub mod uiaa;
pub mod users;

#[cfg(test)]
mod tests;

use std::time::{SystemTime, UNIX_EPOCH};

pub use error::AccountError;
pub use lock::{AccountsGuard, AccountsLock};
pub use passwords::{check_password_strength, hash_password, verify_password};
pub use registration_tokens::{NewRegistrationToken, RegistrationToken, RegistrationTokenUpdate};
pub use service::{Accounts, RegistrationTokens, UIAA_REGISTRATION_TOKEN};
pub use sessions::{AuthenticatedUser, LoginRequest, LoginTokens};
pub use settings::{AccountSettings, Argon2Params, ThrottleSettings};
pub use throttle::LoginThrottle;
pub use uiaa::{UiaaSession, UiaaSessions};
pub use users::{Profile, RegisterKind, RegisterRequest, UserCounts, UserRecord};

/// Milliseconds since the Unix epoch, the timestamps accounts records carry.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Helpers shared by the accounts tests.

    use ruma::OwnedUserId;

    use super::passwords::tests::FAST;
    use super::{AccountSettings, AccountsGuard, RegisterRequest, users};
    use crate::storage::KvStore;

    /// Settings for `example.org` with cheap hashing.
    pub(crate) fn settings() -> AccountSettings {
        let mut settings = AccountSettings::new("example.org".try_into().unwrap());
        settings.argon2 = FAST;
        settings
    }

    /// `@alice:example.org`.
    pub(crate) fn alice() -> OwnedUserId {
        "@alice:example.org".try_into().unwrap()
    }

    /// Registers `localpart` without a password.
    pub(crate) fn register_user(
        store: &dyn KvStore,
        guard: &AccountsGuard<'_>,
        localpart: &str,
    ) -> OwnedUserId {
        users::register(
            store,
            guard,
            &settings(),
            RegisterRequest::user(localpart, None),
            0,
        )
        .unwrap()
    }
}
