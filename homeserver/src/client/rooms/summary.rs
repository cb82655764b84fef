//! `GET /room_summary/{roomIdOrAlias}` (MSC3266, stable since v1.15): what a room is, for a
//! user deciding whether to join it.
//!
//! Registered under every path ruma knows for the endpoint (the stable one and the
//! `im.nheko.summary` unstable one). Only rooms known here are summarised: `via` servers are
//! not asked yet. A room the requester may not learn about (see
//! [`axon_core::rooms::hierarchy::is_accessible`]) answers 404 like an unknown one, so the
//! answer does not reveal that it exists.

use axon_api::{ApiError, ApiResult, AppState, Ruma, RumaResponse};
use axon_core::rooms::hierarchy;
use axum::extract::State;
use ruma::api::client::room::get_summary;
use ruma::events::room::member::MembershipState;
use ruma::{OwnedRoomAliasId, OwnedRoomId};

use super::blocking;

/// # `GET /_matrix/client/v1/room_summary/{roomIdOrAlias}`
pub(crate) async fn summary(
    State(state): State<AppState>,
    request: Ruma<get_summary::v1::Request>,
) -> ApiResult<RumaResponse<get_summary::v1::Response>> {
    let user_id = request.identity.map(|user| user.user_id);
    let target = request.body.room_id_or_alias;
    blocking(&state, move |services| {
        let room_id = match OwnedRoomAliasId::try_from(target.as_str()) {
            Ok(alias) => super::aliases::resolve_local(services, &alias)?,
            Err(_) => OwnedRoomId::try_from(target.as_str())
                .map_err(|_| ApiError::invalid_param("Not a room id or alias"))?,
        };
        let rooms = &services.rooms;
        let not_found = || ApiError::not_found(format!("Room {room_id} not found"));
        let summary = hierarchy::summary(rooms, &room_id)?.ok_or_else(not_found)?;
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
