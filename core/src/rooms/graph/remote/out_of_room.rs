//! Memberships of local users in rooms this server is not in: an invite another server sent
//! for one of our users, a knock sent through another server, and the leave that ends either
//! (a rejected invite, a withdrawn knock), each with the stripped state the other server gave.
//!
//! The room graph cannot hold them: the room may be unknown here, and even when it is known
//! the event does not follow our forward extremities. They are kept in their own index,
//! `(user, room)` -> the latest such membership, written at a position of the server-wide
//! stream so that syncs wake for them and a sync token orders them against the room's own
//! events. They stay out of the room membership indexes on purpose: every reader of those
//! indexes may assume the room's graph is here.
//!
//! Which membership is current when the room is also in the graph: the newer of the two by
//! stream position (an invite received after the user left a room we still know; a join
//! through another server after an invite).
//!
//! Also here: [`Rooms::prepare_local`], a local event built and checked on the room's head
//! without being written, for an invite that another server must sign before it is appended.

use ruma::events::StateEventType;
use ruma::events::room::member::MembershipState;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedRoomId,
    OwnedServerName, OwnedUserId, RoomId, RoomVersionId, UInt, UserId,
};
use serde::{Deserialize, Serialize};

use super::super::append::{MAX_PREV_EVENTS, NewEvent, StateView, membership_change};
use super::super::tables::StreamPosition;
use crate::rooms::auth::check_auth;
use crate::rooms::graph::{Audience, RoomError, RoomGuard, Rooms};
use crate::rooms::pdu::{Pdu, PduBuilder};
use crate::rooms::room_version::RoomVersion;
use crate::storage::{Json, Table, catalogue};

/// `(user, room)` -> the user's latest membership in a room this server is not in.
const OUT_OF_ROOM: Table<(OwnedUserId, OwnedRoomId), Json<Record>> =
    Table::new(&catalogue::ROOM_OUT_OF_ROOM_MEMBERSHIPS);

/// A stored out-of-room membership.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    room_version: RoomVersionId,
    /// The member event in the federation format.
    event: CanonicalJsonObject,
    /// The stripped state the other server gave (full PDUs or stripped events, as sent).
    stripped_state: Vec<serde_json::Value>,
    /// The servers to reach the room through, best first.
    servers: Vec<OwnedServerName>,
    stream: StreamPosition,
}

/// A membership of a local user in a room this server is not in, to record.
#[derive(Clone, Debug)]
pub struct NewOutOfRoomMembership {
    /// The member event (`m.room.member` whose state key is a user of this server), checked
    /// by the caller (signatures, or built and signed here).
    pub event: Pdu,
    /// The room's version.
    pub room_version: RoomVersion,
    /// The stripped state of the room, as the other server gave it.
    pub stripped_state: Vec<serde_json::Value>,
    /// The servers to reach the room through (the inviter's, the one knocked through).
    pub servers: Vec<OwnedServerName>,
}

/// A local user's latest membership in a room this server is not in.
#[derive(Clone, Debug)]
pub struct OutOfRoomMembership {
    /// The room.
    pub room_id: OwnedRoomId,
    /// The user.
    pub user_id: OwnedUserId,
    /// The membership: invite, knock or leave.
    pub membership: MembershipState,
    /// The member event.
    pub event: Pdu,
    /// The room's version.
    pub room_version: RoomVersion,
    /// The stripped state of the room, as the other server gave it.
    pub stripped_state: Vec<serde_json::Value>,
    /// The servers to reach the room through, best first.
    pub servers: Vec<OwnedServerName>,
    /// Where it is in the server-wide stream.
    pub stream: StreamPosition,
}

impl Rooms {
    /// Records `membership` as its user's current membership in its room, outside the room
    /// graph (see the module documentation), at the next stream position. Recording the same
    /// event again writes nothing and returns the position it has.
    ///
    /// `guard` must be the room's lock. [`RoomError::InvalidParam`] for an event that is not
    /// the membership of a user of this server in that room. Synchronous: call it from
    /// `spawn_blocking`.
    pub fn record_out_of_room_membership(
        &self,
        guard: &RoomGuard,
        membership: NewOutOfRoomMembership,
    ) -> Result<StreamPosition, RoomError> {
        let event = &membership.event;
        self.check_guard(guard, event.room_id())?;
        let (user_id, _) = membership_change(event)?.ok_or_else(|| {
            RoomError::InvalidParam(format!("{} is not a membership event", event.event_id()))
        })?;
        if user_id.server_name() != self.server_name() {
            return Err(RoomError::InvalidParam(format!(
                "{user_id} is not a user of this server"
            )));
        }
        let key = (user_id, event.room_id().to_owned());
        if let Some(Json(existing)) = OUT_OF_ROOM.get(&*self.store, &key)?
            && parse(key.clone(), existing.clone())?.event.event_id() == event.event_id()
        {
            return Ok(existing.stream);
        }
        let mut json = event.json().clone();
        json.remove("unsigned");
        // Only the user's own syncs read this index.
        let audience = Audience::User(key.0.clone());
        self.write_at_next_position_for(audience, |batch, stream| {
            let record = Record {
                room_version: membership.room_version.id().clone(),
                event: json,
                stripped_state: membership.stripped_state,
                servers: membership.servers,
                stream,
            };
            OUT_OF_ROOM.put(batch, &key, &Json(record));
            Ok(())
        })
    }

