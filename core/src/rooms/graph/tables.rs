//! The tables of the room graph, their keys and their records.
//!
//! Hot indexes (timeline, topological order, extremities, current state) are keyed by the
//! room's [`ShortRoomId`] so their keys stay 16 to 24 bytes; the membership indexes keep full
//! ids because their queries return them.

use ruma::events::room::member::MembershipState;
use ruma::{CanonicalJsonObject, OwnedEventId, OwnedRoomId, OwnedUserId, RoomVersionId};
use serde::{Deserialize, Serialize};

use crate::rooms::short_ids::{ShortEventId, SnapshotId};
use crate::storage::{DecodeError, Json, KeyCodec, Table, ValueCodec, catalogue};

/// Counter of the last allocated [`StreamPosition`] (0: none yet).
pub(super) const STREAM_COUNTER: &str = "rooms.stream_position";
/// Counter of the last allocated [`ShortRoomId`].
pub(super) const SHORT_ROOM_COUNTER: &str = "rooms.last_short_room_id";

pub(super) const COUNTERS: Table<String, u64> = Table::new(&catalogue::COUNTERS);
pub(super) const ROOMS: Table<OwnedRoomId, Json<RoomRecord>> = Table::new(&catalogue::ROOMS);
pub(super) const EVENTS: Table<ShortEventId, Json<EventRecord>> =
    Table::new(&catalogue::ROOM_EVENTS);
pub(super) const TIMELINE: Table<(ShortRoomId, StreamPosition), ShortEventId> =
    Table::new(&catalogue::ROOM_TIMELINE);
pub(super) const STREAM_EVENTS: Table<StreamPosition, ShortEventId> =
    Table::new(&catalogue::STREAM_EVENTS);
pub(super) const TOPOLOGY: Table<(ShortRoomId, u64, StreamPosition), ShortEventId> =
    Table::new(&catalogue::ROOM_TOPOLOGY);
/// Forward extremities, with each one's depth as the value (to pick the most recent).
pub(super) const EXTREMITIES: Table<(ShortRoomId, ShortEventId), u64> =
    Table::new(&catalogue::ROOM_EXTREMITIES);
pub(super) const CURRENT_STATE: Table<ShortRoomId, SnapshotId> =
    Table::new(&catalogue::ROOM_CURRENT_STATE);
pub(super) const USER_MEMBERSHIPS: Table<(OwnedUserId, OwnedRoomId), MembershipEntry> =
    Table::new(&catalogue::USER_MEMBERSHIPS);
pub(super) const ROOM_MEMBERSHIPS: Table<(OwnedRoomId, OwnedUserId), MembershipEntry> =
    Table::new(&catalogue::ROOM_MEMBERSHIPS);
/// Events listed as a prev event by an accepted received event -> that child: an event that
/// arrives after one of its children (fetched late, backfilled) is no forward extremity.
pub(super) const PREV_REFERENCES: Table<OwnedEventId, ShortEventId> =
    Table::new(&catalogue::ROOM_PREV_REFERENCES);

/// A position in the server-wide event stream: every event that enters a room's timeline gets
/// the next one when it is persisted, so "everything after position N" is what a sync since N
/// must see.
///
/// Positions are allocated and written under the one allocation lock, in order, so when
/// position N is visible every smaller position is too.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct StreamPosition(pub u64);

/// A position in a room's topological order, `(depth, stream)`: the order of `/messages` and
/// backfill. As a pagination token it is exclusive: paginating from it skips the event at it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopoPosition {
    /// The event's depth in the room graph.
    pub depth: u64,
    /// Its stream position (orders events of equal depth).
    pub stream: StreamPosition,
}

/// The short id of a room, for the keys of the per-room indexes. Meaningful only inside this
/// database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ShortRoomId(pub u64);

macro_rules! u64_codecs {
    ($($name:ident),+) => {
        $(
            impl KeyCodec for $name {
                fn encode_key(&self, out: &mut Vec<u8>) {
                    self.0.encode_key(out);
                }

                fn decode_key(input: &mut &[u8]) -> Result<Self, DecodeError> {
                    u64::decode_key(input).map(Self)
                }
            }

            impl ValueCodec for $name {
                fn encode_value(&self) -> Vec<u8> {
                    self.0.encode_value()
                }

                fn decode_value(bytes: &[u8]) -> Result<Self, DecodeError> {
                    u64::decode_value(bytes).map(Self)
                }
            }
        )+
    };
}

