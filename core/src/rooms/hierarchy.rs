//! Room summaries and the space hierarchy: what a user may learn about a room without being in
//! it, and the breadth-first walk of a space's `m.space.child` tree.
//!
//! Only rooms known to this server are walked here; the client endpoint asks other servers'
//! federation `/hierarchy` for rooms this server is not in, with the same page tokens.
//!
//! A room is *accessible* to a user (the spec's rules for the summary and hierarchy APIs) when
//! the user is joined, invited or knocking, or the room's history is world readable, or its join
//! rule is `public`, `knock` or `knock_restricted`, or it is `restricted` and the user is joined
//! to one of the allowed rooms.
//!
//! A hierarchy page token is `h{skip}_{max_depth}_{suggested_only}`: the walk is repeated and
//! the rooms already served are skipped, so the page is consistent with the first as long as
//! the tree does not change; a token used with other parameters is refused, as the spec asks.

use std::collections::{HashSet, VecDeque};

use ruma::events::StateEventType;
use ruma::events::room::member::MembershipState;
use ruma::room::{JoinRule, JoinRuleSummary, RoomSummary, RoomType};
use ruma::{
    CanonicalJsonValue, EventEncryptionAlgorithm, OwnedMxcUri, OwnedRoomAliasId, OwnedRoomId,
    RoomId, ServerName, UInt, UserId,
};

use crate::rooms::graph::{RoomError, Rooms};
use crate::rooms::pdu::Pdu;

/// The deepest a hierarchy walk goes, whatever the client asks.
pub const MAX_DEPTH: usize = 50;
/// The most rooms a hierarchy page holds, whatever the client asks.
pub const MAX_LIMIT: usize = 100;
/// The rooms a hierarchy page holds when the client does not say.
pub const DEFAULT_LIMIT: usize = 50;

/// A room's summary from its current state, if the room is known here.
pub fn summary(rooms: &Rooms, room_id: &RoomId) -> Result<Option<RoomSummary>, RoomError> {
    let Some(info) = rooms.room_info(room_id)? else {
        return Ok(None);
    };
    let string = |kind: StateEventType, field: &str| -> Result<Option<String>, RoomError> {
        Ok(rooms
            .state_event(room_id, &kind, "")?
            .and_then(|pdu| content_string(&pdu, field)))
    };
    let joined = rooms.members(room_id, Some(&MembershipState::Join))?.len();
    let history = string(StateEventType::RoomHistoryVisibility, "history_visibility")?;
    let guest = string(StateEventType::RoomGuestAccess, "guest_access")?;
    let mut summary = RoomSummary::new(
        room_id.to_owned(),
        join_rule(rooms, room_id)?.into(),
        guest.as_deref() == Some("can_join"),
        UInt::try_from(joined).unwrap_or(UInt::MAX),
        history.as_deref() == Some("world_readable"),
    );
    summary.name = string(StateEventType::RoomName, "name")?.filter(|name| !name.is_empty());
    summary.topic = string(StateEventType::RoomTopic, "topic")?.filter(|topic| !topic.is_empty());
    summary.canonical_alias = string(StateEventType::RoomCanonicalAlias, "alias")?
        .and_then(|alias| OwnedRoomAliasId::try_from(alias).ok());
    summary.avatar_url = string(StateEventType::RoomAvatar, "url")?
        .filter(|url| !url.is_empty())
        .map(OwnedMxcUri::from);
    summary.room_type = string(StateEventType::RoomCreate, "type")?.map(RoomType::from);
    summary.encryption = string(StateEventType::RoomEncryption, "algorithm")?
        .map(|algorithm| EventEncryptionAlgorithm::from(algorithm.as_str()));
    summary.room_version = Some(info.version.id().clone());
    Ok(Some(summary))
}

/// The room's join rule (`invite` when it has none or it cannot be read).
fn join_rule(rooms: &Rooms, room_id: &RoomId) -> Result<JoinRule, RoomError> {
    Ok(rooms
        .state_event(room_id, &StateEventType::RoomJoinRules, "")?
        .and_then(|pdu| serde_json::from_str::<JoinRule>(pdu.content().get()).ok())
        .unwrap_or(JoinRule::Invite))
}

