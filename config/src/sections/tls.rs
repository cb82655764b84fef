//! `[tls]`: an optional HTTPS listener serving the same routes as `[http]`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::checks;
use crate::error::Issues;
use crate::schema::raw_section;

raw_section! {
    /// An HTTPS listener serving the same routes as `[http]` (client and federation APIs),
    /// typically on the federation port 8448. Off by default: most deployments terminate TLS
    /// in a reverse proxy instead.
    RawTls {
        /// Whether to start the HTTPS listener. Requires `certificate` and `private_key`.
        enabled: bool = false;
        /// Address and port of the HTTPS listener.
        address: String = "0.0.0.0:8448".to_owned();
        /// Path of the PEM file holding the certificate chain, leaf first.
        certificate: Option<String> = None, example "\"/etc/axon/tls/fullchain.pem\"";
        /// Path of the PEM file holding the certificate's private key.
        private_key: Option<String> = None, example "\"/etc/axon/tls/privkey.pem\"";
    }
}

/// The validated `[tls]` section.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TlsConfig {
    /// Whether the HTTPS listener runs. When true, both paths are set.
    pub enabled: bool,
    /// Address and port of the HTTPS listener.
    pub address: SocketAddr,
    /// Path of the PEM certificate chain.
    pub certificate: Option<PathBuf>,
    /// Path of the PEM private key.
    pub private_key: Option<PathBuf>,
}

/// What the HTTPS listener needs, present only when it is enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsListener<'a> {
    /// Address and port to listen on.
    pub address: SocketAddr,
    /// Path of the PEM certificate chain.
    pub certificate: &'a Path,
    /// Path of the PEM private key.
    pub private_key: &'a Path,
}

impl TlsConfig {
    /// The listener's settings if TLS is enabled, so callers need not check `enabled` and
    /// unwrap the paths themselves.
    pub fn listener(&self) -> Option<TlsListener<'_>> {
        match (self.enabled, &self.certificate, &self.private_key) {
            (true, Some(certificate), Some(private_key)) => Some(TlsListener {
                address: self.address,
                certificate,
                private_key,
            }),
            _ => None,
        }
    }
}

pub(crate) fn validate(raw: RawTls, issues: &mut Issues) -> TlsConfig {
    let address = checks::socket_addr(issues, "tls.address", &raw.address);
    let certificate = checks::optional_path(
        issues,
        "tls.certificate",
        raw.certificate.as_deref(),
        "the path of a PEM certificate chain",
    );
    let private_key = checks::optional_path(
        issues,
        "tls.private_key",
        raw.private_key.as_deref(),
        "the path of a PEM private key",
    );
    if raw.enabled {
        if certificate.is_none() {
            issues.missing(
                "tls.certificate",
                "tls.enabled = true requires it",
                "the path of a PEM certificate chain",
            );
        }
        if private_key.is_none() {
            issues.missing(
                "tls.private_key",
                "tls.enabled = true requires it",
                "the path of a PEM private key",
            );
        }
    }
    TlsConfig {
        enabled: raw.enabled,
        address,
        certificate,
        private_key,
    }
}
