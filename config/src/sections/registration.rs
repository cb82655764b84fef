//! `[registration]`: who may create accounts.

use std::fmt;

use crate::checks;
use crate::error::Issues;
use crate::schema::raw_section;

raw_section! {
    /// Account registration.
    RawRegistration {
        /// Whether clients may register accounts through the client-server API. With
        /// `require_token = false` this lets anyone who can reach the server create an
        /// account; Axon logs a warning at start-up in that case.
        enabled: bool = true;
        /// Whether guest accounts may be registered (`kind=guest`).
        allow_guests: bool = false;
        /// Whether registration needs a registration token (created through the admin API).
        require_token: bool = false;
        /// Shared secret for the admin registration endpoint
        /// `/_synapse/admin/v1/register`; the endpoint is off while this is unset. It
        /// works even when `enabled = false`. Use a long random string.
        shared_secret: Option<String> = None, example "\"a-long-random-string\"";
    }
}

/// The validated `[registration]` section.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct RegistrationConfig {
    /// Whether clients may register.
    pub enabled: bool,
    /// Whether guest accounts may be registered.
    pub allow_guests: bool,
    /// Whether registration requires a token.
    pub require_token: bool,
    /// Shared secret of the admin registration endpoint; `None` turns the endpoint off.
    pub shared_secret: Option<String>,
}

// By hand so the shared secret never reaches a log line.
impl fmt::Debug for RegistrationConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistrationConfig")
            .field("enabled", &self.enabled)
            .field("allow_guests", &self.allow_guests)
            .field("require_token", &self.require_token)
            .field(
                "shared_secret",
                &self.shared_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl RegistrationConfig {
    /// Whether anyone can register without a token.
    pub fn is_open(&self) -> bool {
        self.enabled && !self.require_token
    }
}

pub(crate) fn validate(raw: RawRegistration, issues: &mut Issues) -> RegistrationConfig {
    if let Some(secret) = &raw.shared_secret {
        checks::non_empty(
            issues,
            "registration.shared_secret",
            secret,
            "a non-empty secret (leave the key out to turn the endpoint off)",
        );
    }
    RegistrationConfig {
        enabled: raw.enabled,
        allow_guests: raw.allow_guests,
        require_token: raw.require_token,
        shared_secret: raw.shared_secret,
    }
}
