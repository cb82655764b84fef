//! The generated example parses back into the defaults and mentions every key.

use std::collections::BTreeSet;

use serde::Deserialize as _;

use super::load_str;
use crate::Config;
use crate::config::RawConfig;
use crate::example::{Unset, render};

/// Every `section.key` path of a raw configuration serialised as TOML.
fn paths_of(raw: &RawConfig) -> BTreeSet<String> {
    let table = toml::Table::try_from(raw).expect("raw config serialises");
    let mut paths = BTreeSet::new();
    for (key, value) in table {
        match value {
            toml::Value::Table(section) => {
                paths.extend(section.keys().map(|inner| format!("{key}.{inner}")));
            }
            _ => {
                paths.insert(key);
            }
        }
    }
    paths
}

/// Every path of the schema tables.
fn schema_paths() -> BTreeSet<String> {
    RawConfig::SECTIONS
        .iter()
        .flat_map(|section| section.fields.iter().map(|field| section.path(field.name)))
        .collect()
}

#[test]
fn the_example_parses_into_the_default_config() {
    let example = crate::example_toml();
    let config = load_str(&example, &[]).expect("the example is valid");
    assert_eq!(config, Config::default());
    // Strictly, too: serde's own deny_unknown_fields accepts it.
    let raw: RawConfig = toml::from_str(&example).expect("strict parse");
    assert_eq!(raw, RawConfig::default());
}

#[test]
fn every_field_of_the_raw_structs_is_in_the_example() {
    // With the examples of unset keys filled in, serde's serialisation of the structs lists
    // every field: it must match the schema tables and each key must be in the example.
    let filled = render(Unset::Set);
    let raw = RawConfig::deserialize(toml::Value::Table(
        filled
            .parse::<toml::Table>()
            .expect("filled example parses"),
    ))
    .expect("filled example fits the raw structs");
    assert_eq!(paths_of(&raw), schema_paths());

    let example = crate::example_toml();
    for section in RawConfig::SECTIONS {
        if !section.name.is_empty() {
            assert!(
                example.contains(&format!("\n[{}]\n", section.name)),
                "[{}]",
                section.name
            );
        }
        for field in section.fields {
            let set = format!("\n{} = ", field.name);
            let commented = format!("\n# {} = ", field.name);
            assert!(
                example.contains(&set) || example.contains(&commented),
                "{} is missing from the example",
                section.path(field.name)
            );
            assert!(
                example.contains(&format!("# Environment: {}\n", section.env_var(field.name))),
                "{} has no environment line",
                section.path(field.name)
            );
            assert!(
                !field.doc.is_empty(),
                "{} has no doc comment",
                section.path(field.name)
            );
        }
    }
}

#[test]
fn the_filled_in_examples_are_valid_values() {
    let filled = render(Unset::Set);
    let config = load_str(&filled, &[]).expect("every example value validates");
    assert_eq!(config.public_baseurl, "https://matrix.example.org/");
    assert_eq!(
        config.well_known.server.as_deref(),
        Some("matrix.example.org:443")
    );
}

#[test]
fn the_example_documents_the_environment_rules() {
    let example = crate::example_toml();
    assert!(example.contains("AXON_HTTP__ADDRESS"));
    assert!(example.contains("# Environment: AXON_SERVER_NAME\nserver_name = \"localhost:8008\""));
    assert!(example.contains("# Environment: AXON_STORAGE__SYNC_WRITES\nsync_writes = true"));
    assert!(example.contains("# public_baseurl = \"https://matrix.example.org/\""));
}
