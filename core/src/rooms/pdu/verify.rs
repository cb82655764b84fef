//! Checking received events (hashes, signatures) and redacting events.

use std::collections::BTreeSet;

use ruma::canonical_json::{RedactedBecause, redact_in_place};
use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedServerName};

pub use ruma::signatures::{PublicKeyMap, PublicKeySet, Verified};

use super::{Pdu, PduError, check_limits};
use crate::rooms::room_version::RoomVersion;

/// Whether the `hashes.sha256` of an event matches its content.
///
/// `false` means the event was changed after its sender hashed it, or redacted: the caller then
/// stores and uses the redacted form ([`redact`]). Errors only if `hashes.sha256` is missing or
/// the event is too large to hash.
pub fn verify_content_hash(json: &CanonicalJsonObject) -> Result<bool, PduError> {
    let Some(CanonicalJsonValue::Object(hashes)) = json.get("hashes") else {
        return Err(PduError::MissingField("hashes"));
    };
    let Some(CanonicalJsonValue::String(claimed)) = hashes.get("sha256") else {
        return Err(PduError::MissingField("hashes.sha256"));
    };
    let computed = ruma::signatures::content_hash(json).map_err(|err| PduError::InvalidField {
        field: "hashes",
        reason: err.to_string(),
    })?;
    Ok(computed.encode() == claimed.trim_end_matches('='))
}

/// The servers whose signatures an event must carry (the sender's; in rooms v1 and v2 the
/// event id's; for a restricted join, the authorising user's), so the caller knows which keys
/// to fetch before [`verify_event_signatures`].
pub fn required_signing_servers(
    json: &CanonicalJsonObject,
    room_version: &RoomVersion,
) -> Result<BTreeSet<OwnedServerName>, PduError> {
    ruma::signatures::required_server_signatures_to_verify_event(
        json,
        &room_version.rules().signatures,
    )
    .map_err(|err| PduError::Signatures(err.to_string()))
}

/// Verifies the signatures of a received event with `keys` (server name -> key id -> public
/// key), through ruma's `verify_event`.
///
/// [`Verified::All`]: signatures and content hash are good. [`Verified::Signatures`]: the
/// signatures are good but the content hash does not match, so the redacted form must be used.
/// An error means the event must be dropped.
pub fn verify_event_signatures(
    json: &CanonicalJsonObject,
    room_version: &RoomVersion,
    keys: &PublicKeyMap,
) -> Result<Verified, PduError> {
    ruma::signatures::verify_event(keys, json, room_version.rules())
        .map_err(|err| PduError::Signatures(err.to_string()))
}

impl Pdu {
    /// Checks and parses an event received from another server: the event format and limits,
    /// then the signatures with `keys`; if the content hash does not match, the event is
    /// redacted and the redacted form is returned, as the specification requires.
    pub fn from_remote(
        mut json: CanonicalJsonObject,
        room_version: &RoomVersion,
        keys: &PublicKeyMap,
    ) -> Result<Self, PduError> {
        let rules = room_version.rules();
        if !rules.event_format.require_event_id {
            // Not part of the event from v3 on; some servers add it anyway.
            json.remove("event_id");
        }
        check_limits(&json, rules)?;
        match verify_event_signatures(&json, room_version, keys)? {
            Verified::All => {}
            Verified::Signatures => {
                redact_in_place(&mut json, &rules.redaction, None).map_err(|err| {
                    PduError::InvalidField {
                        field: "event",
                        reason: err.to_string(),
                    }
                })?;
            }
        }
        Self::from_canonical(json, room_version)
    }
}

/// The redacted form of `pdu` under the redaction rules of `room_version`, through ruma's
/// redaction algorithm.
///
/// With `redacted_because` (the redaction event) the result carries it in
/// `unsigned.redacted_because`, with its `event_id`, as clients expect; the rest of `unsigned`
/// is dropped. The event id, hashes and signatures are unchanged: they cover the redacted form.
pub fn redact(
    pdu: &Pdu,
    room_version: &RoomVersion,
    redacted_because: Option<&Pdu>,
) -> Result<Pdu, PduError> {
    let because = redacted_because.map(|redaction| {
        let mut json = redaction.json().clone();
        json.insert(
            "event_id".to_owned(),
            CanonicalJsonValue::String(redaction.event_id().to_string()),
        );
        RedactedBecause::from_json(json)
    });
    let mut json = pdu.json().clone();
    redact_in_place(&mut json, &room_version.rules().redaction, because).map_err(|err| {
        PduError::InvalidField {
            field: "event",
            reason: err.to_string(),
        }
    })?;
    let mut redacted = Pdu::from_checked_parts(
        json,
        pdu.event_id.clone(),
        pdu.reference_hash.clone(),
        room_version.rules(),
    )?;
    redacted.rejected = pdu.rejected;
    Ok(redacted)
}
