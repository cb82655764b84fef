//! PDUs: the signed events of the room graph, exactly as other servers see them.
//!
//! A [`Pdu`] is the event's canonical JSON object (the federation format, with hashes and
//! signatures) plus the fields the server reads all the time, parsed once and checked against
//! the format of the room version. It implements ruma's [`Event`] trait, so the auth rules and
//! state resolution of `ruma::state_res` run on it directly.
//!
//! - [`PduBuilder`] makes a new local event: the JSON for the room version, the content hash,
//!   our signature and the event id.
//! - [`select_auth_events`] picks the `auth_events` of a new event from the current state.
//! - [`verify_event_signatures`], [`verify_content_hash`] and [`Pdu::from_remote`] check an event
//!   received from another server; [`redact`] applies a redaction.

mod build;
mod verify;

use std::fmt;

use ruma::events::TimelineEventType;
use ruma::room_version_rules::{EventsReferenceFormatVersion, RoomVersionRules};
use ruma::state_res::Event;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, ID_MAX_BYTES, MilliSecondsSinceUnixEpoch,
    OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UInt, UserId,
};
use serde_json::value::RawValue as RawJsonValue;

pub use self::build::{EventReference, PduBuilder, auth_types_for_event, select_auth_events};
pub use self::verify::{
    PublicKeyMap, PublicKeySet, Verified, redact, required_signing_servers, verify_content_hash,
    verify_event_signatures,
};
use super::room_version::RoomVersion;

/// The largest PDU accepted, in bytes of canonical JSON including signatures.
///
/// The specification says an event must not exceed 65,536 bytes; ruma's checks
/// (`check_pdu_format`, the hash functions) reject 65,536 already. We use ruma's limit, one byte
/// stricter, so that every oversized event gets the same clear error.
pub const MAX_PDU_BYTES: usize = 65_535;

/// Why an event could not be built or parsed.
///
/// The comment on each variant names the errcode a client-facing caller answers with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PduError {
    /// The whole event is larger than [`MAX_PDU_BYTES`]. `M_TOO_LARGE`.
    #[error("the event is {size} bytes of canonical JSON, more than the limit of {MAX_PDU_BYTES}")]
    TooLarge {
        /// The size of the event.
        size: usize,
    },
    /// `sender`, `room_id`, `type`, `state_key` or (rooms v1 and v2) `event_id` is longer than
    /// 255 bytes. `M_TOO_LARGE`.
    #[error("`{field}` is {len} bytes, more than the limit of {ID_MAX_BYTES}")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// A required field is absent. `M_BAD_JSON`.
    #[error("`{0}` is missing")]
    MissingField(&'static str),
    /// A field has the wrong type or an invalid value. `M_BAD_JSON`.
    #[error("`{field}` is invalid: {reason}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The event breaks the event format of its room version (ruma's `check_pdu_format`: too
    /// many `prev_events` or `auth_events`, negative `depth`, the create event listed in
    /// `auth_events` of a v12 room...). `M_BAD_JSON`.
    #[error("event format: {0}")]
    Format(String),
    /// The inputs of [`PduBuilder`] do not fit the room version or this server (a `room_id` on
    /// a v12 create event, a sender of another server...). `M_INVALID_PARAM`.
    #[error("{0}")]
    InvalidParam(String),
    /// A received event's signatures do not verify. The event is dropped.
    #[error("signatures do not verify: {0}")]
    Signatures(String),
    /// Hashing or signing a new event failed. An internal error.
    #[error("cannot hash or sign the event: {0}")]
    Signing(String),
}

/// A PDU: a signed room event in the federation format, with its fields parsed.
///
/// The JSON is the source of truth; the parsed fields are a view of it, so they cannot be changed
/// except through [`Pdu::set_unsigned`] (which does not touch the signed part) and
/// [`Pdu::set_rejected`] (a local verdict, not part of the event).
#[derive(Clone)]
pub struct Pdu {
    json: CanonicalJsonObject,
    event_id: OwnedEventId,
    reference_hash: String,
    room_id: OwnedRoomId,
    room_id_in_event: bool,
    sender: OwnedUserId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    kind: TimelineEventType,
    content: Box<RawJsonValue>,
    state_key: Option<String>,
    prev_events: Vec<OwnedEventId>,
    auth_events: Vec<OwnedEventId>,
    depth: UInt,
    redacts: Option<OwnedEventId>,
    rejected: bool,
}

impl fmt::Debug for Pdu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The content can be large and private; the identifying fields are enough in logs.
        f.debug_struct("Pdu")
            .field("event_id", &self.event_id)
            .field("room_id", &self.room_id)
            .field("sender", &self.sender)
            .field("kind", &self.kind)
            .field("state_key", &self.state_key)
            .field("depth", &self.depth)
            .field("rejected", &self.rejected)
            .finish_non_exhaustive()
    }
}

