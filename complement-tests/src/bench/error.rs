//! Why a benchmark run failed.

use std::path::PathBuf;

/// Everything that stops a run; `main` prints it and exits non-zero.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BenchError {
    /// The command line is wrong.
    #[error("{0}")]
    Usage(String),
    /// A set-up request did not get an answer.
    #[error("{what}: request failed: {source}")]
    Http {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    /// A set-up request got an answer other than the expected one.
    #[error("{what}: the server answered {status}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
    /// The server cannot run this workload (for instance its registration
    /// needs a stage other than `m.login.dummy`).
    #[error("{0}")]
    Unsupported(String),
    /// Timed sends failed: the figures would be meaningless.
    #[error(
        "{failed} of {attempted} sends failed with {senders} sender(s); first failures:\n{samples}"
    )]
    SendsFailed {
        senders: usize,
        failed: u64,
        attempted: u64,
        samples: String,
    },
    /// Starting axon (or finding its binary) failed.
    #[error("starting axon: {0}")]
    Axon(String),
    /// A report file could not be read or is not a report.
    #[error("{path}: {reason}", path = path.display())]
    Report { path: PathBuf, reason: String },
}
