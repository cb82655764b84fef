//! The `rooms` part of a sync: joined, invited, knocked and left rooms.
//!
//! Which rooms appear: on an initial sync every joined, invited and knocked room (and left
//! rooms when the filter's `include_leave` asks); on an incremental sync the joined rooms
//! with anything new, and the rooms whose membership of the user changed after `since`. A
//! room the user joined after `since` comes as on an initial sync: its recent timeline and
//! the full state before it.

use std::collections::BTreeMap;

use axon_api::ApiError;
use axon_core::rooms::graph::{OutOfRoomMembership, StreamPosition};
use axon_core::rooms::pdu::Pdu;
use ruma::events::StateEventType;
use ruma::events::room::member::MembershipState;
use ruma::{OwnedRoomId, OwnedUserId, RoomId};
use serde_json::{Value, json};

use super::context::Context;
use super::ephemeral::{ephemeral_events, room_account_data};
use super::extensions::{rooms_with_changed_counts, unread_counts};
use super::filter::{room_included, timeline_limit};
use super::response::{InvitedRoom, JoinedRoom, KnockedRoom, LeftRoom, Rooms, Summary, Timeline};
use super::timeline::{keeper, slice, state_section, timeline_section};
use crate::client::rooms::visibility::Reader;

/// The state types copied into the stripped state of invites and knocks.
const STRIPPED_STATE: [StateEventType; 7] = [
    StateEventType::RoomCreate,
    StateEventType::RoomJoinRules,
    StateEventType::RoomName,
    StateEventType::RoomAvatar,
    StateEventType::RoomCanonicalAlias,
    StateEventType::RoomEncryption,
    StateEventType::RoomTopic,
];

/// How many heroes a summary names.
const HEROES: usize = 5;

/// Every room section of the sync.
///
/// The joined rooms are drafted first and finished with their unread counts last:
/// `counts_ready` waits for push rule evaluation to cover the response, which it may still be
/// doing for the newest events while the rest is computed.
pub(crate) fn rooms(ctx: &Context<'_>, counts_ready: impl FnOnce()) -> Result<Rooms, ApiError> {
    let mut out = Rooms::default();
    let rooms = &ctx.services.rooms;
    let out_of_room = out_of_room_memberships(ctx)?;
    let mut joined = Vec::new();
    for (room_id, membership) in rooms.rooms_of_user(&ctx.user.user_id)? {
        if !room_included(ctx.filter, &room_id) || out_of_room.contains_key(&room_id) {
            continue;
        }
        let Some((member, position)) = membership_event(ctx, &room_id)? else {
            continue;
        };
        // A membership newer than the response belongs to the next one.
        if position > ctx.upto {
            continue;
        }
        let changed = ctx.since_stream().is_none_or(|since| position > since);
        match membership {
            MembershipState::Join => {
                let draft = joined_room(ctx, &room_id, position)?;
                joined.push((room_id, draft));
            }
            MembershipState::Invite if changed && !ctx.is_ignored(member.sender()) => {
                out.invite.insert(
                    room_id.clone(),
                    InvitedRoom {
                        invite_state: stripped_state(ctx, &room_id, &member)?.into(),
                    },
                );
            }
            MembershipState::Knock if changed => {
                out.knock.insert(
                    room_id.clone(),
                    KnockedRoom {
                        knock_state: stripped_state(ctx, &room_id, &member)?.into(),
                    },
                );
            }
            MembershipState::Leave | MembershipState::Ban => {
                let wanted = match ctx.since_stream() {
                    Some(since) => position > since,
                    None => ctx.filter.room.include_leave,
                };
                if wanted {
                    out.leave
                        .insert(room_id.clone(), left_room(ctx, &room_id, position)?);
                }
            }
            _ => {}
        }
    }
    for recorded in out_of_room.into_values() {
        out_of_room_section(ctx, &mut out, recorded)?;
    }
    counts_ready();
    let counts_changed = rooms_with_changed_counts(
        ctx.services,
        &ctx.user.user_id,
        ctx.since_stream().filter(|_| !ctx.full_state),
        ctx.upto,
    )?;
    for (room_id, draft) in joined {
        if draft.news || counts_changed.contains(&room_id) {
            let room = finish_joined_room(ctx, &room_id, draft)?;
            out.join.insert(room_id, room);
        }
    }
    Ok(out)
}

