//! `[login]`: password login throttling and access-token lifetimes.

use std::time::Duration;

use crate::checks;
use crate::error::Issues;
use crate::schema::raw_section;

/// Lifetime of an access token issued with a refresh token when
/// `access_token_lifetime_secs` is unset.
pub const DEFAULT_REFRESHABLE_LIFETIME_SECS: u64 = 300;

raw_section! {
    /// Logging in: failed-attempt throttling and access-token lifetimes.
    RawLogin {
        /// Failed password logins allowed for one account within `failure_window_secs`
        /// before further attempts are refused until the window has passed. 0 turns the
        /// limit off.
        max_failures: u32 = 5;
        /// Length of the failed-login window, in seconds. Must be at least 1.
        failure_window_secs: u64 = 300;
        /// Whether to issue refresh tokens to clients that ask for them
        /// (`refresh_token: true` at login or registration).
        refresh_tokens: bool = true;
        /// Lifetime of access tokens, in seconds (at least 1). When unset, a token issued
        /// with a refresh token lives 300 seconds and a token issued without one does not
        /// expire. When set, it applies to both: clients without refresh support then have
        /// to log in again when their token expires.
        access_token_lifetime_secs: Option<u64> = None, example "3600";
    }
}

/// The validated `[login]` section.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LoginConfig {
    /// Failed logins allowed per account within the window; 0 means no limit.
    pub max_failures: u32,
    /// Length of the failed-login window in seconds; at least 1.
    pub failure_window_secs: u64,
    /// Whether refresh tokens are issued to clients that ask for them.
    pub refresh_tokens: bool,
    /// Configured access-token lifetime; see [`LoginConfig::access_token_lifetime`].
    pub access_token_lifetime_secs: Option<u64>,
}

impl LoginConfig {
    /// [`LoginConfig::failure_window_secs`] as a [`Duration`].
    pub fn failure_window(&self) -> Duration {
        Duration::from_secs(self.failure_window_secs)
    }

    /// How long a new access token lives; `None` means it does not expire. `refreshable`
    /// says whether it is issued together with a refresh token.
    pub fn access_token_lifetime(&self, refreshable: bool) -> Option<Duration> {
        match (self.access_token_lifetime_secs, refreshable) {
            (Some(secs), _) => Some(Duration::from_secs(secs)),
            (None, true) => Some(Duration::from_secs(DEFAULT_REFRESHABLE_LIFETIME_SECS)),
            (None, false) => None,
        }
    }
}

pub(crate) fn validate(raw: RawLogin, issues: &mut Issues) -> LoginConfig {
    checks::positive(
        issues,
        "login.failure_window_secs",
        raw.failure_window_secs,
        "a number of seconds of at least 1",
    );
    if let Some(secs) = raw.access_token_lifetime_secs {
        checks::positive(
            issues,
            "login.access_token_lifetime_secs",
            secs,
            "a number of seconds of at least 1 (leave the key out for the default)",
        );
    }
    LoginConfig {
        max_failures: raw.max_failures,
        failure_window_secs: raw.failure_window_secs,
        refresh_tokens: raw.refresh_tokens,
        access_token_lifetime_secs: raw.access_token_lifetime_secs,
    }
}
