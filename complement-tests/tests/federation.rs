//! The server-server endpoints in the foundation: the key server and the
//! federation version.
#![allow(
    clippy::panic,
    reason = "test helpers report failures by panicking with context"
)]

use axon_complement_tests::{Homeserver, ServerOptions, canonical_json, now_ms};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ed25519_dalek::{Signature, VerifyingKey};

/// Decodes unpadded base64 as Matrix uses it (padding tolerated).
fn unbase64(text: &str) -> Vec<u8> {
    STANDARD_NO_PAD
        .decode(text.trim_end_matches('='))
        .unwrap_or_else(|e| panic!("invalid base64 {text:?}: {e}"))
}

#[tokio::test]
async fn key_server_publishes_a_self_signed_ed25519_key() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let resp = hs.client().get("/_matrix/key/v2/server").await;
    resp.assert_ok();
    assert_eq!(resp.str_at("/server_name"), hs.server_name());
    assert!(
        resp.u64_at("/valid_until_ts") > now_ms(),
        "valid_until_ts is not in the future: {}",
        resp.describe()
    );

    let verify_keys = resp.body["verify_keys"]
        .as_object()
        .unwrap_or_else(|| panic!("no verify_keys: {}", resp.describe()));
    let (key_id, key) = verify_keys
        .iter()
        .find(|(id, _)| id.starts_with("ed25519:"))
        .unwrap_or_else(|| panic!("no ed25519 key: {}", resp.describe()));
    let key_bytes: [u8; 32] = unbase64(key["key"].as_str().unwrap_or_default())
        .try_into()
        .unwrap_or_else(|bytes: Vec<u8>| panic!("key is {} bytes, not 32", bytes.len()));
    let key = VerifyingKey::from_bytes(&key_bytes).unwrap_or_else(|e| panic!("bad key: {e}"));

    let signature = resp.body["signatures"][hs.server_name()][key_id]
        .as_str()
        .unwrap_or_else(|| panic!("no signature by {key_id}: {}", resp.describe()));
    let signature: [u8; 64] = unbase64(signature)
        .try_into()
        .unwrap_or_else(|bytes: Vec<u8>| panic!("signature is {} bytes, not 64", bytes.len()));
    let signature = Signature::from_bytes(&signature);

    let mut signed = resp.body.clone();
    let Some(object) = signed.as_object_mut() else {
        panic!("the key response is not an object");
    };
    object.remove("signatures");
    object.remove("unsigned");
    let message = canonical_json(&signed);
    key.verify_strict(message.as_bytes(), &signature)
        .unwrap_or_else(|e| panic!("signature does not verify over {message}: {e}"));
    // A control: the same signature does not verify a different document.
    let tampered = message.replacen(&hs.server_name(), "evil.example.org", 1);
    assert!(key.verify_strict(tampered.as_bytes(), &signature).is_err());
}

#[tokio::test]
async fn federation_version_names_the_server() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let resp = hs.client().get("/_matrix/federation/v1/version").await;
    resp.assert_ok();
    assert!(!resp.str_at("/server/name").is_empty());
    assert!(!resp.str_at("/server/version").is_empty());
}