    /// `user_id`'s latest membership in `room_id` recorded outside the room graph, if any.
    /// Whether it is current is for the caller to judge against the graph's (the newer one).
    pub fn out_of_room_membership(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> Result<Option<OutOfRoomMembership>, RoomError> {
        let key = (user_id.to_owned(), room_id.to_owned());
        match OUT_OF_ROOM.get(&*self.store, &key)? {
            Some(Json(record)) => parse(key, record).map(Some),
            None => Ok(None),
        }
    }

    /// Every membership of `user_id` recorded outside the room graph.
    pub fn out_of_room_memberships(
        &self,
        user_id: &UserId,
    ) -> Result<Vec<OutOfRoomMembership>, RoomError> {
        OUT_OF_ROOM
            .scan_prefix(&*self.store, &(user_id.to_owned(),))?
            .into_iter()
            .map(|(key, Json(record))| parse(key, record))
            .collect()
    }

    /// `user_id`'s current out-of-room membership in `room_id`: the recorded one, unless the
    /// room graph holds a newer membership of the user (by stream position).
    pub fn current_out_of_room_membership(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> Result<Option<OutOfRoomMembership>, RoomError> {
        let Some(recorded) = self.out_of_room_membership(room_id, user_id)? else {
            return Ok(None);
        };
        Ok(self.supersedes_graph(&recorded)?.then_some(recorded))
    }

    /// Whether `recorded` is newer than the user's membership in the room graph (or the graph
    /// has none).
    pub fn supersedes_graph(&self, recorded: &OutOfRoomMembership) -> Result<bool, RoomError> {
        if self
            .membership(&recorded.room_id, &recorded.user_id)?
            .is_none()
        {
            return Ok(true);
        }
        let in_graph = match self.state_event(
            &recorded.room_id,
            &StateEventType::RoomMember,
            recorded.user_id.as_str(),
        ) {
            Ok(Some(member)) => self
                .get_event(member.event_id())?
                .and_then(|stored| stored.stream),
            Ok(None) | Err(RoomError::NotFound(_)) => None,
            Err(err) => return Err(err),
        };
        Ok(in_graph.is_none_or(|position| position < recorded.stream))
    }

    /// Builds a local event on the room's head exactly as [`Rooms::append_local`] would (prev
    /// events, auth events, depth, hashes, signature) and checks it against the current state,
    /// without writing it: for an invite of a user of another server, whose server signs it
    /// before it is appended ([`Rooms::append_remote`], holding the same `guard` so the head
    /// has not moved). [`RoomError::Forbidden`] when the auth rules refuse it.
    pub fn prepare_local(&self, guard: &RoomGuard, event: NewEvent) -> Result<Pdu, RoomError> {
        self.check_guard(guard, &event.room_id)?;
        let head = self
            .head(&event.room_id)?
            .ok_or(RoomError::NotFound("room"))?;
        let view = StateView::new(self, head.current);
        let prevs = head
            .extremities
            .iter()
            .take(MAX_PREV_EVENTS)
            .map(|short| self.existing_pdu(*short))
            .collect::<Result<Vec<_>, RoomError>>()?;
        let deepest = prevs
            .iter()
            .map(|pdu| u64::from(pdu.depth()))
            .max()
            .unwrap_or(0);
        let mut builder = PduBuilder::new(
            Some(event.room_id.clone()),
            event.sender,
            event.kind,
            event.content,
        );
        builder.state_key = event.state_key;
        builder.redacts = event.redacts;
        builder.prev_events = prevs.iter().map(Pdu::reference).collect();
        builder.depth = UInt::try_from(deepest.saturating_add(1)).unwrap_or(UInt::MAX);
        builder.origin_server_ts = MilliSecondsSinceUnixEpoch::now();
        builder.select_auth_events(&head.version, |kind, state_key| {
            view.get(kind, state_key).map(|pdu| pdu.reference())
        })?;
        view.finish()?;
        let pdu = builder.build_pdu(&head.version, &self.keys)?;
        let verdict = check_auth(&head.version, &pdu, |kind: &StateEventType, key: &str| {
            view.get(kind, key)
        });
        view.finish()?;
        verdict.map_err(|err| RoomError::Forbidden(err.reason()))?;
        Ok(pdu)
    }

    /// A leave of `user_id` (a user of this server) signed by this server, following
    /// `previous` (the user's invite or knock in a room this server is not in): what is
    /// recorded when that room's servers cannot be reached to reject or withdraw it. It is
    /// never sent anywhere.
    pub fn local_out_of_room_leave(
        &self,
        previous: &OutOfRoomMembership,
        reason: Option<String>,
    ) -> Result<Pdu, RoomError> {
        let mut content = CanonicalJsonObject::new();
        content.insert(
            "membership".to_owned(),
            CanonicalJsonValue::String(MembershipState::Leave.to_string()),
        );
        if let Some(reason) = reason {
            content.insert("reason".to_owned(), CanonicalJsonValue::String(reason));
        }
        let mut builder = PduBuilder::new(
            Some(previous.room_id.clone()),
            previous.user_id.clone(),
            ruma::events::TimelineEventType::RoomMember,
            content,
        );
        builder.state_key = Some(previous.user_id.to_string());
        builder.prev_events = vec![previous.event.reference()];
        builder.auth_events = vec![previous.event.reference()];
        builder.depth = previous.event.depth().saturating_add(UInt::from(1u32));
        builder.origin_server_ts = MilliSecondsSinceUnixEpoch::now();
        Ok(builder.build_pdu(&previous.room_version, &self.keys)?)
    }
}

fn parse(
    (user_id, room_id): (OwnedUserId, OwnedRoomId),
    record: Record,
) -> Result<OutOfRoomMembership, RoomError> {
    let room_version = RoomVersion::new(&record.room_version)?;
    let event = Pdu::from_canonical(record.event, &room_version)?;
    let membership = membership_change(&event)?
        .map(|(_, membership)| membership)
        .ok_or_else(|| {
            RoomError::InvalidParam("stored out-of-room event has no membership".to_owned())
        })?;
    Ok(OutOfRoomMembership {
        room_id,
        user_id,
        membership,
        event,
        room_version,
        stripped_state: record.stripped_state,
        servers: record.servers,
        stream: record.stream,
    })
}

#[cfg(test)]
mod tests {
    use ruma::events::TimelineEventType;
    use ruma::{OwnedServerName, RoomVersionId, owned_room_id, server_name};
    use serde_json::json;

    use super::super::super::tests::{ALICE, BOB, Harness, object, user, version};
    use super::*;
    use crate::keys::ServerKeys;
    use crate::rooms::graph::StreamAudience;

    /// An invite of `invitee` to `room_id` as another server would send it.
    fn remote_invite(room_id: &RoomId, invitee: &str) -> Pdu {
        let mut builder = PduBuilder::new(
            Some(room_id.to_owned()),
            user("@mallory:other.org"),
            TimelineEventType::RoomMember,
            object(json!({ "membership": "invite" })),
        );
        builder.state_key = Some(invitee.to_owned());
        builder.depth = UInt::from(7u32);
        builder.origin_server_ts = MilliSecondsSinceUnixEpoch::now();
        // Signed by `other.org`'s key, as that server would.
        let key_dir = tempfile::tempdir().unwrap();
        let keys = ServerKeys::load_or_create(key_dir.path(), server_name!("other.org")).unwrap();
        builder
            .build_pdu(&version(RoomVersionId::V11), &keys)
            .unwrap()
    }

    fn record(h: &Harness, event: Pdu) -> Result<StreamPosition, RoomError> {
        let guard = h.rooms.locks().try_lock(event.room_id()).unwrap();
        h.rooms.record_out_of_room_membership(
            &guard,
            NewOutOfRoomMembership {
                event,
                room_version: version(RoomVersionId::V11),
                stripped_state: vec![json!({
                    "type": "m.room.name", "state_key": "", "sender": "@mallory:other.org",
                    "content": { "name": "Elsewhere" },
                })],
                servers: vec![OwnedServerName::try_from("other.org").unwrap()],
            },
        )
    }

    #[test]
    fn an_invite_to_an_unknown_room_is_recorded_once_then_rejected_here() {
        let h = Harness::new();
        let room_id = owned_room_id!("!elsewhere:other.org");
        let invite = remote_invite(&room_id, BOB);
        let before = h.rooms.current_stream_position();
        let position = record(&h, invite.clone()).unwrap();
        assert!(position > before);
        assert_eq!(h.rooms.current_stream_position(), position);
        // Only the invitee's syncs need to look.
        assert_eq!(
            h.rooms.notifier().audience(before, position),
            StreamAudience::Listed(vec![Audience::User(user(BOB))])
        );
        // The same invite again: nothing new.
        assert_eq!(record(&h, invite.clone()).unwrap(), position);
        assert_eq!(h.rooms.current_stream_position(), position);

        let current = h
            .rooms
            .current_out_of_room_membership(&room_id, &user(BOB))
            .unwrap()
            .unwrap();
        assert_eq!(current.membership, MembershipState::Invite);
        assert_eq!(current.event.event_id(), invite.event_id());
        assert_eq!(current.stripped_state[0]["content"]["name"], "Elsewhere");
        assert_eq!(current.servers[0].as_str(), "other.org");
        assert_eq!(current.stream, position);
        // It stays out of the room membership indexes, whose readers expect a known room.
        assert!(h.rooms.rooms_of_user(&user(BOB)).unwrap().is_empty());
        assert_eq!(h.rooms.membership(&room_id, &user(BOB)).unwrap(), None);

        let leave = h
            .rooms
            .local_out_of_room_leave(&current, Some("no thanks".to_owned()))
            .unwrap();
        assert_eq!(leave.prev_events(), [invite.event_id().to_owned()]);
        assert_eq!(leave.sender(), BOB);
        let left_at = record(&h, leave).unwrap();
        assert!(left_at > position);
        let memberships = h.rooms.out_of_room_memberships(&user(BOB)).unwrap();
        assert_eq!(memberships.len(), 1);
        assert_eq!(memberships[0].membership, MembershipState::Leave);
        assert_eq!(memberships[0].stream, left_at);
    }

    #[test]
    fn only_memberships_of_local_users_are_recorded_under_their_room_lock() {
        let h = Harness::new();
        let room_id = owned_room_id!("!elsewhere:other.org");
        let foreign = remote_invite(&room_id, "@eve:other.org");
        assert!(matches!(
            record(&h, foreign),
            Err(RoomError::InvalidParam(_))
        ));
        let other_room = owned_room_id!("!other:other.org");
        let guard = h.rooms.locks().try_lock(&other_room).unwrap();
        let result = h.rooms.record_out_of_room_membership(
            &guard,
            NewOutOfRoomMembership {
                event: remote_invite(&room_id, BOB),
                room_version: version(RoomVersionId::V11),
                stripped_state: Vec::new(),
                servers: Vec::new(),
            },
        );
        assert!(matches!(result, Err(RoomError::LockMismatch { .. })));
        assert!(
            h.rooms
                .out_of_room_memberships(&user(BOB))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_newer_membership_in_the_graph_wins() {
        let h = Harness::new();
        let room_id = h.public_room(RoomVersionId::V11);
        record(&h, remote_invite(&room_id, BOB)).unwrap();
        assert!(
            h.rooms
                .current_out_of_room_membership(&room_id, &user(BOB))
                .unwrap()
                .is_some()
        );
        h.member(&room_id, BOB, BOB, "join").unwrap();
        assert!(
            h.rooms
                .current_out_of_room_membership(&room_id, &user(BOB))
                .unwrap()
                .is_none()
        );
        // The record is kept; only its standing changed.
        assert_eq!(
            h.rooms.out_of_room_memberships(&user(BOB)).unwrap().len(),
            1
        );
    }

    #[test]
    fn a_prepared_event_is_checked_but_not_written() {
        let h = Harness::new();
        let room_id = h.public_room(RoomVersionId::V11);
        let position = h.rooms.current_stream_position();
        let extremities = h.rooms.forward_extremities(&room_id).unwrap();
        let guard = h.rooms.locks().try_lock(&room_id).unwrap();
        let invite = NewEvent::state(
            room_id.clone(),
            user(ALICE),
            StateEventType::RoomMember,
            "@bob:other.org",
            object(json!({ "membership": "invite" })),
        );
        let pdu = h.rooms.prepare_local(&guard, invite).unwrap();
        assert_eq!(pdu.prev_events(), extremities.as_slice());
        assert_eq!(h.rooms.current_stream_position(), position);
        assert_eq!(h.rooms.forward_extremities(&room_id).unwrap(), extremities);
        assert!(h.rooms.get_event(pdu.event_id()).unwrap().is_none());
        // Appended as it is, it takes its place on the head it was built on.
        let outcome = h.rooms.append_remote(&guard, pdu.clone()).unwrap();
        assert_eq!(outcome.event_id, pdu.event_id());
        assert_eq!(
            h.rooms.forward_extremities(&room_id).unwrap(),
            [pdu.event_id().to_owned()]
        );

        // Someone who is not in the room may not invite.
        let stranger = NewEvent::state(
            room_id,
            user("@stranger:example.org"),
            StateEventType::RoomMember,
            "@bob:other.org",
            object(json!({ "membership": "invite" })),
        );
        assert!(matches!(
            h.rooms.prepare_local(&guard, stranger),
            Err(RoomError::Forbidden(_))
        ));
    }
}
