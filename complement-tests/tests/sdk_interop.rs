//! Real Matrix client SDKs against a real `axon`: matrix-js-sdk (what
//! Element uses) and matrix-nio each register an account, log in with its
//! password, ask `whoami` and log out, through their own client APIs.
//!
//! The clients live in `complement-tests/interop/` and are installed by
//! `complement-tests/interop/install.sh`. A missing or stale install fails
//! the test with that instruction rather than skipping it, so CI cannot
//! pass without having run the clients.
//!
//! Environment overrides:
//! - `AXON_INTEROP_NODE`: the Node (>= 22) binary for matrix-js-sdk, instead
//!   of the one `install.sh` puts in `interop/js/node_modules/.bin/node`.
//! - `AXON_NIO_PYTHON`: the Python with matrix-nio installed, instead of
//!   `interop/nio/.venv/bin/python`.
#![allow(
    clippy::panic,
    reason = "the helpers here report a failed test by panicking with context"
)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use axon_complement_tests::{Homeserver, ServerOptions, random_string};
use serde_json::Value;
use tokio::process::Command;

/// How long one client script may run: it makes about eight requests, so
/// this only trips on a hang.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

const INSTALL_HINT: &str = "run complement-tests/interop/install.sh";

/// A client script and the interpreter that runs it.
struct ClientScript {
    /// What the failure messages call it.
    name: &'static str,
    interpreter: PathBuf,
    script: PathBuf,
    /// The client library version the install should have, from the
    /// project's pin; the script reports the version it actually loaded.
    pinned_version: String,
}

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop")
}

/// `$var` if set, else `default`.
fn path_from_env(var: &str, default: PathBuf) -> PathBuf {
    std::env::var_os(var).map_or(default, PathBuf::from)
}

/// Fails the test unless `path` exists, naming what it is for.
fn require_installed(path: &Path, what: &str) {
    assert!(
        path.exists(),
        "{what} is not installed ({} is missing): {INSTALL_HINT}",
        path.display()
    );
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn matrix_js_sdk() -> ClientScript {
    let dir = interop_dir().join("js");
    let interpreter = path_from_env(
        "AXON_INTEROP_NODE",
        dir.join("node_modules").join(".bin").join("node"),
    );
    require_installed(&interpreter, "Node 22 for matrix-js-sdk");
    require_installed(
        &dir.join("node_modules").join("matrix-js-sdk"),
        "matrix-js-sdk",
    );
    let manifest: Value = serde_json::from_str(&read(&dir.join("package.json")))
        .unwrap_or_else(|e| panic!("interop/js/package.json is not JSON: {e}"));
    let pinned_version = manifest
        .pointer("/dependencies/matrix-js-sdk")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("interop/js/package.json does not pin matrix-js-sdk"))
        .to_owned();
    ClientScript {
        name: "matrix-js-sdk",
        interpreter,
        script: dir.join("register_login.mjs"),
        pinned_version,
    }
}

fn matrix_nio() -> ClientScript {
    let dir = interop_dir().join("nio");
    let interpreter = path_from_env(
        "AXON_NIO_PYTHON",
        dir.join(".venv").join("bin").join("python"),
    );
    require_installed(&interpreter, "the matrix-nio virtualenv");
    let requirements = read(&dir.join("requirements.txt"));
    let pinned_version = requirements
        .lines()
        .find_map(|line| line.trim().strip_prefix("matrix-nio=="))
        .unwrap_or_else(|| panic!("interop/nio/requirements.txt does not pin matrix-nio"))
        .to_owned();
    ClientScript {
        name: "matrix-nio",
        interpreter,
        script: dir.join("register_login.py"),
        pinned_version,
    }
}

