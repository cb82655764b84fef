//! Event authorisation: ruma's implementation of the specification's auth rules, wrapped.
//!
//! The specification checks a PDU three times on receipt: against its own `auth_events`
//! ([`check_auth_against_auth_events`]), against the state before it (reject), and against the
//! current state of the room (soft-fail); the last two, and the check of a new local event, are
//! [`check_auth`] with the state to check against given as a lookup closure.
//!
//! ruma's rules assume the signatures were verified first (restricted joins depend on the
//! authorising server's signature).

use std::borrow::Borrow;
use std::collections::HashMap;

use ruma::events::{StateEventType, TimelineEventType};
use ruma::state_res::{
    Event, check_state_dependent_auth_rules, check_state_independent_auth_rules,
};
use ruma::{CanonicalJsonValue, EventId, OwnedEventId};

use super::pdu::Pdu;
use super::room_version::RoomVersion;

/// Why an event is not authorised. Each carries ruma's reason, such as "sender's membership is
/// not `join`" or "sender does not have enough power to send event of type `m.room.topic`".
///
/// For a client's event this is `M_FORBIDDEN`; for a received event, rejection (or soft failure
/// when the check was against the current state).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The event breaks an authorisation rule of the state it was checked against.
    #[error("{event_id} is not allowed: {reason}")]
    Forbidden {
        /// The event.
        event_id: OwnedEventId,
        /// The rule it breaks, in ruma's words.
        reason: String,
    },
    /// The event's `auth_events` are not the ones the rules require: missing, duplicated,
    /// unexpected, rejected, or in another room.
    #[error("{event_id} has invalid auth events: {reason}")]
    InvalidAuthEvents {
        /// The event.
        event_id: OwnedEventId,
        /// What is wrong with them.
        reason: String,
    },
    /// A create event whose `content.room_version` is not the version the room is handled as.
    #[error("{event_id} creates a room of version {found:?}, not {expected}")]
    RoomVersionMismatch {
        /// The create event.
        event_id: OwnedEventId,
        /// The room version the caller checked against.
        expected: String,
        /// The `room_version` in its content.
        found: String,
    },
}

impl AuthError {
    /// The reason, without the event id.
    pub fn reason(&self) -> String {
        match self {
            Self::Forbidden { reason, .. } | Self::InvalidAuthEvents { reason, .. } => {
                reason.clone()
            }
            Self::RoomVersionMismatch {
                expected, found, ..
            } => format!("room version {found:?} is not {expected}"),
        }
    }
}

/// Checks `pdu` against the auth rules of `room_version` with the room state `fetch_state`
/// (the state before the event, or the current state), through ruma's state-dependent checks.
///
/// This is the check for a new local event (against the current state) and the second and third
/// checks on receipt. `fetch_state` must find the create event under `(m.room.create, "")`, in
/// v12 rooms too. A create event, which depends on no state, gets the create-event rules and
/// must name `room_version` in its content.
pub fn check_auth<E: Event>(
    room_version: &RoomVersion,
    pdu: &Pdu,
    fetch_state: impl Fn(&StateEventType, &str) -> Option<E>,
) -> Result<(), AuthError> {
    let rules = &room_version.rules().authorization;
    if *pdu.kind() == TimelineEventType::RoomCreate {
        check_create_room_version(room_version, pdu)?;
        // The create-event rules are the state-independent ones; they fetch nothing.
        return check_state_independent_auth_rules(rules, pdu, |_: &EventId| None::<&Pdu>)
            .map_err(|reason| forbidden(pdu, reason));
    }
    check_state_dependent_auth_rules(rules, pdu, fetch_state)
        .map_err(|reason| forbidden(pdu, reason))
}

/// Checks a received `pdu` against its own `auth_events`, the first of the specification's
/// checks on receipt of a PDU: the state-independent rules (are these the right auth events?)
/// then the auth rules with the auth events as the state.
///
/// `auth_events` must hold the events `pdu` lists (others are ignored); for a v12 room also the
/// room's create event, which v12 events do not list but the rules need.
pub fn check_auth_against_auth_events<P: Borrow<Pdu>>(
    room_version: &RoomVersion,
    pdu: &Pdu,
    auth_events: &[P],
) -> Result<(), AuthError> {
    let rules = &room_version.rules().authorization;
    if *pdu.kind() == TimelineEventType::RoomCreate {
        return check_auth(
            room_version,
            pdu,
            |_: &StateEventType, _: &str| None::<&Pdu>,
        );
    }
    let by_id: HashMap<&EventId, &Pdu> = auth_events
        .iter()
        .map(|event| {
            let event = event.borrow();
            (event.event_id(), event)
        })
        .collect();
    check_state_independent_auth_rules(rules, pdu, |event_id: &EventId| {
        by_id.get(event_id).copied()
    })
    .map_err(|reason| AuthError::InvalidAuthEvents {
        event_id: pdu.event_id().to_owned(),
        reason,
    })?;

    // The state the event claims: its listed auth events, plus the v12 create event (checked to
    // be the room's by the state-independent rules above).
    let mut state: HashMap<(StateEventType, &str), &Pdu> = HashMap::new();
    for &event in by_id.values() {
        let listed = pdu
            .auth_events()
            .iter()
            .any(|id| id == Pdu::event_id(event));
        let is_create = *event.kind() == TimelineEventType::RoomCreate
            && Pdu::state_key(event) == Some("")
            && rules.room_create_event_id_as_room_id
            && Pdu::room_id(event) == pdu.room_id();
        if let (true, Some(state_key)) = (listed || is_create, Pdu::state_key(event)) {
            state.insert((event.kind().to_string().into(), state_key), event);
        }
    }
    check_auth(
        room_version,
        pdu,
        |event_type: &StateEventType, state_key: &str| {
            state.get(&(event_type.clone(), state_key)).copied()
        },
    )
}

fn forbidden(pdu: &Pdu, reason: String) -> AuthError {
    AuthError::Forbidden {
        event_id: pdu.event_id().to_owned(),
        reason,
    }
}

/// The create event must create a room of the version we handle it as (`"1"` if absent). ruma
/// leaves this rule to the caller, who knows the version.
fn check_create_room_version(room_version: &RoomVersion, pdu: &Pdu) -> Result<(), AuthError> {
    let found = match pdu.content_object().get("room_version") {
        None => "1",
        Some(CanonicalJsonValue::String(version)) => version.as_str(),
        Some(other) => {
            return Err(forbidden(
                pdu,
                format!("`room_version` in the create event is not a string: {other:?}"),
            ));
        }
    };
    if found == room_version.id().as_str() {
        Ok(())
    } else {
        Err(AuthError::RoomVersionMismatch {
            event_id: pdu.event_id().to_owned(),
            expected: room_version.id().to_string(),
            found: found.to_owned(),
        })
    }
}
