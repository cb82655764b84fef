//! End-to-end encryption with the client stack Element uses: matrix-js-sdk
//! with its Rust crypto (`@matrix-org/matrix-sdk-crypto-wasm`), two users on
//! one `axon`, and two users on two `axon` servers federating over TLS.
//!
//! `interop/js/e2ee.mjs` drives both users through the SDK: an encrypted
//! (megolm) room, a message each way that the other decrypts, cross-signing
//! bootstrapped by both, and an interactive SAS verification over to-device
//! messages after which each trusts the other's identity. This test checks
//! what the SDK reports, then checks the server's side of it with its own
//! sessions: the room holds only ciphertext, and `/keys/query` serves each
//! user's cross-signing keys with the signatures the verification uploaded,
//! intact (they verify against the signer's public key). Across federation
//! each user's SDK talks plain HTTP to its own server, and each server's
//! copy of the room and of the other user's keys is checked.
//!
//! The clients are installed by `complement-tests/interop/install.sh`; a
//! missing or stale install fails the test with that instruction.
//! `AXON_INTEROP_NODE` overrides the Node (>= 22) binary.
#![allow(
    clippy::panic,
    reason = "the helpers here report a failed test by panicking with context"
)]

mod federation_support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use axon_complement_tests::{
    Client, Homeserver, ServerOptions, Session, canonical_json, encode_path_segment, random_string,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ed25519_dalek::{Signature, VerifyingKey};
use federation_support::{A, B, Pki, free_port, options};
use serde_json::{Value, json};
use tokio::process::Command;

/// How long the whole script may run. It takes seconds; each of its waits
/// has its own one-minute deadline, so this only trips on a hang outside
/// them (a busy CI machine still fits many times over).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

const INSTALL_HINT: &str = "run complement-tests/interop/install.sh";

/// How many trailing lines of the script's log (the SDKs' own logging) a
/// failure shows: enough for the last few requests and the error.
const LOG_TAIL_LINES: usize = 150;

const MEGOLM: &str = "m.megolm.v1.aes-sha2";

/// Quick federation retries, so a message that meets a peer still starting
/// is not held back by a long backoff.
const SENDER: &str = "[federation_sender]\nretry_initial_ms = 50\nretry_max_ms = 500";

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("interop")
        .join("js")
}

/// Fails the test unless `path` exists, naming what it is for.
fn require_installed(path: &Path, what: &str) {
    assert!(
        path.exists(),
        "{what} is not installed ({} is missing): {INSTALL_HINT}",
        path.display()
    );
}

/// The versions `interop/js/package.json` pins, by package name.
fn pinned_version(package: &str) -> String {
    let path = js_dir().join("package.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let manifest: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    manifest["dependencies"][package]
        .as_str()
        .unwrap_or_else(|| panic!("interop/js/package.json does not pin {package}"))
        .to_owned()
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `e2ee.mjs` for alice's account on `alice_server` and bob's on
/// `bob_server` (which may be the same server) and returns the JSON object
/// it prints; fails the test with the end of its log if it fails or hangs.
async fn run_e2ee_script(
    alice_server: &Homeserver,
    alice: (&str, &str),
    bob_server: &Homeserver,
    bob: (&str, &str),
) -> Value {
    let dir = js_dir();
    let node = std::env::var_os("AXON_INTEROP_NODE").map_or_else(
        || dir.join("node_modules").join(".bin").join("node"),
        PathBuf::from,
    );
    require_installed(&node, "Node 22 for matrix-js-sdk");
    require_installed(
        &dir.join("node_modules").join("matrix-js-sdk"),
        "matrix-js-sdk",
    );
    require_installed(
        &dir.join("node_modules")
            .join("@matrix-org")
            .join("matrix-sdk-crypto-wasm"),
        "matrix-sdk-crypto-wasm",
    );
    let (alice_url, bob_url) = (alice_server.base_url(), bob_server.base_url());
    let mut command = Command::new(&node);
    command
        .arg(dir.join("e2ee.mjs"))
        .args([alice_url.as_str(), alice.0, alice.1, bob.0, bob.1]);
    if bob_url != alice_url {
        command.arg(&bob_url);
    }
    command
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // On timeout the future is dropped: take the script down with it.
        .kill_on_drop(true);
    let output = match tokio::time::timeout(SCRIPT_TIMEOUT, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => panic!("cannot run {}: {e}; {INSTALL_HINT}", node.display()),
        Err(_) => panic!("e2ee.mjs did not finish within {SCRIPT_TIMEOUT:?}"),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "e2ee.mjs failed ({}).\n--- stdout ---\n{stdout}\n--- last {LOG_TAIL_LINES} lines of \
         stderr ---\n{}\n(a missing module or a too-old runtime means: {INSTALL_HINT})",
        output.status,
        tail(&stderr, LOG_TAIL_LINES)
    );
    let result: Value = stdout
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| {
            panic!(
                "e2ee.mjs printed no JSON result.\n--- stdout ---\n{stdout}\n--- stderr tail \
                 ---\n{}",
                tail(&stderr, LOG_TAIL_LINES)
            )
        });
    for (field, package) in [
        ("client_version", "matrix-js-sdk"),
        ("crypto_wasm_version", "@matrix-org/matrix-sdk-crypto-wasm"),
    ] {
        assert_eq!(
            result[field].as_str(),
            Some(pinned_version(package).as_str()),
            "e2ee.mjs loaded another {package} than pinned: {INSTALL_HINT}"
        );
    }
    result
}

/// The string at `pointer` in `value`, non-empty.
#[track_caller]
fn string_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    match value.pointer(pointer).and_then(Value::as_str) {
        Some(s) if !s.is_empty() => s,
        _ => panic!("{pointer} is missing or empty in {value:#}"),
    }
}

