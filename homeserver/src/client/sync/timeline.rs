//! A room's timeline slice and the state that goes with it.
//!
//! The slice is the newest `limit` events after `since` (up to `upto`) that the filter keeps
//! and the user may see, found by walking the room's stream index backwards from `upto`.
//! `limited` says events after `since` were left out; `prev_batch` is the `/messages` token
//! just before the first returned event, so paginating backwards from it returns exactly the
//! events the client has not seen, newest first.
//!
//! The state is the state before the first returned event (when the slice is empty: the state
//! at `upto`): in full for initial syncs, `full_state` and rooms new to the client; otherwise
//! only what differs from the state at `since`. Most incremental syncs have no gap, and then
//! the walk itself saw every event after `since`: if none of the events left out before the
//! slice was a state event, the state cannot have changed and nothing is loaded.

use std::collections::{HashMap, HashSet};

use axon_api::ApiError;
use axon_core::rooms::graph::{StreamPosition, TopoPosition};
use axon_core::rooms::pdu::Pdu;
use ruma::RoomId;
use ruma::api::Direction;
use ruma::events::{StateEventType, TimelineEventType};
use serde_json::Value;

use super::context::Context;
use super::filter::lazy_members;
use super::response::Timeline;
use crate::client::rooms::filter::matches;
use crate::client::rooms::messages::{after, token_of};
use crate::client::rooms::visibility::Reader;

/// How many events a slice may look at, per event asked for, before answering with fewer
/// (events the filter drops or the user may not see are skipped, not counted).
const SCAN_FACTOR: usize = 4;

/// The events of one slice, oldest first, and how the walk went.
#[derive(Debug, Default)]
pub(crate) struct Slice {
    pub(crate) events: Vec<(StreamPosition, Pdu)>,
    /// Events after `since` were left out (over the limit or the scan budget).
    pub(crate) limited: bool,
    /// A state event after `since` and before the first returned event was skipped.
    pub(crate) skipped_state_before: bool,
}

/// Walks the room backwards from `upto` to `after` (exclusive; the whole room when `None`)
/// for up to `limit` events that pass `keep`.
pub(crate) fn slice(
    ctx: &Context<'_>,
    room_id: &RoomId,
    after_pos: Option<StreamPosition>,
    upto: StreamPosition,
    limit: usize,
    mut keep: impl FnMut(StreamPosition, &Pdu) -> Result<bool, ApiError>,
) -> Result<Slice, ApiError> {
    let rooms = &ctx.services.rooms;
    let page_size = limit.saturating_add(1).clamp(8, 100);
    // On an incremental sync the events after the token usually fit in one page read
    // forwards: then that page is the whole span, and nothing before it is read.
    let mut whole_span = None;
    if let Some(after_pos) = after_pos {
        let mut next = rooms.timeline(room_id, Some(after_pos), Direction::Forward, page_size)?;
        let complete =
            next.len() < page_size || next.last().is_some_and(|(position, _)| *position > upto);
        next.retain(|(position, _)| *position <= upto);
        // Most rooms have nothing new.
        if next.is_empty() {
            return Ok(Slice::default());
        }
        if complete {
            next.reverse();
            whole_span = Some(next);
        }
    }
    let mut budget = limit.saturating_mul(SCAN_FACTOR).saturating_add(50);
    let mut cursor = StreamPosition(upto.0.saturating_add(1));
    let mut kept: Vec<(StreamPosition, Pdu)> = Vec::new();
    let mut skipped_state: Vec<StreamPosition> = Vec::new();
    let mut limited = false;
    'pages: loop {
        let (page, last_page) = match whole_span.take() {
            Some(span) => (span, true),
            None => {
                let page = rooms.timeline(room_id, Some(cursor), Direction::Backward, page_size)?;
                let last_page = page.len() < page_size;
                (page, last_page)
            }
        };
        for (position, pdu) in page {
            if after_pos.is_some_and(|after_pos| position <= after_pos) {
                break 'pages;
            }
            if kept.len() >= limit || budget == 0 {
                limited = true;
                break 'pages;
            }
            budget -= 1;
            cursor = position;
            if keep(position, &pdu)? {
                kept.push((position, pdu));
            } else if pdu.is_state() {
                skipped_state.push(position);
            }
        }
        if last_page {
            break;
        }
    }
    kept.reverse();
    let first = kept.first().map(|(position, _)| *position);
    let skipped_state_before = skipped_state
        .iter()
        .any(|position| first.is_none_or(|first| *position < first));
    Ok(Slice {
        events: kept,
        limited,
        skipped_state_before,
    })
}

