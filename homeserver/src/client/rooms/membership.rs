//! Membership changes: join, leave, invite, kick, ban, unban, forget.

use std::sync::Arc;

use axon_api::{ApiError, ApiResult, AppState, Ruma, RumaResponse};
use axon_core::rooms::graph::NewEvent;
use axon_federation::membership::{InviteError, JoinError, RemoteMembershipError};
use axon_federation::{Federation, FederationError};
use axum::Extension;
use axum::extract::State;
use http::StatusCode;
use ruma::api::client::membership::invite_user::v3::InvitationRecipient;
use ruma::api::client::membership::{
    ban_user, forget_room, invite_user, join_room_by_id, join_room_by_id_or_alias, kick_user,
    leave_room, unban_user,
};
use ruma::api::error::ErrorKind;
use ruma::events::StateEventType;
use ruma::events::room::member::MembershipState;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedRoomAliasId, OwnedRoomId, OwnedServerName,
    OwnedUserId, RoomId, UserId,
};

use super::{append, blocking};

/// A membership change of `target` by `sender`.
pub(super) struct Change {
    pub(super) room_id: OwnedRoomId,
    pub(super) sender: OwnedUserId,
    pub(super) target: OwnedUserId,
    pub(super) membership: MembershipState,
    pub(super) reason: Option<String>,
}

/// Sends the `m.room.member` event of `change`. The auth rules decide who may do what; a join
/// carries the joiner's profile.
pub(super) async fn change_membership(state: &AppState, change: Change) -> Result<(), ApiError> {
    send_membership(state, change, None).await
}

/// [`change_membership`], with a restricted join's authorising user
/// (`join_authorised_via_users_server`).
async fn send_membership(
    state: &AppState,
    change: Change,
    authorised_via: Option<OwnedUserId>,
) -> Result<(), ApiError> {
    let mut content = CanonicalJsonObject::new();
    content.insert(
        "membership".to_owned(),
        CanonicalJsonValue::String(change.membership.to_string()),
    );
    if let Some(reason) = change.reason {
        content.insert("reason".to_owned(), CanonicalJsonValue::String(reason));
    }
    if let Some(via) = authorised_via {
        content.insert(
            "join_authorised_via_users_server".to_owned(),
            CanonicalJsonValue::String(via.into()),
        );
    }
    if change.membership == MembershipState::Join {
        let profile = state.services().accounts.profile(&change.target)?;
        if let Some(name) = profile.displayname {
            content.insert("displayname".to_owned(), CanonicalJsonValue::String(name));
        }
        if let Some(avatar) = profile.avatar_url {
            content.insert("avatar_url".to_owned(), CanonicalJsonValue::String(avatar));
        }
    }
    let event = NewEvent::state(
        change.room_id,
        change.sender,
        StateEventType::RoomMember,
        change.target.as_str(),
        content,
    );
    append(state, event, None).await?;
    Ok(())
}

fn membership_of(
    state: &AppState,
    room_id: &RoomId,
    user_id: &UserId,
) -> Result<Option<MembershipState>, ApiError> {
    Ok(state.services().rooms.membership(room_id, user_id)?)
}

/// Joins `room_id`. A room where no user of this server is joined (unknown here, or left by
/// everyone) is joined through another server: `via`, then the room id's server.
async fn join(
    state: &AppState,
    federation: &Federation,
    room_id: OwnedRoomId,
    user_id: OwnedUserId,
    reason: Option<String>,
    via: Vec<OwnedServerName>,
) -> Result<OwnedRoomId, ApiError> {
    if membership_of(state, &room_id, &user_id)? == Some(MembershipState::Join) {
        return Ok(room_id);
    }
    let lookup_room = room_id.clone();
    let resident = blocking(state, move |services| {
        let rooms = &services.rooms;
        Ok(rooms
            .members(&lookup_room, Some(&MembershipState::Join))?
            .iter()
            .any(|(member, _)| member.server_name() == rooms.server_name()))
    })
    .await?;
    if !resident {
        let mut via = via;
        let (lookup_room, lookup_user) = (room_id.clone(), user_id.clone());
        // Accepting an invite from another server: the inviter's server is in the room.
        if let Some(invite) = blocking(state, move |services| {
            Ok(services
                .rooms
                .current_out_of_room_membership(&lookup_room, &lookup_user)?)
        })
        .await?
        {
            for server in invite.servers {
                if !via.contains(&server) {
                    via.push(server);
                }
            }
        }
        return join_remote(state, federation, room_id, user_id, reason, via).await;
    }
    let (lookup_room, lookup_user) = (room_id.clone(), user_id.clone());
    let authorised_via = blocking(state, move |services| {
        super::knock::restricted_join_authoriser(services, &lookup_room, &lookup_user)
    })
    .await?;
    send_membership(
        state,
        Change {
            room_id: room_id.clone(),
            sender: user_id.clone(),
            target: user_id,
            membership: MembershipState::Join,
            reason,
        },
        authorised_via,
    )
    .await?;
    Ok(room_id)
}

