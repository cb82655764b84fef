//! What survives on disk, and what must never be there.
#![allow(
    clippy::panic,
    reason = "test helpers report failures by panicking with context"
)]

use std::path::{Path, PathBuf};

use axon_complement_tests::{Client, Homeserver, ServerOptions, Session, random_string};
use serde_json::json;

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
                .path();
            if path.is_dir() {
                pending.push(path);
            } else if path.is_file() {
                files.push(path);
            }
        }
    }
    files
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// The files among `files` that contain `needle`.
fn files_containing(files: &[(PathBuf, Vec<u8>)], needle: &str) -> Vec<PathBuf> {
    files
        .iter()
        .filter(|(_, bytes)| contains(bytes, needle.as_bytes()))
        .map(|(path, _)| path.clone())
        .collect()
}

#[tokio::test]
async fn secrets_are_not_stored_or_logged_in_clear() {
    let mut hs =
        Homeserver::start(ServerOptions::new().with_toml("[login]\nrefresh_tokens = true")).await;
    let client = hs.client();
    let localpart = format!("keeper{}", random_string(12));
    let password = format!("pw-{}", random_string(24));
    let registered = client.register(&localpart, &password).await;
    let mut body = Client::password_login_body(&localpart, &password);
    body["refresh_token"] = json!(true);
    let logged_in = Session::from_response(&client.login(body).await);
    let refresh_token = logged_in
        .refresh_token
        .clone()
        .unwrap_or_else(|| panic!("no refresh token issued: {logged_in:?}"));
    hs.stop().await;

    let files: Vec<(PathBuf, Vec<u8>)> = files_under(&hs.data_dir())
        .into_iter()
        .map(|path| {
            let bytes =
                std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            (path, bytes)
        })
        .collect();
    // Positive control: the scan does see what the server stored.
    assert!(
        !files_containing(&files, &localpart).is_empty(),
        "the user name is in none of {} files under the data dir; the scan proves nothing",
        files.len()
    );
    let secrets = [
        ("password", password.as_str()),
        (
            "registration access token",
            registered.access_token.as_str(),
        ),
        ("login access token", logged_in.access_token.as_str()),
        ("refresh token", refresh_token.as_str()),
    ];
    for (what, secret) in secrets {
        let found = files_containing(&files, secret);
        assert!(
            found.is_empty(),
            "the {what} is stored in clear in {found:?}"
        );
    }
    let log = hs.log();
    for (what, secret) in secrets {
        assert!(
            !log.contains(secret),
            "the {what} appears in the server log"
        );
    }
}

#[tokio::test]
async fn users_devices_and_tokens_survive_kill_9() {
    let mut hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    client
        .register("alice", "correct-horse-battery-staple")
        .await;
    let mut body = Client::password_login_body("alice", "correct-horse-battery-staple");
    body["device_id"] = json!("SURVIVOR");
    body["initial_device_display_name"] = json!("Survivor");
    let session = Session::from_response(&client.login(body).await);

    hs.kill9();
    hs.restart().await;

    let whoami = client.as_session(&session).whoami().await;
    whoami.assert_ok();
    assert_eq!(whoami.str_at("/user_id"), session.user_id);
    assert_eq!(whoami.str_at("/device_id"), "SURVIVOR");
    let device = client
        .as_session(&session)
        .get("/_matrix/client/v3/devices/SURVIVOR")
        .await;
    device.assert_ok();
    assert_eq!(device.str_at("/display_name"), "Survivor");
    let again = client
        .login_password("alice", "correct-horse-battery-staple")
        .await;
    assert_eq!(again.user_id, session.user_id);
}
