//! Loading: read the file, lay the environment over it, check keys and types against the
//! schema, deserialise the raw structs, validate.
//!
//! Keys and types are checked by walking the schema rather than by letting serde stop at the
//! first problem, so one run names every unknown key and every ill-typed value. What fails
//! that walk is dropped before serde sees the table, and validation of the rest still runs,
//! so semantic problems are reported in the same run.

use std::io::ErrorKind;
use std::path::Path;

use serde::Deserialize as _;
use toml::{Table, Value};

use crate::config::{self, Config, RawConfig};
use crate::env;
use crate::error::{ConfigError, Issues};
use crate::schema::Section;

/// Reads and parses the configuration file.
pub(crate) fn read_file(path: &Path) -> Result<Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|reason| match reason.kind() {
        ErrorKind::NotFound => ConfigError::NotFound {
            path: path.to_owned(),
        },
        _ => ConfigError::Read {
            path: path.to_owned(),
            reason,
        },
    })?;
    text.parse::<Table>().map_err(|reason| ConfigError::Syntax {
        path: path.to_owned(),
        reason,
    })
}

/// Builds the configuration from the parsed file (empty without one) and the environment.
pub(crate) fn from_table(
    mut table: Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let mut issues = Issues::default();
    env::apply(&mut table, env, &mut issues);
    prune(&mut table, &mut issues);
    let raw = match RawConfig::deserialize(Value::Table(table)) {
        Ok(raw) => raw,
        Err(error) => {
            // The walk above checked every key and type against the same structs, so this
            // means the schema walk and serde disagree: report it rather than guess.
            issues.report("", format!("cannot read the configuration: {error}"));
            return issues.finish(Config::default());
        }
    };
    let config = config::validate(raw, &mut issues);
    issues.finish(config)
}

/// Removes, and reports, every unknown key and every value of the wrong type.
fn prune(table: &mut Table, issues: &mut Issues) {
    let sections = RawConfig::SECTIONS;
    let Some((top, nested)) = sections.split_first() else {
        return;
    };
    table.retain(|key, value| {
        if let Some(section) = nested.iter().find(|section| section.name == key) {
            match value.as_table_mut() {
                Some(inner) => {
                    prune_section(section, inner, issues);
                    true
                }
                None => {
                    issues.invalid(
                        key,
                        &value.to_string(),
                        &format!("a table (the [{key}] section)"),
                    );
                    false
                }
            }
        } else {
            keep_field(top, key, value, issues)
        }
    });
}

fn prune_section(section: &Section, table: &mut Table, issues: &mut Issues) {
    table.retain(|key, value| keep_field(section, key, value, issues));
}

/// Whether `key = value` is a known key of `section` with a value of the right type;
/// reports it if not.
fn keep_field(section: &Section, key: &str, value: &Value, issues: &mut Issues) -> bool {
    let path = section.path(key);
    match section.field(key) {
        Some(field) if (field.fits)(value) => true,
        Some(field) => {
            issues.invalid(&path, &value.to_string(), field.expected);
            false
        }
        None => {
            issues.report(&path, unknown_key(section, key));
            false
        }
    }
}

fn unknown_key(section: &Section, key: &str) -> String {
    let mut candidates: Vec<&str> = section.fields.iter().map(|field| field.name).collect();
    if section.name.is_empty() {
        candidates.extend(
            RawConfig::SECTIONS
                .iter()
                .skip(1)
                .map(|section| section.name),
        );
    }
    let suggestion = closest(key, &candidates)
        .map(|name| format!(" (did you mean {name}?)"))
        .unwrap_or_default();
    let known = if section.name.is_empty() {
        let sections: Vec<String> = RawConfig::SECTIONS
            .iter()
            .skip(1)
            .map(|section| format!("[{}]", section.name))
            .collect();
        format!(
            "the top-level keys are {} and the sections are {}",
            section.key_list(),
            sections.join(", ")
        )
    } else {
        format!("the keys of [{}] are {}", section.name, section.key_list())
    };
    format!("unknown key{suggestion}; {known}")
}

/// The candidate nearest to `key` by edit distance, if it is near enough to be a typo.
fn closest<'a>(key: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|candidate| (edit_distance(key, candidate), *candidate))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            let delete = previous[j + 1] + 1;
            let insert = current[j] + 1;
            current.push(substitute.min(delete).min(insert));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::{closest, edit_distance};

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("address", "address"), 0);
        assert_eq!(edit_distance("adress", "address"), 1);
        assert_eq!(edit_distance("adres", "address"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(closest("adress", &["address", "enabled"]), Some("address"));
        assert_eq!(closest("colour", &["address", "enabled"]), None);
    }
}
