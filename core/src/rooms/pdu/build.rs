//! Building new local events, and choosing their auth events.

use ruma::events::{StateEventType, TimelineEventType};
use ruma::room_version_rules::EventsReferenceFormatVersion;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, Int, MilliSecondsSinceUnixEpoch,
    OwnedEventId, OwnedRoomId, OwnedUserId, UInt, UserId,
};

use super::{Pdu, PduError, check_limits};
use crate::keys::ServerKeys;
use crate::rooms::room_version::RoomVersion;

/// How a new event refers to an earlier one in `prev_events` or `auth_events`.
///
/// From room version 3 on the event id is enough. Rooms v1 and v2 also carry the referenced
/// event's reference hash, so building an event of those versions needs `sha256`; take the
/// reference from the [`Pdu`] ([`Pdu::reference`]) to have it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventReference {
    /// The referenced event.
    pub event_id: OwnedEventId,
    /// Its reference hash (standard unpadded base64), needed in rooms v1 and v2 only.
    pub sha256: Option<String>,
}

impl EventReference {
    /// A reference by id only (enough from room version 3 on).
    pub fn id(event_id: OwnedEventId) -> Self {
        Self {
            event_id,
            sha256: None,
        }
    }
}

impl From<&Pdu> for EventReference {
    fn from(pdu: &Pdu) -> Self {
        pdu.reference()
    }
}

/// A new local event, before hashing and signing.
///
/// Fill the fields, pick `auth_events` with [`PduBuilder::select_auth_events`] (or
/// [`select_auth_events`]), then [`PduBuilder::build`]. The sender must be a user of the signing
/// server.
#[derive(Debug, Clone)]
pub struct PduBuilder {
    /// The room. `None` only for the create event of a v12 room, whose room id is derived from
    /// the create event's id (see [`PduBuilder::build`]).
    pub room_id: Option<OwnedRoomId>,
    /// The sender, a local user.
    pub sender: OwnedUserId,
    /// The event type.
    pub kind: TimelineEventType,
    /// The content.
    pub content: CanonicalJsonObject,
    /// The state key, for a state event.
    pub state_key: Option<String>,
    /// For a redaction, the redacted event (written to `content.redacts` from v11 on, to the
    /// top-level `redacts` before).
    pub redacts: Option<OwnedEventId>,
    /// The forward extremities the event follows (at most 20).
    pub prev_events: Vec<EventReference>,
    /// The state events that authorise it (at most 10).
    pub auth_events: Vec<EventReference>,
    /// Its depth: one more than the deepest of `prev_events`, 1 for the create event.
    pub depth: UInt,
    /// Its creation time on this server.
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
}

impl PduBuilder {
    /// A builder for an event of `kind` with `content`, everything else empty: the caller sets
    /// the room, references, depth and time.
    pub fn new(
        room_id: Option<OwnedRoomId>,
        sender: OwnedUserId,
        kind: TimelineEventType,
        content: CanonicalJsonObject,
    ) -> Self {
        Self {
            room_id,
            sender,
            kind,
            content,
            state_key: None,
            redacts: None,
            prev_events: Vec::new(),
            auth_events: Vec::new(),
            depth: UInt::MIN,
            origin_server_ts: MilliSecondsSinceUnixEpoch(UInt::MIN),
        }
    }

    /// The `(type, state_key)` pairs of the current state that authorise this event.
    pub fn auth_types(
        &self,
        room_version: &RoomVersion,
    ) -> Result<Vec<(StateEventType, String)>, PduError> {
        auth_types_for_event(
            room_version,
            &self.kind,
            &self.sender,
            self.state_key.as_deref(),
            &self.content,
        )
    }

    /// Sets `auth_events` from the current state, looked up by `(type, state_key)`.
    pub fn select_auth_events(
        &mut self,
        room_version: &RoomVersion,
        current_state: impl Fn(&StateEventType, &str) -> Option<EventReference>,
    ) -> Result<(), PduError> {
        self.auth_events = select_auth_events(
            room_version,
            &self.kind,
            &self.sender,
            self.state_key.as_deref(),
            &self.content,
            current_state,
        )?;
        Ok(())
    }

