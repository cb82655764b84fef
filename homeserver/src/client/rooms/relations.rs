//! `GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]` and the bundled
//! aggregations served in `unsigned["m.relations"]`.
//!
//! Pagination tokens are `r<stream>`: the stream position of the last child looked at,
//! exclusive in both directions. A `/messages` token (`t<depth>_<stream>`) is accepted too and
//! read as its stream position.

use std::collections::HashSet;

use axon_api::{ApiError, ApiResult, AppState, Ruma, RumaResponse};
use axon_core::Services;
use axon_core::accounts::AuthenticatedUser;
use axon_core::rooms::graph::{EventStatus, Rooms, StreamPosition};
use axon_core::rooms::pdu::Pdu;
use axon_core::rooms::relations::{self, REFERENCE, REPLACE, RelationEntry, THREAD, all_children};
use axum::extract::State;
use ruma::api::Direction;
use ruma::api::client::relations::{
    get_relating_events, get_relating_events_with_rel_type,
    get_relating_events_with_rel_type_and_event_type,
};
use ruma::events::AnyMessageLikeEvent;
use ruma::serde::Raw;
use ruma::{CanonicalJsonValue, EventId, OwnedEventId, OwnedRoomId, RoomId, UInt, UserId};
use serde_json::{Map, Value, json};

use super::format::{Serving, client_event_json};
use super::tokens::TopologicalToken;
use super::visibility::Reader;
use super::{blocking, client_event_for};

/// Events per page when the client does not say.
const DEFAULT_LIMIT: usize = 50;
/// The most events one page returns, whatever the client asks.
const MAX_LIMIT: usize = 1000;
/// How deep `recurse=true` follows relations of relations.
const MAX_RECURSION_DEPTH: u8 = 3;
/// The most descendants a recursive walk collects before it stops looking.
const MAX_RECURSIVE_EVENTS: usize = 2000;
/// How many children a page may look at, per event asked for, before answering with fewer
/// (children hidden by visibility or filtered out are skipped, not counted).
const SCAN_FACTOR: usize = 4;

/// One `/relations` request, whichever of its three routes it came through.
#[derive(Debug)]
struct Query {
    room_id: OwnedRoomId,
    event_id: OwnedEventId,
    rel_type: Option<String>,
    event_type: Option<String>,
    from: Option<String>,
    to: Option<String>,
    dir: Direction,
    limit: Option<UInt>,
    recurse: bool,
}

