//! Each validation rule refuses its bad values with a message naming the key, the value
//! given and what is allowed; problems are collected, not stopped at.

use super::{invalid, issues};

/// One row per rule: (file, key, parts of the message).
const REFUSED: &[(&str, &str, &[&str])] = &[
    (
        "server_name = \"exa mple.org\"",
        "server_name",
        &[
            "\"exa mple.org\" is not valid",
            "expected a server name",
            "\"example.org:8448\"",
        ],
    ),
    (
        "server_name = \"example.org:0\"",
        "server_name",
        &["\"example.org:0\" is not valid"],
    ),
    (
        "data_dir = \"\"",
        "data_dir",
        &["\"\" is not valid", "the path of a directory"],
    ),
    (
        "public_baseurl = \"ftp://example.org\"",
        "public_baseurl",
        &[
            "\"ftp://example.org\" is not valid",
            "an http:// or https:// URL",
        ],
    ),
    (
        "public_baseurl = \"https://example.org/?x=1\"",
        "public_baseurl",
        &[
            "is not valid",
            "without user name, password, query or fragment",
        ],
    ),
    (
        "[http]\naddress = \"localhost:8008\"",
        "http.address",
        &[
            "\"localhost:8008\" is not valid",
            "an IP address and port",
            "\"127.0.0.1:8008\"",
        ],
    ),
    (
        "[http]\nmax_request_bytes = 0",
        "http.max_request_bytes",
        &["0 is not valid", "at least 1"],
    ),
    (
        "[http]\nrequest_timeout_secs = 0",
        "http.request_timeout_secs",
        &["0 is not valid", "at least 1"],
    ),
    (
        "[tls]\nenabled = true\nprivate_key = \"/k.pem\"",
        "tls.certificate",
        &[
            "not set",
            "tls.enabled = true requires it",
            "PEM certificate chain",
        ],
    ),
    (
        "[tls]\nenabled = true\ncertificate = \"/c.pem\"",
        "tls.private_key",
        &[
            "not set",
            "tls.enabled = true requires it",
            "PEM private key",
        ],
    ),
    (
        "[tls]\ncertificate = \"\"",
        "tls.certificate",
        &["\"\" is not valid", "the path of a PEM certificate chain"],
    ),
    (
        "[tls]\nenabled = true\naddress = \"127.0.0.1:8008\"\n\
         certificate = \"/c.pem\"\nprivate_key = \"/k.pem\"",
        "tls.address",
        &[
            "\"127.0.0.1:8008\" is not valid",
            "that http.address does not already use",
        ],
    ),
    (
        "[metrics]\nenabled = true\naddress = \"127.0.0.1:8008\"",
        "metrics.address",
        &[
            "\"127.0.0.1:8008\" is not valid",
            "that http.address does not already use",
        ],
    ),
    (
        "[metrics]\nenabled = true\naddress = \"0.0.0.0:8008\"",
        "metrics.address",
        &["\"0.0.0.0:8008\" is not valid", "http.address"],
    ),
    (
        "[federation]\ntrusted_ca = \"\"",
        "federation.trusted_ca",
        &["\"\" is not valid", "PEM file of CA certificates"],
    ),
    (
        "[registration]\nshared_secret = \"\"",
        "registration.shared_secret",
        &["\"\" is not valid", "a non-empty secret"],
    ),
    (
        "[login]\nfailure_window_secs = 0",
        "login.failure_window_secs",
        &["0 is not valid", "at least 1"],
    ),
    (
        "[login]\naccess_token_lifetime_secs = 0",
        "login.access_token_lifetime_secs",
        &["0 is not valid", "at least 1"],
    ),
    (
        "[passwords]\nminimum_length = 0",
        "passwords.minimum_length",
        &["0 is not valid", "at least 1"],
    ),
    (
        "[passwords]\nargon2_iterations = 0",
        "passwords.argon2_iterations",
        &["0 is not valid", "at least 1"],
    ),
    (
        "[passwords]\nargon2_parallelism = 0",
        "passwords.argon2_parallelism",
        &["0 is not valid", "from 1 to 16777215"],
    ),
    (
        "[passwords]\nargon2_parallelism = 4\nargon2_memory_kib = 16",
        "passwords.argon2_memory_kib",
        &["16 is not valid", "at least 8 KiB per lane", "here 32"],
    ),
    (
        "[storage]\nmax_open_files = 10",
        "storage.max_open_files",
        &[
            "10 is not valid",
            "-1 (no limit) or a number of at least 20",
        ],
    ),
    (
        "[logging]\nformat = \"xml\"",
        "logging.format",
        &["\"xml\" is not valid", "one of \"pretty\", \"json\""],
    ),
    (
        "[logging]\nfilter = \" \"",
        "logging.filter",
        &["\" \" is not valid", "a filter directive"],
    ),
    (
        "[opentelemetry]\nsample_ratio = 1.5",
        "opentelemetry.sample_ratio",
        &["1.5 is not valid", "a number from 0.0 to 1.0"],
    ),
    (
        "[opentelemetry]\nsample_ratio = -0.1",
        "opentelemetry.sample_ratio",
        &["-0.1 is not valid", "from 0.0 to 1.0"],
    ),
    (
        "[opentelemetry]\nsample_ratio = nan",
        "opentelemetry.sample_ratio",
        &["nan is not valid", "from 0.0 to 1.0"],
    ),
    (
        "[opentelemetry]\notlp_endpoint = \"collector:4318\"",
        "opentelemetry.otlp_endpoint",
        &[
            "\"collector:4318\" is not valid",
            "an http:// or https:// URL",
        ],
    ),
    (
        "[opentelemetry]\nservice_name = \"\"",
        "opentelemetry.service_name",
        &["\"\" is not valid", "a non-empty service name"],
    ),
    (
        "[well_known]\nserver = \"https://matrix.example.org\"",
        "well_known.server",
        &[
            "\"https://matrix.example.org\" is not valid",
            "expected a server name",
        ],
    ),
    (
        "[well_known]\nclient_base_url = \"matrix.example.org\"",
        "well_known.client_base_url",
        &[
            "\"matrix.example.org\" is not valid",
            "an http:// or https:// URL",
        ],
    ),
    (
        "[rooms]\ndefault_room_version = \"V11\"",
        "rooms.default_room_version",
        &["\"V11\" is not valid", "a room version identifier"],
    ),
];

