//! Reports of rooms and events by users, kept for the server's administrators.
//!
//! One column family, `room_reports`, keyed by a sequence number from a durable counter, so
//! the administrators' list comes out in the order reports arrived with one ordered scan
//! (a clock can give two reports the same millisecond, or go backwards).

use ruma::{MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};

use crate::rooms::graph::Rooms;
use crate::storage::{Direction, Json, KeyRange, KvStore, StorageError, Table, catalogue};

/// Report sequence number -> the report.
const REPORTS: Table<u64, Json<Report>> = Table::new(&catalogue::ROOM_REPORTS);
/// The counter report sequence numbers come from.
const REPORT_COUNTER: &str = "rooms.last_report";

/// A user's report of a room or of one of its events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The report's id, unique on this server.
    pub id: String,
    /// The user who reported.
    pub reporter: OwnedUserId,
    /// The room reported, or the room of the event reported.
    pub room_id: OwnedRoomId,
    /// The event reported; `None` for a report of the whole room.
    pub event_id: Option<OwnedEventId>,
    /// The reporter's reason, if given.
    pub reason: Option<String>,
    /// The offensiveness score (-100 most offensive to 0) of older clients, if given.
    pub score: Option<i64>,
    /// When the server received the report, in milliseconds since the Unix epoch.
    pub received_ts: u64,
}

/// What a user reports.
#[derive(Clone, Debug)]
pub struct NewReport {
    /// The user who reports.
    pub reporter: OwnedUserId,
    /// The room.
    pub room_id: OwnedRoomId,
    /// The event, for an event report.
    pub event_id: Option<OwnedEventId>,
    /// The reason.
    pub reason: Option<String>,
    /// The score.
    pub score: Option<i64>,
}

/// Stores `report`, received now, and returns it as stored.
pub fn add(rooms: &Rooms, report: NewReport) -> Result<Report, StorageError> {
    let store = rooms.store();
    // The id allocation lock orders concurrent reports; the counter and the report are one
    // batch.
    let mut batch = rooms.short_ids().begin();
    let sequence = batch.allocate(store, REPORT_COUNTER)?;
    let report = Report {
        id: sequence.to_string(),
        reporter: report.reporter,
        room_id: report.room_id,
        event_id: report.event_id,
        reason: report.reason,
        score: report.score,
        received_ts: u64::from(MilliSecondsSinceUnixEpoch::now().get()),
    };
    REPORTS.put(batch.write_batch(), &sequence, &Json(report.clone()));
    batch.commit(store)?;
    Ok(report)
}

/// Up to `limit` reports, oldest first (newest first with [`Direction::Reverse`]).
pub fn list(
    store: &dyn KvStore,
    direction: Direction,
    limit: Option<usize>,
) -> Result<Vec<Report>, StorageError> {
    Ok(REPORTS
        .collect(store, KeyRange::all(), direction, limit)?
        .into_iter()
        .map(|(_, Json(report))| report)
        .collect())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ruma::{owned_event_id, owned_room_id, owned_user_id, server_name};

    use super::*;
    use crate::keys::ServerKeys;
    use crate::storage::MemoryStore;

    #[test]
    fn reports_are_kept_in_received_order() {
        let store: Arc<dyn KvStore> = Arc::new(MemoryStore::new());
        let key_dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(
            ServerKeys::load_or_create(key_dir.path(), server_name!("example.org")).unwrap(),
        );
        let rooms = Rooms::new(Arc::clone(&store), keys).unwrap();
        let first = add(
            &rooms,
            NewReport {
                reporter: owned_user_id!("@alice:example.org"),
                room_id: owned_room_id!("!room:example.org"),
                event_id: Some(owned_event_id!("$event")),
                reason: Some("spam".to_owned()),
                score: Some(-100),
            },
        )
        .unwrap();
        let second = add(
            &rooms,
            NewReport {
                reporter: owned_user_id!("@bob:example.org"),
                room_id: owned_room_id!("!room:example.org"),
                event_id: None,
                reason: None,
                score: None,
            },
        )
        .unwrap();
        assert_ne!(first.id, second.id);
        assert_eq!(
            list(&*store, Direction::Forward, None).unwrap(),
            vec![first.clone(), second.clone()]
        );
        assert_eq!(
            list(&*store, Direction::Reverse, Some(1)).unwrap(),
            vec![second]
        );
    }
}
