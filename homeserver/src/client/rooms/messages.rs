//! `GET /rooms/{roomId}/messages`: the room's history in topological order.
//!
//! A `filter` (a `RoomEventFilter`) is applied while paging: events it leaves out are skipped
//! like events the reader may not see, so they do not count toward the limit and the tokens
//! still name the gap after the last event looked at. With `lazy_load_members`, `state` holds
//! the `m.room.member` event of each sender in the chunk, as of that sender's first event in
//! the chunk. Members already sent to the device are not tracked, so they are sent again
//! whatever `include_redundant_members` says (which the spec allows).
//!
//! Tokens name gaps between events (see [`TopologicalToken`]); the core's pagination is
//! exclusive of the position it starts from, so a gap converts to the position just before it
//! when walking forwards and to its own position when walking backwards.

use std::collections::HashSet;
use std::sync::Arc;

use axon_api::{ApiError, ApiResult, AppState, Ruma, RumaResponse};
use axon_core::Services;
use axon_core::accounts::AuthenticatedUser;
use axon_core::rooms::graph::{StreamPosition, TopoPosition};
use axon_federation::Federation;
use axum::Extension;
use axum::extract::State;
use ruma::api::Direction;
use ruma::api::client::message::get_message_events;
use ruma::events::TimelineEventType;
use ruma::serde::Raw;
use ruma::{OwnedEventId, OwnedUserId, RoomId};

use super::filter;
use super::format::{Serving, client_event};
use super::tokens::TopologicalToken;
use super::visibility::Reader;
use super::{blocking, client_event_for};
use crate::client::sync::token::SyncToken;

/// The most events one page returns, whatever the client asks.
const MAX_LIMIT: usize = 1000;

/// How many events a page may look at, per event asked for, before answering with fewer
/// (events hidden by history visibility are skipped, not counted).
const SCAN_FACTOR: usize = 4;

/// # `GET /_matrix/client/v3/rooms/{roomId}/messages`
///
/// A backward walk that reaches the earliest event we have of a room whose earlier history is
/// elsewhere (joined through another server) asks the room's other servers for that history
/// (`/backfill`) and, if they gave some, walks again.
pub(crate) async fn messages(
    State(state): State<AppState>,
    Extension(federation): Extension<Arc<Federation>>,
    request: Ruma<get_message_events::v3::Request>,
) -> ApiResult<RumaResponse<get_message_events::v3::Response>> {
    let user = request.identity;
    let body = request.body;
    let response = page(&state, user.clone(), body.clone()).await?;
    if body.dir == Direction::Backward && response.end.is_none() {
        let lookup = body.room_id.clone();
        let complete = blocking(&state, move |services| {
            Ok(services.rooms.history_is_complete(&lookup)?)
        })
        .await?;
        if !complete {
            let services = state.services_arc();
            match axon_federation::membership::backfill_room(&federation, &services, &body.room_id)
                .await
            {
                Ok(0) => {}
                Ok(_) => return Ok(page(&state, user, body).await?.into()),
                Err(error) => tracing::info!(room_id = %body.room_id, %error, "backfill failed"),
            }
        }
    }
    Ok(response.into())
}

/// One page of `/messages` from what is stored here.
async fn page(
    state: &AppState,
    user: AuthenticatedUser,
    body: get_message_events::v3::Request,
) -> Result<get_message_events::v3::Response, ApiError> {
    let from = body.from.as_deref().map(PageToken::parse).transpose()?;
    let to = body.to.as_deref().map(PageToken::parse).transpose()?;
    // The filter's own limit, when it has one, can only lower the query's.
    let limit = [Some(body.limit), body.filter.limit]
        .into_iter()
        .flatten()
        .map(|limit| usize::try_from(u64::from(limit)).unwrap_or(MAX_LIMIT))
        .min()
        .unwrap_or(MAX_LIMIT)
        .min(MAX_LIMIT);
    let dir = body.dir;
    blocking(state, move |services| {
        let rooms = &services.rooms;
        let room_id = &body.room_id;
        let reader = Reader::new(rooms, room_id, &user.user_id)?;
        reader.check_may_paginate(rooms, room_id)?;
        let from = from
            .map(|token| token.topological(services, room_id))
            .transpose()?;
        let to = to
            .map(|token| token.topological(services, room_id))
            .transpose()?;

        let start = match (from, dir) {
            (Some(from), _) => from,
            (None, Direction::Forward) => TopologicalToken {
                depth: 0,
                stream: 0,
            },
            (None, Direction::Backward) => end_of_room(services, room_id)?,
        };
        let mut cursor = match dir {
            Direction::Backward => Some(position(start)),
            Direction::Forward => before(start),
        };
        let mut chunk = Vec::new();
        let mut senders: Vec<(OwnedUserId, OwnedEventId)> = Vec::new();
        let mut seen_senders = HashSet::new();
        let mut last_scanned = None;
        let mut exhausted = false;
        let mut budget = limit.saturating_mul(SCAN_FACTOR).saturating_add(50);
        'pages: while chunk.len() < limit && budget > 0 {
            let want = limit.min(budget).max(1);
            let page = rooms.messages(room_id, cursor, dir, want)?;
            let short = page.len() < want;
            for (at, pdu) in page {
                let token = token_of(at);
                let past_to = to.is_some_and(|to| match dir {
                    Direction::Backward => token < to,
                    Direction::Forward => token >= to,
                });
                if past_to {
                    exhausted = true;
                    break 'pages;
                }
                budget = budget.saturating_sub(1);
                cursor = Some(at);
                last_scanned = Some(at);
                if filter::matches(&body.filter, room_id, &pdu) && reader.can_see(rooms, &pdu)? {
                    if seen_senders.insert(pdu.sender().to_owned()) {
                        senders.push((pdu.sender().to_owned(), pdu.event_id().to_owned()));
                    }
                    chunk.push(client_event_for(services, &pdu, &user)?);
                    if chunk.len() == limit {
                        break 'pages;
                    }
                }
            }
            if short {
                exhausted = true;
                break;
            }
        }
        let mut response = get_message_events::v3::Response::new();
        response.start = start.to_string();
        response.end = match (exhausted, last_scanned) {
            (false, Some(at)) => Some(
                match dir {
                    // The gap before the oldest event returned.
                    Direction::Backward => token_of(at),
                    // The gap after the newest event returned.
                    Direction::Forward => after(at),
                }
                .to_string(),
            ),
            _ => None,
        };
        response.chunk = chunk;
        if filter::lazy_load_members(&body.filter) {
            response.state = sender_members(services, &senders)?;
        }
        Ok(response)
    })
    .await
}

