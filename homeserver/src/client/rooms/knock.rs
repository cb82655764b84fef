//! The join rules that need more than a membership event: knocking on a room of this
//! server, and the authorising member of a restricted join.

use std::sync::Arc;

use axon_api::{ApiError, ApiResult, AppState, Ruma, RumaResponse};
use axon_core::Services;
use axon_core::rooms::power;
use axon_federation::Federation;
use axum::Extension;
use axum::extract::State;
use ruma::api::client::knock::knock_room;
use ruma::events::StateEventType;
use ruma::events::room::join_rules::RoomJoinRulesEventContent;
use ruma::events::room::member::MembershipState;
use ruma::room::{AllowRule, JoinRule};
use ruma::{OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomId, UserId};

use super::blocking;
use super::membership::{Change, change_membership};

/// # `POST /_matrix/client/v3/knock/{roomIdOrAlias}`
///
/// Sends the user's `knock` membership. The auth rules decide: the room's version must know
/// knocking (7 and later) and its join rule must allow it (`knock`, or `knock_restricted`
/// from version 10); a member of the room cannot knock.
pub(crate) async fn knock(
    State(state): State<AppState>,
    Extension(federation): Extension<Arc<Federation>>,
    request: Ruma<knock_room::v3::Request>,
) -> ApiResult<RumaResponse<knock_room::v3::Response>> {
    let body = request.body;
    let mut via = body.via;
    let room_id = match OwnedRoomAliasId::try_from(body.room_id_or_alias.as_str()) {
        Ok(alias) if alias.server_name().as_str() != state.config().server_name => {
            let (room_id, servers) =
                axon_federation::membership::resolve_alias(&federation, &alias).await?;
            via.extend(servers);
            room_id
        }
        Ok(alias) => {
            blocking(&state, move |services| {
                super::aliases::resolve_local(services, &alias)
            })
            .await?
        }
        Err(_) => OwnedRoomId::try_from(body.room_id_or_alias.as_str())
            .map_err(|_| ApiError::invalid_param("Not a room id or alias"))?,
    };
    let lookup = room_id.clone();
    let user_id = request.identity.user_id;
    // A room no user of this server is in is knocked on through one of its servers.
    let resident = blocking(&state, move |services| {
        let rooms = &services.rooms;
        Ok(rooms
            .members(&lookup, Some(&MembershipState::Join))?
            .iter()
            .any(|(member, _)| member.server_name() == rooms.server_name()))
    })
    .await?;
    if !resident {
        super::membership::knock_remote(&state, &federation, &room_id, &user_id, body.reason, &via)
            .await?;
        return Ok(knock_room::v3::Response::new(room_id).into());
    }
    change_membership(
        &state,
        Change {
            room_id: room_id.clone(),
            sender: user_id.clone(),
            target: user_id,
            membership: MembershipState::Knock,
            reason: body.reason,
        },
    )
    .await?;
    Ok(knock_room::v3::Response::new(room_id).into())
}

/// For a join to a room whose join rule is `restricted` (v8+) or `knock_restricted` (v10+):
/// the local member who authorises it, named in the join event's
/// `join_authorised_via_users_server`, so the auth rules accept it.
///
/// `None` when the join needs no authoriser (another join rule, or the user is invited or
/// already joined); `M_FORBIDDEN` when the user is in none of the rooms the rule allows, or
/// when no member of this server may invite.
pub(super) fn restricted_join_authoriser(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
) -> Result<Option<OwnedUserId>, ApiError> {
    let rooms = &services.rooms;
    let Some(version) = rooms.room_version(room_id)? else {
        return Ok(None);
    };
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
        return Err(ApiError::forbidden(
            "You are not a member of a room this room's join rules allow",
        ));
    }
    let Some(levels) = power::power_levels(rooms, room_id)? else {
        return Err(ApiError::forbidden(
            "No user of this server can authorise the join",
        ));
    };
    rooms
        .members(room_id, Some(&MembershipState::Join))?
        .into_iter()
        .map(|(member, _)| member)
        .find(|member| {
            member.server_name() == rooms.server_name() && levels.user_can_invite(member)
        })
        .map(Some)
        .ok_or_else(|| ApiError::forbidden("No user of this server can authorise the join"))
}
