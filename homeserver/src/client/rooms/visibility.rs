//! History visibility: may a user see an event?
//!
//! The spec's algorithm, given the `m.room.history_visibility` in force at the event, the
//! user's membership at the event and their membership now:
//! 1. `world_readable` at the event: anyone may see it.
//! 2. The user was joined at the event: visible.
//! 3. `shared` at the event and the user is joined now: visible.
//! 4. `invited` at the event and the user was invited at the event: visible.
//! 5. Otherwise not.
//!
//! A user also sees their own membership events, so a joiner sees their join and a leaver their
//! leave even in a `joined` room. Every endpoint that serves past events (`/messages`,
//! `/event`, `/context`) decides through [`can_see`].

use axon_api::ApiError;
use axon_core::rooms::graph::Rooms;
use axon_core::rooms::pdu::Pdu;
use ruma::events::room::history_visibility::HistoryVisibility;
use ruma::events::room::member::MembershipState;
use ruma::events::{StateEventType, TimelineEventType};
use ruma::{OwnedEventId, RoomId, UserId};

/// What is known about one event and one reader.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sight<'a> {
    /// The history visibility in force at the event (`shared` when the room has none).
    pub(crate) visibility: &'a HistoryVisibility,
    /// The reader's membership at the event, if they had one.
    pub(crate) membership_then: Option<&'a MembershipState>,
    /// The reader's membership now, if they have one.
    pub(crate) membership_now: Option<&'a MembershipState>,
    /// Whether the event is the reader's own membership event.
    pub(crate) own_membership_event: bool,
}

/// Whether the reader may see the event.
pub(crate) fn can_see(sight: Sight<'_>) -> bool {
    if sight.own_membership_event {
        return true;
    }
    match sight.visibility {
        HistoryVisibility::WorldReadable => return true,
        HistoryVisibility::Shared if sight.membership_now == Some(&MembershipState::Join) => {
            return true;
        }
        _ => {}
    }
    match sight.membership_then {
        Some(MembershipState::Join) => true,
        Some(MembershipState::Invite) => sight.visibility == &HistoryVisibility::Invited,
        _ => false,
    }
}

/// How a user may read a room's state.
#[derive(Debug, Clone)]
pub(crate) enum StateAccess {
    /// The current state: the user is joined, or the room is world readable.
    Current,
    /// The state as it was when the user left or was banned: after this event of theirs.
    UpTo(OwnedEventId),
}

/// Who is reading a room: the user and their membership now.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    /// The reader.
    pub(crate) user_id: &'a UserId,
    /// Their membership in the room now.
    pub(crate) membership: Option<MembershipState>,
}

impl<'a> Reader<'a> {
    /// `user_id` reading `room_id`.
    pub(crate) fn new(
        rooms: &Rooms,
        room_id: &RoomId,
        user_id: &'a UserId,
    ) -> Result<Self, ApiError> {
        Ok(Self {
            user_id,
            membership: rooms.membership(room_id, user_id)?,
        })
    }

    /// Whether the reader may see `pdu`, judged by the state at the event.
    pub(crate) fn can_see(&self, rooms: &Rooms, pdu: &Pdu) -> Result<bool, ApiError> {
        let own_membership_event = *pdu.kind() == TimelineEventType::RoomMember
            && pdu.state_key() == Some(self.user_id.as_str());
        if own_membership_event {
            return Ok(true);
        }
        let state = rooms.state_at_event(pdu.event_id())?;
        let visibility = history_visibility_in(&state);
        let membership_then = membership_in(&state, self.user_id);
        Ok(can_see(Sight {
            visibility: &visibility,
            membership_then: membership_then.as_ref(),
            membership_now: self.membership.as_ref(),
            own_membership_event,
        }))
    }

    /// Whether the reader may page through the room at all: members and former members (each
    /// event is then judged by [`Reader::can_see`]), or anyone in a world-readable room.
    pub(crate) fn check_may_paginate(
        &self,
        rooms: &Rooms,
        room_id: &RoomId,
    ) -> Result<(), ApiError> {
        if self.membership.is_some()
            || current_visibility(rooms, room_id)? == HistoryVisibility::WorldReadable
        {
            return Ok(());
        }
        Err(ApiError::forbidden("You are not a member of this room"))
    }

