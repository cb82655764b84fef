//! Invites across servers (`PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`).
//!
//! Outbound ([`invite_remote`]): the invite of a user of another server is built on the room's
//! head and checked under the room's lock, sent to the invitee's server with the room's
//! stripped state, and appended only once it comes back with a valid signature of that
//! server: the room's servers then receive it like any local event.
//!
//! Inbound ([`invite_v2`]): an invite for one of our users is checked (the origin's signature,
//! the shape, the room version, the server ACL, the invitee's account), signed by us and
//! returned. When no local user is in the room it is recorded as the invitee's out-of-room
//! membership with the stripped state, which their `/sync` shows; otherwise the room's
//! events reach us through `/send` and the invite with them.

use std::sync::Arc;

use axon_api::{ApiError, ApiResult, AppState, FederationOrigin, Ruma, RumaResponse};
use axon_core::Services;
use axon_core::rooms::graph::{
    EventStatus, NewEvent, NewOutOfRoomMembership, RoomError, RoomGuard,
};
use axon_core::rooms::pdu::Pdu;
use axon_core::rooms::room_version::RoomVersion;
use axum::Extension;
use axum::extract::State;
use http::StatusCode;
use ruma::api::error::{ErrorKind, IncompatibleRoomVersionErrorData};
use ruma::api::federation::membership::{RawStrippedState, create_invite};
use ruma::events::StateEventType;
use ruma::events::room::member::MembershipState;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedServerName, RoomId, UserId,
};
use serde_json::value::{RawValue as RawJsonValue, to_raw_value};

use super::serve::stripped_state;
use super::verify::{canonical_object, co_sign, verify_pdu, verify_server_signature};
use crate::Federation;
use crate::error::FederationError;

/// Why an invite of a user of another server was not sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InviteError {
    /// The room refuses the invite here (auth rules, unknown room), or storage failed.
    #[error(transparent)]
    Room(#[from] RoomError),
    /// The invitee's server refused the invite.
    #[error("{server} refused the invite: {errcode} {message}")]
    Refused {
        /// The invitee's server.
        server: OwnedServerName,
        /// The HTTP status it answered with.
        status: u16,
        /// Its errcode.
        errcode: String,
        /// Its message.
        message: String,
    },
    /// The invitee's server could not be reached, or its answer is unusable (not our event,
    /// no valid signature of that server).
    #[error("the invitee's server failed: {0}")]
    Unreachable(FederationError),
}

/// Invites `invitee`, a user of another server, to `room_id` on behalf of `sender`, with
/// `content` added to the invite's (`reason`, `is_direct`). Returns the invite's event id
/// once it is appended. Nothing is appended when the invitee's server refuses or fails.
pub async fn invite_remote(
    federation: &Federation,
    services: &Arc<Services>,
    room_id: &RoomId,
    sender: &UserId,
    invitee: &UserId,
    content: CanonicalJsonObject,
) -> Result<OwnedEventId, InviteError> {
    let mut full = content;
    full.insert(
        "membership".to_owned(),
        CanonicalJsonValue::String(MembershipState::Invite.to_string()),
    );
    let event = NewEvent::state(
        room_id.to_owned(),
        sender.to_owned(),
        StateEventType::RoomMember,
        invitee.as_str(),
        full,
    );
    // The lock is held until the invite is appended, so the head it was built on stays the
    // room's head while the invitee's server signs it.
    let guard = services.rooms.lock(room_id).await;
    let (guard, prepared) = with_guard(services, guard, move |services, guard| {
        let pdu = services.rooms.prepare_local(guard, event)?;
        let version = services
            .rooms
            .room_version(pdu.room_id())?
            .ok_or(RoomError::NotFound("room"))?;
        let stripped = invite_room_state(services, pdu.room_id(), pdu.sender())?;
        Ok((pdu, version, stripped))
    })
    .await?;
    let (pdu, version, stripped) = prepared?;

    let server = invitee.server_name().to_owned();
    let raw = raw_json(pdu.json()).map_err(InviteError::Unreachable)?;
    let request = create_invite::v2::Request::new(
        room_id.to_owned(),
        pdu.event_id().to_owned(),
        version.id().clone(),
        raw,
        stripped,
    );
    let answer = match federation.client().send(&server, request).await {
        Ok(answer) => answer,
        Err(FederationError::Remote {
            server,
            status,
            errcode,
            message,
        }) => {
            return Err(InviteError::Refused {
                server,
                status,
                errcode,
                message,
            });
        }
        Err(other) => return Err(InviteError::Unreachable(other)),
    };
    let signed = countersigned(federation, &pdu, &version, &server, &answer.event)
        .await
        .map_err(|reason| InviteError::Unreachable(FederationError::invalid(&server, reason)))?;

    let (_, outcome) = with_guard(services, guard, move |services, guard| {
        Ok(services.rooms.append_remote(guard, signed)?)
    })
    .await?;
    let outcome = outcome?;
    if outcome.status != EventStatus::Normal {
        return Err(InviteError::Room(RoomError::Forbidden(
            "the invite is not allowed".to_owned(),
        )));
    }
    Ok(outcome.event_id)
}