/// Asserts that `object` (a key object from `/keys/query`) carries a
/// signature by `signer`'s key `key` (unpadded base64 ed25519 public key,
/// which is also its key id) that verifies over the object's canonical JSON.
#[track_caller]
fn assert_signed_by(object: &Value, signer: &str, key: &str, what: &str) {
    let key_id = format!("ed25519:{key}");
    let Some(signature) = object
        .pointer(&format!(
            "/signatures/{}/{}",
            pointer_escape(signer),
            pointer_escape(&key_id)
        ))
        .and_then(Value::as_str)
    else {
        panic!("{what} has no signature by {signer} {key_id}: {object:#}");
    };
    let mut unsigned = object.clone();
    if let Some(map) = unsigned.as_object_mut() {
        map.remove("signatures");
        map.remove("unsigned");
    }
    let decode = |text: &str| {
        STANDARD_NO_PAD
            .decode(text)
            .unwrap_or_else(|e| panic!("{what}: {text:?} is not unpadded base64: {e}"))
    };
    let public: [u8; 32] = decode(key)
        .try_into()
        .unwrap_or_else(|_| panic!("{key_id} is not a 32-byte ed25519 key"));
    let public = VerifyingKey::from_bytes(&public)
        .unwrap_or_else(|e| panic!("{key_id} is not an ed25519 point: {e}"));
    let signature = Signature::from_slice(&decode(signature))
        .unwrap_or_else(|e| panic!("{what}: the signature is not 64 bytes: {e}"));
    public
        .verify_strict(canonical_json(&unsigned).as_bytes(), &signature)
        .unwrap_or_else(|e| panic!("{what}: the signature by {key_id} does not verify: {e}"));
}

/// Escapes a JSON pointer segment (`~` and `/`, which base64 key ids contain).
fn pointer_escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// The one key of a cross-signing key object, which must be `expected`.
#[track_caller]
fn assert_cross_signing_key(object: &Value, user: &str, usage: &str, expected: &str) {
    assert_eq!(
        object["user_id"].as_str(),
        Some(user),
        "{usage} key: {object:#}"
    );
    assert_eq!(object["usage"], json!([usage]), "{usage} key: {object:#}");
    let key_id = format!("ed25519:{expected}");
    assert_eq!(
        object["keys"][&key_id].as_str(),
        Some(expected),
        "{usage} key of {user} is not the one the SDK created: {object:#}"
    );
}

/// `POST /keys/query` as `viewer` for `user`'s keys.
async fn query_keys(viewer: &Client, user: &str) -> Value {
    let resp = viewer
        .post(
            "/_matrix/client/v3/keys/query",
            json!({ "device_keys": { user: [] } }),
        )
        .await;
    resp.assert_ok();
    resp.body.clone()
}

