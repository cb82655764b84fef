//! The resident side of membership changes: `make_join`/`send_join` v2,
//! `make_leave`/`send_leave` v2 and `make_knock`/`send_knock` for users of other servers, in
//! rooms this server is joined to.
//!
//! `make_*` answers an unsigned template built on the room's forward extremities with its auth
//! events from the current state; `send_*` checks the event the other server built from it
//! (signed by that server, for one of its own users, with the membership asked for), runs it
//! through the same checks as any received event (`Rooms::append_remote`), and queues it for
//! the room's other servers.

use std::collections::BTreeSet;
use std::sync::Arc;

use axon_api::{ApiError, ApiResult, AppState, FederationOrigin, Ruma, RumaResponse};
use axon_core::Services;
use axon_core::rooms::graph::{EventStatus, MAX_PREV_EVENTS};
use axon_core::rooms::pdu::{Pdu, PduBuilder};
use axon_core::rooms::power;
use axon_core::rooms::room_version::RoomVersion;
use axum::Extension;
use axum::extract::State;
use http::StatusCode;
use ruma::api::error::{ErrorKind, IncompatibleRoomVersionErrorData};
use ruma::api::federation::membership::{
    RawStrippedState, create_join_event, create_knock_event, create_leave_event,
    prepare_join_event, prepare_knock_event, prepare_leave_event,
};
use ruma::events::room::join_rules::RoomJoinRulesEventContent;
use ruma::events::room::member::MembershipState;
use ruma::events::{StateEventType, TimelineEventType};
use ruma::room::{AllowRule, JoinRule};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, MilliSecondsSinceUnixEpoch, OwnedUserId,
    RoomId, RoomVersionId, ServerName, UserId,
};
use serde_json::value::{RawValue as RawJsonValue, to_raw_value};

use super::verify::{canonical_object, co_sign, next_depth, verify_pdu};
use crate::Federation;
use crate::outbound::servers_in_room;

/// Events in the federation format, as answers carry them.
type PduList = Vec<Box<RawJsonValue>>;

/// Runs synchronous storage work on the blocking pool.
async fn blocking<T, F>(state: &AppState, work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Services) -> Result<T, ApiError> + Send + 'static,
{
    let services = state.services_arc();
    tokio::task::spawn_blocking(move || work(&services))
        .await
        .map_err(|err| ApiError::internal(format!("blocking task failed: {err}")))?
}

/// The template of `user_id`'s `membership` event in `room_id`, with `extra` content, and the
/// room's version. `M_NOT_FOUND` when no user of this server is joined (we cannot vouch for the
/// room's state).
pub(crate) fn membership_template(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
    membership: MembershipState,
    mut extra: CanonicalJsonObject,
) -> Result<(RoomVersion, CanonicalJsonObject), ApiError> {
    let rooms = &services.rooms;
    let version = rooms
        .room_version(room_id)?
        .ok_or_else(|| ApiError::not_found("Unknown room"))?;
    check_resident(services, room_id)?;
    let mut prev_events = Vec::new();
    let mut depths = Vec::new();
    for event_id in rooms
        .forward_extremities(room_id)?
        .into_iter()
        .take(MAX_PREV_EVENTS)
    {
        if let Some(stored) = rooms.get_event(&event_id)? {
            depths.push(stored.pdu.depth());
            prev_events.push(stored.pdu.reference());
        }
    }
    extra.insert(
        "membership".to_owned(),
        CanonicalJsonValue::String(membership.to_string()),
    );
    let mut builder = PduBuilder::new(
        Some(room_id.to_owned()),
        user_id.to_owned(),
        TimelineEventType::RoomMember,
        extra,
    );
    builder.state_key = Some(user_id.to_string());
    builder.prev_events = prev_events;
    builder.depth = next_depth(depths.into_iter());
    builder.origin_server_ts = MilliSecondsSinceUnixEpoch::now();
    let lookup_error = std::cell::RefCell::new(None);
    builder.select_auth_events(&version, |kind: &StateEventType, key: &str| {
        match rooms.state_event(room_id, kind, key) {
            Ok(event) => event.map(|pdu| pdu.reference()),
            Err(error) => {
                *lookup_error.borrow_mut() = Some(error);
                None
            }
        }
    })?;
    if let Some(error) = lookup_error.into_inner() {
        return Err(error.into());
    }
    let template = builder.template(&version)?;
    Ok((version, template))
}