/// Our invite `pdu` with the signature of `server` taken from its answer, once that signature
/// is checked and the answer shown to be the same event.
async fn countersigned(
    federation: &Federation,
    pdu: &Pdu,
    version: &RoomVersion,
    server: &OwnedServerName,
    answer: &RawJsonValue,
) -> Result<Pdu, String> {
    let returned = canonical_object(answer).map_err(|err| err.to_string())?;
    let theirs = match returned.get("signatures") {
        Some(CanonicalJsonValue::Object(signatures)) => signatures.get(server.as_str()).cloned(),
        _ => None,
    }
    .ok_or_else(|| "the returned invite is not signed by the invitee's server".to_owned())?;
    // Only their signature is taken: everything else is the event as we built it.
    let mut json = pdu.json().clone();
    json.remove("unsigned");
    if let Some(CanonicalJsonValue::Object(signatures)) = json.get_mut("signatures") {
        signatures.insert(server.to_string(), theirs);
    }
    verify_server_signature(federation, &json, version, server)
        .await
        .map_err(|err| err.to_string())?;
    // The returned event must be ours: same reference hash, so same id and same content.
    let returned = Pdu::from_canonical(returned, version).map_err(|err| err.to_string())?;
    if returned.event_id() != pdu.event_id() {
        return Err("the returned invite is another event".to_owned());
    }
    Pdu::from_canonical(json, version).map_err(|err| err.to_string())
}

/// The stripped state sent with an invite, as full PDUs: the room's create, join rules, name,
/// avatar, canonical alias, encryption and topic events, and the inviter's member event.
fn invite_room_state(
    services: &Services,
    room_id: &RoomId,
    inviter: &UserId,
) -> Result<Vec<RawStrippedState>, RoomError> {
    let mut state = stripped_state(services, room_id).map_err(|err| {
        RoomError::InvalidParam(format!("the room's stripped state: {}", err.message()))
    })?;
    let rooms = &services.rooms;
    if let Some(member) =
        rooms.state_event(room_id, &StateEventType::RoomMember, inviter.as_str())?
        && let Some(json) = rooms.pdu_json_for_federation(member.event_id())?
        && let Ok(raw) = to_raw_value(&json)
    {
        state.push(RawStrippedState::Pdu(raw));
    }
    Ok(state)
}

/// Runs `work` on the blocking pool with the room's lock, and hands the lock back.
async fn with_guard<T, F>(
    services: &Arc<Services>,
    guard: RoomGuard,
    work: F,
) -> Result<(RoomGuard, Result<T, InviteError>), InviteError>
where
    T: Send + 'static,
    F: FnOnce(&Services, &RoomGuard) -> Result<T, InviteError> + Send + 'static,
{
    let services = Arc::clone(services);
    tokio::task::spawn_blocking(move || {
        let result = work(&services, &guard);
        (guard, result)
    })
    .await
    .map_err(|err| InviteError::Unreachable(FederationError::BuildRequest(err.to_string())))
}

fn raw_json(object: &CanonicalJsonObject) -> Result<Box<RawJsonValue>, FederationError> {
    to_raw_value(object).map_err(|err| FederationError::BuildRequest(err.to_string()))
}