impl Pdu {
    /// Parses an event in the federation format, checking it against the event format and the
    /// size limits of `room_version`.
    ///
    /// In rooms v1 and v2 the event id is the `event_id` field; from v3 on it is computed from
    /// the reference hash, and an `event_id` field (which some servers add) is removed first.
    /// Signatures and hashes are not verified here: see [`Pdu::from_remote`].
    pub fn from_canonical(
        mut json: CanonicalJsonObject,
        room_version: &RoomVersion,
    ) -> Result<Self, PduError> {
        let rules = room_version.rules();
        if !rules.event_format.require_event_id {
            json.remove("event_id");
        }
        check_limits(&json, rules)?;
        let reference_hash = ruma::signatures::reference_hash(&json, rules).map_err(|err| {
            PduError::InvalidField {
                field: "event",
                reason: err.to_string(),
            }
        })?;
        let event_id = if rules.event_format.require_event_id {
            parse_id::<OwnedEventId>(&json, "event_id")?
        } else {
            EventId::new_v2_or_v3(&reference_hash).map_err(|err| PduError::InvalidField {
                field: "event_id",
                reason: err.to_string(),
            })?
        };
        Self::from_checked_parts(json, event_id, reference_hash, rules)
    }

    /// Parses an event this server stored after checking it, with the reference hash
    /// computed then: a read skips the size checks and the hashing, which only a new event
    /// needs. The event id follows from the hash as in [`Pdu::from_canonical`].
    pub(crate) fn from_stored(
        json: CanonicalJsonObject,
        reference_hash: String,
        room_version: &RoomVersion,
    ) -> Result<Self, PduError> {
        let rules = room_version.rules();
        let event_id = if rules.event_format.require_event_id {
            parse_id::<OwnedEventId>(&json, "event_id")?
        } else {
            EventId::new_v2_or_v3(&reference_hash).map_err(|err| PduError::InvalidField {
                field: "event_id",
                reason: err.to_string(),
            })?
        };
        Self::from_checked_parts(json, event_id, reference_hash, rules)
    }

    /// Parses an event already checked by [`check_limits`] whose id is known.
    fn from_checked_parts(
        json: CanonicalJsonObject,
        event_id: OwnedEventId,
        reference_hash: String,
        rules: &RoomVersionRules,
    ) -> Result<Self, PduError> {
        let kind = TimelineEventType::from(required_str(&json, "type")?);
        let (room_id, room_id_in_event) = match json.get("room_id") {
            Some(_) => (parse_id::<OwnedRoomId>(&json, "room_id")?, true),
            // From v12 the create event has no room id: the room id is derived from its own
            // event id, which is its reference hash.
            None if kind == TimelineEventType::RoomCreate
                && !rules.event_format.require_room_create_room_id =>
            {
                let room_id =
                    RoomId::new_v2(event_id.localpart()).map_err(|err| PduError::InvalidField {
                        field: "room_id",
                        reason: err.to_string(),
                    })?;
                (room_id, false)
            }
            None => return Err(PduError::MissingField("room_id")),
        };
        let sender = parse_id::<OwnedUserId>(&json, "sender")?;
        let origin_server_ts =
            MilliSecondsSinceUnixEpoch(required_uint(&json, "origin_server_ts")?);
        let content_object = required_object(&json, "content")?;
        let content = serde_json::value::to_raw_value(content_object).map_err(|err| {
            PduError::InvalidField {
                field: "content",
                reason: err.to_string(),
            }
        })?;
        let state_key = optional_str(&json, "state_key")?.map(str::to_owned);
        let prev_events = event_references(&json, "prev_events", rules)?;
        let auth_events = event_references(&json, "auth_events", rules)?;
        let depth = required_uint(&json, "depth")?;
        required_str(required_object(&json, "hashes")?, "sha256")
            .map_err(|_| PduError::MissingField("hashes.sha256"))?;
        required_object(&json, "signatures")?;
        if json.contains_key("unsigned") {
            required_object(&json, "unsigned")?;
        }
        let redacts = if kind == TimelineEventType::RoomRedaction {
            // From v11 `redacts` is a content field, before it is a top-level one.
            let container = if rules.redaction.content_field_redacts {
                content_object
            } else {
                &json
            };
            match container.get("redacts") {
                Some(_) => Some(parse_id::<OwnedEventId>(container, "redacts")?),
                None => None,
            }
        } else {
            None
        };

        Ok(Self {
            json,
            event_id,
            reference_hash,
            room_id,
            room_id_in_event,
            sender,
            origin_server_ts,
            kind,
            content,
            state_key,
            prev_events,
            auth_events,
            depth,
            redacts,
            rejected: false,
        })
    }

    /// The event id.
    pub fn event_id(&self) -> &EventId {
        &self.event_id
    }