/// `M_NOT_FOUND` unless a user of this server is joined to the room.
fn check_resident(services: &Services, room_id: &RoomId) -> Result<(), ApiError> {
    let rooms = &services.rooms;
    let resident = rooms
        .members(room_id, Some(&MembershipState::Join))?
        .iter()
        .any(|(member, _)| member.server_name() == rooms.server_name());
    if resident {
        Ok(())
    } else {
        Err(ApiError::not_found("This server is not in the room"))
    }
}

/// `M_FORBIDDEN` unless `user_id` belongs to the requesting server and the room's server ACL
/// lets that server in.
fn check_origin(
    services: &Services,
    origin: &FederationOrigin,
    room_id: &RoomId,
    user_id: &UserId,
) -> Result<(), ApiError> {
    if user_id.server_name() != origin.server_name() {
        return Err(ApiError::forbidden(
            "The user does not belong to the requesting server",
        ));
    }
    check_acl(services, room_id, origin.server_name())
}

/// `M_FORBIDDEN` when the room's server ACL refuses `server`.
fn check_acl(services: &Services, room_id: &RoomId, server: &ServerName) -> Result<(), ApiError> {
    if crate::acl::server_acl_allows(&services.rooms, room_id, server)? {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "The room's server ACL refuses this server",
        ))
    }
}

/// For a restricted join of `user_id`: a local member who may invite, named in
/// `join_authorised_via_users_server`. `None` when the join rule is not restricted or the user
/// is invited or joined already; `M_UNABLE_TO_AUTHORISE_JOIN` when the user is in none of the
/// allowed rooms (as far as this server knows) or no local user may invite.
fn restricted_join_authoriser(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
    version: &RoomVersion,
) -> Result<Option<OwnedUserId>, ApiError> {
    let rooms = &services.rooms;
    let rules = &version.rules().authorization;
    let Some(join_rules) = rooms.state_event(room_id, &StateEventType::RoomJoinRules, "")? else {
        return Ok(None);
    };
    let Ok(content) = serde_json::from_str::<RoomJoinRulesEventContent>(join_rules.content().get())
    else {
        return Ok(None);
    };
    let allow = match content.join_rule {
        JoinRule::Restricted(restricted) if rules.restricted_join_rule => restricted.allow,
        JoinRule::KnockRestricted(restricted) if rules.knock_restricted_join_rule => {
            restricted.allow
        }
        _ => return Ok(None),
    };
    if matches!(
        rooms.membership(room_id, user_id)?,
        Some(MembershipState::Invite | MembershipState::Join)
    ) {
        return Ok(None);
    }
    let unable = |message: &'static str| {
        ApiError::with_status(
            StatusCode::BAD_REQUEST,
            ErrorKind::UnableToAuthorizeJoin,
            message,
        )
    };
    let mut allowed = false;
    for rule in &allow {
        if let AllowRule::RoomMembership(membership) = rule
            && rooms.membership(&membership.room_id, user_id)? == Some(MembershipState::Join)
        {
            allowed = true;
            break;
        }
    }
    if !allowed {
        return Err(unable(
            "The user is in none of the rooms the join rule allows",
        ));
    }
    let Some(levels) = power::power_levels(rooms, room_id)? else {
        return Err(unable("No user of this server can authorise the join"));
    };
    rooms
        .members(room_id, Some(&MembershipState::Join))?
        .into_iter()
        .map(|(member, _)| member)
        .find(|member| {
            member.server_name() == rooms.server_name() && levels.user_can_invite(member)
        })
        .map(Some)
        .ok_or_else(|| unable("No user of this server can authorise the join"))
}

