//! Errors of this crate, and the collector that gathers every problem before failing.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file does not exist.
    #[error("config file {} does not exist", path.display())]
    NotFound {
        /// The path as given.
        path: PathBuf,
    },
    /// The configuration file exists but cannot be read.
    // The reason is part of the message (and so not also a `source`) because the CLI prints
    // only the top-level message.
    #[error("cannot read config file {}: {reason}", path.display())]
    Read {
        /// The path as given.
        path: PathBuf,
        /// What the operating system said.
        reason: std::io::Error,
    },
    /// The configuration file is not valid TOML.
    #[error("config file {} is not valid TOML: {reason}", path.display())]
    Syntax {
        /// The path as given.
        path: PathBuf,
        /// The parser's message, with line and column.
        reason: toml::de::Error,
    },
    /// The file and the environment parse, but some keys or values are not acceptable.
    #[error("invalid configuration:{}", list(issues))]
    Invalid {
        /// Every problem found, in a stable order.
        issues: Vec<Issue>,
    },
}

impl ConfigError {
    /// The individual problems of an [`ConfigError::Invalid`] error; empty for the others.
    pub fn issues(&self) -> &[Issue] {
        match self {
            Self::Invalid { issues } => issues,
            _ => &[],
        }
    }
}

fn list(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(|issue| format!("\n  - {issue}"))
        .collect()
}

/// One problem with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Issue {
    /// The dotted key path (`http.address`); for an `AXON_*` variable that names no key, the
    /// variable's name.
    pub key: String,
    /// The environment variable the offending value came from, if it did not come from the
    /// file.
    pub env_var: Option<String>,
    /// What is wrong: the value given and what is allowed.
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.env_var {
            Some(var) if *var != self.key => {
                write!(f, "{} (set by {var}): {}", self.key, self.message)
            }
            _ => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// Gathers problems while the configuration is checked, so that all of them are reported at
/// once.
#[derive(Debug, Default)]
pub(crate) struct Issues {
    found: Vec<Issue>,
    /// Key path -> the environment variable that set it.
    origins: BTreeMap<String, String>,
}

impl Issues {
    /// Records that the value at `key` came from the environment variable `var`.
    pub(crate) fn set_origin(&mut self, key: String, var: String) {
        self.origins.insert(key, var);
    }

    /// Records a problem with `key`.
    pub(crate) fn report(&mut self, key: &str, message: String) {
        self.found.push(Issue {
            key: key.to_owned(),
            env_var: self.origins.get(key).cloned(),
            message,
        });
    }

    /// Records that `value` (already rendered, e.g. `"abc"` with its quotes) is not
    /// acceptable for `key`, and what would be.
    pub(crate) fn invalid(&mut self, key: &str, value: &str, expected: &str) {
        self.report(key, format!("{value} is not valid: expected {expected}"));
    }

    /// Records that `key` must be set and is not, unless `key` was already reported (a value
    /// of the wrong type is dropped before validation and would otherwise be reported twice).
    pub(crate) fn missing(&mut self, key: &str, why: &str, expected: &str) {
        if !self.found.iter().any(|issue| issue.key == key) {
            self.report(key, format!("not set, but {why}: expected {expected}"));
        }
    }

    /// Whether anything was found.
    pub(crate) fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// `Ok(value)` if nothing was found, else every problem.
    pub(crate) fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        if self.found.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError::Invalid { issues: self.found })
        }
    }
}

/// A string value as it would be written in TOML (quoted and escaped), for messages.
pub(crate) fn quoted(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}