    /// The event's reference hash (unpadded base64): how `prev_events` and `auth_events` of
    /// rooms v1 and v2 refer to it, and the event id without its `$` from v3 on.
    pub fn reference_hash(&self) -> &str {
        &self.reference_hash
    }

    /// A reference to this event, for the `prev_events` and `auth_events` of a new event.
    pub fn reference(&self) -> EventReference {
        EventReference {
            event_id: self.event_id.clone(),
            sha256: Some(self.reference_hash.clone()),
        }
    }

    /// The room. For the create event of a v12 room, which has no `room_id` field, the room id
    /// derived from its event id.
    pub fn room_id(&self) -> &RoomId {
        &self.room_id
    }

    /// The sender.
    pub fn sender(&self) -> &UserId {
        &self.sender
    }

    /// When the sending server says it created the event.
    pub fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }

    /// The event type.
    pub fn kind(&self) -> &TimelineEventType {
        &self.kind
    }

    /// The content as raw JSON.
    pub fn content(&self) -> &RawJsonValue {
        &self.content
    }

    /// The content as a canonical JSON object.
    pub fn content_object(&self) -> &CanonicalJsonObject {
        // Checked to be an object when the event was parsed.
        match self.json.get("content") {
            Some(CanonicalJsonValue::Object(content)) => content,
            _ => empty_object(),
        }
    }

    /// The state key, for a state event.
    pub fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }

    /// Whether this is a state event.
    pub fn is_state(&self) -> bool {
        self.state_key.is_some()
    }

    /// The events this one follows in the room graph.
    pub fn prev_events(&self) -> &[OwnedEventId] {
        &self.prev_events
    }

    /// The state events that authorise this one.
    pub fn auth_events(&self) -> &[OwnedEventId] {
        &self.auth_events
    }

    /// The depth in the room graph.
    pub fn depth(&self) -> UInt {
        self.depth
    }

    /// For a redaction, the event it redacts (the `redacts` field, in `content` from v11 on).
    pub fn redacts(&self) -> Option<&EventId> {
        self.redacts.as_deref()
    }

    /// The `unsigned` object, if any.
    pub fn unsigned(&self) -> Option<&CanonicalJsonObject> {
        match self.json.get("unsigned") {
            Some(CanonicalJsonValue::Object(unsigned)) => Some(unsigned),
            _ => None,
        }
    }

    /// Sets `key` in the `unsigned` object (creating it). Neither hashes nor signatures cover
    /// `unsigned`, so this leaves the event valid.
    pub fn set_unsigned(&mut self, key: impl Into<String>, value: CanonicalJsonValue) {
        let key = key.into();
        match self
            .json
            .entry("unsigned".to_owned())
            .or_insert_with(|| CanonicalJsonValue::Object(CanonicalJsonObject::new()))
        {
            CanonicalJsonValue::Object(unsigned) => {
                unsigned.insert(key, value);
            }
            other => *other = CanonicalJsonValue::Object(CanonicalJsonObject::from([(key, value)])),
        }
    }

    /// Removes `key` from the `unsigned` object, returning its value.
    pub fn remove_unsigned(&mut self, key: &str) -> Option<CanonicalJsonValue> {
        match self.json.get_mut("unsigned") {
            Some(CanonicalJsonValue::Object(unsigned)) => unsigned.remove(key),
            _ => None,
        }
    }

    /// The `hashes` object (`sha256`: the content hash).
    pub fn hashes(&self) -> &CanonicalJsonObject {
        match self.json.get("hashes") {
            Some(CanonicalJsonValue::Object(hashes)) => hashes,
            _ => empty_object(),
        }
    }

    /// The `signatures` object: server name -> key id -> signature.
    pub fn signatures(&self) -> &CanonicalJsonObject {
        match self.json.get("signatures") {
            Some(CanonicalJsonValue::Object(signatures)) => signatures,
            _ => empty_object(),
        }
    }

    /// The whole event in the federation format (no `event_id` field from v3 on).
    pub fn json(&self) -> &CanonicalJsonObject {
        &self.json
    }

    /// The whole event in the federation format, consuming the `Pdu`.
    pub fn into_json(self) -> CanonicalJsonObject {
        self.json
    }

    /// Whether the event was rejected by the checks on receipt. A local verdict the store keeps
    /// beside the event; ruma's auth rules refuse rejected events as auth events.
    pub fn is_rejected(&self) -> bool {
        self.rejected
    }

    /// Records the verdict of the checks on receipt.
    pub fn set_rejected(&mut self, rejected: bool) {
        self.rejected = rejected;
    }
}

impl Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }

    fn room_id(&self) -> Option<&RoomId> {
        // ruma's rule "a v12 create event has no room_id" looks at the event itself.
        self.room_id_in_event.then_some(&*self.room_id)
    }

    fn sender(&self) -> &UserId {
        &self.sender
    }

    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }

    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }

    fn content(&self) -> &RawJsonValue {
        &self.content
    }

    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }

    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }

    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }

    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }

    fn rejected(&self) -> bool {
        self.rejected
    }
}