fn incompatible(version: &RoomVersion) -> ApiError {
    ApiError::with_status(
        StatusCode::BAD_REQUEST,
        ErrorKind::IncompatibleRoomVersion(IncompatibleRoomVersionErrorData::new(
            version.id().clone(),
        )),
        "Your server does not support this room's version",
    )
}

fn raw_json(object: &CanonicalJsonObject) -> Result<Box<RawJsonValue>, ApiError> {
    to_raw_value(object).map_err(ApiError::internal)
}

/// # `GET /_matrix/federation/v1/make_join/{roomId}/{userId}`
pub(crate) async fn make_join(
    State(state): State<AppState>,
    request: Ruma<prepare_join_event::v1::Request>,
) -> ApiResult<RumaResponse<prepare_join_event::v1::Response>> {
    let origin = request.identity;
    let body = request.body;
    let (version, template) = blocking(&state, move |services| {
        check_origin(services, &origin, &body.room_id, &body.user_id)?;
        let version = services
            .rooms
            .room_version(&body.room_id)?
            .ok_or_else(|| ApiError::not_found("Unknown room"))?;
        // A server that sends no `ver` supports only version 1.
        let supported: Vec<RoomVersionId> = if body.ver.is_empty() {
            vec![RoomVersionId::V1]
        } else {
            body.ver.clone()
        };
        if !supported.contains(version.id()) {
            return Err(incompatible(&version));
        }
        let mut extra = CanonicalJsonObject::new();
        if let Some(authoriser) =
            restricted_join_authoriser(services, &body.room_id, &body.user_id, &version)?
        {
            extra.insert(
                "join_authorised_via_users_server".to_owned(),
                CanonicalJsonValue::String(authoriser.to_string()),
            );
        }
        membership_template(
            services,
            &body.room_id,
            &body.user_id,
            MembershipState::Join,
            extra,
        )
    })
    .await?;
    let mut response = prepare_join_event::v1::Response::new(raw_json(&template)?);
    response.room_version = Some(version.id().clone());
    Ok(response.into())
}

/// # `GET /_matrix/federation/v1/make_leave/{roomId}/{userId}`
pub(crate) async fn make_leave(
    State(state): State<AppState>,
    request: Ruma<prepare_leave_event::v1::Request>,
) -> ApiResult<RumaResponse<prepare_leave_event::v1::Response>> {
    let origin = request.identity;
    let body = request.body;
    let (version, template) = blocking(&state, move |services| {
        check_origin(services, &origin, &body.room_id, &body.user_id)?;
        membership_template(
            services,
            &body.room_id,
            &body.user_id,
            MembershipState::Leave,
            CanonicalJsonObject::new(),
        )
    })
    .await?;
    Ok(
        prepare_leave_event::v1::Response::new(Some(version.id().clone()), raw_json(&template)?)
            .into(),
    )
}

/// # `GET /_matrix/federation/v1/make_knock/{roomId}/{userId}`
pub(crate) async fn make_knock(
    State(state): State<AppState>,
    request: Ruma<prepare_knock_event::v1::Request>,
) -> ApiResult<RumaResponse<prepare_knock_event::v1::Response>> {
    let origin = request.identity;
    let body = request.body;
    let (version, template) = blocking(&state, move |services| {
        check_origin(services, &origin, &body.room_id, &body.user_id)?;
        let version = services
            .rooms
            .room_version(&body.room_id)?
            .ok_or_else(|| ApiError::not_found("Unknown room"))?;
        if !body.ver.contains(version.id()) {
            return Err(incompatible(&version));
        }
        membership_template(
            services,
            &body.room_id,
            &body.user_id,
            MembershipState::Knock,
            CanonicalJsonObject::new(),
        )
    })
    .await?;
    Ok(prepare_knock_event::v1::Response::new(version.id().clone(), raw_json(&template)?).into())
}

/// What a `send_*` accepted.
struct Accepted {
    pdu: Pdu,
    /// Whether this server added its signature (a restricted join it authorised).
    co_signed: bool,
}

