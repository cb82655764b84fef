//! Defaults, the file, the environment, unknown keys and types.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{invalid, load_str};
use crate::{Config, ConfigError, LogFormat, check_file, load};

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test address")
}

#[test]
fn defaults() {
    let config = Config::default();
    assert_eq!(config.server_name, "localhost:8008");
    assert_eq!(config.data_dir, PathBuf::from("./axon-data"));
    assert_eq!(config.public_baseurl, "http://localhost:8008/");
    assert_eq!(config.http.address, addr("127.0.0.1:8008"));
    assert_eq!(config.http.max_request_bytes, 50 * 1024 * 1024);
    assert_eq!(config.http.request_timeout().as_secs(), 60);
    assert!(!config.tls.enabled);
    assert_eq!(config.tls.address, addr("0.0.0.0:8448"));
    assert_eq!(config.tls.listener(), None);
    assert!(config.federation.enabled);
    assert!(!config.federation.allow_private_addresses);
    assert!(!config.federation.skip_tls_verification);
    assert!(config.registration.enabled);
    assert!(!config.registration.require_token);
    assert!(!config.registration.allow_guests);
    assert_eq!(config.registration.shared_secret, None);
    assert_eq!(config.login.max_failures, 5);
    assert_eq!(config.login.failure_window().as_secs(), 300);
    assert!(config.login.refresh_tokens);
    assert_eq!(config.login.access_token_lifetime(false), None);
    assert_eq!(
        config
            .login
            .access_token_lifetime(true)
            .map(|d| d.as_secs()),
        Some(300)
    );
    assert_eq!(config.passwords.minimum_length, 8);
    assert_eq!(config.passwords.argon2_memory_kib, 19456);
    assert_eq!(config.passwords.argon2_iterations, 2);
    assert_eq!(config.passwords.argon2_parallelism, 1);
    assert!(config.storage.sync_writes);
    assert_eq!(config.storage.block_cache_bytes(), 256 * 1024 * 1024);
    assert_eq!(config.storage.max_open_files, 1024);
    assert_eq!(config.logging.format, LogFormat::Pretty);
    assert_eq!(config.logging.filter, "info");
    assert!(!config.metrics.enabled);
    assert_eq!(config.metrics.address, addr("127.0.0.1:9108"));
    assert_eq!(config.opentelemetry.otlp_endpoint, None);
    assert_eq!(config.opentelemetry.service_name, "axon");
    assert_eq!(config.opentelemetry.sample_ratio, 1.0);
    assert_eq!(config.well_known.client_base_url, "http://localhost:8008/");
    assert_eq!(config.well_known.server, None);
    assert_eq!(config.rooms.default_room_version, "11");
}

#[test]
fn no_file_and_no_environment_give_the_defaults() {
    let loaded = load(None, std::iter::empty()).expect("defaults load");
    assert_eq!(loaded, Config::default());
    let unrelated = [
        ("PATH".to_owned(), "/bin".to_owned()),
        ("HOME".to_owned(), "/".to_owned()),
    ];
    assert_eq!(
        load(None, unrelated).expect("defaults load"),
        Config::default()
    );
}

#[test]
fn defaults_warn_that_registration_is_open() {
    let warnings = Config::default().warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("registration is open to anyone without a token"));

    let closed = load_str("[registration]\nrequire_token = true", &[]).expect("valid");
    assert!(closed.warnings().is_empty(), "{:?}", closed.warnings());
    let off = load_str("[registration]\nenabled = false", &[]).expect("valid");
    assert!(off.warnings().is_empty());
}

#[test]
fn risky_settings_warn() {
    let config = load_str(
        r#"
        [registration]
        enabled = false
        [federation]
        skip_tls_verification = true
        allow_private_addresses = true
        [storage]
        sync_writes = false
        [passwords]
        argon2_memory_kib = 8
        argon2_iterations = 1
        "#,
        &[],
    )
    .expect("valid");
    let warnings = config.warnings().join("\n");
    for part in [
        "federation.skip_tls_verification",
        "federation.allow_private_addresses",
        "storage.sync_writes",
        "passwords.argon2_memory_kib = 8",
    ] {
        assert!(warnings.contains(part), "{warnings} should mention {part}");
    }
}

