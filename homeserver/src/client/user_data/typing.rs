//! Typing notifications.

use std::sync::Arc;

use axon_api::{ApiError, ApiResult, AppState, Ruma, RumaResponse};
use axon_federation::Federation;
use axon_federation::outbound::{queue_for_room, typing_edu};
use axum::Extension;
use axum::extract::State;
use ruma::api::client::typing::create_typing_event::{self, v3::Typing};
use ruma::events::room::member::MembershipState;

use super::check_self;
use crate::client::rooms::blocking;
use crate::client::sync::sync_error;

/// # `PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}`
pub(crate) async fn typing(
    State(state): State<AppState>,
    Extension(federation): Extension<Arc<Federation>>,
    request: Ruma<create_typing_event::v3::Request>,
) -> ApiResult<RumaResponse<create_typing_event::v3::Response>> {
    let user = request.identity;
    let body = request.body;
    check_self(&user.user_id, &body.user_id, "set typing notifications")?;
    let (room_id, user_id) = (body.room_id.clone(), user.user_id.clone());
    blocking(&state, move |services| {
        if services.rooms.membership(&room_id, &user_id)? != Some(MembershipState::Join) {
            return Err(ApiError::forbidden("You are not joined to this room"));
        }
        services
            .presence
            .bump_active(&services.rooms, &user_id)
            .map_err(sync_error)
    })
    .await?;
    let typing = &state.services().typing;
    let is_typing = match body.state {
        Typing::Yes(info) => {
            typing.start(&body.room_id, &user.user_id, Some(info.timeout));
            true
        }
        Typing::No => {
            typing.stop(&body.room_id, &user.user_id);
            false
        }
    };
    // Typing lives in memory only, so it goes to the room's other servers from here.
    let edu = typing_edu(&body.room_id, &user.user_id, is_typing);
    blocking(&state, move |services| {
        queue_for_room(&federation, services, &body.room_id, &edu).map_err(ApiError::from)
    })
    .await?;
    Ok(create_typing_event::v3::Response::new().into())
}