/// A `send_*` request, for the checks they share.
struct MembershipSend<'a> {
    origin: &'a FederationOrigin,
    room_id: &'a RoomId,
    event_id: &'a EventId,
    pdu: &'a RawJsonValue,
    membership: MembershipState,
}

/// The checks and the append shared by `send_join`, `send_leave` and `send_knock`.
async fn accept_membership(
    state: &AppState,
    federation: &Federation,
    send: MembershipSend<'_>,
) -> Result<Accepted, ApiError> {
    let services = state.services_arc();
    let (room_id, origin) = (send.room_id, send.origin);
    let (lookup, acl_origin) = (room_id.to_owned(), origin.server_name().to_owned());
    let version = blocking(state, move |services| {
        check_acl(services, &lookup, &acl_origin)?;
        check_resident(services, &lookup)?;
        services
            .rooms
            .room_version(&lookup)?
            .ok_or_else(|| ApiError::not_found("Unknown room"))
    })
    .await?;
    let mut json = canonical_object(send.pdu)?;
    check_membership_event(&json, origin, room_id, &send.membership)?;
    let own = services.rooms.server_name().to_owned();
    let authorised_by_us = send.membership == MembershipState::Join
        && matches!(
            json.get("content"),
            Some(CanonicalJsonValue::Object(content))
                if matches!(
                    content.get("join_authorised_via_users_server"),
                    Some(CanonicalJsonValue::String(user))
                        if UserId::parse(user.as_str())
                            .is_ok_and(|user| user.server_name() == own)
                )
        );
    if authorised_by_us {
        co_sign(&services.keys, &mut json, &version)?;
    }
    let pdu = verify_pdu(federation, &version, json)
        .await
        .map_err(|error| ApiError::bad_json(format!("The event does not verify: {error}")))?;
    if pdu.event_id() != send.event_id {
        return Err(ApiError::bad_json("The event id does not match the event"));
    }
    let guard = services.rooms.lock(room_id).await;
    let to_append = pdu.clone();
    let outcome = blocking(state, move |services| {
        Ok(services.rooms.append_remote(&guard, to_append)?)
    })
    .await?;
    if outcome.status != EventStatus::Normal {
        return Err(ApiError::forbidden(format!(
            "The {} event is not allowed",
            send.membership
        )));
    }
    // The room's other servers hear of the membership from us: the sending server is not in
    // the room (yet, or any more), so it does not send it to them itself.
    let (queue_room, sender_server) = (room_id.to_owned(), origin.server_name().to_owned());
    let destinations = blocking(state, move |services| {
        let mut servers: BTreeSet<_> = servers_in_room(services, &queue_room)?;
        servers.remove(&sender_server);
        Ok(servers)
    })
    .await?;
    if !destinations.is_empty() {
        federation
            .outbound()
            .enqueue_pdu(&destinations, room_id, pdu.event_id().to_owned())?;
    }
    Ok(Accepted {
        pdu,
        co_signed: authorised_by_us,
    })
}

/// The shape checks of a `send_*` event: an `m.room.member` of `room_id` for its own sender,
/// a user of the requesting server, with `membership`.
fn check_membership_event(
    json: &CanonicalJsonObject,
    origin: &FederationOrigin,
    room_id: &RoomId,
    membership: &MembershipState,
) -> Result<(), ApiError> {
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
    let sender = text("sender").ok_or_else(|| ApiError::bad_json("No sender"))?;
    if text("state_key") != Some(sender) {
        return Err(ApiError::bad_json("The state key is not the sender"));
    }
    let sender = UserId::parse(sender).map_err(|_| ApiError::bad_json("Invalid sender"))?;
    if sender.server_name() != origin.server_name() {
        return Err(ApiError::forbidden(
            "The sender does not belong to the requesting server",
        ));
    }
    let actual = match json.get("content") {
        Some(CanonicalJsonValue::Object(content)) => match content.get("membership") {
            Some(CanonicalJsonValue::String(value)) => Some(value.clone()),
            _ => None,
        },
        _ => None,
    };
    if actual.as_deref() != Some(membership.as_str()) {
        return Err(ApiError::bad_json(format!(
            "The membership is not {membership}"
        )));
    }
    Ok(())
}

