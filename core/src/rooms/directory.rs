//! The room directory: which rooms this server publishes, and the public room list built from
//! their current state.
//!
//! Publication is one key per room in `room_directory`. The list is built on demand: each
//! published room's summary is read from its current state, filtered by the search term,
//! ordered by joined members (most first) then room id, and cut into pages. A page token is
//! the offset of the page's first room in that order, so tokens stay valid as long as the
//! order does (a room gaining members between two pages may be seen twice or skipped, as with
//! any offset pagination).

use ruma::directory::{PublicRoomsChunk, PublicRoomsChunkInit};
use ruma::events::StateEventType;
use ruma::events::room::member::MembershipState;
use ruma::room::{JoinRuleKind, RoomType};
use ruma::{CanonicalJsonValue, OwnedMxcUri, OwnedRoomAliasId, OwnedRoomId, RoomId, UInt};

use crate::rooms::graph::{RoomError, Rooms};
use crate::storage::{Direction, KeyRange, KvStore, StorageError, Table, WriteBatch, catalogue};

/// room id -> published.
const DIRECTORY: Table<OwnedRoomId, ()> = Table::new(&catalogue::ROOM_DIRECTORY);

/// Whether `room_id` is published in the directory.
pub fn is_published(store: &dyn KvStore, room_id: &RoomId) -> Result<bool, StorageError> {
    DIRECTORY.contains(store, &room_id.to_owned())
}

/// Publishes `room_id` in the directory, or takes it out.
pub fn set_published(
    store: &dyn KvStore,
    room_id: &RoomId,
    published: bool,
) -> Result<(), StorageError> {
    let mut batch = WriteBatch::new();
    if published {
        DIRECTORY.put(&mut batch, &room_id.to_owned(), &());
    } else {
        DIRECTORY.delete(&mut batch, &room_id.to_owned());
    }
    store.write(batch)
}

/// Every published room, in room id order.
pub fn published_rooms(store: &dyn KvStore) -> Result<Vec<OwnedRoomId>, StorageError> {
    Ok(DIRECTORY
        .collect(store, KeyRange::all(), Direction::Forward, None)?
        .into_iter()
        .map(|(room_id, ())| room_id)
        .collect())
}

/// A request for a page of the public room list.
#[derive(Clone, Debug, Default)]
pub struct DirectoryQuery {
    /// At most this many rooms (all of them when absent).
    pub limit: Option<usize>,
    /// Where to start: a token from an earlier page's `next_batch` or `prev_batch`.
    pub since: Option<String>,
    /// Only rooms whose name, topic or canonical alias contains this, ignoring case.
    pub search_term: Option<String>,
}

/// A page of the public room list.
#[derive(Clone, Debug)]
pub struct DirectoryPage {
    /// The rooms.
    pub chunk: Vec<PublicRoomsChunk>,
    /// The token of the next page, if there is one.
    pub next_batch: Option<String>,
    /// The token of the previous page, if this is not the first.
    pub prev_batch: Option<String>,
    /// How many rooms match the query in all.
    pub total: usize,
}

/// Why a directory query failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// The `since` token is not one of ours. `M_INVALID_PARAM` 400.
    #[error("invalid pagination token {0:?}")]
    InvalidToken(String),
    /// The rooms could not be read. 500 (or what [`RoomError`] maps to).
    #[error(transparent)]
    Room(#[from] RoomError),
}

/// A page of the public room list.
pub fn public_rooms(
    rooms: &Rooms,
    query: &DirectoryQuery,
) -> Result<DirectoryPage, DirectoryError> {
    let offset = match &query.since {
        None => 0,
        Some(token) => parse_token(token)?,
    };
    let needle = query
        .search_term
        .as_deref()
        .map(str::trim)
        .filter(|term| !term.is_empty())
        .map(str::to_lowercase);
    let mut all = Vec::new();
    for room_id in published_rooms(rooms.store()).map_err(RoomError::from)? {
        // A published room this server no longer knows (purged) is left out, not an error.
        let Some(chunk) = room_summary(rooms, &room_id)? else {
            continue;
        };
        if needle
            .as_deref()
            .is_none_or(|needle| matches_term(&chunk, needle))
        {
            all.push(chunk);
        }
    }
    all.sort_by(|a, b| {
        b.num_joined_members
            .cmp(&a.num_joined_members)
            .then_with(|| a.room_id.cmp(&b.room_id))
    });
    let total = all.len();
    let limit = query.limit.unwrap_or(total).max(1);
    let start = offset.min(total);
    let end = start.saturating_add(limit).min(total);
    let chunk = all.drain(start..end).collect();
    Ok(DirectoryPage {
        chunk,
        next_batch: (end < total).then(|| token(end)),
        prev_batch: (start > 0).then(|| token(start.saturating_sub(limit))),
        total,
    })
}

