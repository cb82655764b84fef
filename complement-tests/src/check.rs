//! Checks shared by the tests, so each test reads as data.

use serde_json::{Map, Value};

use crate::client::Response;

/// Asserts that `resp` is a Matrix error with this HTTP status and
/// `errcode`, and that it carries the human-readable `error` string the
/// spec's standard error body has.
#[track_caller]
pub fn assert_matrix_error(resp: &Response, status: u16, errcode: &str) {
    assert_eq!(
        (resp.status, resp.body["errcode"].as_str()),
        (status, Some(errcode)),
        "expected {status} {errcode} from {}",
        resp.describe()
    );
    assert!(
        resp.body["error"].is_string(),
        "a Matrix error body has an `error` string: {}",
        resp.describe()
    );
}

/// Encodes `value` as Matrix canonical JSON: object keys sorted by code
/// point, no insignificant whitespace, UTF-8 kept as is.
///
/// The keys are re-sorted here rather than trusting `serde_json::Map`'s
/// ordering, which changes to insertion order when any crate in the build
/// enables serde_json's `preserve_order` feature.
pub fn canonical_json(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                let mut out = Map::new();
                for (key, inner) in entries {
                    out.insert(key.clone(), sorted(inner));
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn canonical_json_sorts_nested_keys_and_drops_whitespace() {
        let value = json!({"b": 1, "a": {"z": [true, {"y": null, "x": "é"}], "c": "d"}});
        assert_eq!(
            canonical_json(&value),
            r#"{"a":{"c":"d","z":[true,{"x":"é","y":null}]},"b":1}"#
        );
    }
}
