//! `AXON_*` environment overrides.
//!
//! `AXON_` + the key path in upper case, a section and its key joined by `__`:
//! `AXON_SERVER_NAME`, `AXON_HTTP__ADDRESS`, `AXON_WELL_KNOWN__SERVER`. Values are read as
//! TOML values (`true`, `42`, `0.5`, `["a", "b"]`, `"quoted"`) and otherwise taken as text;
//! for a text key any value that is not a quoted TOML string is taken verbatim, so
//! `AXON_LOGGING__FILTER=info` and `AXON_SERVER_NAME=1.2.3.4` mean what they say.

use toml::{Table, Value};

use crate::config::RawConfig;
use crate::error::Issues;
use crate::schema::Section;

/// Prefix of every variable this crate reads.
const PREFIX: &str = "AXON_";

/// Variables with the prefix that are not configuration keys.
const RESERVED: [&str; 2] = [crate::CONFIG_ENV_VAR, crate::LOG_ENV_VAR];

/// Writes the `AXON_*` variables of `env` into `table` (the parsed file), replacing what the
/// file says. Variables that name no key are reported; others are ignored.
pub(crate) fn apply(
    table: &mut Table,
    env: impl IntoIterator<Item = (String, String)>,
    issues: &mut Issues,
) {
    for (name, raw_value) in env {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        if RESERVED.contains(&name.as_str()) {
            continue;
        }
        let parts: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
        let (section, key) = match parts.as_slice() {
            [key] => ("", key.as_str()),
            [section, key] => (section.as_str(), key.as_str()),
            _ => ("", ""),
        };
        let found = RawConfig::SECTIONS
            .iter()
            .find(|candidate| candidate.name == section)
            .and_then(|found| Some((found, found.field(key)?)));
        let Some((section, field)) = found else {
            issues.report(&name, unknown_variable(&parts));
            continue;
        };
        let path = section.path(field.name);
        let value = parse_value(&raw_value, field.text);
        let target = if section.name.is_empty() {
            Some(&mut *table)
        } else {
            // A `section = 5` in the file is reported by the type check; leave it alone.
            table
                .entry(section.name)
                .or_insert_with(|| Value::Table(Table::new()))
                .as_table_mut()
        };
        if let Some(target) = target {
            target.insert(field.name.to_owned(), value);
            issues.set_origin(path, name);
        }
    }
}

/// Reads an environment value as TOML, or as text when it is not TOML or the key is a text
/// key and the value is not a quoted string.
pub(crate) fn parse_value(raw: &str, text: bool) -> Value {
    match raw.parse::<Value>() {
        Ok(Value::String(parsed)) => Value::String(parsed),
        Ok(parsed) if !text => parsed,
        _ => Value::String(raw.to_owned()),
    }
}

/// The message for a variable that names no key, pointing at what the name was read as.
fn unknown_variable(parts: &[String]) -> String {
    let sections = RawConfig::SECTIONS;
    let hint = match parts {
        [key] => match sections.iter().find(|section| section.name == key) {
            Some(section) => format!(
                "{key} is a section; set one of its keys, e.g. {}",
                section.env_var(section.fields.first().map_or("", |field| field.name))
            ),
            None => format!(
                "there is no top-level key {key}; {}",
                top_level_list(sections)
            ),
        },
        [section, key] => match sections.iter().find(|found| found.name == section) {
            Some(found) => {
                format!(
                    "[{section}] has no key {key}; its keys are {}",
                    found.key_list()
                )
            }
            None => format!(
                "there is no section [{section}]; {}",
                section_list(sections)
            ),
        },
        _ => "a variable is AXON_ + a top-level key, or AXON_ + section + \"__\" + key, in \
              upper case, such as AXON_SERVER_NAME or AXON_HTTP__ADDRESS"
            .to_owned(),
    };
    format!(
        "this environment variable names no configuration key: {hint} (AXON_CONFIG and \
         AXON_LOG are the only other AXON_ variables)"
    )
}

fn top_level_list(sections: &[Section]) -> String {
    let top = sections.first().map(Section::key_list).unwrap_or_default();
    format!("the top-level keys are {top}")
}

fn section_list(sections: &[Section]) -> String {
    let names: Vec<&str> = sections
        .iter()
        .filter(|section| !section.name.is_empty())
        .map(|section| section.name)
        .collect();
    format!("the sections are {}", names.join(", "))
}

#[cfg(test)]
mod tests {
    use toml::Value;

    use super::parse_value;

    #[test]
    fn values_are_toml_where_possible() {
        assert_eq!(parse_value("true", false), Value::Boolean(true));
        assert_eq!(parse_value("false", false), Value::Boolean(false));
        assert_eq!(parse_value("42", false), Value::Integer(42));
        assert_eq!(parse_value("-1", false), Value::Integer(-1));
        assert_eq!(parse_value("0.25", false), Value::Float(0.25));
        assert_eq!(
            parse_value(r#"["a", "b"]"#, false),
            Value::Array(vec![Value::String("a".into()), Value::String("b".into())])
        );
        assert_eq!(
            parse_value(r#""quoted""#, false),
            Value::String("quoted".into())
        );
        assert_eq!(
            parse_value("127.0.0.1:8008", false),
            Value::String("127.0.0.1:8008".into())
        );
        assert_eq!(parse_value("yes", false), Value::String("yes".into()));
        assert_eq!(parse_value("", false), Value::String(String::new()));
    }

    #[test]
    fn text_keys_take_unquoted_values_verbatim() {
        assert_eq!(parse_value("true", true), Value::String("true".into()));
        assert_eq!(
            parse_value("1.2.3.4", true),
            Value::String("1.2.3.4".into())
        );
        assert_eq!(parse_value("11", true), Value::String("11".into()));
        assert_eq!(
            parse_value(r#""quoted""#, true),
            Value::String("quoted".into())
        );
        assert_eq!(
            parse_value("info,axon=debug", true),
            Value::String("info,axon=debug".into())
        );
    }

    #[test]
    fn a_value_cannot_smuggle_in_other_keys() {
        assert_eq!(
            parse_value("1\nother = 2", false),
            Value::String("1\nother = 2".into())
        );
    }
}
