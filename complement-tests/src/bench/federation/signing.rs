//! The peer's signing key: `X-Matrix` request signatures, its
//! `/_matrix/key/v2/server` answer, and hashed and signed PDUs.

use axon_complement_tests::canonical_json;
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ruma::CanonicalJsonObject;
use ruma::room_version_rules::RoomVersionRules;
use ruma::signatures::{Ed25519KeyPair, KeyPair as _};
use serde_json::{Value, json};

use crate::bench::error::BenchError;

/// A server name and its ed25519 key.
pub(crate) struct Signer {
    server_name: String,
    key: Ed25519KeyPair,
}

impl std::fmt::Debug for Signer {
    // The private key stays out of any output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("server_name", &self.server_name)
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Unsupported(format!("{what}: {e}"))
}

impl Signer {
    /// A fresh key for `server_name`, with a random key version.
    pub(crate) fn generate(server_name: String) -> Result<Signer, BenchError> {
        let der = Ed25519KeyPair::generate();
        let version = format!("fb{}", axon_complement_tests::random_string(6));
        let key = Ed25519KeyPair::from_der(&der, version)
            .map_err(|e| failed("loading the generated key", e))?;
        Ok(Signer { server_name, key })
    }

    /// The server name this key signs for.
    pub(crate) fn server_name(&self) -> &str {
        &self.server_name
    }

    /// `ed25519:<version>`.
    pub(crate) fn key_id(&self) -> String {
        format!("ed25519:{}", self.key.version())
    }

    /// An `Authorization` header for a request to `destination`; `uri` is
    /// the path and query exactly as sent.
    pub(crate) fn x_matrix(
        &self,
        method: &str,
        uri: &str,
        destination: &str,
        content: Option<&Value>,
    ) -> String {
        let mut object = json!({
            "method": method,
            "uri": uri,
            "origin": self.server_name,
            "destination": destination,
        });
        if let Some(content) = content {
            object["content"] = content.clone();
        }
        let signature = self.key.sign(canonical_json(&object).as_bytes());
        let sig = STANDARD_NO_PAD.encode(signature.as_bytes());
        format!(
            r#"X-Matrix origin="{}",destination="{destination}",key="{}",sig="{sig}""#,
            self.server_name,
            self.key_id()
        )
    }

    /// The body of `GET /_matrix/key/v2/server`, valid until
    /// `valid_until_ts` and signed by the key it publishes.
    pub(crate) fn key_response(&self, valid_until_ts: u64) -> Value {
        let public = STANDARD_NO_PAD.encode(self.key.public_key());
        let mut object = json!({
            "server_name": self.server_name,
            "valid_until_ts": valid_until_ts,
            "verify_keys": { self.key_id(): { "key": public } },
            "old_verify_keys": {},
        });
        let signature = self.key.sign(canonical_json(&object).as_bytes());
        object["signatures"] = json!({
            self.server_name.clone(): {
                self.key_id(): STANDARD_NO_PAD.encode(signature.as_bytes())
            }
        });
        object
    }

    /// Adds the content hash and this server's signature to `event` (a PDU
    /// without `hashes` and `signatures`) under `rules`; returns the event
    /// id (the reference hash) and the signed PDU.
    pub(crate) fn sign_event(
        &self,
        rules: &RoomVersionRules,
        event: Value,
    ) -> Result<(String, Value), BenchError> {
        let mut object: CanonicalJsonObject = serde_json::from_value(event)
            .map_err(|e| failed("an event that is not canonical JSON", e))?;
        ruma::signatures::hash_and_sign_event(
            &self.server_name,
            &self.key,
            &mut object,
            &rules.redaction,
        )
        .map_err(|e| failed("signing an event", e))?;
        let event_id = event_id(&object, rules)?;
        let pdu = serde_json::to_value(&object).map_err(|e| failed("serialising an event", e))?;
        Ok((event_id, pdu))
    }

    /// This key as ruma's verifier wants it, for tests.
    #[cfg(test)]
    pub(crate) fn public_key_map(&self) -> ruma::signatures::PublicKeyMap {
        use ruma::serde::Base64;
        let mut keys = ruma::signatures::PublicKeySet::new();
        keys.insert(self.key_id(), Base64::new(self.key.public_key().to_vec()));
        let mut map = ruma::signatures::PublicKeyMap::new();
        map.insert(self.server_name.clone(), keys);
        map
    }
}

/// The id of an event of a room version with hash-based ids (3 and later).
fn event_id(object: &CanonicalJsonObject, rules: &RoomVersionRules) -> Result<String, BenchError> {
    let hash = ruma::signatures::reference_hash(object, rules)
        .map_err(|e| failed("computing an event's reference hash", e))?;
    Ok(format!("${hash}"))
}

/// The id of a PDU received from another server (it carries none in rooms
/// of version 3 and later).
pub(crate) fn event_id_of(pdu: &Value, rules: &RoomVersionRules) -> Result<String, BenchError> {
    let object: CanonicalJsonObject = serde_json::from_value(pdu.clone())
        .map_err(|e| failed("a received PDU that is not canonical JSON", e))?;
    event_id(&object, rules)
}

#[cfg(test)]
mod tests {
    use ruma::RoomVersionId;

    use super::*;

    #[test]
    fn the_key_answer_is_self_signed() {
        let signer = Signer::generate("127.0.0.1:1".to_owned()).unwrap();
        let answer = signer.key_response(42);
        assert_eq!(answer["valid_until_ts"], 42);
        let object: CanonicalJsonObject = serde_json::from_value(answer).unwrap();
        ruma::signatures::verify_json(&signer.public_key_map(), &object).unwrap();
    }

    #[test]
    fn x_matrix_signs_the_request_as_the_spec_lays_it_out() {
        let signer = Signer::generate("127.0.0.1:1".to_owned()).unwrap();
        let body = json!({ "pdus": [] });
        let header = signer.x_matrix("PUT", "/_matrix/federation/v1/send/t1", "hs", Some(&body));
        let sig = header
            .split("sig=\"")
            .nth(1)
            .and_then(|rest| rest.strip_suffix('"'))
            .unwrap();
        let mut object: CanonicalJsonObject = serde_json::from_value(json!({
            "method": "PUT",
            "uri": "/_matrix/federation/v1/send/t1",
            "origin": "127.0.0.1:1",
            "destination": "hs",
            "content": body,
        }))
        .unwrap();
        object.insert(
            "signatures".to_owned(),
            serde_json::from_value(json!({ "127.0.0.1:1": { signer.key_id(): sig } })).unwrap(),
        );
        ruma::signatures::verify_json(&signer.public_key_map(), &object).unwrap();
        assert!(
            header.starts_with(r#"X-Matrix origin="127.0.0.1:1",destination="hs",key="ed25519:fb"#)
        );
    }

    #[test]
    fn a_received_pdu_gets_the_id_its_sender_computed() {
        let signer = Signer::generate("127.0.0.1:1".to_owned()).unwrap();
        let rules = RoomVersionId::V10.rules().unwrap();
        let event = json!({
            "room_id": "!r:hs", "sender": "@p:127.0.0.1:1", "type": "m.room.message",
            "content": { "body": "x" }, "auth_events": [], "prev_events": [], "depth": 1,
            "origin_server_ts": 1,
        });
        let (id, mut pdu) = signer.sign_event(&rules, event).unwrap();
        // Servers add `unsigned` on the way: it is not part of the id.
        pdu["unsigned"] = json!({ "age": 5 });
        assert_eq!(event_id_of(&pdu, &rules).unwrap(), id);
    }
}