#[test]
fn every_rule_names_key_value_and_what_is_allowed() {
    for (toml, key, parts) in REFUSED {
        invalid(toml, &[], key, parts);
    }
}

#[test]
fn listeners_that_are_off_or_on_port_zero_do_not_conflict() {
    super::load_str("[metrics]\naddress = \"127.0.0.1:8008\"", &[]).expect("metrics is off");
    super::load_str(
        "[http]\naddress = \"127.0.0.1:0\"\n[metrics]\nenabled = true\naddress = \"127.0.0.1:0\"",
        &[],
    )
    .expect("port 0 picks a free port for each");
    super::load_str("[tls]\naddress = \"0.0.0.0:8008\"", &[]).expect("tls is off");
}

#[test]
fn a_bad_value_from_the_environment_names_its_variable() {
    let issue = invalid(
        "",
        &[("AXON_LOGGING__FORMAT", "xml")],
        "logging.format",
        &["\"xml\" is not valid"],
    );
    assert_eq!(issue.env_var.as_deref(), Some("AXON_LOGGING__FORMAT"));
    assert_eq!(
        issue.to_string(),
        "logging.format (set by AXON_LOGGING__FORMAT): \"xml\" is not valid: expected one of \
         \"pretty\", \"json\""
    );
}

#[test]
fn all_problems_are_reported_together() {
    let found = issues(
        r#"
        server_name = "bad name"
        colour = "blue"
        [http]
        max_request_bytes = 0
        [registration]
        enabled = "yes"
        [tls]
        enabled = true
        [logging]
        format = "xml"
        "#,
        &[
            ("AXON_METRICS__ENABLED", "true"),
            ("AXON_METRICS__ADDRESS", "127.0.0.1:8008"),
            ("AXON_NOT__A_KEY", "1"),
        ],
    );
    let mut keys: Vec<&str> = found.iter().map(|issue| issue.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "AXON_NOT__A_KEY",
            "colour",
            "http.max_request_bytes",
            "logging.format",
            "metrics.address",
            "registration.enabled",
            "server_name",
            "tls.certificate",
            "tls.private_key",
        ]
    );
    let error = crate::ConfigError::Invalid { issues: found };
    let message = error.to_string();
    assert!(
        message.starts_with("invalid configuration:\n  - "),
        "{message}"
    );
    assert_eq!(message.lines().count(), 10, "{message}");
}

#[test]
fn a_value_of_the_wrong_type_is_reported_once() {
    // The ill-typed certificate is dropped before validation; "not set" would repeat it.
    invalid(
        "[tls]\nenabled = true\ncertificate = 5\nprivate_key = \"/k.pem\"",
        &[],
        "tls.certificate",
        &["5 is not valid: expected a string"],
    );
}