/// What `viewer` sees of `subject`'s keys after the verification: the
/// subject's cross-signing keys as its SDK created them, its SDK device
/// signed by its self-signing key, its self-signing key by its master key,
/// and its master key signed by the viewer's user-signing key (the
/// verification's result, which only the viewer is shown).
async fn check_verified_keys(viewer: &Client, viewer_report: &Value, subject_report: &Value) {
    let viewer_id = string_at(viewer_report, "/user_id");
    let subject = string_at(subject_report, "/user_id");
    let device = string_at(subject_report, "/device_id");
    let master = string_at(subject_report, "/cross_signing_keys/master");
    let self_signing = string_at(subject_report, "/cross_signing_keys/self_signing");
    let viewer_user_signing = string_at(viewer_report, "/cross_signing_keys/user_signing");

    let keys = query_keys(viewer, subject).await;
    assert!(
        keys.get("failures").is_none_or(|f| f == &json!({})),
        "{keys:#}"
    );
    let master_key = &keys["master_keys"][subject];
    let self_signing_key = &keys["self_signing_keys"][subject];
    let device_keys = &keys["device_keys"][subject][device];

    assert_cross_signing_key(master_key, subject, "master", master);
    assert_cross_signing_key(self_signing_key, subject, "self_signing", self_signing);
    assert_signed_by(
        self_signing_key,
        subject,
        master,
        &format!("{subject}'s self-signing key"),
    );
    assert_signed_by(
        device_keys,
        subject,
        self_signing,
        &format!("{subject}'s device {device}"),
    );
    assert_signed_by(
        master_key,
        viewer_id,
        viewer_user_signing,
        &format!("{subject}'s master key as {viewer_id} sees it"),
    );
}

/// The room's events as `viewer` reads them through `/messages`, newest
/// first.
async fn room_events(viewer: &Client, room_id: &str) -> Vec<Value> {
    let resp = viewer
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100",
            encode_path_segment(room_id)
        ))
        .await;
    resp.assert_ok();
    resp.body["chunk"]
        .as_array()
        .unwrap_or_else(|| panic!("/messages has no chunk: {}", resp.describe()))
        .clone()
}

/// Asserts that the message the SDK reported as `received` is stored as a
/// megolm `m.room.encrypted` event from `sender`'s SDK device, and that the
/// server never saw its plaintext.
#[track_caller]
fn check_stored_ciphertext(events: &[Value], received: &Value, sender: &Value, plaintext: &str) {
    let event_id = string_at(received, "/event_id");
    let Some(event) = events.iter().find(|e| e["event_id"] == event_id) else {
        panic!("{event_id} is not in /messages: {events:#?}");
    };
    assert_eq!(event["type"], "m.room.encrypted", "{event:#}");
    assert_eq!(
        event["sender"].as_str(),
        Some(string_at(sender, "/user_id"))
    );
    assert_eq!(event["content"]["algorithm"], MEGOLM, "{event:#}");
    assert_eq!(
        event["content"]["device_id"].as_str(),
        Some(string_at(sender, "/device_id")),
        "{event:#}"
    );
    assert!(event["content"]["ciphertext"].is_string(), "{event:#}");
    assert!(
        !event.to_string().contains(plaintext),
        "the stored event holds the plaintext: {event:#}"
    );
}

/// The accounts' registration: the SDKs log in with the password.
const REGISTRATION: &str = "[registration]\nenabled = true\nrequire_token = false";

/// A user registered over plain HTTP, with the password the SDK logs in with.
struct Account {
    name: String,
    password: String,
    /// The test's own session: the SDK logs in with a new device of its own.
    session: Session,
}

async fn account(server: &Homeserver, prefix: &str) -> Account {
    let name = format!("{prefix}{}", random_string(8));
    let password = random_string(16);
    let session = server.client().register(&name, &password).await;
    Account {
        name,
        password,
        session,
    }
}