u64_codecs!(StreamPosition, ShortRoomId);

/// What the store knows of a room.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct RoomRecord {
    pub(super) short: ShortRoomId,
    pub(super) version: RoomVersionId,
    pub(super) creator: OwnedUserId,
    /// Milliseconds since the Unix epoch.
    pub(super) created_at: u64,
}

/// How an event stands in its room. Only [`EventStatus::Normal`] events are in the timeline,
/// the topological index and the room state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", content = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventStatus {
    /// Accepted into the room graph: timeline, state, extremities.
    Normal,
    /// Known (as an auth event or from `/state_ids`) but not part of the graph we have.
    Outlier,
    /// Failed the auth checks on receipt; kept so it is not fetched again, never served as
    /// room content.
    Rejected(String),
    /// Passed the checks against its auth events and the state before it, failed against the
    /// current state: kept in the graph's history, never shown to clients.
    SoftFailed,
}

/// An event as stored: its PDU (the federation JSON without `unsigned`) and what the server
/// knows about it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct EventRecord {
    pub(super) room_id: OwnedRoomId,
    pub(super) room_version: RoomVersionId,
    pub(super) status: EventStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) stream: Option<StreamPosition>,
    /// The state before and after the event (none for outliers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) state_before: Option<SnapshotRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) state_after: Option<SnapshotRef>,
    pub(super) event: CanonicalJsonObject,
    /// The event's reference hash, which names it (from room v3 on) and which redaction does
    /// not change: kept so a read does not hash the event again. Records written before it
    /// existed have none and are hashed when read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) reference_hash: Option<String>,
    /// Kept apart from the event so that a large `redacted_because` never counts against the
    /// event's size limit when it is parsed again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) unsigned: Option<CanonicalJsonObject>,
}

/// A snapshot id inside a JSON record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(super) struct SnapshotRef(pub(super) u64);

impl From<SnapshotId> for SnapshotRef {
    fn from(id: SnapshotId) -> Self {
        Self(id.0)
    }
}

impl From<SnapshotRef> for SnapshotId {
    fn from(id: SnapshotRef) -> Self {
        Self(id.0)
    }
}

/// A current membership in the membership indexes: the membership and the event that set it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct MembershipEntry {
    pub(super) event: ShortEventId,
    pub(super) membership: MembershipState,
}

impl ValueCodec for MembershipEntry {
    fn encode_value(&self) -> Vec<u8> {
        let membership = self.membership.as_str();
        let mut out = Vec::with_capacity(8 + membership.len());
        out.extend_from_slice(&self.event.0.to_be_bytes());
        out.extend_from_slice(membership.as_bytes());
        out
    }

    fn decode_value(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (event, membership) = bytes
            .split_first_chunk::<8>()
            .ok_or_else(|| DecodeError("membership entry shorter than 8 bytes".to_owned()))?;
        let membership = std::str::from_utf8(membership)
            .map_err(|err| DecodeError(format!("membership is not UTF-8: {err}")))?;
        Ok(Self {
            event: ShortEventId(u64::from_be_bytes(*event)),
            membership: MembershipState::from(membership),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let entry = MembershipEntry {
            event: ShortEventId(258),
            membership: MembershipState::Ban,
        };
        assert_eq!(
            MembershipEntry::decode_value(&entry.encode_value()),
            Ok(entry)
        );
        assert!(MembershipEntry::decode_value(&[1, 2]).is_err());
        let status = EventStatus::Rejected("no power".to_owned());
        let json = serde_json::to_string(&status).unwrap();
        assert_eq!(json, r#"{"status":"rejected","reason":"no power"}"#);
        assert_eq!(serde_json::from_str::<EventStatus>(&json).unwrap(), status);
        assert!(StreamPosition(255).to_key_bytes() < StreamPosition(256).to_key_bytes());
    }
}
