//! The `axon` command line: version, configuration tooling, refusing bad
//! configuration, offline user creation.
#![allow(
    clippy::panic,
    reason = "test helpers report failures by panicking with context"
)]

use axon_complement_tests::{Homeserver, ServerOptions, assert_matrix_error, run_cli};
use serde_json::json;
use toml::{Table, Value};

const PASSWORD: &str = "correct-horse-battery-staple";
const NEW_TOKEN: &str = "/_synapse/admin/v1/registration_tokens/new";

async fn generated_config() -> String {
    let out = run_cli(["generate-config"], &[]).await;
    out.assert_success();
    out.stdout
}

/// Writes `text` as a config file in a fresh directory and runs
/// `axon check-config --config <file>` on it.
async fn check_config(text: &str) -> axon_complement_tests::CliOutput {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let path = dir.path().join("axon.toml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing the config: {e}"));
    let path = path.display().to_string();
    run_cli(["check-config", "--config", path.as_str()], &[]).await
}

#[tokio::test]
async fn version_prints_the_package_version() {
    let out = run_cli(["--version"], &[]).await;
    out.assert_success();
    assert!(
        out.stdout.contains(env!("CARGO_PKG_VERSION")),
        "version {} not in: {out}",
        env!("CARGO_PKG_VERSION")
    );
}

#[tokio::test]
async fn generated_config_passes_check_config() {
    let text = generated_config().await;
    let parsed: Result<Table, _> = toml::from_str(&text);
    assert!(
        parsed.is_ok(),
        "generate-config printed invalid TOML: {parsed:?}\n{text}"
    );
    check_config(&text).await.assert_success();
}

#[tokio::test]
async fn check_config_names_an_unknown_key() {
    let text = format!("surely_not_a_config_key = 1\n{}", generated_config().await);
    let out = check_config(&text).await;
    out.assert_failure();
    assert!(
        out.combined().contains("surely_not_a_config_key"),
        "the unknown key is not named: {out}"
    );
}

#[tokio::test]
async fn check_config_names_an_invalid_value() {
    let mut config: Table = toml::from_str(&generated_config().await)
        .unwrap_or_else(|e| panic!("generate-config printed invalid TOML: {e}"));
    let http = config
        .entry("http")
        .or_insert_with(|| Value::Table(Table::new()));
    let Value::Table(http) = http else {
        panic!("`http` is not a table in the generated config");
    };
    http.insert("address".into(), "not-an-address".into());
    let out = check_config(&config.to_string()).await;
    out.assert_failure();
    assert!(
        out.combined().contains("address"),
        "the invalid key is not named: {out}"
    );
}

#[tokio::test]
async fn server_refuses_to_start_with_an_unknown_key() {
    let err = Homeserver::try_start(ServerOptions::new().with_toml("surely_not_a_config_key = 1"))
        .await
        .err()
        .unwrap_or_else(|| panic!("axon started with an unknown config key"));
    let status = err
        .exit_status
        .unwrap_or_else(|| panic!("axon did not exit: {err}"));
    assert!(!status.success(), "{err}");
    assert!(err.log.contains("surely_not_a_config_key"), "{err}");
}

#[tokio::test]
async fn server_refuses_to_start_with_an_unsupported_default_room_version() {
    let err = Homeserver::try_start(
        ServerOptions::new().with_toml("[rooms]\ndefault_room_version = \"99\""),
    )
    .await
    .err()
    .unwrap_or_else(|| panic!("axon started with an unsupported default room version"));
    assert!(err.exit_status.is_some_and(|s| !s.success()), "{err}");
    assert!(err.log.contains("rooms.default_room_version"), "{err}");
    assert!(err.log.contains("\"99\""), "{err}");
}

#[tokio::test]
async fn server_refuses_to_start_with_an_invalid_value() {
    let err = Homeserver::try_start(
        ServerOptions::new().with_toml("[passwords]\nargon2_iterations = \"lots\""),
    )
    .await
    .err()
    .unwrap_or_else(|| panic!("axon started with an invalid config value"));
    assert!(err.exit_status.is_some_and(|s| !s.success()), "{err}");
    assert!(err.log.contains("argon2_iterations"), "{err}");
}

#[tokio::test]
async fn environment_overrides_the_config_file() {
    let hs =
        Homeserver::start(ServerOptions::new().with_env("AXON_REGISTRATION__ENABLED", "false"))
            .await;
    let resp = hs
        .client()
        .post(
            "/_matrix/client/v3/register",
            json!({ "username": "alice", "password": PASSWORD }),
        )
        .await;
    assert_matrix_error(&resp, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn register_user_creates_users_offline() {
    let mut hs = Homeserver::start(ServerOptions::new()).await;
    let stopped = hs.stop().await;
    assert!(stopped.success(), "SIGTERM exit: {stopped}");

    hs.cli("register-user", &["--user", "bob", "--password", PASSWORD])
        .await
        .assert_success();
    hs.cli(
        "register-user",
        &["--user", "root", "--password", PASSWORD, "--admin"],
    )
    .await
    .assert_success();
    // The name is taken now.
    hs.cli("register-user", &["--user", "bob", "--password", PASSWORD])
        .await
        .assert_failure();

    hs.restart().await;
    let client = hs.client();
    let bob = client.login_password("bob", PASSWORD).await;
    assert_eq!(bob.user_id, hs.user_id("bob"));
    let root = client.login_password("root", PASSWORD).await;
    client
        .as_session(&root)
        .post(NEW_TOKEN, json!({}))
        .await
        .assert_ok();
    assert_matrix_error(
        &client.as_session(&bob).post(NEW_TOKEN, json!({})).await,
        403,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn create_registration_token_works_offline() {
    let mut hs =
        Homeserver::start(ServerOptions::new().with_toml("[registration]\nrequire_token = true"))
            .await;
    let stopped = hs.stop().await;
    assert!(stopped.success(), "SIGTERM exit: {stopped}");

    let created = hs
        .cli(
            "create-registration-token",
            &["--uses", "1", "--expires-in-days", "7"],
        )
        .await;
    created.assert_success();
    let token = created.stdout.trim().to_owned();
    assert!(!token.is_empty(), "no token printed");
    hs.cli("create-registration-token", &["--token", "bad token!"])
        .await
        .assert_failure();

    hs.restart().await;
    let client = hs.client();
    let alice = client.register_with_token("alice", PASSWORD, &token).await;
    assert_eq!(alice.user_id, hs.user_id("alice"));
    // One use only.
    let again = client
        .register_with(
            json!({ "username": "bob", "password": PASSWORD }),
            &axon_complement_tests::Auth::dummy().with_registration_token(&token),
        )
        .await;
    again.assert_status(401);
    assert!(
        again.body.get("access_token").is_none(),
        "{}",
        again.describe()
    );
}