/// How many members the spec's room summary names as heroes.
const HEROES: usize = 5;

/// The answer to a `send_join`: the state before the join and the auth chain, in the
/// federation format.
struct JoinState {
    state: PduList,
    auth_chain: PduList,
    /// With `omit_members`: the servers with a joined member, this one first.
    servers_in_room: Option<Vec<String>>,
}

/// The state before `pdu` and its auth chain (with the join's), in the federation format.
///
/// With `omit_members` (MSC3706, a partial-state join), member events are left out of the
/// state except the joining user's own and, when the room has neither a name nor a canonical
/// alias, the heroes' (the members a client names the room after); the auth chain then covers
/// only what is returned, without the events already in the state.
fn room_state_for(
    services: &Services,
    pdu: &Pdu,
    omit_members: bool,
) -> Result<JoinState, ApiError> {
    let rooms = &services.rooms;
    let mut state = rooms.state_before_event(pdu.event_id())?;
    if omit_members {
        let keep = kept_members(&state, pdu.sender());
        state.retain(|event| {
            *event.kind() != TimelineEventType::RoomMember
                || event.state_key().is_some_and(|key| keep.contains(key))
        });
    }
    let mut chain_ids: Vec<_> = state
        .iter()
        .map(|event| event.event_id().to_owned())
        .collect();
    chain_ids.push(pdu.event_id().to_owned());
    let mut chain = rooms.auth_chain(&chain_ids)?;
    if omit_members {
        let in_state: BTreeSet<&EventId> = state.iter().map(Pdu::event_id).collect();
        chain.retain(|event| !in_state.contains(event.event_id()));
    }
    let json = |event: &Pdu| -> Result<Option<Box<RawJsonValue>>, ApiError> {
        rooms
            .pdu_json_for_federation(event.event_id())?
            .map(|object| raw_json(&object))
            .transpose()
    };
    let mut state_json = Vec::with_capacity(state.len());
    for event in &state {
        state_json.extend(json(event)?);
    }
    let mut chain_json = Vec::with_capacity(chain.len());
    for event in &chain {
        chain_json.extend(json(event)?);
    }
    let servers_in_room = if omit_members {
        let mut servers: Vec<String> = crate::inbound::joined_servers(rooms, pdu.room_id())?
            .into_iter()
            .map(|server| server.to_string())
            .collect();
        // The joining server is in the room now, whether or not the index shows it yet.
        let joining = pdu.sender().server_name().to_string();
        if !servers.contains(&joining) {
            servers.push(joining);
        }
        Some(servers)
    } else {
        None
    };
    Ok(JoinState {
        state: state_json,
        auth_chain: chain_json,
        servers_in_room,
    })
}

/// The state keys of the member events a partial-state join keeps: the joining user's and,
/// when the room has no name and no canonical alias, the heroes' (the first [`HEROES`] joined
/// or invited members other than the joining user, by user id, as a client would pick them).
fn kept_members(state: &[Pdu], joining: &UserId) -> BTreeSet<String> {
    let mut keep = BTreeSet::from([joining.to_string()]);
    let named = state.iter().any(|event| {
        matches!(
            event.kind(),
            TimelineEventType::RoomName | TimelineEventType::RoomCanonicalAlias
        ) && event.state_key() == Some("")
            && matches!(
                event.content_object().get(if *event.kind() == TimelineEventType::RoomName {
                    "name"
                } else {
                    "alias"
                }),
                Some(CanonicalJsonValue::String(value)) if !value.is_empty()
            )
    });
    if named {
        return keep;
    }
    let mut candidates: Vec<&str> = state
        .iter()
        .filter(|event| *event.kind() == TimelineEventType::RoomMember)
        .filter(|event| {
            matches!(
                event.content_object().get("membership"),
                Some(CanonicalJsonValue::String(membership))
                    if membership == "join" || membership == "invite"
            )
        })
        .filter_map(Pdu::state_key)
        .filter(|key| *key != joining.as_str())
        .collect();
    candidates.sort_unstable();
    keep.extend(candidates.into_iter().take(HEROES).map(str::to_owned));
    keep
}

