//! Reporting rooms and events to the server's administrators.

use axon_api::{ApiError, ApiResult, AppState, Ruma, RumaResponse};
use axon_core::rooms::graph::EventStatus;
use axon_core::rooms::reports::{self, NewReport};
use axum::extract::State;
use ruma::api::client::room::{report_content, report_room};
use ruma::events::room::member::MembershipState;

use super::blocking;
use super::visibility::Reader;

/// # `POST /_matrix/client/v3/rooms/{roomId}/report/{eventId}`
///
/// The reporter must be joined to the room and able to see the event: an unknown event, one
/// of another room, one hidden from them and a room they are not in all answer
/// `M_NOT_FOUND`, as the specification says, so a report reveals nothing. The deprecated
/// `score` is not read by the request type and is stored as absent.
pub(crate) async fn report_event(
    State(state): State<AppState>,
    request: Ruma<report_content::v3::Request>,
) -> ApiResult<RumaResponse<report_content::v3::Response>> {
    let user_id = request.identity.user_id;
    let body = request.body;
    blocking(&state, move |services| {
        let rooms = &services.rooms;
        let not_found = || ApiError::not_found("Event not found");
        let stored = rooms.get_event(&body.event_id)?.ok_or_else(not_found)?;
        if stored.room_id != body.room_id || stored.status != EventStatus::Normal {
            return Err(not_found());
        }
        let reader = Reader::new(rooms, &body.room_id, &user_id)?;
        if reader.membership != Some(MembershipState::Join)
            || !reader.can_see(rooms, &stored.pdu)?
        {
            return Err(not_found());
        }
        reports::add(
            &services.rooms,
            NewReport {
                reporter: user_id,
                room_id: body.room_id,
                event_id: Some(body.event_id),
                reason: body.reason,
                score: None,
            },
        )
        .map_err(ApiError::internal)?;
        Ok(report_content::v3::Response::new().into())
    })
    .await
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/report`
///
/// Any user may report a room this server knows (they may have seen it in the directory or
/// been invited); an unknown room is `M_NOT_FOUND`.
pub(crate) async fn report_room(
    State(state): State<AppState>,
    request: Ruma<report_room::v3::Request>,
) -> ApiResult<RumaResponse<report_room::v3::Response>> {
    let user_id = request.identity.user_id;
    let body = request.body;
    blocking(&state, move |services| {
        if services.rooms.room_info(&body.room_id)?.is_none() {
            return Err(ApiError::not_found("Room not found"));
        }
        let reason = Some(body.reason).filter(|reason| !reason.is_empty());
        reports::add(
            &services.rooms,
            NewReport {
                reporter: user_id,
                room_id: body.room_id,
                event_id: None,
                reason,
                score: None,
            },
        )
        .map_err(ApiError::internal)?;
        Ok(report_room::v3::Response::new().into())
    })
    .await
}
