//! Reading: one state event, the whole state, one event.

use axon_api::{ApiError, ApiResult, AppState, Ruma, RumaResponse};
use axon_core::rooms::graph::EventStatus;
use axum::extract::State;
use ruma::api::client::room::get_room_event;
use ruma::api::client::state::get_state_event_for_key::v3::StateEventFormat;
use ruma::api::client::state::{get_state_event_for_key, get_state_events};
use ruma::events::TimelineEventType;

use super::format::{Serving, client_event};
use super::visibility::Reader;
use super::{blocking, client_event_for};

/// # `GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
pub(crate) async fn state_event(
    State(state): State<AppState>,
    request: Ruma<get_state_event_for_key::v3::Request>,
) -> ApiResult<RumaResponse<get_state_event_for_key::v3::Response>> {
    let user = request.identity;
    let body = request.body;
    blocking(&state, move |services| {
        let rooms = &services.rooms;
        let reader = Reader::new(rooms, &body.room_id, &user.user_id)?;
        let wanted = TimelineEventType::from(body.event_type.to_string());
        let pdu = reader
            .readable_state(rooms, &body.room_id)?
            .into_iter()
            .find(|pdu| *pdu.kind() == wanted && pdu.state_key() == Some(&body.state_key))
            .ok_or_else(|| ApiError::not_found("Event not found"))?;
        let response = match body.format {
            StateEventFormat::Event => {
                let raw: ruma::serde::Raw<()> = client_event(&pdu, Serving::default())?;
                get_state_event_for_key::v3::Response::new(raw.into_json())
            }
            _ => get_state_event_for_key::v3::Response::new(pdu.content().to_owned()),
        };
        Ok(response.into())
    })
    .await
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/state`
pub(crate) async fn state(
    State(state): State<AppState>,
    request: Ruma<get_state_events::v3::Request>,
) -> ApiResult<RumaResponse<get_state_events::v3::Response>> {
    let user = request.identity;
    let room_id = request.body.room_id;
    blocking(&state, move |services| {
        let rooms = &services.rooms;
        let reader = Reader::new(rooms, &room_id, &user.user_id)?;
        let events = reader
            .readable_state(rooms, &room_id)?
            .iter()
            .map(|pdu| client_event(pdu, Serving::default()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(get_state_events::v3::Response::new(events).into())
    })
    .await
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}`
pub(crate) async fn event(
    State(state): State<AppState>,
    request: Ruma<get_room_event::v3::Request>,
) -> ApiResult<RumaResponse<get_room_event::v3::Response>> {
    let user = request.identity;
    let body = request.body;
    blocking(&state, move |services| {
        let rooms = &services.rooms;
        // Unknown, elsewhere, not in the timeline, or not visible: the same answer, so the
        // response does not reveal which.
        let not_found = || ApiError::not_found("Event not found");
        let stored = rooms.get_event(&body.event_id)?.ok_or_else(not_found)?;
        if stored.room_id != body.room_id || stored.status != EventStatus::Normal {
            return Err(not_found());
        }
        let reader = Reader::new(rooms, &body.room_id, &user.user_id)?;
        if !reader.can_see(rooms, &stored.pdu)? {
            return Err(not_found());
        }
        let event = client_event_for(services, &stored.pdu, &user)?;
        Ok(get_room_event::v3::Response::new(event).into())
    })
    .await
}