/// # `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`
pub(crate) async fn invite_v2(
    State(state): State<AppState>,
    Extension(federation): Extension<Arc<Federation>>,
    request: Ruma<create_invite::v2::Request>,
) -> ApiResult<RumaResponse<create_invite::v2::Response>> {
    let origin = request.identity;
    let body = request.body;
    let version = RoomVersion::new(&body.room_version).map_err(|_| {
        ApiError::with_status(
            StatusCode::BAD_REQUEST,
            ErrorKind::IncompatibleRoomVersion(IncompatibleRoomVersionErrorData::new(
                body.room_version.clone(),
            )),
            "This server does not support the room's version",
        )
    })?;
    let mut json = canonical_object(&body.event)?;
    let services = state.services_arc();
    let invitee = check_invite_event(&services, &json, &origin, &body.room_id)?;
    let (lookup_room, lookup_user, acl_origin) = (
        body.room_id.clone(),
        invitee.clone(),
        origin.server_name().to_owned(),
    );
    blocking(&services, move |services| {
        let account = services
            .accounts
            .user(&lookup_user)
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found("No such user on this server"))?;
        if account.deactivated {
            return Err(ApiError::forbidden("The invited user is deactivated"));
        }
        if !crate::acl::server_acl_allows(&services.rooms, &lookup_room, &acl_origin)? {
            return Err(ApiError::forbidden(
                "The room's server ACL refuses this server",
            ));
        }
        Ok(())
    })
    .await?;
    let pdu = verify_pdu(&federation, &version, json.clone())
        .await
        .map_err(|error| ApiError::forbidden(format!("The invite does not verify: {error}")))?;
    if pdu.event_id() != body.event_id {
        return Err(ApiError::bad_json("The event id does not match the event"));
    }
    co_sign(&services.keys, &mut json, &version)?;

    let stripped_state: Vec<serde_json::Value> = body
        .invite_room_state
        .iter()
        .filter_map(stripped_json)
        .collect();
    let guard = services.rooms.lock(&body.room_id).await;
    let servers = vec![origin.server_name().to_owned()];
    blocking(&services, move |services| {
        let rooms = &services.rooms;
        let resident = rooms
            .members(pdu.room_id(), Some(&MembershipState::Join))?
            .iter()
            .any(|(member, _)| member.server_name() == rooms.server_name());
        // A room we are in sends us its events, this invite among them, through `/send`.
        if !resident {
            rooms.record_out_of_room_membership(
                &guard,
                NewOutOfRoomMembership {
                    event: pdu,
                    room_version: version,
                    stripped_state,
                    servers,
                },
            )?;
        }
        Ok(())
    })
    .await?;
    let event = to_raw_value(&json).map_err(ApiError::internal)?;
    Ok(create_invite::v2::Response::new(event).into())
}

/// The checks of an invite's shape: an `m.room.member` invite of `room_id`, sent by a user of
/// the requesting server, for a user of this server (who is returned).
fn check_invite_event(
    services: &Services,
    json: &CanonicalJsonObject,
    origin: &FederationOrigin,
    room_id: &RoomId,
) -> Result<ruma::OwnedUserId, ApiError> {
    let text = |field: &str| match json.get(field) {
        Some(CanonicalJsonValue::String(value)) => Some(value.as_str()),
        _ => None,
    };
    if text("type") != Some("m.room.member") {
        return Err(ApiError::bad_json("Not a membership event"));
    }
    if text("room_id") != Some(room_id.as_str()) {
        return Err(ApiError::bad_json("The event is for another room"));
    }
    let membership = match json.get("content") {
        Some(CanonicalJsonValue::Object(content)) => match content.get("membership") {
            Some(CanonicalJsonValue::String(value)) => Some(value.as_str()),
            _ => None,
        },
        _ => None,
    };
    if membership != Some("invite") {
        return Err(ApiError::bad_json("The membership is not invite"));
    }
    let sender = text("sender")
        .and_then(|sender| UserId::parse(sender).ok())
        .ok_or_else(|| ApiError::bad_json("Invalid sender"))?;
    if sender.server_name() != origin.server_name() {
        return Err(ApiError::forbidden(
            "The sender does not belong to the requesting server",
        ));
    }
    let invitee = text("state_key")
        .and_then(|user| UserId::parse(user).ok())
        .ok_or_else(|| ApiError::bad_json("Invalid state key"))?;
    if invitee.server_name() != services.rooms.server_name() {
        return Err(ApiError::invalid_param(
            "The invited user does not belong to this server",
        ));
    }
    Ok(invitee)
}

/// A stripped state entry as JSON, whichever form it came in.
pub(super) fn stripped_json(entry: &RawStrippedState) -> Option<serde_json::Value> {
    #[allow(deprecated, reason = "older servers still send the stripped form")]
    let raw = match entry {
        RawStrippedState::Pdu(raw) => raw.get(),
        RawStrippedState::Stripped(raw) => raw.json().get(),
        _ => return None,
    };
    serde_json::from_str(raw).ok()
}

/// Runs synchronous storage work on the blocking pool.
async fn blocking<T, F>(services: &Arc<Services>, work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Services) -> Result<T, ApiError> + Send + 'static,
{
    let services = Arc::clone(services);
    tokio::task::spawn_blocking(move || work(&services))
        .await
        .map_err(|err| ApiError::internal(format!("blocking task failed: {err}")))?
}