/// The timeline section of a slice: its events as served, `limited`, and `prev_batch`.
pub(crate) fn timeline_section(
    ctx: &Context<'_>,
    room_id: &RoomId,
    slice: &Slice,
    upto: StreamPosition,
) -> Result<Timeline, ApiError> {
    let events = slice
        .events
        .iter()
        .map(|(_, pdu)| ctx.timeline_event(pdu))
        .collect::<Result<Vec<Value>, ApiError>>()?;
    let prev_batch = match slice.events.first() {
        // Just before the first returned event: `/messages` backwards from here starts with
        // the event before it.
        Some((position, pdu)) => Some(token_of(topo(*position, pdu))),
        // Nothing returned: just after the newest event the client could know of.
        None => newest_at(ctx, room_id, upto)?.map(|(position, pdu)| after(topo(position, &pdu))),
    };
    Ok(Timeline {
        events,
        limited: slice.limited,
        prev_batch: prev_batch.map(|token| token.to_string()),
    })
}

fn topo(stream: StreamPosition, pdu: &Pdu) -> TopoPosition {
    TopoPosition {
        depth: u64::from(pdu.depth()),
        stream,
    }
}

/// The newest event of the room at or before `upto`.
fn newest_at(
    ctx: &Context<'_>,
    room_id: &RoomId,
    upto: StreamPosition,
) -> Result<Option<(StreamPosition, Pdu)>, ApiError> {
    let cursor = StreamPosition(upto.0.saturating_add(1));
    Ok(ctx
        .services
        .rooms
        .timeline(room_id, Some(cursor), Direction::Backward, 1)?
        .into_iter()
        .next())
}

/// The room state at stream position `at`: after the newest event at or before it.
fn state_at(ctx: &Context<'_>, room_id: &RoomId, at: StreamPosition) -> Result<Vec<Pdu>, ApiError> {
    match newest_at(ctx, room_id, at)? {
        Some((_, pdu)) => Ok(ctx.services.rooms.state_at_event(pdu.event_id())?),
        None => Ok(Vec::new()),
    }
}

/// The state before the slice: before its first event, or at `upto` when it is empty.
fn state_before_slice(
    ctx: &Context<'_>,
    room_id: &RoomId,
    slice: &Slice,
    upto: StreamPosition,
) -> Result<Vec<Pdu>, ApiError> {
    match slice.events.first() {
        Some((_, first)) => Ok(ctx.services.rooms.state_before_event(first.event_id())?),
        None => state_at(ctx, room_id, upto),
    }
}

/// The member events of `members` in the state before the slice (as [`state_before_slice`]),
/// read entry by entry rather than loading the whole state: a lazy-loading sync wants a few
/// members of a room that may have thousands.
fn members_before_slice(
    ctx: &Context<'_>,
    room_id: &RoomId,
    slice: &Slice,
    upto: StreamPosition,
    members: &[&str],
) -> Result<Vec<Pdu>, ApiError> {
    let rooms = &ctx.services.rooms;
    let kind = StateEventType::RoomMember;
    match slice.events.first() {
        Some((_, first)) => {
            Ok(rooms.state_entries_before_event(first.event_id(), &kind, members)?)
        }
        None => match newest_at(ctx, room_id, upto)? {
            Some((_, newest)) => {
                Ok(rooms.state_entries_at_event(newest.event_id(), &kind, members)?)
            }
            None => Ok(Vec::new()),
        },
    }
}

