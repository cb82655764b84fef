//! Events other servers hand us outside `/send` (join answers, invites, backfill), checked
//! by the inbound pipeline's [`verify_pdu`]; this server's signature added to events signed
//! by another server.

use std::collections::BTreeMap;

use axon_core::keys::ServerKeys;
use axon_core::rooms::pdu::{Pdu, PduError};
use axon_core::rooms::room_version::RoomVersion;
use ruma::canonical_json::redact;
use ruma::serde::Base64;
use ruma::signatures::{PublicKeyMap, PublicKeySet, verify_json};
use ruma::{CanonicalJsonObject, CanonicalJsonValue, ServerName, UInt};

use crate::Federation;
use crate::inbound::InboundError;
pub use crate::inbound::verify_pdu;

/// [`verify_pdu`] for each event of `events`, leaving out (and logging) those that fail.
pub async fn verify_all(
    federation: &Federation,
    events: Vec<CanonicalJsonObject>,
    version: &RoomVersion,
) -> Vec<Pdu> {
    let mut verified = Vec::with_capacity(events.len());
    for json in events {
        match verify_pdu(federation, version, json).await {
            Ok(pdu) => verified.push(pdu),
            Err(error) => tracing::info!(%error, "left out an event that fails verification"),
        }
    }
    verified
}

/// Adds this server's signature to an event signed by another server (an invite for one of
/// our users, a restricted join we authorise): the signature covers the redacted form, like
/// every event signature.
pub fn co_sign(
    keys: &ServerKeys,
    json: &mut CanonicalJsonObject,
    version: &RoomVersion,
) -> Result<(), PduError> {
    let mut redacted = redact(json.clone(), &version.rules().redaction, None)
        .map_err(|err| PduError::Signing(err.to_string()))?;
    keys.sign_json(&mut redacted)
        .map_err(|err| PduError::Signing(err.to_string()))?;
    let ours = match redacted.get("signatures") {
        Some(CanonicalJsonValue::Object(signatures)) => {
            signatures.get(keys.server_name().as_str()).cloned()
        }
        _ => None,
    };
    let Some(ours) = ours else {
        return Err(PduError::Signing("signing gave no signature".to_owned()));
    };
    let signatures = json
        .entry("signatures".to_owned())
        .or_insert_with(|| CanonicalJsonValue::Object(BTreeMap::new()));
    match signatures {
        CanonicalJsonValue::Object(signatures) => {
            signatures.insert(keys.server_name().to_string(), ours);
            Ok(())
        }
        _ => Err(PduError::InvalidField {
            field: "signatures",
            reason: "not an object".to_owned(),
        }),
    }
}

/// A JSON event body as a canonical object.
pub fn canonical_object(
    raw: &serde_json::value::RawValue,
) -> Result<CanonicalJsonObject, PduError> {
    serde_json::from_str(raw.get()).map_err(|err| PduError::InvalidField {
        field: "event",
        reason: err.to_string(),
    })
}

/// The `depth` of a new event following events of `depths`.
pub fn next_depth(depths: impl Iterator<Item = UInt>) -> UInt {
    depths
        .max()
        .map_or(UInt::MIN, |depth| depth.saturating_add(UInt::from(1u32)))
}

/// Checks that `json` (an event of a room of `version`) carries a valid signature by
/// `server`, with its keys as of the event's `origin_server_ts`: for a signature the event's
/// format does not require, such as the invitee's server's on an invite.
pub async fn verify_server_signature(
    federation: &Federation,
    json: &CanonicalJsonObject,
    version: &RoomVersion,
    server: &ServerName,
) -> Result<(), InboundError> {
    let unsigned = || InboundError::Signature(format!("no valid signature by {server}"));
    let at_ms = match json.get("origin_server_ts") {
        Some(CanonicalJsonValue::Integer(ts)) => u64::try_from(i64::from(*ts)).unwrap_or(0),
        _ => return Err(InboundError::Format("no origin_server_ts".to_owned())),
    };
    let theirs = match json.get("signatures") {
        Some(CanonicalJsonValue::Object(signatures)) => match signatures.get(server.as_str()) {
            Some(CanonicalJsonValue::Object(by_key)) => by_key.clone(),
            _ => return Err(unsigned()),
        },
        _ => return Err(unsigned()),
    };
    let mut keys = PublicKeySet::new();
    for key_id in theirs
        .keys()
        .filter(|key_id| key_id.starts_with("ed25519:"))
        .take(MAX_KEY_IDS)
    {
        if let Ok(key) = federation
            .key_fetcher()
            .verify_key(server, key_id, at_ms)
            .await
            && let Ok(key) = Base64::parse(key)
        {
            keys.insert(key_id.clone(), key);
        }
    }
    if keys.is_empty() {
        return Err(unsigned());
    }
    // Signatures cover the redacted form; only `server`'s are checked here.
    let mut redacted = redact(json.clone(), &version.rules().redaction, None)
        .map_err(|err| InboundError::Format(err.to_string()))?;
    let mut only_theirs = BTreeMap::new();
    only_theirs.insert(server.to_string(), CanonicalJsonValue::Object(theirs));
    redacted.insert(
        "signatures".to_owned(),
        CanonicalJsonValue::Object(only_theirs),
    );
    let mut key_map = PublicKeyMap::new();
    key_map.insert(server.to_string(), keys);
    verify_json(&key_map, &redacted).map_err(|err| InboundError::Signature(err.to_string()))
}

/// Key ids tried for one server's signature, so an event cannot make us fetch without bound.
const MAX_KEY_IDS: usize = 4;
