//! `[opentelemetry]`: exporting traces over OTLP.

use crate::checks;
use crate::error::Issues;
use crate::schema::raw_section;

raw_section! {
    /// Trace export over OTLP/HTTP to an OpenTelemetry collector. Off while
    /// `otlp_endpoint` is unset.
    RawOpenTelemetry {
        /// Base URL of the collector's OTLP/HTTP receiver; `/v1/traces` is appended unless
        /// the URL already ends with it. Unset turns trace export off.
        otlp_endpoint: Option<String> = None, example "\"http://127.0.0.1:4318\"";
        /// The `service.name` attached to every exported span.
        service_name: String = "axon".to_owned();
        /// Fraction of new traces that are recorded, from 0.0 (none) to 1.0 (all).
        sample_ratio: f64 = 1.0;
    }
}

/// The validated `[opentelemetry]` section.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OpenTelemetryConfig {
    /// Collector base URL (http or https); `None` means no export.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of exported spans; not empty.
    pub service_name: String,
    /// Sampling ratio in `0.0..=1.0`.
    pub sample_ratio: f64,
}

pub(crate) fn validate(raw: RawOpenTelemetry, issues: &mut Issues) -> OpenTelemetryConfig {
    if let Some(endpoint) = &raw.otlp_endpoint {
        checks::http_url(issues, "opentelemetry.otlp_endpoint", endpoint);
    }
    checks::non_empty(
        issues,
        "opentelemetry.service_name",
        &raw.service_name,
        "a non-empty service name such as \"axon\"",
    );
    if !(0.0..=1.0).contains(&raw.sample_ratio) {
        issues.invalid(
            "opentelemetry.sample_ratio",
            &toml::Value::Float(raw.sample_ratio).to_string(),
            "a number from 0.0 to 1.0",
        );
    }
    OpenTelemetryConfig {
        otlp_endpoint: raw.otlp_endpoint,
        service_name: raw.service_name,
        sample_ratio: raw.sample_ratio,
    }
}