/// The state section for a slice: in full when `full`, else what changed since `since`;
/// filtered by the state filter and, with lazy-loading, reduced to the members of the
/// slice's senders (and the user's own, in full state), less those the device was already
/// sent unless the filter wants redundant members.
pub(crate) fn state_section(
    ctx: &Context<'_>,
    room_id: &RoomId,
    slice: &Slice,
    upto: StreamPosition,
    full: bool,
) -> Result<Vec<Value>, ApiError> {
    let lazy = lazy_members(ctx.filter);
    let since = ctx.since_stream();
    let unchanged = !full && !slice.limited && !slice.skipped_state_before;
    let mut before: Option<Vec<Pdu>> = None;
    let mut state = if unchanged {
        Vec::new()
    } else {
        let start = state_before_slice(ctx, room_id, slice, upto)?;
        let state = match (full, since) {
            (false, Some(since)) => delta(&state_at(ctx, room_id, since)?, &start),
            _ => start.clone(),
        };
        before = Some(start);
        state
    };

    if lazy.is_some() {
        let senders: HashSet<&str> = slice
            .events
            .iter()
            .map(|(_, pdu)| pdu.sender().as_str())
            .chain(full.then_some(ctx.user.user_id.as_str()))
            .collect();
        // Members whose own event is in the timeline need no state entry.
        let in_timeline: HashSet<&str> = slice
            .events
            .iter()
            .filter(|(_, pdu)| *pdu.kind() == TimelineEventType::RoomMember)
            .filter_map(|(_, pdu)| pdu.state_key())
            .collect();
        state.retain(|pdu| {
            *pdu.kind() != TimelineEventType::RoomMember
                || pdu.state_key().is_some_and(|key| senders.contains(key))
        });
        let present: HashSet<String> = state
            .iter()
            .filter(|pdu| *pdu.kind() == TimelineEventType::RoomMember)
            .filter_map(|pdu| pdu.state_key().map(str::to_owned))
            .collect();
        let missing: Vec<&str> = senders
            .iter()
            .copied()
            .filter(|sender| !present.contains(*sender) && !in_timeline.contains(sender))
            .collect();
        if !missing.is_empty() {
            match before {
                Some(before) => state.extend(before.into_iter().filter(|pdu| {
                    *pdu.kind() == TimelineEventType::RoomMember
                        && pdu.state_key().is_some_and(|key| missing.contains(&key))
                })),
                None => state.extend(members_before_slice(ctx, room_id, slice, upto, &missing)?),
            }
        }
    }

    let state_filter = &ctx.filter.room.state;
    let mut served: Vec<&Pdu> = state
        .iter()
        .filter(|pdu| matches(state_filter, room_id, pdu))
        .collect();
    if let Some(include_redundant) = lazy {
        served = leave_out_sent_members(ctx, room_id, slice, full, include_redundant, served);
    }
    Ok(served.into_iter().map(|pdu| ctx.state_event(pdu)).collect())
}

/// For a lazy-loading sync: leaves out of `state` the member events the device was already
/// sent in a response `since` was built from (unless the filter wants redundant members, or
/// the room is sent in `full`), and records the member events this response sends, in its
/// state and its timeline.
fn leave_out_sent_members<'p>(
    ctx: &Context<'_>,
    room_id: &RoomId,
    slice: &'p Slice,
    full: bool,
    include_redundant: bool,
    state: Vec<&'p Pdu>,
) -> Vec<&'p Pdu> {
    let sent = ctx.sent_members;
    let (user_id, device_id) = (&ctx.user.user_id, &ctx.user.device_id);
    if full {
        // The room is sent anew (newly joined, or a full-state sync): the client may not
        // keep what it was sent of an earlier membership.
        sent.forget_room(user_id, device_id, room_id);
    }
    let member = |pdu: &&Pdu| *pdu.kind() == TimelineEventType::RoomMember;
    let state: Vec<&Pdu> = match ctx.since_stream().filter(|_| !full && !include_redundant) {
        Some(since) => state
            .into_iter()
            .filter(|pdu| {
                !(member(pdu)
                    && pdu.state_key().is_some_and(|key| {
                        sent.was_sent(user_id, device_id, room_id, key, pdu.event_id(), since)
                    }))
            })
            .collect(),
        None => state,
    };
    let members = state
        .iter()
        .copied()
        .chain(slice.events.iter().map(|(_, pdu)| pdu))
        .filter(member)
        .filter_map(|pdu| Some((pdu.state_key()?, pdu.event_id())));
    sent.record(user_id, device_id, room_id, members, ctx.upto);
    state
}