/// # `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}`
pub(crate) async fn send_join_v2(
    State(state): State<AppState>,
    Extension(federation): Extension<Arc<Federation>>,
    request: Ruma<create_join_event::v2::Request>,
) -> ApiResult<RumaResponse<create_join_event::v2::Response>> {
    let body = request.body;
    let accepted = accept_membership(
        &state,
        &federation,
        MembershipSend {
            origin: &request.identity,
            room_id: &body.room_id,
            event_id: &body.event_id,
            pdu: &body.pdu,
            membership: MembershipState::Join,
        },
    )
    .await?;
    let pdu = accepted.pdu.clone();
    let omit_members = body.omit_members;
    let join_state = blocking(&state, move |services| {
        room_state_for(services, &pdu, omit_members)
    })
    .await?;
    let mut room_state = create_join_event::v2::RoomState::new();
    room_state.state = join_state.state;
    room_state.auth_chain = join_state.auth_chain;
    room_state.members_omitted = omit_members;
    room_state.servers_in_room = join_state.servers_in_room;
    if accepted.co_signed {
        room_state.event = Some(raw_json(accepted.pdu.json())?);
    }
    Ok(create_join_event::v2::Response::new(room_state).into())
}

/// # `PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}`
pub(crate) async fn send_leave_v2(
    State(state): State<AppState>,
    Extension(federation): Extension<Arc<Federation>>,
    request: Ruma<create_leave_event::v2::Request>,
) -> ApiResult<RumaResponse<create_leave_event::v2::Response>> {
    let body = request.body;
    accept_membership(
        &state,
        &federation,
        MembershipSend {
            origin: &request.identity,
            room_id: &body.room_id,
            event_id: &body.event_id,
            pdu: &body.pdu,
            membership: MembershipState::Leave,
        },
    )
    .await?;
    Ok(create_leave_event::v2::Response::new().into())
}

/// # `PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}`
pub(crate) async fn send_knock(
    State(state): State<AppState>,
    Extension(federation): Extension<Arc<Federation>>,
    request: Ruma<create_knock_event::v1::Request>,
) -> ApiResult<RumaResponse<create_knock_event::v1::Response>> {
    let body = request.body;
    accept_membership(
        &state,
        &federation,
        MembershipSend {
            origin: &request.identity,
            room_id: &body.room_id,
            event_id: &body.event_id,
            pdu: &body.pdu,
            membership: MembershipState::Knock,
        },
    )
    .await?;
    let room_id = body.room_id.clone();
    let stripped = blocking(&state, move |services| stripped_state(services, &room_id)).await?;
    Ok(create_knock_event::v1::Response::new(stripped).into())
}

/// The stripped state given with invites and knocks, as full PDUs (as the specification asks
/// since Matrix 1.16): the room's create, join rules, name, avatar, canonical alias,
/// encryption and topic events.
pub(crate) fn stripped_state(
    services: &Services,
    room_id: &RoomId,
) -> Result<Vec<RawStrippedState>, ApiError> {
    const TYPES: [StateEventType; 7] = [
        StateEventType::RoomCreate,
        StateEventType::RoomJoinRules,
        StateEventType::RoomName,
        StateEventType::RoomAvatar,
        StateEventType::RoomCanonicalAlias,
        StateEventType::RoomEncryption,
        StateEventType::RoomTopic,
    ];
    let rooms = &services.rooms;
    let mut stripped = Vec::new();
    for kind in TYPES {
        if let Some(pdu) = rooms.state_event(room_id, &kind, "")?
            && let Some(json) = rooms.pdu_json_for_federation(pdu.event_id())?
        {
            stripped.push(RawStrippedState::Pdu(raw_json(&json)?));
        }
    }
    Ok(stripped)
}