    /// The event JSON for `room_version`, without `event_id`, hashes and signatures: what
    /// `make_join`, `make_leave` and `make_knock` return for the other server to sign.
    pub fn template(&self, room_version: &RoomVersion) -> Result<CanonicalJsonObject, PduError> {
        let rules = room_version.rules();
        let is_create = self.kind == TimelineEventType::RoomCreate;
        let room_id_required = !is_create || rules.event_format.require_room_create_room_id;
        match (&self.room_id, room_id_required) {
            (None, true) => {
                return Err(PduError::InvalidParam(
                    "a room id is required for this event".to_owned(),
                ));
            }
            (Some(_), false) => {
                return Err(PduError::InvalidParam(format!(
                    "the create event of a room v{} has no room id: it is derived from the \
                     event id",
                    room_version.id()
                )));
            }
            _ => {}
        }

        let mut json = CanonicalJsonObject::new();
        let string = |value: &str| CanonicalJsonValue::String(value.to_owned());
        if let Some(room_id) = &self.room_id {
            json.insert("room_id".to_owned(), string(room_id.as_str()));
        }
        json.insert("sender".to_owned(), string(self.sender.as_str()));
        json.insert("type".to_owned(), string(&self.kind.to_string()));
        if let Some(state_key) = &self.state_key {
            json.insert("state_key".to_owned(), string(state_key));
        }
        let mut content = self.content.clone();
        if let Some(redacts) = &self.redacts {
            if rules.redaction.content_field_redacts {
                content.insert("redacts".to_owned(), string(redacts.as_str()));
            } else {
                json.insert("redacts".to_owned(), string(redacts.as_str()));
            }
        }
        json.insert("content".to_owned(), CanonicalJsonValue::Object(content));
        json.insert(
            "prev_events".to_owned(),
            references(&self.prev_events, room_version)?,
        );
        json.insert(
            "auth_events".to_owned(),
            references(&self.auth_events, room_version)?,
        );
        json.insert(
            "depth".to_owned(),
            CanonicalJsonValue::Integer(Int::from(self.depth)),
        );
        json.insert(
            "origin_server_ts".to_owned(),
            CanonicalJsonValue::Integer(Int::from(self.origin_server_ts.0)),
        );
        // The `origin` field is gone from the event format, but versions whose redaction
        // algorithm keeps it (v1 to v10) are still built with it, as servers of their time
        // expect.
        if rules.redaction.keep_origin_membership_prev_state {
            json.insert(
                "origin".to_owned(),
                string(self.sender.server_name().as_str()),
            );
        }
        Ok(json)
    }

    /// Builds, hashes and signs the event with `keys`; returns its id and JSON.
    ///
    /// In rooms v1 and v2 the event id is a random `$id:our.server` written into the event; from
    /// v3 on it is `$` and the reference hash (standard base64 in v3, URL-safe from v4). For the
    /// create event of a v12 room the room id is `!` and that same hash.
    pub fn build(
        &self,
        room_version: &RoomVersion,
        keys: &ServerKeys,
    ) -> Result<(OwnedEventId, CanonicalJsonObject), PduError> {
        let pdu = self.build_pdu(room_version, keys)?;
        Ok((pdu.event_id.clone(), pdu.json))
    }

    /// Builds, hashes and signs the event with `keys`, returning it parsed.
    pub fn build_pdu(
        &self,
        room_version: &RoomVersion,
        keys: &ServerKeys,
    ) -> Result<Pdu, PduError> {
        if self.sender.server_name() != keys.server_name() {
            return Err(PduError::InvalidParam(format!(
                "{} is not a user of this server",
                self.sender
            )));
        }
        let rules = room_version.rules();
        let mut json = self.template(room_version)?;
        let random_event_id = rules
            .event_format
            .require_event_id
            .then(|| EventId::new_v1(keys.server_name()));
        if let Some(event_id) = &random_event_id {
            json.insert(
                "event_id".to_owned(),
                CanonicalJsonValue::String(event_id.to_string()),
            );
        }
        // Check before hashing: the hash functions fail on oversized input with a less useful
        // error.
        check_limits_before_signing(&json, room_version)?;
        keys.hash_and_sign_event(&mut json, &rules.redaction)
            .map_err(|err| PduError::Signing(err.to_string()))?;
        check_limits(&json, rules)?;
        let reference_hash = ruma::signatures::reference_hash(&json, rules)
            .map_err(|err| PduError::Signing(err.to_string()))?;
        let event_id = match random_event_id {
            Some(event_id) => event_id,
            None => EventId::new_v2_or_v3(&reference_hash)
                .map_err(|err| PduError::Signing(err.to_string()))?,
        };
        Pdu::from_checked_parts(json, event_id, reference_hash, rules)
    }
}