/// Whether `user_id` (anyone, when `None`) may learn about `room_id` (see the module docs).
pub fn is_accessible(
    rooms: &Rooms,
    room_id: &RoomId,
    summary: &RoomSummary,
    user_id: Option<&UserId>,
) -> Result<bool, RoomError> {
    if summary.world_readable {
        return Ok(true);
    }
    if let Some(user_id) = user_id
        && matches!(
            rooms.membership(room_id, user_id)?,
            Some(MembershipState::Join | MembershipState::Invite | MembershipState::Knock)
        )
    {
        return Ok(true);
    }
    match &summary.join_rule {
        JoinRuleSummary::Public | JoinRuleSummary::Knock | JoinRuleSummary::KnockRestricted(_) => {
            Ok(true)
        }
        JoinRuleSummary::Restricted(restricted) => match user_id {
            Some(user_id) => {
                for allowed in &restricted.allowed_room_ids {
                    if rooms.membership(allowed, user_id)? == Some(MembershipState::Join) {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            None => Ok(false),
        },
        _ => Ok(false),
    }
}

/// Whether users of `server` may learn about `room_id` (the federation `/hierarchy` rules): the
/// room is world readable, its join rule is `public`, `knock` or `knock_restricted`, a user of
/// the server is joined, invited or knocking, or the join rule is `restricted` and a user of
/// the server is joined to one of the allowed rooms.
pub fn is_accessible_to_server(
    rooms: &Rooms,
    room_id: &RoomId,
    summary: &RoomSummary,
    server: &ServerName,
) -> Result<bool, RoomError> {
    if summary.world_readable {
        return Ok(true);
    }
    let has_member = |room_id: &RoomId, wanted: &[MembershipState]| -> Result<bool, RoomError> {
        Ok(rooms
            .members(room_id, None)?
            .iter()
            .any(|(user, membership)| user.server_name() == server && wanted.contains(membership)))
    };
    if has_member(
        room_id,
        &[
            MembershipState::Join,
            MembershipState::Invite,
            MembershipState::Knock,
        ],
    )? {
        return Ok(true);
    }
    match &summary.join_rule {
        JoinRuleSummary::Public | JoinRuleSummary::Knock | JoinRuleSummary::KnockRestricted(_) => {
            Ok(true)
        }
        JoinRuleSummary::Restricted(restricted) => {
            for allowed in &restricted.allowed_room_ids {
                if has_member(allowed, &[MembershipState::Join])? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        _ => Ok(false),
    }
}

/// Whether a user of this server is joined to the room, so its state here is current (a room
/// this server left, or only heard of, may have changed since).
pub fn is_resident(rooms: &Rooms, room_id: &RoomId) -> Result<bool, RoomError> {
    Ok(rooms
        .members(room_id, Some(&MembershipState::Join))?
        .iter()
        .any(|(user, _)| user.server_name() == rooms.server_name()))
}

/// One room of a hierarchy page.
#[derive(Clone, Debug)]
pub struct HierarchyRoom {
    /// The room's summary.
    pub summary: RoomSummary,
    /// Its `m.space.child` events with a non-empty `via`, in the spec's child order.
    pub children: Vec<Pdu>,
}

/// A request for a page of a space's hierarchy.
#[derive(Clone, Debug)]
pub struct HierarchyQuery {
    /// At most this many rooms ([`DEFAULT_LIMIT`] when absent, at most [`MAX_LIMIT`]).
    pub limit: Option<usize>,
    /// How deep to walk (the root is depth 0; at most [`MAX_DEPTH`]).
    pub max_depth: Option<usize>,
    /// Only children marked `suggested`.
    pub suggested_only: bool,
    /// A token from an earlier page's `next_batch`.
    pub from: Option<String>,
}

/// A page of a space's hierarchy.
#[derive(Clone, Debug)]
pub struct HierarchyPage {
    /// The rooms, breadth first from the root.
    pub rooms: Vec<HierarchyRoom>,
    /// The token of the next page, if there is one.
    pub next_batch: Option<String>,
}

/// A page of the hierarchy under `root` as `user_id` may see it: the root must be known here
/// ([`RoomError::NotFound`]) and accessible ([`RoomError::Forbidden`]); other rooms that are
/// not accessible, or not known here, are left out with their subtrees.
pub fn hierarchy(
    rooms: &Rooms,
    root: &RoomId,
    user_id: &UserId,
    query: &HierarchyQuery,
) -> Result<HierarchyPage, RoomError> {
    let max_depth = query.max_depth.unwrap_or(MAX_DEPTH).min(MAX_DEPTH);
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let skip = match &query.from {
        None => 0,
        Some(token) => parse_page_token(token, max_depth, query.suggested_only)?,
    };
    let Some(root_summary) = summary(rooms, root)? else {
        return Err(RoomError::NotFound("room"));
    };
    if !is_accessible(rooms, root, &root_summary, Some(user_id))? {
        return Err(RoomError::Forbidden(
            "You may not see this room's hierarchy".to_owned(),
        ));
    }
    let mut queue = VecDeque::from([(root.to_owned(), 0_usize, Some(root_summary))]);
    let mut seen: HashSet<OwnedRoomId> = HashSet::from([root.to_owned()]);
    let mut served = 0_usize;
    let mut page = Vec::new();
    while let Some((room_id, depth, known)) = queue.pop_front() {
        let summary = match known {
            Some(summary) => summary,
            None => match summary(rooms, &room_id)? {
                Some(summary) if is_accessible(rooms, &room_id, &summary, Some(user_id))? => {
                    summary
                }
                _ => continue,
            },
        };
        if page.len() == limit {
            // One more accessible room exists past this page.
            return Ok(HierarchyPage {
                rooms: page,
                next_batch: Some(page_token(served, max_depth, query.suggested_only)),
            });
        }
        let children = children(rooms, &room_id, query.suggested_only)?;
        if depth < max_depth {
            for child in &children {
                if let Some(Ok(child_id)) = child.state_key().map(OwnedRoomId::try_from)
                    && seen.insert(child_id.clone())
                {
                    queue.push_back((child_id, depth.saturating_add(1), None));
                }
            }
        }
        served = served.saturating_add(1);
        if served > skip {
            page.push(HierarchyRoom { summary, children });
        }
    }
    Ok(HierarchyPage {
        rooms: page,
        next_batch: None,
    })
}

/// The room's `m.space.child` events with a non-empty `via` (only the `suggested` ones if
/// asked), ordered by `order` (children without one last), then origin server timestamp, then
/// room id, as the spec orders a space's children.
pub fn children(
    rooms: &Rooms,
    room_id: &RoomId,
    suggested_only: bool,
) -> Result<Vec<Pdu>, RoomError> {
    let mut children: Vec<Pdu> = rooms
        .current_state(room_id)?
        .into_iter()
        .filter(|pdu| pdu.kind().to_string() == "m.space.child")
        .filter(|pdu| {
            let content = pdu.content_object();
            let has_via = matches!(
                content.get("via"),
                Some(CanonicalJsonValue::Array(via)) if !via.is_empty()
            );
            let suggested = matches!(
                content.get("suggested"),
                Some(CanonicalJsonValue::Bool(true))
            );
            has_via && (!suggested_only || suggested)
        })
        .collect();
    children.sort_by_cached_key(|pdu| {
        // The spec ignores an order that is not a string of at most 50 printable ASCII.
        let order = content_string(pdu, "order").filter(|order| {
            order.len() <= 50 && order.chars().all(|c| ('\x20'..='\x7e').contains(&c))
        });
        (
            order.is_none(),
            order,
            pdu.origin_server_ts(),
            pdu.state_key().map(str::to_owned),
        )
    });
    Ok(children)
}

fn content_string(pdu: &Pdu, field: &str) -> Option<String> {
    match pdu.content_object().get(field) {
        Some(CanonicalJsonValue::String(value)) => Some(value.clone()),
        _ => None,
    }
}

/// The `next_batch` token of a page after the first `skip` rooms of a walk.
pub fn page_token(skip: usize, max_depth: usize, suggested_only: bool) -> String {
    format!("h{skip}_{max_depth}_{}", u8::from(suggested_only))
}

/// How many rooms of the walk a `from` token skips; [`RoomError::InvalidParam`] when it is not
/// a token or was made for another `max_depth` or `suggested_only`.
pub fn parse_page_token(
    token: &str,
    max_depth: usize,
    suggested_only: bool,
) -> Result<usize, RoomError> {
    let invalid = || RoomError::InvalidParam(format!("invalid pagination token {token:?}"));
    let mut parts = token.strip_prefix('h').ok_or_else(invalid)?.split('_');
    let skip: usize = parts
        .next()
        .and_then(|skip| skip.parse().ok())
        .ok_or_else(invalid)?;
    let depth: usize = parts
        .next()
        .and_then(|depth| depth.parse().ok())
        .ok_or_else(invalid)?;
    let suggested = parts.next().ok_or_else(invalid)?;
    if parts.next().is_some() {
        return Err(invalid());
    }
    if depth != max_depth || suggested != if suggested_only { "1" } else { "0" } {
        return Err(RoomError::InvalidParam(
            "max_depth and suggested_only must not change between pages".to_owned(),
        ));
    }
    Ok(skip)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ruma::{RoomVersionId, owned_user_id, room_id, server_name};

    use super::*;
    use crate::keys::ServerKeys;
    use crate::rooms::graph::{CreateRoom, RoomPreset};
    use crate::rooms::room_version::RoomVersion;
    use crate::storage::MemoryStore;

    #[test]
    fn servers_see_public_rooms_and_rooms_they_have_members_in() {
        let dir = tempfile::tempdir().unwrap();
        let keys =
            Arc::new(ServerKeys::load_or_create(dir.path(), server_name!("a.test")).unwrap());
        let rooms = Rooms::new(Arc::new(MemoryStore::new()), keys).unwrap();
        let version = RoomVersion::new(&RoomVersionId::V11).unwrap();
        let mut private = CreateRoom::new(owned_user_id!("@owner:a.test"), version.clone());
        private.preset = RoomPreset::PrivateChat;
        private.invites = vec![owned_user_id!("@guest:b.test")];
        let private = rooms.create_room(private).unwrap();
        let mut public = CreateRoom::new(owned_user_id!("@owner:a.test"), version);
        public.preset = RoomPreset::PublicChat;
        let public = rooms.create_room(public).unwrap();

        let private_summary = summary(&rooms, &private).unwrap().unwrap();
        let public_summary = summary(&rooms, &public).unwrap().unwrap();
        let sees = |room: &RoomId, summary: &RoomSummary, server: &str| {
            let server = ServerName::parse(server).unwrap();
            is_accessible_to_server(&rooms, room, summary, &server).unwrap()
        };
        // Joined here, invited on b.test, nothing on c.test.
        assert!(sees(&private, &private_summary, "a.test"));
        assert!(sees(&private, &private_summary, "b.test"));
        assert!(!sees(&private, &private_summary, "c.test"));
        assert!(sees(&public, &public_summary, "c.test"));

        assert!(is_resident(&rooms, &private).unwrap());
        assert!(!is_resident(&rooms, room_id!("!unknown:a.test")).unwrap());
    }

    #[test]
    fn tokens_round_trip_and_must_keep_their_parameters() {
        assert_eq!(
            parse_page_token(&page_token(7, 3, true), 3, true).unwrap(),
            7
        );
        assert!(matches!(
            parse_page_token(&page_token(7, 3, true), 4, true),
            Err(RoomError::InvalidParam(_))
        ));
        assert!(matches!(
            parse_page_token(&page_token(7, 3, true), 3, false),
            Err(RoomError::InvalidParam(_))
        ));
        for bad in ["7_3_1", "hx_3_1", "h7_3", "h7_3_1_2", ""] {
            assert!(
                matches!(
                    parse_page_token(bad, 3, true),
                    Err(RoomError::InvalidParam(_))
                ),
                "{bad}"
            );
        }
    }
}