    /// Which state of the room the reader may see: the current state for members and in a
    /// world-readable room; for a user who left or was banned, the state at that moment.
    pub(crate) fn state_access(
        &self,
        rooms: &Rooms,
        room_id: &RoomId,
    ) -> Result<StateAccess, ApiError> {
        if self.membership == Some(MembershipState::Join)
            || current_visibility(rooms, room_id)? == HistoryVisibility::WorldReadable
        {
            return Ok(StateAccess::Current);
        }
        if matches!(
            self.membership,
            Some(MembershipState::Leave | MembershipState::Ban)
        ) && let Some(event) =
            rooms.state_event(room_id, &StateEventType::RoomMember, self.user_id.as_str())?
        {
            return Ok(StateAccess::UpTo(event.event_id().to_owned()));
        }
        Err(ApiError::forbidden("You are not a member of this room"))
    }

    /// The state the reader may see (see [`Reader::state_access`]).
    pub(crate) fn readable_state(
        &self,
        rooms: &Rooms,
        room_id: &RoomId,
    ) -> Result<Vec<Pdu>, ApiError> {
        Ok(match self.state_access(rooms, room_id)? {
            StateAccess::Current => rooms.current_state(room_id)?,
            StateAccess::UpTo(event_id) => rooms.state_at_event(&event_id)?,
        })
    }
}

/// The room's history visibility now.
fn current_visibility(rooms: &Rooms, room_id: &RoomId) -> Result<HistoryVisibility, ApiError> {
    let event = rooms.state_event(room_id, &StateEventType::RoomHistoryVisibility, "")?;
    Ok(event
        .as_ref()
        .map_or(HistoryVisibility::Shared, visibility_of))
}

/// The history visibility set by `state` (`shared` when the room has none, as the spec says).
fn history_visibility_in(state: &[Pdu]) -> HistoryVisibility {
    state
        .iter()
        .find(|pdu| {
            *pdu.kind() == TimelineEventType::RoomHistoryVisibility && pdu.state_key() == Some("")
        })
        .map_or(HistoryVisibility::Shared, visibility_of)
}

fn visibility_of(pdu: &Pdu) -> HistoryVisibility {
    content_str(pdu, "history_visibility")
        .map_or(HistoryVisibility::Shared, HistoryVisibility::from)
}

/// The membership of `user_id` in `state`.
fn membership_in(state: &[Pdu], user_id: &UserId) -> Option<MembershipState> {
    state
        .iter()
        .find(|pdu| {
            *pdu.kind() == TimelineEventType::RoomMember
                && pdu.state_key() == Some(user_id.as_str())
        })
        .and_then(|pdu| content_str(pdu, "membership").map(MembershipState::from))
}

/// A string field of the event's content.
pub(crate) fn content_str<'a>(pdu: &'a Pdu, field: &str) -> Option<&'a str> {
    match pdu.content_object().get(field) {
        Some(ruma::CanonicalJsonValue::String(value)) => Some(value.as_str()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use HistoryVisibility as V;
    use MembershipState as M;

    fn check(visibility: V, then: Option<M>, now: Option<M>) -> bool {
        can_see(Sight {
            visibility: &visibility,
            membership_then: then.as_ref(),
            membership_now: now.as_ref(),
            own_membership_event: false,
        })
    }

    #[test]
    fn the_spec_table() {
        let cases = [
            // (visibility, membership at the event, membership now, visible)
            (V::WorldReadable, None, None, true),
            (V::Shared, None, Some(M::Join), true),
            (V::Shared, None, None, false),
            (V::Shared, Some(M::Join), Some(M::Leave), true),
            (V::Shared, Some(M::Leave), Some(M::Leave), false),
            (V::Joined, None, Some(M::Join), false),
            (V::Joined, Some(M::Join), Some(M::Join), true),
            (V::Joined, Some(M::Join), Some(M::Leave), true),
            (V::Joined, Some(M::Invite), Some(M::Join), false),
            (V::Invited, Some(M::Invite), Some(M::Join), true),
            (V::Invited, None, Some(M::Join), false),
            (V::Invited, Some(M::Ban), None, false),
        ];
        for (visibility, then, now, visible) in cases {
            assert_eq!(
                check(visibility.clone(), then.clone(), now.clone()),
                visible,
                "{visibility:?} then {then:?} now {now:?}"
            );
        }
    }

    #[test]
    fn own_membership_events_are_always_visible() {
        assert!(can_see(Sight {
            visibility: &V::Joined,
            membership_then: Some(&M::Leave),
            membership_now: Some(&M::Leave),
            own_membership_event: true,
        }));
    }
}