/// Runs the script for alice on `alice_server` and bob on `bob_server`,
/// checks what the SDKs report and then each server's side: its copy of
/// the room holds only ciphertext, and its user sees the other's keys with
/// the verification's signatures.
async fn check_encrypted_conversation(alice_server: &Homeserver, bob_server: &Homeserver) {
    let alice = account(alice_server, "alice").await;
    let bob = account(bob_server, "bob").await;

    let result = run_e2ee_script(
        alice_server,
        (&alice.name, &alice.password),
        bob_server,
        (&bob.name, &bob.password),
    )
    .await;

    // What the SDKs report.
    let alice_report = &result["alice"];
    let bob_report = &result["bob"];
    assert_eq!(string_at(alice_report, "/user_id"), alice.session.user_id);
    assert_eq!(string_at(bob_report, "/user_id"), bob.session.user_id);
    assert_eq!(
        result["federated"],
        alice_server.base_url() != bob_server.base_url(),
        "{result:#}"
    );
    for (received, sender, body) in [
        (&result["bob_received"], alice_report, &result["alice_body"]),
        (&result["alice_received"], bob_report, &result["bob_body"]),
    ] {
        assert_eq!(received["wire_type"], "m.room.encrypted", "{result:#}");
        assert_eq!(received["algorithm"], MEGOLM, "{result:#}");
        assert_eq!(&received["body"], body, "decrypted plaintext: {result:#}");
        assert_eq!(received["sender_device"], sender["device_id"], "{result:#}");
        // Decrypted before any cross-signing: the sender's device was
        // nobody's to vouch for yet.
        assert_eq!(received["shield"], "RED/UNSIGNED_DEVICE", "{result:#}");
    }
    // The first upload of cross-signing keys needs no user-interactive auth
    // (the spec allows it): the SDK's password callback was not asked.
    assert_eq!(alice_report["cross_signing_uia"], false, "{result:#}");
    assert_eq!(bob_report["cross_signing_uia"], false, "{result:#}");
    assert_eq!(result["alice_trusts_bob_before"], false, "{result:#}");
    assert_eq!(result["bob_trusts_alice_before"], false, "{result:#}");
    assert_eq!(
        result["sas_emoji"].as_array().map(Vec::len),
        Some(7),
        "{result:#}"
    );
    for field in [
        "alice_trusts_bob",
        "bob_trusts_alice",
        "alice_trusts_bob_device",
        "bob_trusts_alice_device",
    ] {
        assert_eq!(result[field], true, "{field}: {result:#}");
    }
    // The same messages, judged again after the verification: no warning.
    assert_eq!(result["bob_shield_after"], "NONE", "{result:#}");
    assert_eq!(result["alice_shield_after"], "NONE", "{result:#}");

    // The servers' side: only ciphertext in each copy of the room...
    let room_id = string_at(&result, "/room_id");
    let alice_client = alice_server.client().as_session(&alice.session);
    let bob_client = bob_server.client().as_session(&bob.session);
    for viewer in [&alice_client, &bob_client] {
        let events = room_events(viewer, room_id).await;
        assert!(
            events
                .iter()
                .any(|e| e["type"] == "m.room.encryption" && e["content"]["algorithm"] == MEGOLM),
            "the room has no megolm m.room.encryption event: {events:#?}"
        );
        check_stored_ciphertext(
            &events,
            &result["bob_received"],
            alice_report,
            string_at(&result, "/alice_body"),
        );
        check_stored_ciphertext(
            &events,
            &result["alice_received"],
            bob_report,
            string_at(&result, "/bob_body"),
        );
    }
    // ...and the cross-signing keys with the verification's signatures.
    check_verified_keys(&alice_client, alice_report, bob_report).await;
    check_verified_keys(&bob_client, bob_report, alice_report).await;
}

#[tokio::test]
async fn matrix_js_sdk_rust_crypto_encrypts_and_cross_signs() {
    let server = Homeserver::start(ServerOptions::new().with_toml(REGISTRATION)).await;
    check_encrypted_conversation(&server, &server).await;
}

/// The same conversation between a user of A and a user of B: the invite
/// and join, the room's events, key queries and one-time key claims, the
/// room keys and the verification's to-device messages, and the device
/// list and cross-signing key changes all cross over federation.
#[tokio::test]
async fn matrix_js_sdk_rust_crypto_encrypts_and_cross_signs_across_federation() {
    let pki = Pki::new(&[A, B]);
    let (a_port, b_port) = (free_port(), free_port());
    let extra = format!("{REGISTRATION}\n{SENDER}");
    let a = Homeserver::start(options(&pki, A, a_port, &[(B, b_port)], &extra)).await;
    let b = Homeserver::start(options(&pki, B, b_port, &[(A, a_port)], &extra)).await;
    check_encrypted_conversation(&a, &b).await;
}
