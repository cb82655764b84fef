//! Unit tests of loading, validation and the example, through [`load_str`] and [`invalid`].

mod example;
mod loading;
mod validation;

use crate::error::Issue;
use crate::{Config, ConfigError};

/// Loads `toml` as if it were the file, with `env` as the environment.
fn load_str(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let table = toml.parse::<toml::Table>().expect("test TOML parses");
    crate::load::from_table(
        table,
        env.iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
    )
}

/// Loads and expects the configuration to be refused; returns the problems.
fn issues(toml: &str, env: &[(&str, &str)]) -> Vec<Issue> {
    match load_str(toml, env) {
        Err(ConfigError::Invalid { issues }) => issues,
        other => panic!("expected an invalid configuration, got {other:?}"),
    }
}

/// Expects exactly one problem, with `key`, whose message contains each of `parts`.
fn invalid(toml: &str, env: &[(&str, &str)], key: &str, parts: &[&str]) -> Issue {
    let found = issues(toml, env);
    assert_eq!(found.len(), 1, "expected one problem, got {found:#?}");
    let issue = found.into_iter().next().expect("one issue");
    assert_eq!(issue.key, key, "{issue}");
    for part in parts {
        assert!(
            issue.message.contains(part),
            "{issue:?} should mention {part:?}"
        );
    }
    issue
}
