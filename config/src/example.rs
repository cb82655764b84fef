//! The commented example configuration, rendered from the schema.

use std::fmt::Write as _;

use crate::config::RawConfig;
use crate::schema::{Field, Section};

const HEADER: &str = "\
# Axon homeserver configuration.
#
# Every key is optional: Axon runs with no configuration file at all, and a key
# left out takes the default shown here. Keys shown commented out are unset by
# default.
#
# Every key can also be set through the environment: AXON_ followed by the key
# path in upper case, a section and its key joined by a double underscore, as in
# AXON_SERVER_NAME or AXON_HTTP__ADDRESS. Values are read as TOML (true, 42,
# 0.5, [\"a\", \"b\"], \"text\") or else taken as text. The environment wins over this
# file. AXON_CONFIG (the path of this file) and AXON_LOG (a log filter that
# replaces logging.filter) are read separately.
";

/// Whether keys that are unset by default are rendered commented out (the example) or set
/// to their example value (to check that every example parses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unset {
    Commented,
    #[cfg_attr(
        not(test),
        allow(dead_code, reason = "only the tests render filled-in examples")
    )]
    Set,
}

/// A complete, commented example configuration file: every key with its documentation, its
/// environment variable and its default (or, for keys unset by default, an example value,
/// commented out). Parsing it gives [`crate::Config::default`].
pub fn example_toml() -> String {
    render(Unset::Commented)
}

pub(crate) fn render(unset: Unset) -> String {
    let mut out = String::from(HEADER);
    for section in RawConfig::SECTIONS {
        out.push('\n');
        if !section.name.is_empty() {
            out.push_str("# ------------------------------------------------------------------\n");
        }
        write_doc(&mut out, section.doc);
        if !section.name.is_empty() {
            let _ = writeln!(out, "[{}]", section.name);
        }
        for field in section.fields {
            out.push('\n');
            write_field(&mut out, section, field, unset);
        }
    }
    out
}

fn write_field(out: &mut String, section: &Section, field: &Field, unset: Unset) {
    write_doc(out, field.doc);
    let _ = writeln!(out, "# Environment: {}", section.env_var(field.name));
    match ((field.default)(), field.example) {
        (Some(default), _) => {
            let _ = writeln!(out, "{} = {default}", field.name);
        }
        (None, Some(example)) => {
            let prefix = match unset {
                Unset::Commented => "# ",
                Unset::Set => "",
            };
            let _ = writeln!(out, "{prefix}{} = {example}", field.name);
        }
        // A field unset by default without an example: documented, nothing to show.
        (None, None) => {}
    }
}

fn write_doc(out: &mut String, doc: &[&str]) {
    for line in doc {
        // Rustdoc keeps the space after `///`.
        let line = line.strip_prefix(' ').unwrap_or(line);
        if line.is_empty() {
            out.push_str("#\n");
        } else {
            let _ = writeln!(out, "# {line}");
        }
    }
}