/// Checks the size limits and the event format of the room version, with typed errors for the
/// limits a client can hit.
fn check_limits(json: &CanonicalJsonObject, rules: &RoomVersionRules) -> Result<(), PduError> {
    let size = canonical_size(json)?;
    if size > MAX_PDU_BYTES {
        return Err(PduError::TooLarge { size });
    }
    let mut fields = vec!["sender", "room_id", "type", "state_key"];
    if rules.event_format.require_event_id {
        fields.push("event_id");
    }
    for field in fields {
        if let Some(CanonicalJsonValue::String(value)) = json.get(field)
            && value.len() > ID_MAX_BYTES
        {
            return Err(PduError::FieldTooLong {
                field,
                len: value.len(),
            });
        }
    }
    ruma::state_res::check_pdu_format(json, &rules.event_format).map_err(PduError::Format)
}

/// The length of `json` as canonical JSON.
fn canonical_size(json: &CanonicalJsonObject) -> Result<usize, PduError> {
    serde_json::to_vec(json)
        .map(|bytes| bytes.len())
        .map_err(|err| PduError::InvalidField {
            field: "event",
            reason: err.to_string(),
        })
}

fn required_str<'a>(
    json: &'a CanonicalJsonObject,
    field: &'static str,
) -> Result<&'a str, PduError> {
    optional_str(json, field)?.ok_or(PduError::MissingField(field))
}

fn optional_str<'a>(
    json: &'a CanonicalJsonObject,
    field: &'static str,
) -> Result<Option<&'a str>, PduError> {
    match json.get(field) {
        None => Ok(None),
        Some(CanonicalJsonValue::String(value)) => Ok(Some(value)),
        Some(_) => Err(PduError::InvalidField {
            field,
            reason: "not a string".to_owned(),
        }),
    }
}

fn required_object<'a>(
    json: &'a CanonicalJsonObject,
    field: &'static str,
) -> Result<&'a CanonicalJsonObject, PduError> {
    match json.get(field) {
        None => Err(PduError::MissingField(field)),
        Some(CanonicalJsonValue::Object(value)) => Ok(value),
        Some(_) => Err(PduError::InvalidField {
            field,
            reason: "not an object".to_owned(),
        }),
    }
}

fn required_uint(json: &CanonicalJsonObject, field: &'static str) -> Result<UInt, PduError> {
    match json.get(field) {
        None => Err(PduError::MissingField(field)),
        Some(CanonicalJsonValue::Integer(value)) => {
            UInt::try_from(i64::from(*value)).map_err(|_| PduError::InvalidField {
                field,
                reason: "negative".to_owned(),
            })
        }
        Some(_) => Err(PduError::InvalidField {
            field,
            reason: "not an integer".to_owned(),
        }),
    }
}

fn parse_id<T>(json: &CanonicalJsonObject, field: &'static str) -> Result<T, PduError>
where
    T: for<'a> TryFrom<&'a str, Error = ruma::IdParseError>,
{
    T::try_from(required_str(json, field)?).map_err(|err| PduError::InvalidField {
        field,
        reason: err.to_string(),
    })
}

/// Parses `prev_events` or `auth_events`: `[[id, {"sha256": hash}], ...]` in rooms v1 and v2,
/// `[id, ...]` from v3 on.
fn event_references(
    json: &CanonicalJsonObject,
    field: &'static str,
    rules: &RoomVersionRules,
) -> Result<Vec<OwnedEventId>, PduError> {
    let invalid = |reason: String| PduError::InvalidField { field, reason };
    let Some(CanonicalJsonValue::Array(items)) = json.get(field) else {
        return Err(invalid("not an array".to_owned()));
    };
    items
        .iter()
        .map(|item| {
            let id = match (rules.events_reference_format, item) {
                (EventsReferenceFormatVersion::V1, CanonicalJsonValue::Array(pair)) => {
                    match pair.first() {
                        Some(CanonicalJsonValue::String(id)) => id,
                        _ => return Err(invalid("expected [event id, hashes] pairs".to_owned())),
                    }
                }
                (EventsReferenceFormatVersion::V1, _) => {
                    return Err(invalid("expected [event id, hashes] pairs".to_owned()));
                }
                (_, CanonicalJsonValue::String(id)) => id,
                (_, _) => return Err(invalid("expected event ids".to_owned())),
            };
            OwnedEventId::try_from(id.as_str()).map_err(|err| invalid(err.to_string()))
        })
        .collect()
}

fn empty_object() -> &'static CanonicalJsonObject {
    static EMPTY: CanonicalJsonObject = CanonicalJsonObject::new();
    &EMPTY
}
