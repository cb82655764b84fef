//! The process-wide `tracing` subscriber: logs on stderr, optional OTLP span export.

use std::io::IsTerminal as _;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use super::ObservabilityError;
use super::otel::{self, OtlpSettings};

/// Environment variable whose value, when set and not empty, replaces the configured filter.
pub const LOG_ENV_VAR: &str = "AXON_LOG";

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event, coloured when stderr is a terminal.
    #[default]
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Keeps span export alive; flushes and shuts down the exporter when dropped or on
/// [`TelemetryGuard::shutdown`].
#[derive(Debug)]
#[must_use = "dropping the guard stops span export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    pub(crate) fn new(provider: Option<SdkTracerProvider>) -> Self {
        Self { provider }
    }

    /// Flushes buffered spans and stops the exporter. Prefer this to dropping the guard at
    /// the end of an async `main`: it works on any runtime flavour, while `Drop` can only
    /// wait for the flush on a multi-threaded runtime.
    pub async fn shutdown(mut self) -> Result<(), ObservabilityError> {
        let Some(provider) = self.provider.take() else {
            return Ok(());
        };
        // `shutdown` blocks until the batch task (which runs on this runtime) has exported;
        // running it on the blocking pool keeps this thread free to drive that task.
        tokio::task::spawn_blocking(move || provider.shutdown())
            .await
            .map_err(|err| ObservabilityError::Otlp(format!("shutdown task failed: {err}")))?
            .map_err(|err| ObservabilityError::Otlp(format!("shutdown: {err}")))
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        let result = match tokio::runtime::Handle::try_current() {
            Ok(handle) => match handle.runtime_flavor() {
                tokio::runtime::RuntimeFlavor::MultiThread => {
                    tokio::task::block_in_place(|| provider.shutdown())
                }
                // Blocking the only runtime thread would deadlock with the batch task, so the
                // shutdown runs detached: spans still buffered may be lost. Use `shutdown()`.
                _ => {
                    std::thread::spawn(move || provider.shutdown());
                    Ok(())
                }
            },
            // Outside any runtime: the batch task either runs elsewhere (and this waits for
            // it) or is gone with its runtime (and this returns an error at once).
            Err(_) => provider.shutdown(),
        };
        if let Err(err) = result {
            tracing::debug!(error = %err, "span exporter shutdown reported an error");
        }
    }
}

/// Installs the global `tracing` subscriber.
///
/// Logs go to stderr in `format`, filtered by `filter` (an `EnvFilter` directive such as
/// `info,axon_core=debug`) unless `AXON_LOG` is set. With `otlp`, spans are also exported to
/// an OpenTelemetry collector; that needs a running tokio runtime.
///
/// A second call returns [`ObservabilityError::AlreadyInitialised`] and changes nothing.
pub fn init(
    format: LogFormat,
    filter: &str,
    otlp: Option<OtlpSettings>,
) -> Result<TelemetryGuard, ObservabilityError> {
    let env_filter = resolve_filter(filter, std::env::var(LOG_ENV_VAR).ok())?;
    let provider = otlp.as_ref().map(otel::build_provider).transpose()?;

    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = vec![fmt_layer(format)];
    if let Some(provider) = &provider {
        layers.push(Box::new(otel::layer(provider)));
    }
    let installed = tracing_subscriber::registry()
        .with(layers)
        .with(env_filter)
        .try_init();
    // The guard owns the provider from here on, so a failed install still shuts it down.
    let guard = TelemetryGuard::new(provider);
    match installed {
        Ok(()) => Ok(guard),
        Err(_) => Err(ObservabilityError::AlreadyInitialised),
    }
}

/// The stderr layer for `format`.
fn fmt_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => Box::new(layer.with_ansi(std::io::stderr().is_terminal())),
        // Span fields go in `span`/`spans`, so a request's id and route are on every line.
        LogFormat::Json => Box::new(layer.json().with_current_span(true).with_span_list(true)),
    }
}