/// Runs `client`'s `register_login` script against `server` and returns
/// the JSON object it prints; fails the test with the script's output if it
/// fails, hangs or prints something else.
async fn run_register_login(
    client: &ClientScript,
    server: &Homeserver,
    username: &str,
    password: &str,
) -> Value {
    let Some(script_dir) = client.script.parent() else {
        panic!("{} has no parent directory", client.script.display());
    };
    let mut command = Command::new(&client.interpreter);
    command
        .arg(&client.script)
        .args([server.base_url().as_str(), username, password])
        // Node resolves `matrix-js-sdk` from the script's node_modules.
        .current_dir(script_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // On timeout the future is dropped: take the client down with it.
        .kill_on_drop(true);
    let output = match tokio::time::timeout(SCRIPT_TIMEOUT, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => panic!(
            "cannot run {} ({}): {e}; {INSTALL_HINT}",
            client.name,
            client.interpreter.display()
        ),
        Err(_) => panic!(
            "{} did not finish within {SCRIPT_TIMEOUT:?} against {}",
            client.name,
            server.base_url()
        ),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} failed ({}).\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n\
         (a missing module or a too-old runtime means: {INSTALL_HINT})",
        client.name,
        output.status
    );
    let last_line = stdout.lines().rev().find(|line| !line.trim().is_empty());
    let result: Value = last_line
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| {
            panic!(
                "{} printed no JSON result.\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
                client.name
            )
        });
    assert_eq!(
        result["client_version"].as_str(),
        Some(client.pinned_version.as_str()),
        "{} loaded a different version than pinned: {INSTALL_HINT}",
        client.name
    );
    result
}

/// Asserts that each field of `result` is the given string, reporting the
/// whole result on a mismatch.
#[track_caller]
fn check_fields(result: &Value, expected: &[(&str, &str)]) {
    for (field, want) in expected {
        assert_eq!(
            result[field].as_str(),
            Some(*want),
            "field {field:?} of the client's result: {result:#}"
        );
    }
}

/// The string field `field` of `result`, non-empty.
#[track_caller]
fn non_empty(result: &Value, field: &str) -> String {
    match result[field].as_str() {
        Some(value) if !value.is_empty() => value.to_owned(),
        _ => panic!("field {field:?} is missing or empty: {result:#}"),
    }
}

/// Checks what both clients report: the account's id everywhere, the login
/// device is a new one and is the one `whoami` names.
#[track_caller]
fn check_account(result: &Value, user_id: &str) {
    let device_id = non_empty(result, "device_id");
    let register_device_id = non_empty(result, "register_device_id");
    assert_ne!(
        device_id, register_device_id,
        "logging in without a device id must create a new device: {result:#}"
    );
    check_fields(
        result,
        &[
            ("register_user_id", user_id),
            ("user_id", user_id),
            ("whoami_user_id", user_id),
            ("whoami_device_id", &device_id),
        ],
    );
}

/// A server with open registration (no token), which is what these flows
/// need; the harness default, spelled out so the test does not depend on it.
async fn open_registration_server() -> Homeserver {
    Homeserver::start(
        ServerOptions::new().with_toml("[registration]\nenabled = true\nrequire_token = false"),
    )
    .await
}

#[tokio::test]
async fn matrix_js_sdk_registers_and_logs_in() {
    let client = matrix_js_sdk();
    let server = open_registration_server().await;
    let username = format!("js{}", random_string(8));
    let password = random_string(16);

    let result = run_register_login(&client, &server, &username, &password).await;

    let user_id = server.user_id(&username);
    check_account(&result, &user_id);
    // The SDK's interactive-auth driver got a session from the first 401
    // and echoed it with the dummy stage.
    non_empty(&result, "uia_session");
    check_fields(
        &result,
        &[
            ("client_user_id", &user_id),
            ("wrong_password", "403 M_FORBIDDEN"),
            ("after_logout", "401 M_UNKNOWN_TOKEN"),
        ],
    );
}

#[tokio::test]
async fn matrix_nio_registers_and_logs_in() {
    let client = matrix_nio();
    let server = open_registration_server().await;
    let username = format!("nio{}", random_string(8));
    let password = random_string(16);

    let result = run_register_login(&client, &server, &username, &password).await;

    check_account(&result, &server.user_id(&username));
    check_fields(
        &result,
        &[
            ("wrong_password", "M_FORBIDDEN"),
            ("after_logout", "M_UNKNOWN_TOKEN"),
        ],
    );
}