/// The events of `now` that are not in `then` (by `(type, state_key)` -> event id).
pub(crate) fn delta(then: &[Pdu], now: &[Pdu]) -> Vec<Pdu> {
    let then: HashMap<(String, &str), &ruma::EventId> = then
        .iter()
        .filter_map(|pdu| Some(((pdu.kind().to_string(), pdu.state_key()?), pdu.event_id())))
        .collect();
    now.iter()
        .filter(|pdu| {
            let Some(state_key) = pdu.state_key() else {
                return false;
            };
            then.get(&(pdu.kind().to_string(), state_key)) != Some(&pdu.event_id())
        })
        .cloned()
        .collect()
}

/// Decides which events of a room's slice the user gets: the timeline filter, ignored
/// senders (their non-state events) and history visibility. Events after `visible_after`
/// (the user's join, for a joined room) are visible without a check.
pub(crate) fn keeper<'c>(
    ctx: &'c Context<'c>,
    room_id: &'c RoomId,
    reader: &'c Reader<'c>,
    visible_after: Option<StreamPosition>,
) -> impl FnMut(StreamPosition, &Pdu) -> Result<bool, ApiError> + 'c {
    move |position, pdu| {
        if !matches(&ctx.filter.room.timeline, room_id, pdu) {
            return Ok(false);
        }
        if !pdu.is_state() && ctx.is_ignored(pdu.sender()) {
            return Ok(false);
        }
        if visible_after.is_some_and(|joined| position > joined) {
            return Ok(true);
        }
        reader.can_see(&ctx.services.rooms, pdu)
    }
}

#[cfg(test)]
mod tests {
    use axon_core::rooms::room_version::RoomVersion;
    use ruma::CanonicalJsonObject;
    use serde_json::json;

    use super::*;

    fn state_pdu(id: &str, kind: &str, state_key: &str) -> Pdu {
        let object: CanonicalJsonObject = serde_json::from_value(json!({
            "event_id": id,
            "auth_events": [],
            "prev_events": [],
            "content": {},
            "depth": 1,
            "hashes": { "sha256": "x" },
            "origin_server_ts": 1,
            "room_id": "!r:x",
            "sender": "@a:x",
            "signatures": {},
            "type": kind,
            "state_key": state_key,
        }))
        .unwrap();
        Pdu::from_canonical(object, &RoomVersion::parse("1").unwrap()).unwrap()
    }

    fn ids(pdus: &[Pdu]) -> Vec<String> {
        pdus.iter().map(|pdu| pdu.event_id().to_string()).collect()
    }

    #[test]
    fn the_delta_holds_changed_and_new_entries_only() {
        let then = vec![
            state_pdu("$create:x", "m.room.create", ""),
            state_pdu("$name1:x", "m.room.name", ""),
            state_pdu("$alice1:x", "m.room.member", "@alice:x"),
        ];
        let now = vec![
            state_pdu("$create:x", "m.room.create", ""),
            state_pdu("$name2:x", "m.room.name", ""),
            state_pdu("$alice1:x", "m.room.member", "@alice:x"),
            state_pdu("$bob1:x", "m.room.member", "@bob:x"),
        ];
        assert_eq!(ids(&delta(&then, &now)), vec!["$name2:x", "$bob1:x"]);
        assert!(delta(&now, &now).is_empty());
        assert_eq!(ids(&delta(&[], &now)).len(), 4);
        // The same state key under another type is another entry.
        let topic = vec![state_pdu("$t:x", "m.room.topic", "@alice:x")];
        assert_eq!(ids(&delta(&then, &topic)), vec!["$t:x"]);
    }
}