/// The size and field-length checks of [`check_limits`], on an event that has no hashes and
/// signatures yet (ruma's format check needs neither, but the limits must hold before hashing).
fn check_limits_before_signing(
    json: &CanonicalJsonObject,
    room_version: &RoomVersion,
) -> Result<(), PduError> {
    match check_limits(json, room_version.rules()) {
        // The format check passes or fails the same way once hashes and signatures are added,
        // and check_limits runs again then; only the size and length errors matter here.
        Err(PduError::Format(_)) | Ok(()) => Ok(()),
        Err(err) => Err(err),
    }
}

/// `prev_events` / `auth_events` in the room version's format.
fn references(
    references: &[EventReference],
    room_version: &RoomVersion,
) -> Result<CanonicalJsonValue, PduError> {
    let format = room_version.rules().events_reference_format;
    let items = references
        .iter()
        .map(|reference| {
            let id = CanonicalJsonValue::String(reference.event_id.to_string());
            if format != EventsReferenceFormatVersion::V1 {
                return Ok(id);
            }
            let sha256 = reference.sha256.as_ref().ok_or_else(|| {
                PduError::InvalidParam(format!(
                    "room v{} refers to events with their hash; {} has none",
                    room_version.id(),
                    reference.event_id
                ))
            })?;
            let hashes = CanonicalJsonObject::from([(
                "sha256".to_owned(),
                CanonicalJsonValue::String(sha256.clone()),
            )]);
            Ok(CanonicalJsonValue::Array(vec![
                id,
                CanonicalJsonValue::Object(hashes),
            ]))
        })
        .collect::<Result<Vec<_>, PduError>>()?;
    Ok(CanonicalJsonValue::Array(items))
}

/// The `(type, state_key)` pairs whose current state events authorise an event (the
/// specification's auth events selection), through ruma's `auth_types_for_event`.
///
/// Empty for a create event. Fails if `content` is malformed for the type (an `m.room.member`
/// without a valid `membership`).
pub fn auth_types_for_event(
    room_version: &RoomVersion,
    kind: &TimelineEventType,
    sender: &UserId,
    state_key: Option<&str>,
    content: &CanonicalJsonObject,
) -> Result<Vec<(StateEventType, String)>, PduError> {
    let content =
        serde_json::value::to_raw_value(content).map_err(|err| PduError::InvalidField {
            field: "content",
            reason: err.to_string(),
        })?;
    ruma::state_res::auth_types_for_event(
        kind,
        sender,
        state_key,
        &content,
        &room_version.rules().authorization,
    )
    .map_err(|reason| PduError::InvalidField {
        field: "content",
        reason,
    })
}

/// The auth events of a new event: the current state events of [`auth_types_for_event`] that
/// exist, found with `current_state` (which may return a [`Pdu`], an [`EventReference`], an
/// event id...).
pub fn select_auth_events<T>(
    room_version: &RoomVersion,
    kind: &TimelineEventType,
    sender: &UserId,
    state_key: Option<&str>,
    content: &CanonicalJsonObject,
    current_state: impl Fn(&StateEventType, &str) -> Option<T>,
) -> Result<Vec<T>, PduError> {
    Ok(
        auth_types_for_event(room_version, kind, sender, state_key, content)?
            .iter()
            .filter_map(|(event_type, state_key)| current_state(event_type, state_key))
            .collect(),
    )
}
