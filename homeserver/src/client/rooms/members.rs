//! Who is in a room: `/joined_rooms`, `/rooms/{roomId}/members`, `/joined_members`.

use std::collections::BTreeMap;

use axon_api::{ApiError, ApiResult, AppState, Ruma, RumaResponse};
use axon_core::rooms::graph::{Rooms, StreamPosition, TopoPosition};
use axon_core::rooms::pdu::Pdu;
use axum::extract::State;
use ruma::api::Direction;
use ruma::api::client::membership::{get_member_events, joined_members, joined_rooms};
use ruma::events::TimelineEventType;
use ruma::events::room::member::MembershipState;
use ruma::{OwnedMxcUri, OwnedUserId, RoomId};

use super::blocking;
use super::format::{Serving, client_event};
use super::tokens::TopologicalToken;
use super::visibility::{Reader, StateAccess, content_str};

/// # `GET /_matrix/client/v3/joined_rooms`
pub(crate) async fn joined_rooms(
    State(state): State<AppState>,
    request: Ruma<joined_rooms::v3::Request>,
) -> ApiResult<RumaResponse<joined_rooms::v3::Response>> {
    let user_id = request.identity.user_id;
    blocking(&state, move |services| {
        let rooms = services.rooms.joined_rooms(&user_id)?;
        Ok(joined_rooms::v3::Response::new(rooms).into())
    })
    .await
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/members`
pub(crate) async fn members(
    State(state): State<AppState>,
    request: Ruma<get_member_events::v3::Request>,
) -> ApiResult<RumaResponse<get_member_events::v3::Response>> {
    let user_id = request.identity.user_id;
    let body = request.body;
    blocking(&state, move |services| {
        let rooms = &services.rooms;
        let reader = Reader::new(rooms, &body.room_id, &user_id)?;
        let state = match body.at.as_deref() {
            None => reader.readable_state(rooms, &body.room_id)?,
            Some(at) => state_at_token(rooms, &reader, &body.room_id, at)?,
        };
        let chunk = state
            .iter()
            .filter(|pdu| *pdu.kind() == TimelineEventType::RoomMember)
            .filter(|pdu| {
                let membership = content_str(pdu, "membership").map(MembershipState::from);
                body.membership
                    .as_ref()
                    .is_none_or(|wanted| membership.as_ref() == Some(wanted))
                    && body
                        .not_membership
                        .as_ref()
                        .is_none_or(|unwanted| membership.as_ref() != Some(unwanted))
            })
            .map(|pdu| client_event(pdu, Serving::default()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(get_member_events::v3::Response::new(chunk).into())
    })
    .await
}

/// The state the reader may see as of the `/messages` token `at`: the state after the last
/// event before that gap (none: the room's state before it began, which is empty), capped at
/// the reader's departure for a former member.
fn state_at_token(
    rooms: &Rooms,
    reader: &Reader<'_>,
    room_id: &RoomId,
    at: &str,
) -> Result<Vec<Pdu>, ApiError> {
    let token = TopologicalToken::parse(at)?;
    let gap = TopoPosition {
        depth: token.depth,
        stream: StreamPosition(token.stream),
    };
    let access = reader.state_access(rooms, room_id)?;
    let mut at_event = rooms
        .messages(room_id, Some(gap), Direction::Backward, 1)?
        .into_iter()
        .next();
    if let StateAccess::UpTo(departure) = access
        && let Some(departure) = rooms.get_event(&departure)?
        && let Some(departed_at) = departure.topo_position()
        && at_event
            .as_ref()
            .is_none_or(|(position, _)| *position > departed_at)
    {
        at_event = Some((departed_at, departure.pdu));
    }
    match at_event {
        Some((_, pdu)) => Ok(rooms.state_at_event(pdu.event_id())?),
        None => Ok(Vec::new()),
    }
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/joined_members`
pub(crate) async fn joined_members(
    State(state): State<AppState>,
    request: Ruma<joined_members::v3::Request>,
) -> ApiResult<RumaResponse<joined_members::v3::Response>> {
    let user_id = request.identity.user_id;
    let room_id = request.body.room_id;
    blocking(&state, move |services| {
        let rooms = &services.rooms;
        let reader = Reader::new(rooms, &room_id, &user_id)?;
        // Only the members now: a former member gets no list.
        if !matches!(reader.state_access(rooms, &room_id)?, StateAccess::Current) {
            return Err(ApiError::forbidden("You are not a member of this room"));
        }
        let mut joined = BTreeMap::new();
        for pdu in rooms.current_state(&room_id)? {
            if *pdu.kind() != TimelineEventType::RoomMember
                || content_str(&pdu, "membership") != Some("join")
            {
                continue;
            }
            let Some(Ok(member)) = pdu.state_key().map(OwnedUserId::try_from) else {
                continue;
            };
            let mut entry = joined_members::v3::RoomMember::new();
            entry.display_name = content_str(&pdu, "displayname").map(str::to_owned);
            entry.avatar_url = content_str(&pdu, "avatar_url").map(OwnedMxcUri::from);
            joined.insert(member, entry);
        }
        Ok(joined_members::v3::Response::new(joined).into())
    })
    .await
}
