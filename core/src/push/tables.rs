//! The tables of the push service and their stored records.

use ruma::push::Ruleset;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};

use super::notifications::NotificationRecord;
use super::pushers::{PusherRecord, QueuedPush};
use crate::rooms::graph::StreamPosition;
use crate::storage::{Json, Table, catalogue};

/// The key of the evaluator's progress in `counters`.
pub(super) const LAST_PROCESSED: &str = "push.last_processed";

pub(super) const PROGRESS: Table<String, u64> = Table::new(&catalogue::COUNTERS);
pub(super) const RULES: Table<OwnedUserId, Json<RulesRecord>> = Table::new(&catalogue::PUSH_RULES);
/// `(user, position filed at, event position)` -> the notification.
pub(super) const NOTIFICATIONS: Table<
    (OwnedUserId, StreamPosition, StreamPosition),
    Json<NotificationRecord>,
> = Table::new(&catalogue::PUSH_NOTIFICATIONS);
/// `(user, room, event position)` -> what counting needs.
pub(super) const NOTIFICATIONS_BY_ROOM: Table<
    (OwnedUserId, OwnedRoomId, StreamPosition),
    Json<CountEntry>,
> = Table::new(&catalogue::PUSH_NOTIFICATIONS_BY_ROOM);
/// `(user, app id, pushkey)` -> the pusher.
pub(super) const PUSHERS: Table<(OwnedUserId, String, String), Json<PusherRecord>> =
    Table::new(&catalogue::PUSHERS);
/// `(app id, pushkey, user)` -> nothing.
pub(super) const PUSHERS_BY_KEY: Table<(String, String, OwnedUserId), ()> =
    Table::new(&catalogue::PUSHERS_BY_KEY);
/// `(user, app id, pushkey, event position)` -> what to deliver.
pub(super) const QUEUE: Table<(OwnedUserId, String, String, StreamPosition), Json<QueuedPush>> =
    Table::new(&catalogue::PUSH_QUEUE);

/// A user's ruleset as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct RulesRecord {
    pub(super) ruleset: Ruleset,
    /// The stream position the ruleset last changed at.
    pub(super) stream: StreamPosition,
}

/// One notification, as unread counting needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct CountEntry {
    pub(super) highlight: bool,
    /// The thread root, for an event in a thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) thread: Option<OwnedEventId>,
}
