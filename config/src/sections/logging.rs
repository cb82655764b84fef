//! `[logging]`: how the server logs.

use crate::checks;
use crate::error::{Issues, quoted};
use crate::schema::raw_section;

raw_section! {
    /// Logging to standard error.
    RawLogging {
        /// Line format: "pretty" (human-readable) or "json" (one JSON object per line, for
        /// log shippers).
        format: String = "pretty".to_owned();
        /// Which events to log, as a tracing `EnvFilter` directive such as "info" or
        /// "info,axon_federation=debug". The `AXON_LOG` environment variable, when set,
        /// replaces it.
        filter: String = "info".to_owned();
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The name used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pretty => "pretty",
            Self::Json => "json",
        }
    }
}

/// The validated `[logging]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoggingConfig {
    /// Line format.
    pub format: LogFormat,
    /// `EnvFilter` directive; not empty. Its syntax is checked when the server installs it.
    pub filter: String,
}

pub(crate) fn validate(raw: RawLogging, issues: &mut Issues) -> LoggingConfig {
    let format = match raw.format.as_str() {
        "pretty" => LogFormat::Pretty,
        "json" => LogFormat::Json,
        other => {
            issues.invalid(
                "logging.format",
                &quoted(other),
                "one of \"pretty\", \"json\"",
            );
            LogFormat::Pretty
        }
    };
    checks::non_empty(
        issues,
        "logging.filter",
        &raw.filter,
        "a filter directive such as \"info\" or \"info,axon_core=debug\"",
    );
    LoggingConfig {
        format,
        filter: raw.filter,
    }
}
