//! `[http]`: the plain-HTTP listener for the client-server and server-server APIs.

use std::net::SocketAddr;
use std::time::Duration;

use crate::checks;
use crate::error::Issues;
use crate::schema::raw_section;

raw_section! {
    /// The plain-HTTP listener. It serves the client-server API and the federation API on
    /// one port; put a TLS-terminating reverse proxy in front of it, or enable `[tls]`.
    RawHttp {
        /// Address and port to listen on. Use "0.0.0.0:8008" or "[::]:8008" to accept
        /// connections from other machines.
        address: String = "127.0.0.1:8008".to_owned();
        /// Largest request body accepted, in bytes (media uploads included). Must be at
        /// least 1. The default is 50 MiB.
        max_request_bytes: u64 = 50 * 1024 * 1024;
        /// Seconds a request may take before it is answered with a timeout. Must be at
        /// least 1. Long-polling requests (`/sync` with a timeout) are not cut short by it.
        request_timeout_secs: u64 = 60;
    }
}

/// The validated `[http]` section.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HttpConfig {
    /// Address and port of the plain-HTTP listener.
    pub address: SocketAddr,
    /// Largest request body accepted, in bytes; at least 1.
    pub max_request_bytes: u64,
    /// Seconds a request may take; at least 1. See [`HttpConfig::request_timeout`].
    pub request_timeout_secs: u64,
}

impl HttpConfig {
    /// [`HttpConfig::request_timeout_secs`] as a [`Duration`].
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
}

pub(crate) fn validate(raw: RawHttp, issues: &mut Issues) -> HttpConfig {
    let address = checks::socket_addr(issues, "http.address", &raw.address);
    checks::positive(
        issues,
        "http.max_request_bytes",
        raw.max_request_bytes,
        "a size in bytes of at least 1",
    );
    checks::positive(
        issues,
        "http.request_timeout_secs",
        raw.request_timeout_secs,
        "a number of seconds of at least 1",
    );
    HttpConfig {
        address,
        max_request_bytes: raw.max_request_bytes,
        request_timeout_secs: raw.request_timeout_secs,
    }
}
