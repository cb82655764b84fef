//! `GET /rooms/{roomId}/hierarchy`: the rooms of a space, breadth first.
//!
//! The walk and the accessibility rules live in `core` ([`axon_core::rooms::hierarchy`]); this
//! handler parses the query and shapes the chunks, with each room's `m.space.child` events in
//! the stripped form the spec gives them here (with `origin_server_ts`).

use axon_api::{ApiError, ApiResult, AppState, Ruma, RumaResponse};
use axon_core::rooms::hierarchy::{self, HierarchyQuery};
use axon_core::rooms::pdu::Pdu;
use axum::extract::State;
use ruma::UInt;
use ruma::api::client::space::{SpaceHierarchyRoomsChunk, get_hierarchy};
use ruma::events::space::child::HierarchySpaceChildEvent;
use ruma::serde::Raw;
use serde_json::json;

use super::blocking;

/// # `GET /_matrix/client/v1/rooms/{roomId}/hierarchy`
pub(crate) async fn hierarchy(
    State(state): State<AppState>,
    request: Ruma<get_hierarchy::v1::Request>,
) -> ApiResult<RumaResponse<get_hierarchy::v1::Response>> {
    let user_id = request.identity.user_id;
    let body = request.body;
    if body.limit == Some(UInt::MIN) {
        return Err(ApiError::invalid_param("limit must be positive"));
    }
    let query = HierarchyQuery {
        limit: body.limit.map(to_usize),
        max_depth: body.max_depth.map(to_usize),
        suggested_only: body.suggested_only,
        from: body.from,
    };
    blocking(&state, move |services| {
        let page = hierarchy::hierarchy(&services.rooms, &body.room_id, &user_id, &query)?;
        let mut response = get_hierarchy::v1::Response::new();
        response.next_batch = page.next_batch;
        response.rooms = page
            .rooms
            .into_iter()
            .map(|room| {
                let children = room
                    .children
                    .iter()
                    .map(stripped_child)
                    .collect::<Result<_, _>>()?;
                Ok(SpaceHierarchyRoomsChunk::new(room.summary, children))
            })
            .collect::<Result<_, ApiError>>()?;
        Ok(response.into())
    })
    .await
}

fn to_usize(value: UInt) -> usize {
    usize::try_from(u64::from(value)).unwrap_or(usize::MAX)
}

/// An `m.space.child` event as the hierarchy serves it.
fn stripped_child(pdu: &Pdu) -> Result<Raw<HierarchySpaceChildEvent>, ApiError> {
    let event = json!({
        "type": pdu.kind().to_string(),
        "state_key": pdu.state_key(),
        "sender": pdu.sender(),
        "origin_server_ts": pdu.origin_server_ts(),
        "content": pdu.content_object(),
    });
    Raw::from_json_string(event.to_string()).map_err(ApiError::internal)
}