/// The `m.room.member` event of each sender in the state after their event (in the order
/// the senders first appear in the chunk).
fn sender_members<T>(
    services: &Services,
    senders: &[(OwnedUserId, OwnedEventId)],
) -> Result<Vec<Raw<T>>, ApiError> {
    let mut members = Vec::new();
    for (sender, event_id) in senders {
        let member = services
            .rooms
            .state_at_event(event_id)?
            .into_iter()
            .find(|pdu| {
                *pdu.kind() == TimelineEventType::RoomMember
                    && pdu.state_key() == Some(sender.as_str())
            });
        if let Some(member) = member {
            members.push(client_event(&member, Serving::default())?);
        }
    }
    Ok(members)
}

/// A `from`/`to` token of `/messages`: our own topological token, or a sync token (`next_batch`
/// or `prev_batch` of `/sync`), which the specification lets clients pass here too.
#[derive(Clone, Copy, Debug)]
enum PageToken {
    Topological(TopologicalToken),
    Stream(StreamPosition),
}

impl PageToken {
    fn parse(token: &str) -> Result<Self, ApiError> {
        if token.starts_with('s') {
            Ok(Self::Stream(SyncToken::parse(token)?.stream))
        } else {
            TopologicalToken::parse(token).map(Self::Topological)
        }
    }

    /// The gap in the room's topological order that the token names: for a sync token, the
    /// gap after the room's last event at or before its stream position.
    fn topological(
        self,
        services: &Services,
        room_id: &RoomId,
    ) -> Result<TopologicalToken, ApiError> {
        let stream = match self {
            Self::Topological(token) => return Ok(token),
            Self::Stream(stream) => stream,
        };
        let last = services.rooms.timeline(
            room_id,
            Some(StreamPosition(stream.0.saturating_add(1))),
            Direction::Backward,
            1,
        )?;
        let Some((_, pdu)) = last.first() else {
            return Ok(TopologicalToken {
                depth: 0,
                stream: 0,
            });
        };
        let topo = services
            .rooms
            .get_event(pdu.event_id())?
            .and_then(|stored| stored.topo_position())
            .ok_or_else(|| ApiError::internal("timeline event without a topological position"))?;
        Ok(after(topo))
    }
}

/// The gap after the room's last event, where a backward walk from "now" starts.
fn end_of_room(services: &Services, room_id: &RoomId) -> Result<TopologicalToken, ApiError> {
    let last = services
        .rooms
        .messages(room_id, None, Direction::Backward, 1)?;
    Ok(last.first().map_or(
        TopologicalToken {
            depth: 0,
            stream: 0,
        },
        |(at, _)| after(*at),
    ))
}

pub(crate) fn token_of(at: TopoPosition) -> TopologicalToken {
    TopologicalToken {
        depth: at.depth,
        stream: at.stream.0,
    }
}

fn position(token: TopologicalToken) -> TopoPosition {
    TopoPosition {
        depth: token.depth,
        stream: StreamPosition(token.stream),
    }
}

/// The gap right after the event at `at`.
pub(crate) fn after(at: TopoPosition) -> TopologicalToken {
    match at.stream.0.checked_add(1) {
        Some(stream) => TopologicalToken {
            depth: at.depth,
            stream,
        },
        None => TopologicalToken {
            depth: at.depth.saturating_add(1),
            stream: 0,
        },
    }
}

/// The last position before the gap `token` (none: the gap is before everything), from which
/// the core's exclusive forward walk returns the events at or after the gap.
fn before(token: TopologicalToken) -> Option<TopoPosition> {
    match (token.depth, token.stream) {
        (0, 0) => None,
        (depth, 0) => Some(TopoPosition {
            depth: depth - 1,
            stream: StreamPosition(u64::MAX),
        }),
        (depth, stream) => Some(TopoPosition {
            depth,
            stream: StreamPosition(stream - 1),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(depth: u64, stream: u64) -> TopoPosition {
        TopoPosition {
            depth,
            stream: StreamPosition(stream),
        }
    }

    #[test]
    fn gaps_sit_between_positions() {
        // The gap after an event is above it and below anything later.
        let gap = after(at(5, 9));
        assert!(token_of(at(5, 9)) < gap && gap <= token_of(at(5, 10)));
        assert!(gap < token_of(at(6, 0)));
        // Walking forwards from a gap starts just below it.
        assert_eq!(before(gap), Some(at(5, 9)));
        assert_eq!(before(token_of(at(3, 0))), Some(at(2, u64::MAX)));
        assert_eq!(
            before(TopologicalToken {
                depth: 0,
                stream: 0
            }),
            None
        );
        assert_eq!(after(at(1, u64::MAX)), token_of(at(2, 0)));
    }
}
