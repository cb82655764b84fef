//! `GET /rooms/{roomId}/hierarchy`: the rooms of a space, breadth first.
//!
//! The accessibility rules, the child order and the page tokens live in `core`
//! ([`axon_core::rooms::hierarchy`]). Rooms this server is in are read from its own state; for
//! the others (a remote space, or a child this server is not in) the walk asks the federation
//! `/hierarchy` of the servers the `m.space.child` event names in `via` (or the room id's
//! server for the root), through the federation service's short-lived cache. A server that
//! does not answer leaves that room out rather than failing the request. A remote answer also
//! carries its children's summaries, so a child that is not a space needs no request of its
//! own.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use axon_api::{ApiError, ApiResult, AppState, Ruma, RumaResponse};
use axon_core::rooms::hierarchy::{self, DEFAULT_LIMIT, MAX_DEPTH, MAX_LIMIT};
use axon_core::rooms::pdu::Pdu;
use axon_federation::Federation;
use axon_federation::hierarchy::stripped_child;
use axum::Extension;
use axum::extract::State;
use ruma::api::client::space::{SpaceHierarchyRoomsChunk, get_hierarchy};
use ruma::events::space::child::HierarchySpaceChildEvent;
use ruma::room::{RoomSummary, RoomType};
use ruma::serde::Raw;
use ruma::{CanonicalJsonValue, OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, UInt};

use super::blocking;

/// # `GET /_matrix/client/v1/rooms/{roomId}/hierarchy`
pub(crate) async fn hierarchy(
    State(state): State<AppState>,
    Extension(federation): Extension<Arc<Federation>>,
    request: Ruma<get_hierarchy::v1::Request>,
) -> ApiResult<RumaResponse<get_hierarchy::v1::Response>> {
    let user_id = request.identity.user_id;
    let body = request.body;
    if body.limit == Some(UInt::MIN) {
        return Err(ApiError::invalid_param("limit must be positive"));
    }
    let max_depth = body.max_depth.map_or(MAX_DEPTH, to_usize).min(MAX_DEPTH);
    let limit = body
        .limit
        .map_or(DEFAULT_LIMIT, to_usize)
        .clamp(1, MAX_LIMIT);
    let skip = match &body.from {
        None => 0,
        Some(token) => hierarchy::parse_page_token(token, max_depth, body.suggested_only)?,
    };
    let mut walk = Walk {
        state: &state,
        federation: &federation,
        user_id,
        suggested_only: body.suggested_only,
        remote_children: HashMap::new(),
    };
    let root_via: Vec<OwnedServerName> = body
        .room_id
        .server_name()
        .map(ToOwned::to_owned)
        .into_iter()
        .collect();
    let root = match walk.node(&body.room_id, &root_via, true).await? {
        Lookup::Found(node) => *node,
        Lookup::Unknown => return Err(ApiError::not_found("Unknown room")),
        Lookup::Inaccessible => {
            return Err(ApiError::forbidden("You may not see this room's hierarchy"));
        }
    };
    let mut queue = VecDeque::from([(body.room_id.clone(), 0_usize, Vec::new(), Some(root))]);
    let mut seen: HashSet<OwnedRoomId> = HashSet::from([body.room_id.clone()]);
    let mut served = 0_usize;
    let mut response = get_hierarchy::v1::Response::new();
    while let Some((room_id, depth, via, known)) = queue.pop_front() {
        let node = match known {
            Some(node) => node,
            None => match walk.node(&room_id, &via, false).await? {
                Lookup::Found(node) => *node,
                Lookup::Unknown | Lookup::Inaccessible => continue,
            },
        };
        if response.rooms.len() == limit {
            // One more visible room exists past this page.
            response.next_batch = Some(hierarchy::page_token(
                served,
                max_depth,
                body.suggested_only,
            ));
            break;
        }
        if depth < max_depth {
            for child in &node.children {
                if seen.insert(child.room_id.clone()) {
                    queue.push_back((
                        child.room_id.clone(),
                        depth.saturating_add(1),
                        child.via.clone(),
                        None,
                    ));
                }
            }
        }
        served = served.saturating_add(1);
        if served > skip {
            let events = node.children.into_iter().map(|child| child.event).collect();
            response
                .rooms
                .push(SpaceHierarchyRoomsChunk::new(node.summary, events));
        }
    }
    Ok(response.into())
}

fn to_usize(value: UInt) -> usize {
    usize::try_from(u64::from(value)).unwrap_or(usize::MAX)
}

/// One room of the walk, wherever its summary came from.
struct Node {
    summary: RoomSummary,
    children: Vec<Link>,
}