fn token(offset: usize) -> String {
    format!("o{offset}")
}

fn parse_token(token: &str) -> Result<usize, DirectoryError> {
    token
        .strip_prefix('o')
        .and_then(|offset| offset.parse().ok())
        .ok_or_else(|| DirectoryError::InvalidToken(token.to_owned()))
}

fn matches_term(chunk: &PublicRoomsChunk, needle: &str) -> bool {
    [
        chunk.name.as_deref(),
        chunk.topic.as_deref(),
        chunk.canonical_alias.as_ref().map(|alias| alias.as_str()),
    ]
    .into_iter()
    .flatten()
    .any(|text| text.to_lowercase().contains(needle))
}

/// The directory entry of `room_id` from its current state, if the room is known here.
pub fn room_summary(
    rooms: &Rooms,
    room_id: &RoomId,
) -> Result<Option<PublicRoomsChunk>, RoomError> {
    if rooms.room_info(room_id)?.is_none() {
        return Ok(None);
    }
    let string = |kind: StateEventType, field: &str| -> Result<Option<String>, RoomError> {
        Ok(rooms.state_event(room_id, &kind, "")?.and_then(|pdu| {
            match pdu.content_object().get(field) {
                Some(CanonicalJsonValue::String(value)) => Some(value.clone()),
                _ => None,
            }
        }))
    };
    let joined = rooms.members(room_id, Some(&MembershipState::Join))?.len();
    let history = string(StateEventType::RoomHistoryVisibility, "history_visibility")?;
    let guest = string(StateEventType::RoomGuestAccess, "guest_access")?;
    let mut chunk = PublicRoomsChunk::from(PublicRoomsChunkInit {
        num_joined_members: UInt::try_from(joined).unwrap_or(UInt::MAX),
        room_id: room_id.to_owned(),
        world_readable: history.as_deref() == Some("world_readable"),
        guest_can_join: guest.as_deref() == Some("can_join"),
    });
    chunk.name = string(StateEventType::RoomName, "name")?.filter(|name| !name.is_empty());
    chunk.topic = string(StateEventType::RoomTopic, "topic")?.filter(|topic| !topic.is_empty());
    chunk.canonical_alias = string(StateEventType::RoomCanonicalAlias, "alias")?
        .and_then(|alias| OwnedRoomAliasId::try_from(alias).ok());
    chunk.avatar_url = string(StateEventType::RoomAvatar, "url")?
        .filter(|url| !url.is_empty())
        .map(OwnedMxcUri::from);
    chunk.join_rule = string(StateEventType::RoomJoinRules, "join_rule")?
        .map(|rule| JoinRuleKind::from(rule.as_str()))
        .unwrap_or(JoinRuleKind::Invite);
    chunk.room_type = string(StateEventType::RoomCreate, "type")?.map(RoomType::from);
    Ok(Some(chunk))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_foreign_tokens_are_refused() {
        assert_eq!(parse_token(&token(42)).unwrap(), 42);
        assert!(matches!(
            parse_token("42"),
            Err(DirectoryError::InvalidToken(_))
        ));
        assert!(matches!(
            parse_token("ox"),
            Err(DirectoryError::InvalidToken(_))
        ));
    }

    #[test]
    fn publication_is_stored() {
        let store = crate::storage::MemoryStore::new();
        let a = ruma::room_id!("!a:example.org");
        let b = ruma::room_id!("!b:example.org");
        assert!(!is_published(&store, a).unwrap());
        set_published(&store, b, true).unwrap();
        set_published(&store, a, true).unwrap();
        assert!(is_published(&store, a).unwrap());
        assert_eq!(
            published_rooms(&store).unwrap(),
            vec![a.to_owned(), b.to_owned()]
        );
        set_published(&store, a, false).unwrap();
        assert_eq!(published_rooms(&store).unwrap(), vec![b.to_owned()]);
    }
}