/// A page of relations.
#[derive(Debug)]
struct Page {
    chunk: Vec<Raw<AnyMessageLikeEvent>>,
    next_batch: Option<String>,
    prev_batch: Option<String>,
    recursion_depth: Option<UInt>,
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}`
pub(crate) async fn relations(
    State(state): State<AppState>,
    request: Ruma<get_relating_events::v1::Request>,
) -> ApiResult<RumaResponse<get_relating_events::v1::Response>> {
    let body = request.body;
    let query = Query {
        room_id: body.room_id,
        event_id: body.event_id,
        rel_type: None,
        event_type: None,
        from: body.from,
        to: body.to,
        dir: body.dir,
        limit: body.limit,
        recurse: body.recurse,
    };
    let page = serve(&state, request.identity, query).await?;
    let mut response = get_relating_events::v1::Response::new(page.chunk);
    response.next_batch = page.next_batch;
    response.prev_batch = page.prev_batch;
    response.recursion_depth = page.recursion_depth;
    Ok(response.into())
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}`
pub(crate) async fn relations_with_rel_type(
    State(state): State<AppState>,
    request: Ruma<get_relating_events_with_rel_type::v1::Request>,
) -> ApiResult<RumaResponse<get_relating_events_with_rel_type::v1::Response>> {
    let body = request.body;
    let query = Query {
        room_id: body.room_id,
        event_id: body.event_id,
        rel_type: Some(body.rel_type.to_string()),
        event_type: None,
        from: body.from,
        to: body.to,
        dir: body.dir,
        limit: body.limit,
        recurse: body.recurse,
    };
    let page = serve(&state, request.identity, query).await?;
    let mut response = get_relating_events_with_rel_type::v1::Response::new(page.chunk);
    response.next_batch = page.next_batch;
    response.prev_batch = page.prev_batch;
    response.recursion_depth = page.recursion_depth;
    Ok(response.into())
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}`
pub(crate) async fn relations_with_rel_type_and_event_type(
    State(state): State<AppState>,
    request: Ruma<get_relating_events_with_rel_type_and_event_type::v1::Request>,
) -> ApiResult<RumaResponse<get_relating_events_with_rel_type_and_event_type::v1::Response>> {
    let body = request.body;
    let query = Query {
        room_id: body.room_id,
        event_id: body.event_id,
        rel_type: Some(body.rel_type.to_string()),
        event_type: Some(body.event_type.to_string()),
        from: body.from,
        to: body.to,
        dir: body.dir,
        limit: body.limit,
        recurse: body.recurse,
    };
    let page = serve(&state, request.identity, query).await?;
    let mut response =
        get_relating_events_with_rel_type_and_event_type::v1::Response::new(page.chunk);
    response.next_batch = page.next_batch;
    response.prev_batch = page.prev_batch;
    response.recursion_depth = page.recursion_depth;
    Ok(response.into())
}

async fn serve(state: &AppState, user: AuthenticatedUser, query: Query) -> Result<Page, ApiError> {
    let from = query.from.as_deref().map(parse_token).transpose()?;
    let to = query.to.as_deref().map(parse_token).transpose()?;
    let limit = query
        .limit
        .map_or(DEFAULT_LIMIT, |limit| {
            usize::try_from(u64::from(limit)).unwrap_or(MAX_LIMIT)
        })
        .clamp(1, MAX_LIMIT);
    blocking(state, move |services| {
        let rooms = &services.rooms;
        let reader = Reader::new(rooms, &query.room_id, &user.user_id)?;
        check_parent_visible(rooms, &reader, &query.room_id, &query.event_id)?;
        let wanted = |entry: &RelationEntry| {
            query
                .rel_type
                .as_ref()
                .is_none_or(|rel| *rel == entry.rel_type)
                && query
                    .event_type
                    .as_ref()
                    .is_none_or(|kind| *kind == entry.kind)
        };
        let past_to = |stream: StreamPosition| {
            to.is_some_and(|to| match query.dir {
                Direction::Backward => stream <= to,
                Direction::Forward => stream >= to,
            })
        };

        let mut chunk = Vec::new();
        let mut last_scanned = None;
        let mut exhausted = false;
        let mut budget = limit.saturating_mul(SCAN_FACTOR).saturating_add(50);
        let mut take = |stream: StreamPosition,
                        entry: &RelationEntry,
                        chunk: &mut Vec<Raw<AnyMessageLikeEvent>>|
         -> Result<(), ApiError> {
            last_scanned = Some(stream);
            if !wanted(entry) {
                return Ok(());
            }
            if let Some(pdu) = visible_event(rooms, &reader, &query.room_id, &entry.event_id)? {
                chunk.push(client_event_for(services, &pdu, &user)?);
            }
            Ok(())
        };
        if query.recurse {
            let mut all = descendants(services, &query.room_id, &query.event_id)?;
            if query.dir == Direction::Backward {
                all.reverse();
            }
            let rest = all
                .into_iter()
                .filter(|(stream, _)| match (query.dir, from) {
                    (_, None) => true,
                    (Direction::Backward, Some(from)) => *stream < from,
                    (Direction::Forward, Some(from)) => *stream > from,
                });
            exhausted = true;
            for (stream, entry) in rest {
                if past_to(stream) {
                    break;
                }
                take(stream, &entry, &mut chunk)?;
                if chunk.len() == limit {
                    exhausted = false;
                    break;
                }
            }
        } else {
            let mut cursor = from;
            'pages: while chunk.len() < limit && budget > 0 {
                let want = limit.min(budget).max(1);
                let page = relations::children(
                    &*services.store,
                    &query.room_id,
                    &query.event_id,
                    cursor,
                    query.dir,
                    want,
                )
                .map_err(ApiError::internal)?;
                let short = page.len() < want;
                for (stream, entry) in page {
                    if past_to(stream) {
                        exhausted = true;
                        break 'pages;
                    }
                    budget = budget.saturating_sub(1);
                    cursor = Some(stream);
                    take(stream, &entry, &mut chunk)?;
                    if chunk.len() == limit {
                        break 'pages;
                    }
                }
                if short {
                    exhausted = true;
                    break;
                }
            }
        }
        Ok(Page {
            chunk,
            next_batch: match (exhausted, last_scanned) {
                (false, Some(stream)) => Some(token(stream)),
                _ => None,
            },
            prev_batch: query.from.clone(),
            recursion_depth: query.recurse.then(|| UInt::from(MAX_RECURSION_DEPTH)),
        })
    })
    .await
}

/// Every event relating to `root` directly or through up to [`MAX_RECURSION_DEPTH`] levels of
/// relations, in stream order (at most [`MAX_RECURSIVE_EVENTS`]).
fn descendants(
    services: &Services,
    room_id: &RoomId,
    root: &EventId,
) -> Result<Vec<(StreamPosition, RelationEntry)>, ApiError> {
    let mut found = Vec::new();
    let mut seen: HashSet<OwnedEventId> = HashSet::new();
    let mut level = vec![root.to_owned()];
    seen.insert(root.to_owned());
    for _ in 0..MAX_RECURSION_DEPTH {
        let mut next = Vec::new();
        for parent in &level {
            for (stream, entry) in
                all_children(&*services.store, room_id, parent).map_err(ApiError::internal)?
            {
                if found.len() >= MAX_RECURSIVE_EVENTS {
                    break;
                }
                if seen.insert(entry.event_id.clone()) {
                    next.push(entry.event_id.clone());
                    found.push((stream, entry));
                }
            }
        }
        if next.is_empty() {
            break;
        }
        level = next;
    }
    found.sort_by_key(|(stream, _)| *stream);
    Ok(found)
}

/// Answers 404 unless `event_id` is an event of the room in the timeline that the reader
/// may see (the same answer for all three, so it reveals nothing).
pub(super) fn check_parent_visible(
    rooms: &Rooms,
    reader: &Reader<'_>,
    room_id: &RoomId,
    event_id: &EventId,
) -> Result<Pdu, ApiError> {
    visible_event(rooms, reader, room_id, event_id)?
        .ok_or_else(|| ApiError::not_found("Event not found"))
}

/// The event, if it is in the room's timeline and the reader may see it.
pub(super) fn visible_event(
    rooms: &Rooms,
    reader: &Reader<'_>,
    room_id: &RoomId,
    event_id: &EventId,
) -> Result<Option<Pdu>, ApiError> {
    let Some(stored) = rooms.get_event(event_id)? else {
        return Ok(None);
    };
    if stored.room_id != *room_id || stored.status != EventStatus::Normal {
        return Ok(None);
    }
    Ok(reader.can_see(rooms, &stored.pdu)?.then_some(stored.pdu))
}

/// The token of the gap at stream position `stream`.
pub(super) fn token(stream: StreamPosition) -> String {
    format!("r{}", stream.0)
}

/// Parses a relations token (`r<stream>`) or a `/messages` token, as a stream position.
pub(super) fn parse_token(text: &str) -> Result<StreamPosition, ApiError> {
    if let Some(rest) = text.strip_prefix('r')
        && !rest.is_empty()
        && rest.bytes().all(|b| b.is_ascii_digit())
        && let Ok(stream) = rest.parse()
    {
        return Ok(StreamPosition(stream));
    }
    TopologicalToken::parse(text).map(|token| StreamPosition(token.stream))
}

/// The bundled aggregations of `pdu` for `reader` (`unsigned["m.relations"]`), if it has any:
/// - `m.replace`: the most recent edit (by `origin_server_ts`, then event id) sent by the
///   original sender, of the same type, with `m.new_content`, as a whole event; none for
///   state events and redacted events;
/// - `m.thread`: `latest_event`, `count`, `current_user_participated`;
/// - `m.reference`: `chunk` of `{ event_id }`.
///
/// One prefix scan of the relation index; children are loaded only for edit candidates and
/// the latest thread reply. Children are not filtered by history visibility here.
pub(crate) fn bundled(
    services: &Services,
    pdu: &Pdu,
    reader: &UserId,
) -> Result<Option<Value>, ApiError> {
    let children = all_children(&*services.store, pdu.room_id(), pdu.event_id())
        .map_err(ApiError::internal)?;
    if children.is_empty() {
        return Ok(None);
    }
    let mut out = Map::new();
    if let Some(edit) = latest_edit(services, pdu, &children)? {
        out.insert(
            REPLACE.to_owned(),
            client_event_json(&edit, Serving::default()),
        );
    }
    let thread: Vec<&RelationEntry> = children
        .iter()
        .map(|(_, entry)| entry)
        .filter(|entry| entry.rel_type == THREAD)
        .collect();
    if let Some(last) = thread.last()
        && let Some(latest) = services.rooms.get_event(&last.event_id)?
    {
        let participated =
            pdu.sender() == reader || thread.iter().any(|entry| entry.sender == reader);
        out.insert(
            THREAD.to_owned(),
            json!({
                "latest_event": client_event_json(&latest.pdu, Serving::default()),
                "count": thread.len(),
                "current_user_participated": participated,
            }),
        );
    }
    let references: Vec<Value> = children
        .iter()
        .filter(|(_, entry)| entry.rel_type == REFERENCE)
        .map(|(_, entry)| json!({ "event_id": entry.event_id }))
        .collect();
    if !references.is_empty() {
        out.insert(REFERENCE.to_owned(), json!({ "chunk": references }));
    }
    Ok((!out.is_empty()).then_some(Value::Object(out)))
}

/// Whether `user_id` sent the thread root or replied in the thread.
pub(super) fn participated(
    services: &Services,
    root: &Pdu,
    user_id: &UserId,
) -> Result<bool, ApiError> {
    if root.sender() == user_id {
        return Ok(true);
    }
    Ok(
        all_children(&*services.store, root.room_id(), root.event_id())
            .map_err(ApiError::internal)?
            .iter()
            .any(|(_, entry)| entry.rel_type == THREAD && entry.sender == user_id),
    )
}

/// The edit of `original` that applies, per the spec's rules for `m.replace`.
fn latest_edit(
    services: &Services,
    original: &Pdu,
    children: &[(StreamPosition, RelationEntry)],
) -> Result<Option<Pdu>, ApiError> {
    if original.state_key().is_some() || is_redacted(original) {
        return Ok(None);
    }
    let kind = original.kind().to_string();
    let mut best: Option<Pdu> = None;
    for (_, entry) in children {
        if entry.rel_type != REPLACE || entry.sender != original.sender() || entry.kind != kind {
            continue;
        }
        let Some(stored) = services.rooms.get_event(&entry.event_id)? else {
            continue;
        };
        let edit = stored.pdu;
        // A redacted edit lost its `m.relates_to` and no longer counts.
        if stored.status != EventStatus::Normal
            || edit.state_key().is_some()
            || relations::relation_of(&edit).is_none()
            || !matches!(
                edit.content_object().get("m.new_content"),
                Some(CanonicalJsonValue::Object(_))
            )
        {
            continue;
        }
        let newer = best.as_ref().is_none_or(|best| {
            (edit.origin_server_ts(), edit.event_id()) > (best.origin_server_ts(), best.event_id())
        });
        if newer {
            best = Some(edit);
        }
    }
    Ok(best)
}

/// Whether a redaction of `pdu` was accepted.
fn is_redacted(pdu: &Pdu) -> bool {
    pdu.json()
        .get("unsigned")
        .and_then(|unsigned| match unsigned {
            CanonicalJsonValue::Object(unsigned) => unsigned.get("redacted_because"),
            _ => None,
        })
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_accept_messages_tokens() {
        assert_eq!(
            parse_token(&token(StreamPosition(42))).unwrap(),
            StreamPosition(42)
        );
        assert_eq!(parse_token("t5_17").unwrap(), StreamPosition(17));
        for bad in ["", "r", "r-1", "r+1", "x12", "r1a"] {
            assert!(parse_token(bad).is_err(), "{bad}");
        }
    }
}
