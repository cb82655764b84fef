//! `GET /rooms/{roomId}/timestamp_to_event`: the visible event closest to a time.
//!
//! Cost: a linear scan of the room's timeline index (stream order) from the end in the
//! direction asked, loading each event until one matches, so O(events between the room's end
//! and the answer). Stream order follows `origin_server_ts` for local events; events received
//! late over federation may be out of order and are judged one by one. A timestamp index per
//! room would make this a seek.

use axon_api::{ApiError, ApiResult, AppState, Ruma, RumaResponse};
use axum::extract::State;
use ruma::api::Direction;
use ruma::api::client::room::get_event_by_timestamp;

use super::blocking;
use super::visibility::Reader;

/// Events read from the timeline index per step of the scan.
const PAGE: usize = 100;

/// # `GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event`
pub(crate) async fn timestamp_to_event(
    State(state): State<AppState>,
    request: Ruma<get_event_by_timestamp::v1::Request>,
) -> ApiResult<RumaResponse<get_event_by_timestamp::v1::Response>> {
    let user = request.identity;
    let body = request.body;
    blocking(&state, move |services| {
        let rooms = &services.rooms;
        let room_id = &body.room_id;
        let reader = Reader::new(rooms, room_id, &user.user_id)?;
        reader.check_may_paginate(rooms, room_id)?;
        let target = body.ts;
        // Forward: the first event at or after `ts`; backward: the last at or before it.
        let matches = |ts| match body.dir {
            Direction::Forward => ts >= target,
            Direction::Backward => ts <= target,
        };
        let mut cursor = None;
        loop {
            let page = rooms.timeline(room_id, cursor, body.dir, PAGE)?;
            let short = page.len() < PAGE;
            for (stream, pdu) in page {
                cursor = Some(stream);
                if matches(pdu.origin_server_ts()) && reader.can_see(rooms, &pdu)? {
                    return Ok(get_event_by_timestamp::v1::Response::new(
                        pdu.event_id().to_owned(),
                        pdu.origin_server_ts(),
                    )
                    .into());
                }
            }
            if short {
                return Err(ApiError::not_found("No event found at that time"));
            }
        }
    })
    .await
}
