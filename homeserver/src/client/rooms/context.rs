//! `GET /rooms/{roomId}/context/{eventId}`: an event with the events around it.

use axon_api::{ApiError, ApiResult, AppState, Ruma, RumaResponse};
use axon_core::rooms::graph::EventStatus;
use axum::extract::State;
use ruma::api::Direction;
use ruma::api::client::context::get_context;

use super::format::{Serving, client_event};
use super::messages::{after, token_of};
use super::visibility::Reader;
use super::{blocking, client_event_for};

/// The most events of context returned, whatever the client asks.
const MAX_LIMIT: usize = 100;

/// # `GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}`
pub(crate) async fn context(
    State(state): State<AppState>,
    request: Ruma<get_context::v3::Request>,
) -> ApiResult<RumaResponse<get_context::v3::Response>> {
    let user = request.identity;
    let body = request.body;
    let limit = usize::try_from(u64::from(body.limit))
        .unwrap_or(MAX_LIMIT)
        .min(MAX_LIMIT);
    blocking(&state, move |services| {
        let rooms = &services.rooms;
        let room_id = &body.room_id;
        let not_found = || ApiError::not_found("Event not found");
        let stored = rooms.get_event(&body.event_id)?.ok_or_else(not_found)?;
        if stored.room_id != *room_id || stored.status != EventStatus::Normal {
            return Err(not_found());
        }
        let at = stored.topo_position().ok_or_else(not_found)?;
        let reader = Reader::new(rooms, room_id, &user.user_id)?;
        if !reader.can_see(rooms, &stored.pdu)? {
            return Err(not_found());
        }

        // The limit counts the events on both sides; before gets the odd one out.
        let want_after = limit / 2;
        let want_before = limit - want_after;
        let mut before = Vec::new();
        let mut oldest = at;
        for (position, pdu) in
            rooms.messages(room_id, Some(at), Direction::Backward, want_before)?
        {
            oldest = position;
            if reader.can_see(rooms, &pdu)? {
                before.push(client_event_for(services, &pdu, &user)?);
            }
        }
        let mut events_after = Vec::new();
        let mut newest = at;
        let mut last_pdu = stored.pdu.clone();
        for (position, pdu) in rooms.messages(room_id, Some(at), Direction::Forward, want_after)? {
            newest = position;
            if reader.can_see(rooms, &pdu)? {
                events_after.push(client_event_for(services, &pdu, &user)?);
                last_pdu = pdu;
            }
        }
        let state = rooms
            .state_at_event(last_pdu.event_id())?
            .iter()
            .map(|pdu| client_event(pdu, Serving::default()))
            .collect::<Result<Vec<_>, _>>()?;

        let mut response = get_context::v3::Response::new();
        // Tokens name gaps: before the oldest event looked at, after the newest.
        response.start = Some(token_of(oldest).to_string());
        response.end = Some(after(newest).to_string());
        response.events_before = before;
        response.event = Some(client_event_for(services, &stored.pdu, &user)?);
        response.events_after = events_after;
        response.state = state;
        Ok(response.into())
    })
    .await
}
