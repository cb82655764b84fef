//! `[federation]`: talking to other homeservers.

use std::path::PathBuf;

use crate::checks;
use crate::error::Issues;
use crate::schema::raw_section;

raw_section! {
    /// Federation with other Matrix homeservers.
    RawFederation {
        /// Whether to federate: serve the server-server API and send events to other
        /// servers. When false the server is an island.
        enabled: bool = true;
        /// Path of a PEM file with extra certificate authorities trusted for outbound TLS,
        /// in addition to the built-in roots (for a private federation with its own CA).
        trusted_ca: Option<String> = None, example "\"/etc/axon/federation-ca.pem\"";
        /// Whether outbound federation requests may go to loopback, private and link-local
        /// addresses. Keep false on the public internet: a remote server name must not be
        /// able to make this server probe its own network.
        allow_private_addresses: bool = false;
        /// Whether to skip certificate verification on outbound federation requests. Only
        /// for test rigs: it lets anyone on the path impersonate other servers.
        skip_tls_verification: bool = false;
    }
}

/// The validated `[federation]` section.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FederationConfig {
    /// Whether federation is on.
    pub enabled: bool,
    /// Extra certificate authorities (PEM) for outbound TLS.
    pub trusted_ca: Option<PathBuf>,
    /// Whether outbound requests may reach private and loopback addresses.
    pub allow_private_addresses: bool,
    /// Whether outbound certificate verification is skipped (test rigs only).
    pub skip_tls_verification: bool,
}

pub(crate) fn validate(raw: RawFederation, issues: &mut Issues) -> FederationConfig {
    FederationConfig {
        enabled: raw.enabled,
        trusted_ca: checks::optional_path(
            issues,
            "federation.trusted_ca",
            raw.trusted_ca.as_deref(),
            "the path of a PEM file of CA certificates",
        ),
        allow_private_addresses: raw.allow_private_addresses,
        skip_tls_verification: raw.skip_tls_verification,
    }
}
