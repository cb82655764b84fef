//! `[metrics]`: the Prometheus listener.

use std::net::SocketAddr;

use crate::checks;
use crate::error::Issues;
use crate::schema::raw_section;

raw_section! {
    /// Prometheus metrics, served at `/metrics` on a listener of their own so they stay off
    /// the public port.
    RawMetrics {
        /// Whether to start the metrics listener.
        enabled: bool = false;
        /// Address and port of the metrics listener. Must differ from the `[http]` and
        /// `[tls]` listeners.
        address: String = "127.0.0.1:9108".to_owned();
    }
}

/// The validated `[metrics]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsConfig {
    /// Whether the metrics listener runs.
    pub enabled: bool,
    /// Address and port of the metrics listener.
    pub address: SocketAddr,
}

pub(crate) fn validate(raw: RawMetrics, issues: &mut Issues) -> MetricsConfig {
    MetricsConfig {
        enabled: raw.enabled,
        address: checks::socket_addr(issues, "metrics.address", &raw.address),
    }
}