/// The filter to use: the environment's directive when set and not blank, else the
/// configured one.
fn resolve_filter(
    configured: &str,
    from_env: Option<String>,
) -> Result<EnvFilter, ObservabilityError> {
    let directive = from_env
        .filter(|value| !value.trim().is_empty())
        .unwrap_or_else(|| configured.to_owned());
    EnvFilter::builder()
        .parse(&directive)
        .map_err(|err| ObservabilityError::InvalidFilter {
            reason: err.to_string(),
            directive,
        })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::Router;
    use axum::body::Bytes;
    use axum::routing::post;
    use http::HeaderMap;
    use tokio::sync::mpsc;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::{LogFormat, TelemetryGuard, init, resolve_filter};
    use crate::observability::ObservabilityError;
    use crate::observability::otel::{self, OtlpSettings};

    #[test]
    fn env_directive_overrides_the_configured_one() {
        let filter = resolve_filter("info", Some("axon=trace".to_owned())).unwrap();
        assert_eq!(filter.to_string(), "axon=trace");
        let filter = resolve_filter("info", Some("  ".to_owned())).unwrap();
        assert_eq!(filter.to_string(), "info");
        let filter = resolve_filter("warn,axon_core=debug", None).unwrap();
        assert!(filter.to_string().contains("axon_core=debug"));
    }

    #[test]
    fn malformed_directives_are_errors() {
        let result = resolve_filter("info", Some("axon=loud".to_owned()));
        assert!(
            matches!(&result, Err(ObservabilityError::InvalidFilter { directive, .. }) if directive == "axon=loud"),
            "{result:?}"
        );
    }

    /// The only test that touches the global subscriber: the second call must report the
    /// first instead of panicking or replacing it.
    #[test]
    fn second_init_reports_already_initialised() {
        // "off" keeps the other tests' log lines out of the test output.
        let first = init(LogFormat::Json, "off", None);
        assert!(first.is_ok(), "{first:?}");
        let second = init(LogFormat::Pretty, "info", None);
        assert!(
            matches!(second, Err(ObservabilityError::AlreadyInitialised)),
            "{second:?}"
        );
    }

    /// Starts a fake collector on loopback that forwards each export request.
    async fn fake_collector() -> (String, mpsc::UnboundedReceiver<(HeaderMap, Bytes)>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let app = Router::new().route(
            "/v1/traces",
            post(move |headers: HeaderMap, body: Bytes| {
                let sender = sender.clone();
                async move {
                    let _ = sender.send((headers, body));
                    ""
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{address}"), receiver)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn guard_shutdown_exports_spans_as_protobuf() {
        let (endpoint, mut exports) = fake_collector().await;
        let settings = OtlpSettings {
            endpoint,
            service_name: "axon-test".to_owned(),
            sample_ratio: 1.0,
        };
        let provider = otel::build_provider(&settings).unwrap();
        let subscriber = tracing_subscriber::registry().with(otel::layer(&provider));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("exported_span_marker");
            span.in_scope(|| tracing::info!("inside"));
        });
        TelemetryGuard::new(Some(provider))
            .shutdown()
            .await
            .unwrap();

        let (headers, body) = tokio::time::timeout(Duration::from_secs(10), exports.recv())
            .await
            .expect("the collector got no export before the deadline")
            .expect("collector channel closed");
        assert_eq!(headers["content-type"], "application/x-protobuf");
        // Protobuf carries strings verbatim, so the span and service names are in the body.
        let contains = |needle: &[u8]| body.windows(needle.len()).any(|window| window == needle);
        assert!(contains(b"exported_span_marker"));
        assert!(contains(b"axon-test"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_guard_on_a_multi_thread_runtime_flushes() {
        let (endpoint, mut exports) = fake_collector().await;
        let settings = OtlpSettings {
            endpoint,
            service_name: "axon-test".to_owned(),
            sample_ratio: 1.0,
        };
        let provider = otel::build_provider(&settings).unwrap();
        let subscriber = tracing_subscriber::registry().with(otel::layer(&provider));
        tracing::subscriber::with_default(subscriber, || {
            drop(tracing::info_span!("dropped_guard_marker").entered());
        });
        drop(TelemetryGuard::new(Some(provider)));
        let (_, body) = tokio::time::timeout(Duration::from_secs(10), exports.recv())
            .await
            .expect("the collector got no export before the deadline")
            .expect("collector channel closed");
        assert!(
            body.windows(20)
                .any(|window| window == b"dropped_guard_marker")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sample_ratio_of_zero_exports_nothing() {
        let (endpoint, mut exports) = fake_collector().await;
        let settings = OtlpSettings {
            endpoint,
            service_name: "axon-test".to_owned(),
            sample_ratio: 0.0,
        };
        let provider = otel::build_provider(&settings).unwrap();
        let subscriber = tracing_subscriber::registry().with(otel::layer(&provider));
        tracing::subscriber::with_default(subscriber, || {
            drop(tracing::info_span!("unsampled").entered());
        });
        // After shutdown returns every export has completed, so an empty channel is final.
        TelemetryGuard::new(Some(provider))
            .shutdown()
            .await
            .unwrap();
        assert!(exports.try_recv().is_err());
    }
}
