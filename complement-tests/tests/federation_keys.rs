//! Federation transport between two `axon` processes: TLS on loopback with a test CA, server
//! names pinned to addresses, keys fetched through the notary, and `X-Matrix` request
//! authentication (accepted when signed by the origin's key, refused otherwise).
//!
//! The test plays server A when it signs requests: it signs with A's own key, read from A's
//! data directory, so B has to fetch A's key from A over TLS to accept them.
#![allow(
    clippy::panic,
    reason = "test helpers report failures by panicking with context"
)]

mod federation_support;

use axon_complement_tests::{
    Homeserver, Response, assert_matrix_error, canonical_json, encode_path_segment,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use reqwest::Method;
use serde_json::{Value, json};

use federation_support::{A, B, Pki, free_port, options};

/// Servers A and B, each able to reach the other over TLS.
async fn start_pair(b_extra: &str) -> (Pki, Homeserver, Homeserver) {
    let pki = Pki::new(&[A, B]);
    let (a_port, b_port) = (free_port(), free_port());
    let a = Homeserver::start(options(&pki, A, a_port, &[(B, b_port)], "")).await;
    let b = Homeserver::start(options(&pki, B, b_port, &[(A, a_port)], b_extra)).await;
    (pki, a, b)
}

fn unbase64(text: &str) -> Vec<u8> {
    STANDARD_NO_PAD
        .decode(text.trim_end_matches('='))
        .unwrap_or_else(|e| panic!("invalid base64 {text:?}: {e}"))
}

/// The server's signing key and key id, read from its key file (`ed25519 <version>
/// <base64 PKCS#8>`): the 32-byte seed follows the DER octet string header `04 22 04 20`.
fn signing_key_of(hs: &Homeserver) -> (String, SigningKey) {
    let path = hs.data_dir().join("signing.key");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let fields: Vec<&str> = text.split_whitespace().collect();
    let [_, version, encoded] = fields.as_slice() else {
        panic!("unexpected key file {text:?}");
    };
    let der = unbase64(encoded);
    let start = der
        .windows(4)
        .position(|window| window == [0x04, 0x22, 0x04, 0x20])
        .unwrap_or_else(|| panic!("no ed25519 seed in the key file"))
        + 4;
    let seed: [u8; 32] = der[start..start + 32]
        .try_into()
        .unwrap_or_else(|_| panic!("short seed"));
    (format!("ed25519:{version}"), SigningKey::from_bytes(&seed))
}

/// An `X-Matrix` header for a request signed by `origin` with `key`.
fn x_matrix(
    key_id: &str,
    key: &SigningKey,
    method: &str,
    uri: &str,
    origin: &str,
    destination: &str,
    content: Option<&Value>,
) -> String {
    let mut object = json!({
        "method": method,
        "uri": uri,
        "origin": origin,
        "destination": destination,
    });
    if let Some(content) = content {
        object["content"] = content.clone();
    }
    let signature: Signature = key.sign(canonical_json(&object).as_bytes());
    let sig = STANDARD_NO_PAD.encode(signature.to_bytes());
    format!(r#"X-Matrix origin="{origin}",destination="{destination}",key="{key_id}",sig="{sig}""#)
}

async fn get_with(hs: &Homeserver, path: &str, authorization: Option<&str>) -> Response {
    let headers: Vec<(&str, &str)> = authorization
        .map(|value| vec![("Authorization", value)])
        .unwrap_or_default();
    hs.client().send(Method::GET, path, None, &headers).await
}

/// Checks `signatures[signer]` of a key response with `signer`'s published key.
fn assert_signed_by(response: &Value, signer: &str, published: &Response) {
    let (key_id, key) = published.body["verify_keys"]
        .as_object()
        .and_then(|keys| keys.iter().next())
        .unwrap_or_else(|| panic!("no verify_keys: {}", published.describe()));
    let key_bytes: [u8; 32] = unbase64(key["key"].as_str().unwrap_or_default())
        .try_into()
        .unwrap_or_else(|_| panic!("bad key length"));
    let key = VerifyingKey::from_bytes(&key_bytes).unwrap_or_else(|e| panic!("bad key: {e}"));
    let signature = response["signatures"][signer][key_id]
        .as_str()
        .unwrap_or_else(|| panic!("no signature by {signer} {key_id} in {response}"));
    let signature: [u8; 64] = unbase64(signature)
        .try_into()
        .unwrap_or_else(|_| panic!("bad signature length"));
    let mut unsigned = response.clone();
    if let Some(object) = unsigned.as_object_mut() {
        object.remove("signatures");
        object.remove("unsigned");
    }
    key.verify(
        canonical_json(&unsigned).as_bytes(),
        &Signature::from_bytes(&signature),
    )
    .unwrap_or_else(|e| panic!("signature by {signer} does not verify: {e}"));
}

#[tokio::test]
async fn notary_serves_the_other_servers_keys_signed_by_both() {
    let (_pki, a, b) = start_pair("").await;
    let a_keys = a.client().get("/_matrix/key/v2/server").await;
    a_keys.assert_ok();
    let b_keys = b.client().get("/_matrix/key/v2/server").await;
    b_keys.assert_ok();

    // A fetches B's keys from B over TLS, then counter-signs them.
    let resp = a
        .client()
        .post("/_matrix/key/v2/query", json!({"server_keys": {B: {}}}))
        .await;
    resp.assert_ok();
    let responses = resp.body["server_keys"]
        .as_array()
        .unwrap_or_else(|| panic!("no server_keys: {}", resp.describe()));
    assert_eq!(responses.len(), 1, "{}", resp.describe());
    let notarised = &responses[0];
    assert_eq!(notarised["server_name"], B);
    assert_eq!(notarised["verify_keys"], b_keys.body["verify_keys"]);
    assert_signed_by(notarised, B, &b_keys);
    assert_signed_by(notarised, A, &a_keys);

    // The GET form answers the same, from A's cache.
    let resp = a.client().get(&format!("/_matrix/key/v2/query/{B}")).await;
    resp.assert_ok();
    let notarised = &resp.body["server_keys"][0];
    assert_signed_by(notarised, B, &b_keys);
    assert_signed_by(notarised, A, &a_keys);

    // A server that cannot be reached yields no keys, not an error (nothing listens on port
    // 1, so the connection is refused at once).
    let resp = a
        .client()
        .post(
            "/_matrix/key/v2/query",
            json!({"server_keys": {"127.0.0.1:1": {}}}),
        )
        .await;
    resp.assert_ok();
    assert_eq!(resp.body["server_keys"], json!([]), "{}", resp.describe());
}

#[tokio::test]
async fn federation_requests_need_a_valid_signature_for_this_server() {
    let (_pki, a, b) = start_pair("deny_servers = [\"*.denied.test\"]").await;
    let alice = b.client().register("alice", "correct horse battery").await;
    b.client()
        .with_token(&alice.access_token)
        .put(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                encode_path_segment(&alice.user_id)
            ),
            json!({"displayname": "Alice"}),
        )
        .await
        .assert_ok();
    let uri = format!(
        "/_matrix/federation/v1/query/profile?user_id={}",
        encode_path_segment(&alice.user_id)
    );
    let (key_id, key) = signing_key_of(&a);

    // Signed by A for B: B fetches A's key from A and accepts.
    let auth = x_matrix(&key_id, &key, "GET", &uri, A, B, None);
    let resp = get_with(&b, &uri, Some(&auth)).await;
    resp.assert_ok();
    assert_eq!(resp.str_at("/displayname"), "Alice");

    // No signature.
    let resp = get_with(&b, &uri, None).await;
    assert_matrix_error(&resp, 401, "M_UNAUTHORIZED");
    // Signed by another key under A's key id.
    let impostor = SigningKey::from_bytes(&[7; 32]);
    let auth = x_matrix(&key_id, &impostor, "GET", &uri, A, B, None);
    assert_matrix_error(
        &get_with(&b, &uri, Some(&auth)).await,
        401,
        "M_UNAUTHORIZED",
    );
    // A signature over another request.
    let auth = x_matrix(
        &key_id,
        &key,
        "GET",
        "/_matrix/federation/v1/query/profile?user_id=x",
        A,
        B,
        None,
    );
    assert_matrix_error(
        &get_with(&b, &uri, Some(&auth)).await,
        401,
        "M_UNAUTHORIZED",
    );
    // Meant for another server.
    let auth = x_matrix(&key_id, &key, "GET", &uri, A, "hs-c.test", None);
    assert_matrix_error(
        &get_with(&b, &uri, Some(&auth)).await,
        401,
        "M_UNAUTHORIZED",
    );
    // A key A does not have.
    let auth = x_matrix("ed25519:nope", &key, "GET", &uri, A, B, None);
    assert_matrix_error(
        &get_with(&b, &uri, Some(&auth)).await,
        401,
        "M_UNAUTHORIZED",
    );
    // A server B's configuration refuses.
    let auth = x_matrix(&key_id, &key, "GET", &uri, "evil.denied.test", B, None);
    assert_matrix_error(&get_with(&b, &uri, Some(&auth)).await, 403, "M_FORBIDDEN");

    // The unauthenticated federation endpoint stays open.
    get_with(&b, "/_matrix/federation/v1/version", None)
        .await
        .assert_ok();
}