/// Joins a room no user of this server is in, through one of `via` or the room id's server
/// (`make_join`/`send_join`).
async fn join_remote(
    state: &AppState,
    federation: &Federation,
    room_id: OwnedRoomId,
    user_id: OwnedUserId,
    reason: Option<String>,
    via: Vec<OwnedServerName>,
) -> Result<OwnedRoomId, ApiError> {
    let servers = axon_federation::membership::join_candidates(&room_id, &via);
    let mut content = CanonicalJsonObject::new();
    let profile = state.services().accounts.profile(&user_id)?;
    if let Some(name) = profile.displayname {
        content.insert("displayname".to_owned(), CanonicalJsonValue::String(name));
    }
    if let Some(avatar) = profile.avatar_url {
        content.insert("avatar_url".to_owned(), CanonicalJsonValue::String(avatar));
    }
    if let Some(reason) = reason {
        content.insert("reason".to_owned(), CanonicalJsonValue::String(reason));
    }
    let services = state.services_arc();
    axon_federation::membership::join_remote(
        federation, &services, &room_id, &user_id, &servers, content,
    )
    .await
    .map_err(|error| match error {
        JoinError::NoServers => ApiError::not_found("No server to join this room through"),
        JoinError::Refused(FederationError::Remote {
            errcode, message, ..
        }) if errcode == "M_FORBIDDEN" => ApiError::forbidden(message),
        JoinError::Refused(other) => other.into(),
        failed => {
            tracing::info!(error = %failed, "remote join failed");
            ApiError::with_status(
                StatusCode::BAD_GATEWAY,
                ErrorKind::Unknown,
                "No server in the room could be reached to join it",
            )
        }
    })?;
    Ok(room_id)
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/join`
pub(crate) async fn join_by_id(
    State(state): State<AppState>,
    Extension(federation): Extension<Arc<Federation>>,
    request: Ruma<join_room_by_id::v3::Request>,
) -> ApiResult<RumaResponse<join_room_by_id::v3::Response>> {
    let body = request.body;
    let room_id = join(
        &state,
        &federation,
        body.room_id,
        request.identity.user_id,
        body.reason,
        Vec::new(),
    )
    .await?;
    Ok(join_room_by_id::v3::Response::new(room_id).into())
}

/// # `POST /_matrix/client/v3/join/{roomIdOrAlias}`
pub(crate) async fn join_by_id_or_alias(
    State(state): State<AppState>,
    Extension(federation): Extension<Arc<Federation>>,
    request: Ruma<join_room_by_id_or_alias::v3::Request>,
) -> ApiResult<RumaResponse<join_room_by_id_or_alias::v3::Response>> {
    let body = request.body;
    let mut via = body.via;
    let room_id = match OwnedRoomAliasId::try_from(body.room_id_or_alias.as_str()) {
        Ok(alias) if alias.server_name().as_str() != state.config().server_name => {
            let (room_id, servers) =
                axon_federation::membership::resolve_alias(&federation, &alias)
                    .await
                    .map_err(|error| match error {
                        FederationError::Remote { status: 404, .. } => {
                            ApiError::not_found(format!("Room alias {alias} not found"))
                        }
                        other => other.into(),
                    })?;
            via.extend(servers);
            room_id
        }
        Ok(alias) => {
            blocking(&state, move |services| {
                super::aliases::resolve_local(services, &alias)
            })
            .await?
        }
        Err(_) => OwnedRoomId::try_from(body.room_id_or_alias)
            .map_err(|_| ApiError::invalid_param("Not a room id or alias"))?,
    };
    let room_id = join(
        &state,
        &federation,
        room_id,
        request.identity.user_id,
        body.reason,
        via,
    )
    .await?;
    Ok(join_room_by_id_or_alias::v3::Response::new(room_id).into())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/leave`
///
/// In a room this server is not in, where the user is only invited or knocking, the leave goes
/// through a server of the room (`make_leave`/`send_leave`), or is kept here alone when none
/// can be reached: the invite is rejected, the knock withdrawn, either way.
pub(crate) async fn leave(
    State(state): State<AppState>,
    Extension(federation): Extension<Arc<Federation>>,
    request: Ruma<leave_room::v3::Request>,
) -> ApiResult<RumaResponse<leave_room::v3::Response>> {
    let user_id = request.identity.user_id;
    let body = request.body;
    let (lookup_room, lookup_user) = (body.room_id.clone(), user_id.clone());
    let out_of_room = blocking(&state, move |services| {
        Ok(services
            .rooms
            .current_out_of_room_membership(&lookup_room, &lookup_user)?)
    })
    .await?;
    if let Some(previous) = out_of_room {
        if matches!(
            previous.membership,
            MembershipState::Invite | MembershipState::Knock
        ) {
            let services = state.services_arc();
            let via = axon_federation::membership::join_candidates(&body.room_id, &[]);
            axon_federation::membership::leave_out_of_room(
                &federation,
                &services,
                previous,
                &via,
                body.reason,
            )
            .await
            .map_err(|error| ApiError::internal(format!("recording the leave: {error}")))?;
        }
        return Ok(leave_room::v3::Response::new().into());
    }
    change_membership(
        &state,
        Change {
            room_id: body.room_id,
            sender: user_id.clone(),
            target: user_id,
            membership: MembershipState::Leave,
            reason: body.reason,
        },
    )
    .await?;
    Ok(leave_room::v3::Response::new().into())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/invite`
///
/// A user of another server is invited through their server, which must sign the invite
/// before it is appended (see [`invite_remote`]).
pub(crate) async fn invite(
    State(state): State<AppState>,
    Extension(federation): Extension<Arc<Federation>>,
    request: Ruma<invite_user::v3::Request>,
) -> ApiResult<RumaResponse<invite_user::v3::Response>> {
    let body = request.body;
    let InvitationRecipient::UserId(recipient) = body.recipient else {
        return Err(ApiError::with_status(
            StatusCode::BAD_REQUEST,
            ErrorKind::Unrecognized,
            "Third-party invites are not supported",
        ));
    };
    if recipient.user_id.server_name().as_str() != state.config().server_name {
        invite_remote(
            &state,
            &federation,
            &body.room_id,
            &request.identity.user_id,
            &recipient.user_id,
            recipient.reason,
            false,
        )
        .await?;
        return Ok(invite_user::v3::Response::new().into());
    }
    change_membership(
        &state,
        Change {
            room_id: body.room_id,
            sender: request.identity.user_id,
            target: recipient.user_id,
            membership: MembershipState::Invite,
            reason: recipient.reason,
        },
    )
    .await?;
    Ok(invite_user::v3::Response::new().into())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/kick`
pub(crate) async fn kick(
    State(state): State<AppState>,
    request: Ruma<kick_user::v3::Request>,
) -> ApiResult<RumaResponse<kick_user::v3::Response>> {
    let body = request.body;
    // The auth rules would let a moderator "kick" someone who is not there; that is no kick.
    if !matches!(
        membership_of(&state, &body.room_id, &body.user_id)?,
        Some(MembershipState::Join | MembershipState::Invite | MembershipState::Knock)
    ) {
        return Err(ApiError::forbidden("The user is not in the room"));
    }
    change_membership(
        &state,
        Change {
            room_id: body.room_id,
            sender: request.identity.user_id,
            target: body.user_id,
            membership: MembershipState::Leave,
            reason: body.reason,
        },
    )
    .await?;
    Ok(kick_user::v3::Response::new().into())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/ban`
pub(crate) async fn ban(
    State(state): State<AppState>,
    request: Ruma<ban_user::v3::Request>,
) -> ApiResult<RumaResponse<ban_user::v3::Response>> {
    let body = request.body;
    change_membership(
        &state,
        Change {
            room_id: body.room_id,
            sender: request.identity.user_id,
            target: body.user_id,
            membership: MembershipState::Ban,
            reason: body.reason,
        },
    )
    .await?;
    Ok(ban_user::v3::Response::new().into())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/unban`
pub(crate) async fn unban(
    State(state): State<AppState>,
    request: Ruma<unban_user::v3::Request>,
) -> ApiResult<RumaResponse<unban_user::v3::Response>> {
    let body = request.body;
    // Without this check an "unban" of a member would be a kick.
    if membership_of(&state, &body.room_id, &body.user_id)? != Some(MembershipState::Ban) {
        return Err(ApiError::forbidden("The user is not banned"));
    }
    change_membership(
        &state,
        Change {
            room_id: body.room_id,
            sender: request.identity.user_id,
            target: body.user_id,
            membership: MembershipState::Leave,
            reason: body.reason,
        },
    )
    .await?;
    Ok(unban_user::v3::Response::new().into())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/forget`
///
/// Only checks that the user is out of the room: nothing hides forgotten rooms yet (sync will
/// keep the flag when it exists).
pub(crate) async fn forget(
    State(state): State<AppState>,
    request: Ruma<forget_room::v3::Request>,
) -> ApiResult<RumaResponse<forget_room::v3::Response>> {
    let body = request.body;
    if matches!(
        membership_of(&state, &body.room_id, &request.identity.user_id)?,
        Some(MembershipState::Join | MembershipState::Invite | MembershipState::Knock)
    ) {
        return Err(ApiError::with_status(
            StatusCode::BAD_REQUEST,
            ErrorKind::Unknown,
            "The user has not left the room",
        ));
    }
    Ok(forget_room::v3::Response::new().into())
}

/// Invites `invitee`, a user of another server, to `room_id` on behalf of `sender`: the
/// invitee's server signs the invite before it is appended. Its refusal reaches the client as
/// a 403 with its message; an unreachable server (or an unusable answer) is a 502, and nothing
/// is appended either way.
pub(super) async fn invite_remote(
    state: &AppState,
    federation: &Federation,
    room_id: &RoomId,
    sender: &UserId,
    invitee: &UserId,
    reason: Option<String>,
    is_direct: bool,
) -> Result<(), ApiError> {
    let mut content = CanonicalJsonObject::new();
    if let Some(reason) = reason {
        content.insert("reason".to_owned(), CanonicalJsonValue::String(reason));
    }
    if is_direct {
        content.insert("is_direct".to_owned(), CanonicalJsonValue::Bool(true));
    }
    let services = state.services_arc();
    axon_federation::membership::invite_remote(
        federation, &services, room_id, sender, invitee, content,
    )
    .await
    .map_err(|error| match error {
        InviteError::Room(error) => ApiError::from(error),
        InviteError::Refused {
            status: 403,
            message,
            ..
        } => ApiError::forbidden(message),
        other => {
            tracing::info!(error = %other, "remote invite failed");
            ApiError::with_status(
                StatusCode::BAD_GATEWAY,
                ErrorKind::Unknown,
                "The invited user's server could not be reached or refused the invite",
            )
        }
    })?;
    Ok(())
}

/// Knocks on `room_id`, a room no user of this server is in, through one of `via` or the room
/// id's server (`make_knock`/`send_knock`); the room then shows under `rooms.knock` in the
/// user's sync with the stripped state the resident server gave.
pub(super) async fn knock_remote(
    state: &AppState,
    federation: &Federation,
    room_id: &RoomId,
    user_id: &UserId,
    reason: Option<String>,
    via: &[OwnedServerName],
) -> Result<(), ApiError> {
    let servers = axon_federation::membership::join_candidates(room_id, via);
    let services = state.services_arc();
    axon_federation::membership::knock_remote(
        federation, &services, room_id, user_id, &servers, reason,
    )
    .await
    .map_err(|error| match error {
        RemoteMembershipError::NoServers => {
            ApiError::not_found("No server to knock on this room through")
        }
        RemoteMembershipError::Refused(FederationError::Remote {
            errcode, message, ..
        }) if errcode == "M_FORBIDDEN" => ApiError::forbidden(message),
        RemoteMembershipError::Refused(other) | RemoteMembershipError::Local(other) => other.into(),
        failed => {
            tracing::info!(error = %failed, "remote knock failed");
            ApiError::with_status(
                StatusCode::BAD_GATEWAY,
                ErrorKind::Unknown,
                "No server in the room could be reached to knock on it",
            )
        }
    })?;
    Ok(())
}