/// The user's memberships in rooms this server is not in (invites from other servers, knocks
/// through them, their rejections) that are newer than what the room graph says.
fn out_of_room_memberships(
    ctx: &Context<'_>,
) -> Result<BTreeMap<OwnedRoomId, OutOfRoomMembership>, ApiError> {
    let rooms = &ctx.services.rooms;
    let mut current = BTreeMap::new();
    for recorded in rooms.out_of_room_memberships(&ctx.user.user_id)? {
        if room_included(ctx.filter, &recorded.room_id) && rooms.supersedes_graph(&recorded)? {
            current.insert(recorded.room_id.clone(), recorded);
        }
    }
    Ok(current)
}

/// The section of a room this server is not in: its stripped state, as the other server gave
/// it, for an invite or a knock; the leave alone for a rejected invite or withdrawn knock.
fn out_of_room_section(
    ctx: &Context<'_>,
    out: &mut Rooms,
    recorded: OutOfRoomMembership,
) -> Result<(), ApiError> {
    if recorded.stream > ctx.upto {
        return Ok(());
    }
    let changed = ctx
        .since_stream()
        .is_none_or(|since| recorded.stream > since);
    let stripped = || {
        let mut events: Vec<Value> = recorded
            .stripped_state
            .iter()
            .filter_map(stripped_event)
            .collect();
        events.push(ctx.state_event(&recorded.event));
        events
    };
    match recorded.membership {
        MembershipState::Invite if changed && !ctx.is_ignored(recorded.event.sender()) => {
            out.invite.insert(
                recorded.room_id.clone(),
                InvitedRoom {
                    invite_state: stripped().into(),
                },
            );
        }
        MembershipState::Knock if changed => {
            out.knock.insert(
                recorded.room_id.clone(),
                KnockedRoom {
                    knock_state: stripped().into(),
                },
            );
        }
        MembershipState::Leave | MembershipState::Ban => {
            let wanted = match ctx.since_stream() {
                Some(since) => recorded.stream > since,
                None => ctx.filter.room.include_leave,
            };
            if wanted {
                let mut left = LeftRoom::default();
                left.timeline.events.push(ctx.state_event(&recorded.event));
                out.leave.insert(recorded.room_id.clone(), left);
            }
        }
        _ => {}
    }
    Ok(())
}

/// A stripped state entry from another server (a full PDU or the stripped form) in the
/// stripped form clients get: type, state key, content and sender.
fn stripped_event(entry: &Value) -> Option<Value> {
    Some(json!({
        "type": entry.get("type")?.as_str()?,
        "state_key": entry.get("state_key")?.as_str()?,
        "content": entry.get("content")?.as_object()?,
        "sender": entry.get("sender")?.as_str()?,
    }))
}

/// The user's current membership event in the room and its stream position.
fn membership_event(
    ctx: &Context<'_>,
    room_id: &RoomId,
) -> Result<Option<(Pdu, StreamPosition)>, ApiError> {
    let rooms = &ctx.services.rooms;
    let Some(member) = rooms.state_event(
        room_id,
        &StateEventType::RoomMember,
        ctx.user.user_id.as_str(),
    )?
    else {
        return Ok(None);
    };
    let position = rooms
        .get_event(member.event_id())?
        .and_then(|stored| stored.stream);
    Ok(position.map(|position| (member, position)))
}

/// A joined room's section but its unread counts and summary.
#[derive(Debug)]
struct JoinedDraft {
    state: Vec<Value>,
    timeline: Timeline,
    ephemeral: Vec<Value>,
    account_data: Vec<Value>,
    /// Whether anything of it is for the client: otherwise, on an incremental sync, the room
    /// is left out unless its unread counts changed.
    news: bool,
}

/// Drafts a joined room's section.
fn joined_room(
    ctx: &Context<'_>,
    room_id: &RoomId,
    joined_at: StreamPosition,
) -> Result<JoinedDraft, ApiError> {
    let since = ctx.since_stream();
    let newly_joined = since.is_some_and(|since| joined_at > since);
    let full = ctx.wants_full_state() || newly_joined;
    let reader = Reader::new(&ctx.services.rooms, room_id, &ctx.user.user_id)?;
    // A room new to the client gets its recent history, as on an initial sync, not only
    // what happened since the token.
    let after = if newly_joined { None } else { since };
    let slice = slice(
        ctx,
        room_id,
        after,
        ctx.upto,
        timeline_limit(ctx.filter),
        keeper(ctx, room_id, &reader, Some(joined_at)),
    )?;
    let timeline = timeline_section(ctx, room_id, &slice, ctx.upto)?;
    let state = state_section(ctx, room_id, &slice, ctx.upto, full)?;
    let ephemeral = ephemeral_events(ctx, room_id)?;
    let account_data = room_account_data(ctx, room_id);
    let news = full
        || !timeline.events.is_empty()
        || !state.is_empty()
        || !ephemeral.is_empty()
        || !account_data.is_empty();
    Ok(JoinedDraft {
        state,
        timeline,
        ephemeral,
        account_data,
        news,
    })
}