#[test]
fn a_file_sets_every_kind_of_value() {
    let config = load_str(
        r#"
        server_name = "example.org"
        data_dir = "/var/lib/axon"
        public_baseurl = "https://matrix.example.org"

        [http]
        address = "[::]:8008"
        max_request_bytes = 1024

        [tls]
        enabled = true
        certificate = "/etc/axon/cert.pem"
        private_key = "/etc/axon/key.pem"

        [registration]
        shared_secret = "s3cret"

        [login]
        access_token_lifetime_secs = 60

        [logging]
        format = "json"
        filter = "debug"

        [opentelemetry]
        otlp_endpoint = "http://collector:4318"
        sample_ratio = 0.25

        [well_known]
        server = "matrix.example.org:443"
        "#,
        &[],
    )
    .expect("valid");
    assert_eq!(config.server_name, "example.org");
    assert_eq!(config.data_dir, PathBuf::from("/var/lib/axon"));
    assert_eq!(config.public_baseurl, "https://matrix.example.org/");
    assert_eq!(
        config.well_known.client_base_url,
        "https://matrix.example.org/"
    );
    assert_eq!(
        config.well_known.server.as_deref(),
        Some("matrix.example.org:443")
    );
    assert_eq!(config.http.address, addr("[::]:8008"));
    assert_eq!(config.http.max_request_bytes, 1024);
    assert_eq!(
        config.http.request_timeout_secs, 60,
        "unset keys keep their default"
    );
    let tls = config.tls.listener().expect("tls is enabled");
    assert_eq!(tls.address, addr("0.0.0.0:8448"));
    assert_eq!(tls.certificate, PathBuf::from("/etc/axon/cert.pem"));
    assert_eq!(tls.private_key, PathBuf::from("/etc/axon/key.pem"));
    assert_eq!(config.registration.shared_secret.as_deref(), Some("s3cret"));
    assert_eq!(
        config
            .login
            .access_token_lifetime(false)
            .map(|d| d.as_secs()),
        Some(60)
    );
    assert_eq!(
        config
            .login
            .access_token_lifetime(true)
            .map(|d| d.as_secs()),
        Some(60)
    );
    assert_eq!(config.logging.format, LogFormat::Json);
    assert_eq!(config.logging.filter, "debug");
    assert_eq!(
        config.opentelemetry.otlp_endpoint.as_deref(),
        Some("http://collector:4318")
    );
    assert_eq!(config.opentelemetry.sample_ratio, 0.25);
}

#[test]
fn integers_are_accepted_for_floats() {
    let config = load_str("[opentelemetry]\nsample_ratio = 0", &[]).expect("valid");
    assert_eq!(config.opentelemetry.sample_ratio, 0.0);
}

#[test]
fn environment_overrides_top_level_and_nested_keys() {
    let config = load_str(
        "server_name = \"file.example\"\n[http]\naddress = \"127.0.0.1:1111\"",
        &[
            ("AXON_SERVER_NAME", "env.example"),
            ("AXON_HTTP__ADDRESS", "127.0.0.1:2222"),
            (
                "AXON_WELL_KNOWN__CLIENT_BASE_URL",
                "https://client.example/",
            ),
        ],
    )
    .expect("valid");
    assert_eq!(
        config.server_name, "env.example",
        "the environment wins over the file"
    );
    assert_eq!(config.http.address, addr("127.0.0.1:2222"));
    assert_eq!(config.well_known.client_base_url, "https://client.example/");
    assert_eq!(config.public_baseurl, "http://env.example/");
}

#[test]
fn environment_values_are_parsed_as_toml() {
    let config = load_str(
        "",
        &[
            ("AXON_REGISTRATION__ENABLED", "false"),
            ("AXON_STORAGE__SYNC_WRITES", "true"),
            ("AXON_STORAGE__MAX_OPEN_FILES", "-1"),
            ("AXON_HTTP__MAX_REQUEST_BYTES", "4096"),
            ("AXON_OPENTELEMETRY__SAMPLE_RATIO", "0.5"),
            ("AXON_LOGGING__FILTER", "info,axon_core=debug"),
            ("AXON_OPENTELEMETRY__SERVICE_NAME", "\"quoted name\""),
            ("AXON_ROOMS__DEFAULT_ROOM_VERSION", "10"),
            ("AXON_SERVER_NAME", "1.2.3.4"),
        ],
    )
    .expect("valid");
    assert!(!config.registration.enabled);
    assert!(config.storage.sync_writes);
    assert_eq!(config.storage.max_open_files, -1);
    assert_eq!(config.http.max_request_bytes, 4096);
    assert_eq!(config.opentelemetry.sample_ratio, 0.5);
    assert_eq!(config.logging.filter, "info,axon_core=debug");
    assert_eq!(config.opentelemetry.service_name, "quoted name");
    assert_eq!(
        config.rooms.default_room_version, "10",
        "a number is text for a text key"
    );
    assert_eq!(config.server_name, "1.2.3.4");
}

