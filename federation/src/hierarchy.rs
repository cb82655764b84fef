//! The space hierarchy over federation: `GET /_matrix/federation/v1/hierarchy/{roomId}` served
//! for other servers, and [`RemoteHierarchy`], which asks other servers for rooms this server
//! is not in (for the client `/hierarchy` walk and remote room summaries).
//!
//! A server sees a room as the spec's federation rules say (see
//! [`hierarchy::is_accessible_to_server`]); a room it may not see answers 404 like an unknown
//! one, so the answer does not reveal that the room exists.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axon_api::{ApiError, ApiResult, AppState, FederationOrigin, Ruma, RumaResponse};
use axon_core::rooms::hierarchy;
use axon_core::rooms::pdu::Pdu;
use axum::extract::State;
use lru::LruCache;
use ruma::api::federation::space::{SpaceHierarchyParentSummary, get_hierarchy};
use ruma::events::space::child::HierarchySpaceChildEvent;
use ruma::serde::Raw;
use ruma::{OwnedRoomId, OwnedServerName, RoomId, ServerName};
use serde_json::json;

use crate::FederationClient;
use crate::inbound::blocking;

/// How long another server's answer is reused: long enough for a client paging through a
/// space, short enough that changes show soon.
const CACHE_TTL: Duration = Duration::from_secs(30);
/// The most answers kept.
const CACHE_ENTRIES: usize = 256;
/// The most servers asked for one room: each unreachable one costs a timeout.
const MAX_SERVERS_ASKED: usize = 3;

/// # `GET /_matrix/federation/v1/hierarchy/{roomId}`
pub(crate) async fn serve(
    State(state): State<AppState>,
    request: Ruma<get_hierarchy::v1::Request>,
) -> ApiResult<RumaResponse<get_hierarchy::v1::Response>> {
    let FederationOrigin(origin) = request.identity;
    let body = request.body;
    blocking(&state.services_arc(), move |services| {
        let rooms = &services.rooms;
        crate::inbound::check_acl(rooms, &body.room_id, &origin)?;
        let not_found = || ApiError::not_found("Room not found");
        if !hierarchy::is_resident(rooms, &body.room_id)? {
            return Err(not_found());
        }
        let summary = hierarchy::summary(rooms, &body.room_id)?.ok_or_else(not_found)?;
        if !hierarchy::is_accessible_to_server(rooms, &body.room_id, &summary, &origin)? {
            return Err(not_found());
        }
        let children = hierarchy::children(rooms, &body.room_id, body.suggested_only)?;
        let children_state = children
            .iter()
            .map(stripped_child)
            .collect::<Result<Vec<_>, _>>()?;
        let mut response = get_hierarchy::v1::Response::new(SpaceHierarchyParentSummary::new(
            summary,
            children_state,
        ));
        for child in &children {
            let Some(Ok(child_id)) = child.state_key().map(OwnedRoomId::try_from) else {
                continue;
            };
            // A room this server is not in is left out: it cannot speak for its state.
            if !hierarchy::is_resident(rooms, &child_id)? {
                continue;
            }
            let Some(child_summary) = hierarchy::summary(rooms, &child_id)? else {
                continue;
            };
            let visible = crate::acl::server_acl_allows(rooms, &child_id, &origin)?
                && hierarchy::is_accessible_to_server(rooms, &child_id, &child_summary, &origin)?;
            if visible {
                response.children.push(child_summary);
            } else {
                response.inaccessible_children.push(child_id);
            }
        }
        Ok(response.into())
    })
    .await
}

/// An `m.space.child` event in the stripped form the hierarchy APIs give (with
/// `origin_server_ts`).
pub fn stripped_child(pdu: &Pdu) -> Result<Raw<HierarchySpaceChildEvent>, ApiError> {
    let event = json!({
        "type": pdu.kind().to_string(),
        "state_key": pdu.state_key(),
        "sender": pdu.sender(),
        "origin_server_ts": pdu.origin_server_ts(),
        "content": pdu.content_object(),
    });
    Raw::from_json_string(event.to_string()).map_err(ApiError::internal)
}

/// A cached answer's room and `suggested_only`.
type CacheKey = (OwnedRoomId, bool);

/// Other servers' `/hierarchy` answers, asked for rooms this server is not in and kept
/// briefly in a bounded cache.
#[derive(Debug)]
pub struct RemoteHierarchy {
    cache: Mutex<LruCache<CacheKey, (Instant, Arc<get_hierarchy::v1::Response>)>>,
}

impl Default for RemoteHierarchy {
    fn default() -> Self {
        Self::new()
    }
}

impl RemoteHierarchy {
    /// An empty cache.
    pub fn new() -> Self {
        let entries = NonZeroUsize::new(CACHE_ENTRIES).unwrap_or(NonZeroUsize::MIN);
        Self {
            cache: Mutex::new(LruCache::new(entries)),
        }
    }

    /// `room_id`'s summary and children as one of `via` (other servers; this one is skipped)
    /// answers, from the cache when asked recently. `None` when no server answered: the caller
    /// leaves the room out rather than failing.
    pub async fn fetch(
        &self,
        client: &FederationClient,
        room_id: &RoomId,
        suggested_only: bool,
        via: &[OwnedServerName],
    ) -> Option<Arc<get_hierarchy::v1::Response>> {
        let key = (room_id.to_owned(), suggested_only);
        if let Some(cached) = self.cached(&key) {
            return Some(cached);
        }
        let own = client.server_name().to_owned();
        let mut asked: Vec<&ServerName> = Vec::new();
        for server in via {
            if *server == own || asked.contains(&server.as_ref()) {
                continue;
            }
            if asked.len() == MAX_SERVERS_ASKED {
                break;
            }
            asked.push(server);
            let mut request = get_hierarchy::v1::Request::new(room_id.to_owned());
            request.suggested_only = suggested_only;
            match client.send(server, request).await {
                Ok(response) if response.room.summary.room_id == room_id => {
                    let response = Arc::new(response);
                    if let Ok(mut cache) = self.cache.lock() {
                        cache.put(key, (Instant::now(), Arc::clone(&response)));
                    }
                    return Some(response);
                }
                Ok(_) => {
                    tracing::debug!(%server, %room_id, "hierarchy answer for another room");
                }
                Err(error) => {
                    tracing::debug!(%server, %room_id, %error, "hierarchy request failed");
                }
            }
        }
        None
    }

    fn cached(&self, key: &CacheKey) -> Option<Arc<get_hierarchy::v1::Response>> {
        let mut cache = self.cache.lock().ok()?;
        match cache.get(key) {
            Some((at, response)) if at.elapsed() < CACHE_TTL => Some(Arc::clone(response)),
            Some(_) => {
                cache.pop(key);
                None
            }
            None => None,
        }
    }
}