/// A joined room's section: the draft with its summary and unread counts.
fn finish_joined_room(
    ctx: &Context<'_>,
    room_id: &RoomId,
    draft: JoinedDraft,
) -> Result<JoinedRoom, ApiError> {
    let per_thread = ctx.filter.room.timeline.unread_thread_notifications;
    let (unread, thread_unread) =
        unread_counts(ctx.services, ctx.user, room_id, per_thread, ctx.upto)?;
    Ok(JoinedRoom {
        summary: summary(ctx, room_id)?,
        state: draft.state.into(),
        timeline: draft.timeline,
        ephemeral: draft.ephemeral.into(),
        account_data: draft.account_data.into(),
        unread_notifications: unread,
        unread_thread_notifications: thread_unread,
    })
}

/// A left room's section: the timeline up to the user's leave (or ban, or kick), and the
/// state that goes with it.
fn left_room(
    ctx: &Context<'_>,
    room_id: &RoomId,
    left_at: StreamPosition,
) -> Result<LeftRoom, ApiError> {
    let reader = Reader::new(&ctx.services.rooms, room_id, &ctx.user.user_id)?;
    let since = ctx.since_stream();
    let slice = slice(
        ctx,
        room_id,
        since,
        left_at,
        timeline_limit(ctx.filter),
        keeper(ctx, room_id, &reader, None),
    )?;
    Ok(LeftRoom {
        timeline: timeline_section(ctx, room_id, &slice, left_at)?,
        state: state_section(ctx, room_id, &slice, left_at, ctx.wants_full_state())?.into(),
        account_data: room_account_data(ctx, room_id).into(),
    })
}

/// The summary: member counts and, for rooms without a name or canonical alias, heroes.
fn summary(ctx: &Context<'_>, room_id: &RoomId) -> Result<Summary, ApiError> {
    let rooms = &ctx.services.rooms;
    let members = rooms.members(room_id, None)?;
    let count = |wanted: MembershipState| {
        members
            .iter()
            .filter(|(_, membership)| *membership == wanted)
            .count() as u64
    };
    let named = has_content(ctx, room_id, StateEventType::RoomName, "name")?
        || has_content(ctx, room_id, StateEventType::RoomCanonicalAlias, "alias")?;
    let heroes = if named {
        None
    } else {
        let others = |states: &[MembershipState]| -> Vec<OwnedUserId> {
            members
                .iter()
                .filter(|(user, membership)| {
                    *user != ctx.user.user_id && states.contains(membership)
                })
                .map(|(user, _)| user.clone())
                .take(HEROES)
                .collect()
        };
        let current = others(&[MembershipState::Join, MembershipState::Invite]);
        Some(if current.is_empty() {
            others(&[MembershipState::Leave, MembershipState::Ban])
        } else {
            current
        })
    };
    Ok(Summary {
        heroes,
        joined_member_count: count(MembershipState::Join),
        invited_member_count: count(MembershipState::Invite),
    })
}

/// Whether the room's `kind` state event has a non-empty string `field`.
fn has_content(
    ctx: &Context<'_>,
    room_id: &RoomId,
    kind: StateEventType,
    field: &str,
) -> Result<bool, ApiError> {
    let event = ctx.services.rooms.state_event(room_id, &kind, "")?;
    Ok(event.is_some_and(|pdu| {
        matches!(
            pdu.content_object().get(field),
            Some(ruma::CanonicalJsonValue::String(value)) if !value.is_empty()
        )
    }))
}

/// Stripped state for an invite or knock: a few state events in their stripped form (type,
/// state key, content, sender), then the user's membership event itself.
fn stripped_state(
    ctx: &Context<'_>,
    room_id: &RoomId,
    member: &Pdu,
) -> Result<Vec<Value>, ApiError> {
    let rooms = &ctx.services.rooms;
    let mut events = Vec::new();
    for kind in &STRIPPED_STATE {
        if let Some(pdu) = rooms.state_event(room_id, kind, "")? {
            events.push(json!({
                "type": pdu.kind().to_string(),
                "state_key": pdu.state_key().unwrap_or_default(),
                "content": Value::from(ruma::CanonicalJsonValue::Object(
                    pdu.content_object().clone(),
                )),
                "sender": pdu.sender(),
            }));
        }
    }
    events.push(ctx.state_event(member));
    Ok(events)
}
