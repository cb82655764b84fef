//! `GET /room_summary/{roomIdOrAlias}` (MSC3266, stable since v1.15): what a room is, for a
//! user deciding whether to join it.
//!
//! Registered under every path ruma knows for the endpoint (the stable one and the
//! `im.nheko.summary` unstable one). A room this server is in is summarised from its own
//! state; another is asked of the `via` servers (and the room id's server) through their
//! federation `/hierarchy`, with the same short-lived cache as the hierarchy walk. A room the
//! requester may not learn about (see [`axon_core::rooms::hierarchy::is_accessible`]) answers
//! 404 like an unknown one, so the answer does not reveal that it exists.

use std::sync::Arc;

use axon_api::{ApiError, ApiResult, AppState, Ruma, RumaResponse};
use axon_core::rooms::hierarchy;
use axon_federation::Federation;
use axum::Extension;
use axum::extract::State;
use ruma::api::client::room::get_summary;
use ruma::events::room::member::MembershipState;
use ruma::room::RoomSummary;
use ruma::{OwnedRoomAliasId, OwnedRoomId, OwnedServerName};

use super::blocking;

/// # `GET /_matrix/client/v1/room_summary/{roomIdOrAlias}`
pub(crate) async fn summary(
    State(state): State<AppState>,
    Extension(federation): Extension<Arc<Federation>>,
    request: Ruma<get_summary::v1::Request>,
) -> ApiResult<RumaResponse<get_summary::v1::Response>> {
    let user_id = request.identity.map(|user| user.user_id);
    let target = request.body.room_id_or_alias;
    let (room_id, local) = blocking(&state, move |services| {
        let room_id = match OwnedRoomAliasId::try_from(target.as_str()) {
            Ok(alias) => super::aliases::resolve_local(services, &alias)?,
            Err(_) => OwnedRoomId::try_from(target.as_str())
                .map_err(|_| ApiError::invalid_param("Not a room id or alias"))?,
        };
        let rooms = &services.rooms;
        let local = if hierarchy::is_resident(rooms, &room_id)? {
            hierarchy::summary(rooms, &room_id)?
        } else {
            None
        };
        Ok((room_id, local))
    })
    .await?;
    let not_found = {
        let room_id = room_id.clone();
        move || ApiError::not_found(format!("Room {room_id} not found"))
    };
    let summary = match local {
        Some(summary) => summary,
        None => remote_summary(&federation, &room_id, request.body.via)
            .await
            .ok_or_else(not_found.clone())?,
    };
    blocking(&state, move |services| {
        let rooms = &services.rooms;
        if !hierarchy::is_accessible(rooms, &room_id, &summary, user_id.as_deref())? {
            return Err(not_found());
        }
        let mut response = get_summary::v1::Response::new(summary);
        if let Some(user_id) = &user_id {
            // The spec asks for `leave` when the user has no membership here.
            response.membership = Some(
                rooms
                    .membership(&room_id, user_id)?
                    .unwrap_or(MembershipState::Leave),
            );
        }
        Ok(response.into())
    })
    .await
}

/// The summary of a room this server is not in, as one of `via` or the room id's server
/// describes it; `None` when none answers.
async fn remote_summary(
    federation: &Federation,
    room_id: &OwnedRoomId,
    mut via: Vec<OwnedServerName>,
) -> Option<RoomSummary> {
    if !federation.enabled() {
        return None;
    }
    if let Some(server) = room_id.server_name() {
        via.push(server.to_owned());
    }
    let answer = federation
        .hierarchy()
        .fetch(federation.client(), room_id, false, &via)
        .await?;
    Some(answer.room.summary.clone())
}
