//! Span export over OTLP/HTTP (protobuf), batched on the tokio runtime.
//!
//! Off unless the configuration supplies [`OtlpSettings`]. The exporter talks plain HTTP or
//! HTTPS to a collector (for example the OpenTelemetry Collector on port 4318).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::runtime::Tokio;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;

use super::ObservabilityError;

/// The path OTLP/HTTP collectors accept trace exports on.
const TRACES_PATH: &str = "/v1/traces";

/// Where and how to export spans.
#[derive(Clone, Debug, PartialEq)]
pub struct OtlpSettings {
    /// The collector's base URL, e.g. `http://127.0.0.1:4318`. `/v1/traces` is appended
    /// unless the URL already ends with it.
    pub endpoint: String,
    /// `service.name` resource attribute of every exported span.
    pub service_name: String,
    /// Fraction of new traces that are sampled, in `0.0..=1.0`. Requests that arrive inside a
    /// sampled trace follow their parent's decision.
    pub sample_ratio: f64,
}

impl OtlpSettings {
    /// The full URL spans are POSTed to.
    fn traces_url(&self) -> String {
        let base = self.endpoint.trim_end_matches('/');
        if base.ends_with(TRACES_PATH) {
            base.to_owned()
        } else {
            format!("{base}{TRACES_PATH}")
        }
    }

    fn check(&self) -> Result<(), ObservabilityError> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(ObservabilityError::Otlp(format!(
                "sample ratio {} is outside 0.0..=1.0",
                self.sample_ratio
            )));
        }
        if self.service_name.is_empty() {
            return Err(ObservabilityError::Otlp("service name is empty".to_owned()));
        }
        let url = self.traces_url();
        let uri: http::Uri = url
            .parse()
            .map_err(|err| ObservabilityError::Otlp(format!("endpoint {url:?}: {err}")))?;
        match uri.scheme_str() {
            Some("http" | "https") if uri.host().is_some() => Ok(()),
            _ => Err(ObservabilityError::Otlp(format!(
                "endpoint {url:?} is not an http(s) URL with a host"
            ))),
        }
    }
}

/// Builds a tracer provider that batches spans on the current tokio runtime and exports them
/// to the collector. Must be called from inside a tokio runtime (the batch task is spawned
/// here).
pub fn build_provider(settings: &OtlpSettings) -> Result<SdkTracerProvider, ObservabilityError> {
    settings.check()?;
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(ObservabilityError::Otlp(
            "the OTLP batch exporter needs a running tokio runtime".to_owned(),
        ));
    }
    // The exporter's HTTP client is built with rustls but without a compiled-in crypto
    // provider, and building it panics when none is installed. Installing ring here is a
    // no-op when `main` already did so.
    let _already_installed = rustls::crypto::ring::default_provider().install_default();

    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(settings.traces_url())
        .build()
        .map_err(|err| ObservabilityError::Otlp(err.to_string()))?;
    // The async-runtime processor, not the SDK's default thread-based one: the exporter's
    // reqwest client needs a tokio reactor, which only exists on runtime threads.
    let processor = BatchSpanProcessor::builder(exporter, Tokio).build();
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(settings.sample_ratio)));
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(sampler)
        .with_resource(
            Resource::builder()
                .with_service_name(settings.service_name.clone())
                .build(),
        )
        .build())
}

/// The `tracing` layer that turns spans into OpenTelemetry spans for `provider`.
///
/// Spans and events of the HTTP stack the exporter itself uses are filtered out, so exporting
/// a batch never produces more spans to export.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + Send + Sync + 'static
where
    S: Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
{
    let own_http_stack = Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_target("hyper", LevelFilter::OFF)
        .with_target("hyper_util", LevelFilter::OFF)
        .with_target("h2", LevelFilter::OFF)
        .with_target("reqwest", LevelFilter::OFF)
        .with_target("opentelemetry", LevelFilter::OFF)
        .with_target("opentelemetry_sdk", LevelFilter::OFF)
        .with_target("opentelemetry_otlp", LevelFilter::OFF)
        .with_target("opentelemetry_http", LevelFilter::OFF);
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("axon"))
        .with_filter(own_http_stack)
}

#[cfg(test)]
mod tests {
    use super::{OtlpSettings, build_provider};
    use crate::observability::ObservabilityError;

    fn settings(endpoint: &str, ratio: f64) -> OtlpSettings {
        OtlpSettings {
            endpoint: endpoint.to_owned(),
            service_name: "axon".to_owned(),
            sample_ratio: ratio,
        }
    }

    #[test]
    fn traces_path_is_appended_once() {
        let cases = [
            ("http://collector:4318", "http://collector:4318/v1/traces"),
            ("http://collector:4318/", "http://collector:4318/v1/traces"),
            (
                "http://collector:4318/v1/traces",
                "http://collector:4318/v1/traces",
            ),
            (
                "https://otel.example/base",
                "https://otel.example/base/v1/traces",
            ),
        ];
        for (endpoint, expected) in cases {
            assert_eq!(settings(endpoint, 1.0).traces_url(), expected, "{endpoint}");
        }
    }

    #[tokio::test]
    async fn bad_settings_are_rejected() {
        for (endpoint, ratio) in [
            ("http://collector:4318", 1.5),
            ("http://collector:4318", -0.1),
            ("not a url", 1.0),
            ("ftp://collector", 1.0),
            ("/relative/only", 1.0),
        ] {
            let result = build_provider(&settings(endpoint, ratio));
            assert!(
                matches!(result, Err(ObservabilityError::Otlp(_))),
                "{endpoint} {ratio}: {result:?}"
            );
        }
        let mut no_name = settings("http://collector:4318", 1.0);
        no_name.service_name.clear();
        assert!(matches!(
            build_provider(&no_name),
            Err(ObservabilityError::Otlp(_))
        ));
    }

    #[test]
    fn building_outside_a_runtime_is_an_error_not_a_panic() {
        let result = build_provider(&settings("http://127.0.0.1:4318", 1.0));
        assert!(
            matches!(result, Err(ObservabilityError::Otlp(_))),
            "{result:?}"
        );
    }
}
