//! The accounts domain's settings: plain data the server fills from its configuration.

use std::time::Duration;

use ruma::OwnedServerName;

/// Everything the accounts domain needs to know about the server's policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountSettings {
    /// This server's name: the domain of every local user id.
    pub server_name: OwnedServerName,
    /// The shortest password accepted at registration and password change, in characters.
    pub password_min_length: usize,
    /// Cost of the argon2id password hash.
    pub argon2: Argon2Params,
    /// Failed-login throttling.
    pub throttle: ThrottleSettings,
    /// Lifetime of access tokens issued to clients that do not use refresh tokens; `None`
    /// means they never expire.
    pub access_token_lifetime: Option<Duration>,
    /// Lifetime of access tokens issued together with a refresh token.
    pub refresh_access_token_lifetime: Duration,
}

impl AccountSettings {
    /// Settings for `server_name` with the defaults for everything else.
    pub fn new(server_name: OwnedServerName) -> Self {
        Self {
            server_name,
            password_min_length: 8,
            argon2: Argon2Params::default(),
            throttle: ThrottleSettings::default(),
            access_token_lifetime: None,
            refresh_access_token_lifetime: Duration::from_secs(5 * 60),
        }
    }
}

/// Argon2id cost parameters.
///
/// The defaults are OWASP's recommendation for argon2id (19 MiB, 2 passes, 1 lane). Changing
/// them affects new hashes only: a stored hash carries its own parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Argon2Params {
    /// Memory per hash, in KiB.
    pub memory_kib: u32,
    /// Number of passes over the memory.
    pub iterations: u32,
    /// Degree of parallelism (lanes).
    pub parallelism: u32,
}

impl Default for Argon2Params {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// Failed-login throttling: after `max_failures` failures within `window` for one user or one
/// client address, further attempts are refused until the oldest failure leaves the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// Failures allowed within the window; `0` turns throttling off.
    pub max_failures: u32,
    /// The sliding window.
    pub window: Duration,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            max_failures: 10,
            window: Duration::from_secs(10 * 60),
        }
    }
}