/// An `m.space.child` link: the child, the servers that can tell about it, and the event as
/// the page shows it.
struct Link {
    room_id: OwnedRoomId,
    via: Vec<OwnedServerName>,
    event: Raw<HierarchySpaceChildEvent>,
}

/// What the walk learnt of a room.
enum Lookup {
    Found(Box<Node>),
    /// Neither this server nor any asked server could describe it.
    Unknown,
    /// Described, but the user may not see it.
    Inaccessible,
}

/// The state of one hierarchy request's walk.
struct Walk<'a> {
    state: &'a AppState,
    federation: &'a Federation,
    user_id: OwnedUserId,
    suggested_only: bool,
    /// Summaries of children other servers gave with their parent's answer.
    remote_children: HashMap<OwnedRoomId, RoomSummary>,
}

impl Walk<'_> {
    /// `room_id` from this server's state if it is in the room, else from another server.
    async fn node(
        &mut self,
        room_id: &RoomId,
        via: &[OwnedServerName],
        root: bool,
    ) -> Result<Lookup, ApiError> {
        let (lookup_room, user_id, suggested_only) = (
            room_id.to_owned(),
            self.user_id.clone(),
            self.suggested_only,
        );
        let local = blocking(self.state, move |services| {
            let rooms = &services.rooms;
            if !hierarchy::is_resident(rooms, &lookup_room)? {
                return Ok(None);
            }
            let Some(summary) = hierarchy::summary(rooms, &lookup_room)? else {
                return Ok(None);
            };
            if !hierarchy::is_accessible(rooms, &lookup_room, &summary, Some(&user_id))? {
                return Ok(Some(Lookup::Inaccessible));
            }
            let children = hierarchy::children(rooms, &lookup_room, suggested_only)?
                .iter()
                .filter_map(|pdu| local_link(pdu).transpose())
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(Lookup::Found(Box::new(Node { summary, children }))))
        })
        .await?;
        if let Some(local) = local {
            return Ok(local);
        }
        let Some(node) = self.remote(room_id, via, root).await else {
            return Ok(Lookup::Unknown);
        };
        let (lookup_room, user_id, summary) = (
            room_id.to_owned(),
            self.user_id.clone(),
            node.summary.clone(),
        );
        let accessible = blocking(self.state, move |services| {
            Ok(hierarchy::is_accessible(
                &services.rooms,
                &lookup_room,
                &summary,
                Some(&user_id),
            )?)
        })
        .await?;
        Ok(if accessible {
            Lookup::Found(Box::new(node))
        } else {
            Lookup::Inaccessible
        })
    }

    /// `room_id` as another server describes it: from its parent's answer when it is not a
    /// space (it has no children to list), else from its own `/hierarchy`.
    async fn remote(
        &mut self,
        room_id: &RoomId,
        via: &[OwnedServerName],
        root: bool,
    ) -> Option<Node> {
        let from_parent = self.remote_children.get(room_id).cloned();
        if let Some(summary) = &from_parent
            && !root
            && summary.room_type != Some(RoomType::Space)
        {
            return Some(Node {
                summary: summary.clone(),
                children: Vec::new(),
            });
        }
        let fetched = if self.federation.enabled() {
            self.federation
                .hierarchy()
                .fetch(self.federation.client(), room_id, self.suggested_only, via)
                .await
        } else {
            None
        };
        let Some(answer) = fetched else {
            // The parent's answer still describes the room, without its children.
            return from_parent.map(|summary| Node {
                summary,
                children: Vec::new(),
            });
        };
        for child in &answer.children {
            self.remote_children
                .insert(child.room_id.clone(), child.clone());
        }
        let children = answer
            .room
            .children_state
            .iter()
            .filter_map(|raw| {
                let event = raw.deserialize().ok()?;
                (!event.content.via.is_empty()).then(|| Link {
                    room_id: event.state_key,
                    via: event.content.via,
                    event: raw.clone(),
                })
            })
            .collect();
        Some(Node {
            summary: answer.room.summary.clone(),
            children,
        })
    }
}

/// A local `m.space.child` event as a link (`None` when its state key is not a room id).
fn local_link(pdu: &Pdu) -> Result<Option<Link>, ApiError> {
    let Some(Ok(room_id)) = pdu.state_key().map(OwnedRoomId::try_from) else {
        return Ok(None);
    };
    let via = match pdu.content_object().get("via") {
        Some(CanonicalJsonValue::Array(via)) => via
            .iter()
            .filter_map(|server| match server {
                CanonicalJsonValue::String(server) => {
                    OwnedServerName::try_from(server.as_str()).ok()
                }
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(Some(Link {
        room_id,
        via,
        event: stripped_child(pdu)?,
    }))
}