#[test]
fn an_environment_array_for_a_scalar_key_is_refused_with_its_variable() {
    let issue = invalid(
        "",
        &[("AXON_STORAGE__BLOCK_CACHE_MB", r#"["a", "b"]"#)],
        "storage.block_cache_mb",
        &[r#"["a", "b"] is not valid"#, "a whole number"],
    );
    assert_eq!(
        issue.env_var.as_deref(),
        Some("AXON_STORAGE__BLOCK_CACHE_MB")
    );
    assert!(
        issue
            .to_string()
            .starts_with("storage.block_cache_mb (set by AXON_STORAGE__BLOCK_CACHE_MB): ")
    );
}

#[test]
fn a_bad_boolean_from_the_environment_names_key_value_and_variable() {
    let issue = invalid(
        "",
        &[("AXON_REGISTRATION__ENABLED", "yes")],
        "registration.enabled",
        &["\"yes\" is not valid: expected true or false"],
    );
    assert_eq!(issue.env_var.as_deref(), Some("AXON_REGISTRATION__ENABLED"));
}

#[test]
fn reserved_and_foreign_variables_are_skipped() {
    let config = load_str(
        "",
        &[
            ("AXON_CONFIG", "/etc/axon/axon.toml"),
            ("AXON_LOG", "debug"),
            ("AXONX_WHATEVER", "1"),
            ("axon_http__address", "nonsense"),
        ],
    )
    .expect("valid");
    assert_eq!(config, Config::default());
}

#[test]
fn unknown_environment_variables_are_errors() {
    invalid(
        "",
        &[("AXON_HTTP__ADRESS", "x")],
        "AXON_HTTP__ADRESS",
        &[
            "names no configuration key",
            "[http] has no key adress",
            "address, max_request_bytes, request_timeout_secs",
        ],
    );
    invalid(
        "",
        &[("AXON_NOPE__ADDRESS", "x")],
        "AXON_NOPE__ADDRESS",
        &["no section [nope]", "http, tls"],
    );
    invalid(
        "",
        &[("AXON_SERVERNAME", "x")],
        "AXON_SERVERNAME",
        &["no top-level key servername", "server_name"],
    );
    invalid(
        "",
        &[("AXON_HTTP", "x")],
        "AXON_HTTP",
        &["http is a section", "AXON_HTTP__ADDRESS"],
    );
    invalid(
        "",
        &[("AXON_HTTP__ADDRESS__PORT", "1")],
        "AXON_HTTP__ADDRESS__PORT",
        &["AXON_SERVER_NAME or AXON_HTTP__ADDRESS"],
    );
    // A single underscore does not separate a section from its key.
    invalid(
        "",
        &[("AXON_HTTP_ADDRESS", "x")],
        "AXON_HTTP_ADDRESS",
        &["no top-level key"],
    );
}

#[test]
fn unknown_keys_in_the_file_are_errors_naming_the_key() {
    let issue = invalid(
        "[http]\nadress = \"x\"",
        &[],
        "http.adress",
        &[
            "unknown key (did you mean address?)",
            "the keys of [http] are address, max_request_bytes, request_timeout_secs",
        ],
    );
    assert_eq!(issue.env_var, None);
    invalid(
        "servername = \"x\"",
        &[],
        "servername",
        &["did you mean server_name?", "[registration]"],
    );
    invalid(
        "[htp]\naddress = \"x\"",
        &[],
        "htp",
        &["did you mean http?"],
    );
}

#[test]
fn values_of_the_wrong_type_name_key_value_and_type() {
    invalid(
        "[registration]\nenabled = \"yes\"",
        &[],
        "registration.enabled",
        &["\"yes\" is not valid: expected true or false"],
    );
    invalid(
        "[http]\nmax_request_bytes = -5",
        &[],
        "http.max_request_bytes",
        &["-5 is not valid: expected a whole number, 0 or more"],
    );
    invalid(
        "[passwords]\nargon2_iterations = 5000000000",
        &[],
        "passwords.argon2_iterations",
        &["5000000000 is not valid", "0 to 4294967295"],
    );
    invalid(
        "server_name = 5",
        &[],
        "server_name",
        &["5 is not valid: expected a string"],
    );
    invalid(
        "http = 5",
        &[],
        "http",
        &["5 is not valid: expected a table (the [http] section)"],
    );
    invalid(
        "[http.address]\nport = 1",
        &[],
        "http.address",
        &["expected a string"],
    );
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nope.toml");
    let error = check_file(&path).expect_err("missing file");
    assert!(matches!(error, ConfigError::NotFound { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!("config file {} does not exist", path.display())
    );
    assert!(matches!(
        load(Some(&path), std::iter::empty()),
        Err(ConfigError::NotFound { .. })
    ));
}

#[test]
fn a_directory_is_not_a_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let error = check_file(dir.path()).expect_err("directory");
    assert!(matches!(error, ConfigError::Read { .. }), "{error:?}");
    assert!(
        error.to_string().starts_with("cannot read config file"),
        "{error}"
    );
}

#[test]
fn a_syntax_error_names_the_file_and_the_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("axon.toml");
    std::fs::write(&path, "server_name = \"a\"\n[http\n").expect("write");
    let error = check_file(&path).expect_err("bad TOML");
    assert!(matches!(error, ConfigError::Syntax { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("line 2"), "{message}");
}

#[test]
fn check_file_reads_a_file_and_ignores_the_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("axon.toml");
    std::fs::write(&path, "server_name = \"example.org\"\n").expect("write");
    let config = check_file(&path).expect("valid");
    assert_eq!(config.server_name, "example.org");
    let with_env = load(
        Some(&path),
        [("AXON_SERVER_NAME".to_owned(), "other.org".to_owned())],
    )
    .expect("valid");
    assert_eq!(with_env.server_name, "other.org");
}

#[test]
fn debug_output_hides_the_shared_secret() {
    let config = load_str("[registration]\nshared_secret = \"hunter2\"", &[]).expect("valid");
    let debug = format!("{config:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");
}
