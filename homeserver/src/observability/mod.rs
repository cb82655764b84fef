//! Logs, traces, metrics and health probes for the `axon` process.
//!
//! The pieces, and how `main` puts them together:
//! - [`logging::init`] installs the process-wide `tracing` subscriber once (stderr, pretty or
//!   JSON lines, optional OTLP span export) and returns a [`TelemetryGuard`] that flushes spans
//!   on shutdown.
//! - [`Metrics`] owns the Prometheus registry; [`instrument`] wraps a router with the
//!   per-request span (request id, route template, status, latency) and the HTTP metrics;
//!   [`metrics_router`] serves `GET /metrics` on its own listener.
//! - [`health_router`] serves `GET /health` and `GET /ready`; readiness is decided by a
//!   [`ReadinessProbe`] that the caller supplies, so this module knows nothing of storage.
//!
//! Invariant: nothing here keeps process-global state except the `tracing` dispatcher that
//! [`logging::init`] installs; metric values live in the [`Metrics`] value that `main` passes
//! around.

pub mod health;
pub mod http_metrics;
pub mod http_trace;
pub mod logging;
pub mod metrics;
pub mod otel;
mod process;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::middleware::{from_fn, from_fn_with_state};
use http::Method;

pub use health::{ReadinessProbe, health_router, health_router_with_timeout};
pub use http_metrics::{OPENMETRICS_CONTENT_TYPE, metrics_router, track_metrics};
pub use http_trace::{REQUEST_ID_HEADER, RequestId, trace_request};
pub use logging::{LogFormat, TelemetryGuard, init};
pub use metrics::Metrics;
pub use otel::OtlpSettings;

/// What can go wrong while setting up observability.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObservabilityError {
    /// A global `tracing` subscriber or `log` logger is already installed (for example
    /// `init` ran twice).
    #[error("a global tracing subscriber or logger is already installed")]
    AlreadyInitialised,
    /// The log filter directive (from the config or `AXON_LOG`) does not parse.
    #[error("invalid log filter {directive:?}: {reason}")]
    InvalidFilter {
        /// The directive as given.
        directive: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The OTLP settings are unusable or the exporter could not be built.
    #[error("cannot set up OTLP trace export: {0}")]
    Otlp(String),
    /// A metric name is malformed, reserved or already registered.
    #[error("cannot register metric {name:?}: {reason}")]
    InvalidMetric {
        /// The name as given.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// Encoding the registry into the text exposition format failed.
    #[error("cannot encode metrics")]
    Encode(#[from] std::fmt::Error),
}

/// Wraps every route of `router` (and its fallback) with the request span and the HTTP
/// metrics.
///
/// Call it after all routes are added: `Router::layer` only wraps what the router already
/// has. The span layer is outermost so the metrics middleware, and every handler, run inside
/// the `http_request` span.
pub fn instrument<S>(router: Router<S>, metrics: Metrics) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router
        .layer(from_fn_with_state(metrics, track_metrics))
        .layer(from_fn(trace_request))
}

/// Route label for a request: the matched route template (`/rooms/{room_id}`), never the raw
/// path, so a label's cardinality is bounded by the number of routes.
fn route_label(request: &Request) -> String {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned())
}

/// Method label: the standard methods by name, anything else folded into `OTHER` so a client
/// cannot mint new label values with made-up verbs.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    /// The value of the sample line that starts with `series ` (metric name plus labels) in
    /// an OpenMetrics text exposition.
    pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|value| value.split(' ').next()?.parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::{method_label, route_label};
    use axum::extract::Request;
    use http::Method;

    #[test]
    fn unknown_methods_fold_into_other() {
        assert_eq!(method_label(&Method::GET), "GET");
        let custom = Method::from_bytes(b"PROPFIND").unwrap();
        assert_eq!(method_label(&custom), "OTHER");
    }

    #[test]
    fn requests_without_a_matched_route_are_labelled_unmatched() {
        let request = Request::new(axum::body::Body::empty());
        assert_eq!(route_label(&request), "unmatched");
    }
}
