//! Delayed events (MSC4140): events a user schedules to be sent into a room later, unless the
//! schedule is restarted (a heartbeat) or cancelled first. MatrixRTC schedules the "left the
//! call" state event this way, so a member whose client disappears leaves the call.
//!
//! Each scheduled event is one record plus three indexes, all written in one batch:
//! by due time (the scheduler reads the first key to know when to wake), by user (listing and
//! the per-user limit) and, for state events, by `(room, type, state key)` (a state event sent
//! by someone else cancels them). A client retrying the same transaction gets the same
//! `delay_id` back through a fourth table.
//!
//! This service only keeps the schedule. Sending is the caller's job (the homeserver's
//! scheduler task, which uses the normal append path so the auth rules apply at send time);
//! it finalises an entry only after sending, and sends with a transaction derived from the
//! `delay_id`, so a crash in between sends the event once after the restart, not twice.
//!
//! A finalised event (sent, cancelled, or failed to send) leaves the schedule and is kept
//! apart, with its outcome, for the user to look up, as MSC4140 asks: the newest
//! [`FINALISED_PER_USER`] per user, for at most [`FINALISED_RETENTION`]. Older ones are
//! pruned in the batch that finalises the next one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::Rng as _;
use rand::distr::Alphanumeric;
use ruma::{
    CanonicalJsonObject, OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::storage::{
    Direction, Json, KeyCodec as _, KeyRange, KvStore, StorageError, Table, WriteBatch, catalogue,
};

/// Length of a `delay_id`: 32 alphanumerics are about 190 bits, out of reach of guessing, as
/// the MSC asks of an identifier that authorises the unauthenticated management endpoints.
const DELAY_ID_LEN: usize = 32;

/// Delay id -> the scheduled event.
const SCHEDULED: Table<String, Json<DelayedEvent>> = Table::new(&catalogue::DELAYED_EVENTS);
/// (due time in ms, delay id) -> nothing: the scheduler's queue.
const DUE: Table<(u64, String), ()> = Table::new(&catalogue::DELAYED_EVENTS_DUE);
/// (user, delay id) -> nothing.
const BY_USER: Table<(OwnedUserId, String), ()> = Table::new(&catalogue::DELAYED_EVENTS_BY_USER);
/// (room, event type, state key, delay id) -> nothing, for delayed state events.
const BY_STATE: Table<(OwnedRoomId, String, String, String), ()> =
    Table::new(&catalogue::DELAYED_EVENTS_BY_STATE);
/// (user, device, transaction id) -> the delay id it scheduled.
const TRANSACTIONS: Table<(OwnedUserId, OwnedDeviceId, String), Json<String>> =
    Table::new(&catalogue::DELAYED_EVENT_TRANSACTIONS);
/// Delay id -> the finalised event.
const FINALISED: Table<String, Json<FinalisedDelayedEvent>> =
    Table::new(&catalogue::DELAYED_EVENTS_FINALISED);
/// (user, finalised at ms, delay id) -> nothing: each user's finalised events, oldest first.
const FINALISED_BY_USER: Table<(OwnedUserId, u64, String), ()> =
    Table::new(&catalogue::DELAYED_EVENTS_FINALISED_BY_USER);

/// Most finalised delayed events kept per user (the MSC's recommendation).
pub const FINALISED_PER_USER: usize = 1000;

/// Longest a finalised delayed event is kept (the MSC's recommendation: 7 days).
pub const FINALISED_RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// What can go wrong with a delayed event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DelayedEventError {
    /// The delay asked for is 0 or longer than the configured maximum.
    #[error("the delay must be between 1 ms and {} ms", max.as_millis())]
    MaxDelayExceeded {
        /// The longest delay allowed.
        max: Duration,
    },
    /// The user has as many delayed events scheduled as allowed.
    #[error("the maximum number of scheduled delayed events has been reached")]
    TooMany {
        /// Time until the user's next delayed event is due (when a place frees up).
        retry_after: Duration,
    },
    /// No scheduled event has this delay id.
    #[error("no delayed event with this id is scheduled")]
    NotFound,
    /// The event was already finalised with an outcome the action contradicts (sending a
    /// cancelled event, cancelling a sent one, restarting either).
    #[error("the delayed event was already finalised: {0}")]
    AlreadyFinalised(Outcome),
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Limits on scheduling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DelayedEventSettings {
    /// The longest delay a user may ask for.
    pub max_delay: Duration,
    /// The most events one user may have scheduled at once.
    pub max_per_user: usize,
}

impl Default for DelayedEventSettings {
    fn default() -> Self {
        Self {
            max_delay: Duration::from_secs(24 * 60 * 60),
            max_per_user: 100,
        }
    }
}

/// A scheduled event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelayedEvent {
    /// Its id, unguessable: knowing it authorises restarting, cancelling and sending it.
    pub delay_id: String,
    /// The user who scheduled it, its sender.
    pub user_id: OwnedUserId,
    /// The device that scheduled it.
    pub device_id: OwnedDeviceId,
    /// The room it goes to.
    pub room_id: OwnedRoomId,
    /// Its event type.
    pub event_type: String,
    /// Its state key, for a state event.
    pub state_key: Option<String>,
    /// Its content, as the client gave it.
    pub content: CanonicalJsonObject,
    /// The delay asked for, in milliseconds.
    pub delay_ms: u64,
    /// When it was scheduled or last restarted, in milliseconds since the Unix epoch.
    pub running_since_ms: u64,
    /// The rooms stream position when it was scheduled: only state events after it can
    /// cancel it.
    pub after_stream: u64,
}

impl DelayedEvent {
    /// When it is due, in milliseconds since the Unix epoch.
    pub fn due_ms(&self) -> u64 {
        self.running_since_ms.saturating_add(self.delay_ms)
    }
}

/// How a delayed event was finalised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It was sent.
    Send,
    /// It was cancelled.
    Cancel,
    /// Sending it failed, which cancelled it.
    Error,
}

impl Outcome {
    /// The MSC's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::Cancel => "cancel",
            Self::Error => "error",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What finalised a delayed event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A management action (`send`, `cancel`), or another user overwriting the state.
    Action,
    /// Its delay ran out.
    Delay,
}

impl Reason {
    /// The MSC's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Action => "action",
            Self::Delay => "delay",
        }
    }
}

/// The error that kept a delayed event from being sent, as a client would have seen it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendFailure {
    /// The Matrix error code.
    pub errcode: String,
    /// The message.
    pub error: String,
}

/// A delayed event that left the schedule, and how.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalisedDelayedEvent {
    /// The event as it was scheduled.
    pub event: DelayedEvent,
    /// How it ended.
    pub outcome: Outcome,
    /// What ended it.
    pub reason: Reason,
    /// The id of the event sent, for [`Outcome::Send`].
    pub event_id: Option<OwnedEventId>,
    /// Why sending failed, for [`Outcome::Error`].
    pub error: Option<SendFailure>,
    /// When it was finalised, in ms since the epoch.
    pub finalised_ts: u64,
}

/// How to finalise a scheduled event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finalisation {
    /// The outcome.
    pub outcome: Outcome,
    /// What caused it.
    pub reason: Reason,
    /// The id of the event sent, for [`Outcome::Send`].
    pub event_id: Option<OwnedEventId>,
    /// Why sending failed, for [`Outcome::Error`].
    pub error: Option<SendFailure>,
}

impl Finalisation {
    /// Cancelled by `reason`.
    pub fn cancelled(reason: Reason) -> Self {
        Self {
            outcome: Outcome::Cancel,
            reason,
            event_id: None,
            error: None,
        }
    }
}

/// A request to schedule an event.
#[derive(Clone, Debug)]
pub struct NewDelayedEvent {
    /// The sender.
    pub user_id: OwnedUserId,
    /// The sender's device.
    pub device_id: OwnedDeviceId,
    /// The client's transaction id, if it gave one: a retry returns the first schedule.
    pub txn_id: Option<String>,
    /// The room.
    pub room_id: OwnedRoomId,
    /// The event type.
    pub event_type: String,
    /// The state key, for a state event.
    pub state_key: Option<String>,
    /// The content.
    pub content: CanonicalJsonObject,
    /// How long to wait.
    pub delay: Duration,
    /// The rooms stream position now (see [`DelayedEvent::after_stream`]).
    pub after_stream: u64,
}

/// The schedule of delayed events.
///
/// Writes that read first (the per-user limit, restarts) are serialised by one lock, so two
/// requests cannot both take the last place or interleave their index updates. Every change
/// wakes the scheduler through [`DelayedEvents::changed`].
#[derive(Debug)]
pub struct DelayedEvents {
    store: Arc<dyn KvStore>,
    settings: DelayedEventSettings,
    write_lock: Mutex<()>,
    changed: Notify,
    scheduled: AtomicU64,
    scheduled_state: AtomicU64,
}

impl DelayedEvents {
    /// The schedule kept in `store`.
    pub fn new(
        store: Arc<dyn KvStore>,
        settings: DelayedEventSettings,
    ) -> Result<Self, StorageError> {
        let scheduled = SCHEDULED.count(&*store)?;
        let scheduled_state = BY_STATE.count(&*store)?;
        Ok(Self {
            store,
            settings,
            write_lock: Mutex::new(()),
            changed: Notify::new(),
            scheduled: AtomicU64::new(scheduled),
            scheduled_state: AtomicU64::new(scheduled_state),
        })
    }

    /// The limits in force.
    pub fn settings(&self) -> DelayedEventSettings {
        self.settings
    }

    /// How many events are scheduled on the whole server.
    pub fn scheduled_count(&self) -> u64 {
        self.scheduled.load(Ordering::Relaxed)
    }

    /// Whether any state event is scheduled: while none is, new state events cannot cancel
    /// anything and whoever follows the stream for [`DelayedEvents::cancel_overwritten_state`]
    /// may skip them.
    pub fn has_scheduled_state(&self) -> bool {
        self.scheduled_state.load(Ordering::SeqCst) > 0
    }

    /// Resolves after the schedule changed since the last time it resolved (or now, if it
    /// changed in between): the scheduler waits on this, so it never polls. Meant for one
    /// waiter.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Schedules `event` at `now_ms` and returns its delay id, or the delay id its transaction
    /// already got (whether that event is still scheduled or not).
    pub fn schedule(
        &self,
        event: NewDelayedEvent,
        now_ms: u64,
    ) -> Result<String, DelayedEventError> {
        let delay_ms = u64::try_from(event.delay.as_millis()).unwrap_or(u64::MAX);
        if delay_ms == 0 || event.delay > self.settings.max_delay {
            return Err(DelayedEventError::MaxDelayExceeded {
                max: self.settings.max_delay,
            });
        }
        let _guard = self.lock();
        let store = &*self.store;
        let txn_key = event
            .txn_id
            .as_ref()
            .map(|txn| (event.user_id.clone(), event.device_id.clone(), txn.clone()));
        if let Some(key) = &txn_key
            && let Some(Json(delay_id)) = TRANSACTIONS.get(store, key)?
        {
            return Ok(delay_id);
        }
        let mine = self.of_user(&event.user_id)?;
        if mine.len() >= self.settings.max_per_user {
            let next_due = mine
                .iter()
                .map(DelayedEvent::due_ms)
                .min()
                .unwrap_or(now_ms);
            return Err(DelayedEventError::TooMany {
                retry_after: Duration::from_millis(next_due.saturating_sub(now_ms)),
            });
        }
        let record = DelayedEvent {
            delay_id: new_delay_id(),
            user_id: event.user_id,
            device_id: event.device_id,
            room_id: event.room_id,
            event_type: event.event_type,
            state_key: event.state_key,
            content: event.content,
            delay_ms,
            running_since_ms: now_ms,
            after_stream: event.after_stream,
        };
        let mut batch = WriteBatch::new();
        put_indexed(&mut batch, &record);
        if let Some(key) = &txn_key {
            TRANSACTIONS.put(&mut batch, key, &Json(record.delay_id.clone()));
        }
        store.write(batch)?;
        self.scheduled.fetch_add(1, Ordering::Relaxed);
        if record.state_key.is_some() {
            self.scheduled_state.fetch_add(1, Ordering::SeqCst);
        }
        self.changed.notify_one();
        Ok(record.delay_id)
    }

    /// The scheduled event `delay_id`, if any.
    pub fn get(&self, delay_id: &str) -> Result<Option<DelayedEvent>, StorageError> {
        Ok(SCHEDULED
            .get(&*self.store, &delay_id.to_owned())?
            .map(|Json(event)| event))
    }

    /// The events `user_id` has scheduled, the next due first.
    pub fn of_user(&self, user_id: &UserId) -> Result<Vec<DelayedEvent>, StorageError> {
        let mut events = Vec::new();
        for ((_, delay_id), ()) in BY_USER.scan_prefix(&*self.store, &(user_id.to_owned(),))? {
            if let Some(event) = self.get(&delay_id)? {
                events.push(event);
            }
        }
        events.sort_by(|a, b| (a.due_ms(), &a.delay_id).cmp(&(b.due_ms(), &b.delay_id)));
        Ok(events)
    }

    /// Restarts the delay of `delay_id` from `now_ms`; returns the event as rescheduled.
    pub fn restart(&self, delay_id: &str, now_ms: u64) -> Result<DelayedEvent, DelayedEventError> {
        let _guard = self.lock();
        let Some(mut event) = self.get(delay_id)? else {
            return Err(match self.finalised(delay_id)? {
                Some(done) => DelayedEventError::AlreadyFinalised(done.outcome),
                None => DelayedEventError::NotFound,
            });
        };
        let mut batch = WriteBatch::new();
        DUE.delete(&mut batch, &(event.due_ms(), event.delay_id.clone()));
        event.running_since_ms = now_ms;
        put_indexed(&mut batch, &event);
        self.store.write(batch)?;
        self.changed.notify_one();
        Ok(event)
    }

    /// Removes `delay_id` from the schedule as `how` at `now_ms`, keeping it as finalised;
    /// returns what was removed (`None` when it was not scheduled).
    pub fn finalise(
        &self,
        delay_id: &str,
        how: Finalisation,
        now_ms: u64,
    ) -> Result<Option<DelayedEvent>, StorageError> {
        let _guard = self.lock();
        let Some(event) = self.get(delay_id)? else {
            return Ok(None);
        };
        let mut batch = WriteBatch::new();
        delete_indexed(&mut batch, &event);
        self.prune_finalised(&mut batch, &event.user_id, now_ms)?;
        let finalised = FinalisedDelayedEvent {
            event: event.clone(),
            outcome: how.outcome,
            reason: how.reason,
            event_id: how.event_id,
            error: how.error,
            finalised_ts: now_ms,
        };
        FINALISED.put(&mut batch, &event.delay_id, &Json(finalised));
        FINALISED_BY_USER.put(
            &mut batch,
            &(event.user_id.clone(), now_ms, event.delay_id.clone()),
            &(),
        );
        self.store.write(batch)?;
        self.scheduled.fetch_sub(1, Ordering::Relaxed);
        if event.state_key.is_some() {
            self.scheduled_state.fetch_sub(1, Ordering::SeqCst);
        }
        self.changed.notify_one();
        Ok(Some(event))
    }

    /// Cancels `delay_id` by a user's action; returns what was cancelled. Cancelling an event
    /// already cancelled (or failed) succeeds again, so a client may retry; cancelling one
    /// already sent is [`DelayedEventError::AlreadyFinalised`].
    pub fn cancel(
        &self,
        delay_id: &str,
        now_ms: u64,
    ) -> Result<Option<DelayedEvent>, DelayedEventError> {
        if let Some(event) =
            self.finalise(delay_id, Finalisation::cancelled(Reason::Action), now_ms)?
        {
            return Ok(Some(event));
        }
        match self.finalised(delay_id)? {
            Some(done) if done.outcome == Outcome::Send => {
                Err(DelayedEventError::AlreadyFinalised(Outcome::Send))
            }
            Some(_) => Ok(None),
            None => Err(DelayedEventError::NotFound),
        }
    }

    /// The finalised event `delay_id`, if it is still kept.
    pub fn finalised(&self, delay_id: &str) -> Result<Option<FinalisedDelayedEvent>, StorageError> {
        Ok(FINALISED
            .get(&*self.store, &delay_id.to_owned())?
            .map(|Json(event)| event))
    }

    /// The finalised events of `user_id` still kept, the earliest finalised first.
    pub fn finalised_of_user(
        &self,
        user_id: &UserId,
    ) -> Result<Vec<FinalisedDelayedEvent>, StorageError> {
        let mut events = Vec::new();
        for ((_, _, delay_id), ()) in
            FINALISED_BY_USER.scan_prefix(&*self.store, &(user_id.to_owned(),))?
        {
            if let Some(event) = self.finalised(&delay_id)? {
                events.push(event);
            }
        }
        Ok(events)
    }

    /// Deletes in `batch` the finalised events of `user_id` past the retention, leaving room
    /// for one more. The caller holds the write lock.
    fn prune_finalised(
        &self,
        batch: &mut WriteBatch,
        user_id: &UserId,
        now_ms: u64,
    ) -> Result<(), StorageError> {
        let kept = FINALISED_BY_USER.scan_prefix(&*self.store, &(user_id.to_owned(),))?;
        let retention = u64::try_from(FINALISED_RETENTION.as_millis()).unwrap_or(u64::MAX);
        let cutoff = now_ms.saturating_sub(retention);
        // Oldest first: the excess over the count, and whatever is too old.
        let excess = (kept.len() + 1).saturating_sub(FINALISED_PER_USER);
        for (index, ((user, finalised_ts, delay_id), ())) in kept.into_iter().enumerate() {
            if index >= excess && finalised_ts >= cutoff {
                break;
            }
            FINALISED.delete(batch, &delay_id);
            FINALISED_BY_USER.delete(batch, &(user, finalised_ts, delay_id));
        }
        Ok(())
    }

    /// When the next scheduled event is due, in milliseconds since the Unix epoch.
    pub fn next_due_ms(&self) -> Result<Option<u64>, StorageError> {
        Ok(DUE
            .collect(&*self.store, KeyRange::all(), Direction::Forward, Some(1))?
            .into_iter()
            .next()
            .map(|((due, _), ())| due))
    }

    /// Up to `limit` events due at `now_ms`, the earliest first.
    pub fn due(&self, now_ms: u64, limit: usize) -> Result<Vec<DelayedEvent>, StorageError> {
        let end = (now_ms.saturating_add(1),).to_key_bytes();
        let range = KeyRange::half_open(Vec::new(), end);
        let mut events = Vec::new();
        for ((_, delay_id), ()) in
            DUE.collect(&*self.store, range, Direction::Forward, Some(limit))?
        {
            if let Some(event) = self.get(&delay_id)? {
                events.push(event);
            }
        }
        Ok(events)
    }

    /// Cancels the delayed state events for `(room_id, event_type, state_key)` of users other
    /// than `sender`, who set that state at stream position `stream`: sending them later would
    /// overwrite a change their sender did not see (MSC4140). The sender's own stay (they
    /// control those), and so do events scheduled after `stream`. Returns the cancelled events.
    pub fn cancel_overwritten_state(
        &self,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
        sender: &UserId,
        stream: u64,
        now_ms: u64,
    ) -> Result<Vec<DelayedEvent>, StorageError> {
        let prefix = (
            room_id.to_owned(),
            event_type.to_owned(),
            state_key.to_owned(),
        );
        let candidates = BY_STATE.scan_prefix(&*self.store, &prefix)?;
        let mut cancelled = Vec::new();
        for ((_, _, _, delay_id), ()) in candidates {
            let Some(event) = self.get(&delay_id)? else {
                continue;
            };
            let overwritten = event.user_id != sender && stream > event.after_stream;
            if overwritten
                && self
                    .finalise(&delay_id, Finalisation::cancelled(Reason::Action), now_ms)?
                    .is_some()
            {
                cancelled.push(event);
            }
        }
        Ok(cancelled)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Puts `event` and its indexes into `batch`.
fn put_indexed(batch: &mut WriteBatch, event: &DelayedEvent) {
    let id = event.delay_id.clone();
    SCHEDULED.put(batch, &id, &Json(event.clone()));
    DUE.put(batch, &(event.due_ms(), id.clone()), &());
    BY_USER.put(batch, &(event.user_id.clone(), id.clone()), &());
    if let Some(state_key) = &event.state_key {
        BY_STATE.put(
            batch,
            &(
                event.room_id.clone(),
                event.event_type.clone(),
                state_key.clone(),
                id,
            ),
            &(),
        );
    }
}

/// Deletes `event` and its indexes in `batch`. Its transaction mapping stays, so a late retry
/// of the request that scheduled it cannot schedule it a second time.
fn delete_indexed(batch: &mut WriteBatch, event: &DelayedEvent) {
    let id = event.delay_id.clone();
    SCHEDULED.delete(batch, &id);
    DUE.delete(batch, &(event.due_ms(), id.clone()));
    BY_USER.delete(batch, &(event.user_id.clone(), id.clone()));
    if let Some(state_key) = &event.state_key {
        BY_STATE.delete(
            batch,
            &(
                event.room_id.clone(),
                event.event_type.clone(),
                state_key.clone(),
                id,
            ),
        );
    }
}

fn new_delay_id() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(DELAY_ID_LEN)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use ruma::{owned_device_id, owned_room_id, owned_user_id};

    use super::*;
    use crate::storage::MemoryStore;

    const MINUTE_MS: u64 = 60_000;

    fn sent(event_id: &str) -> Finalisation {
        Finalisation {
            outcome: Outcome::Send,
            reason: Reason::Delay,
            event_id: Some(OwnedEventId::try_from(event_id).unwrap()),
            error: None,
        }
    }

    fn service(max_per_user: usize) -> DelayedEvents {
        DelayedEvents::new(
            Arc::new(MemoryStore::new()),
            DelayedEventSettings {
                max_delay: Duration::from_secs(3600),
                max_per_user,
            },
        )
        .unwrap()
    }

    fn new_event(user: &str, state_key: Option<&str>, delay_ms: u64) -> NewDelayedEvent {
        let mut content = CanonicalJsonObject::new();
        content.insert("body".to_owned(), "bye".to_owned().into());
        NewDelayedEvent {
            user_id: OwnedUserId::try_from(user).unwrap(),
            device_id: owned_device_id!("PHONE"),
            txn_id: None,
            room_id: owned_room_id!("!room:example.org"),
            event_type: "m.call.member".to_owned(),
            state_key: state_key.map(str::to_owned),
            content,
            delay: Duration::from_millis(delay_ms),
            after_stream: 10,
        }
    }

    #[test]
    fn events_come_due_in_order_and_leave_when_removed() {
        let events = service(10);
        let later = events
            .schedule(new_event("@alice:example.org", None, 2 * MINUTE_MS), 1000)
            .unwrap();
        let sooner = events
            .schedule(new_event("@alice:example.org", Some("k"), MINUTE_MS), 1000)
            .unwrap();
        assert_ne!(later, sooner);
        assert_eq!(later.len(), DELAY_ID_LEN);
        assert_eq!(events.scheduled_count(), 2);
        assert_eq!(events.next_due_ms().unwrap(), Some(1000 + MINUTE_MS));
        assert!(events.due(1000 + MINUTE_MS - 1, 10).unwrap().is_empty());
        let due = events.due(1000 + MINUTE_MS, 10).unwrap();
        assert_eq!(
            due.iter().map(|e| e.delay_id.as_str()).collect::<Vec<_>>(),
            vec![sooner.as_str()]
        );
        assert_eq!(due[0].state_key.as_deref(), Some("k"));
        let mine = events
            .of_user(&owned_user_id!("@alice:example.org"))
            .unwrap();
        assert_eq!(
            mine.iter().map(|e| e.delay_id.as_str()).collect::<Vec<_>>(),
            vec![sooner.as_str(), later.as_str()]
        );

        assert_eq!(
            events
                .finalise(&sooner, sent("$sent"), 5000)
                .unwrap()
                .unwrap()
                .delay_id,
            sooner
        );
        assert!(
            events
                .finalise(&sooner, sent("$again"), 6000)
                .unwrap()
                .is_none()
        );
        assert_eq!(events.next_due_ms().unwrap(), Some(1000 + 2 * MINUTE_MS));
        assert_eq!(events.scheduled_count(), 1);
        events.cancel(&later, 7000).unwrap().unwrap();
        // A retried cancel succeeds; an unknown id is not found.
        assert!(events.cancel(&later, 7001).unwrap().is_none());
        assert!(matches!(
            events.cancel("unknown", 0),
            Err(DelayedEventError::NotFound)
        ));
        assert_eq!(events.next_due_ms().unwrap(), None);
        assert_eq!(events.scheduled_count(), 0);
    }

    #[test]
    fn a_restart_moves_the_due_time() {
        let events = service(10);
        let id = events
            .schedule(new_event("@alice:example.org", None, MINUTE_MS), 0)
            .unwrap();
        let restarted = events.restart(&id, 30_000).unwrap();
        assert_eq!(restarted.running_since_ms, 30_000);
        assert_eq!(restarted.due_ms(), 30_000 + MINUTE_MS);
        assert!(events.due(MINUTE_MS, 10).unwrap().is_empty());
        assert_eq!(events.next_due_ms().unwrap(), Some(30_000 + MINUTE_MS));
        assert_eq!(events.due(30_000 + MINUTE_MS, 10).unwrap().len(), 1);
        assert!(matches!(
            events.restart("unknown", 0),
            Err(DelayedEventError::NotFound)
        ));
    }

    #[test]
    fn delays_and_counts_are_limited() {
        let events = service(2);
        assert!(matches!(
            events.schedule(new_event("@alice:example.org", None, 0), 0),
            Err(DelayedEventError::MaxDelayExceeded { .. })
        ));
        match events.schedule(new_event("@alice:example.org", None, 3_600_001), 0) {
            Err(DelayedEventError::MaxDelayExceeded { max }) => {
                assert_eq!(max, Duration::from_secs(3600));
            }
            other => panic!("expected MaxDelayExceeded, got {other:?}"),
        }
        events
            .schedule(new_event("@alice:example.org", None, 5000), 0)
            .unwrap();
        events
            .schedule(new_event("@alice:example.org", None, 9000), 0)
            .unwrap();
        match events.schedule(new_event("@alice:example.org", None, 1000), 1000) {
            Err(DelayedEventError::TooMany { retry_after }) => {
                assert_eq!(retry_after, Duration::from_millis(4000));
            }
            other => panic!("expected TooMany, got {other:?}"),
        }
        // The limit is per user.
        events
            .schedule(new_event("@bob:example.org", None, 1000), 0)
            .unwrap();
    }

    #[test]
    fn a_retried_transaction_gets_the_same_delay_id() {
        let events = service(10);
        let mut first = new_event("@alice:example.org", None, 5000);
        first.txn_id = Some("txn1".to_owned());
        let id = events.schedule(first.clone(), 0).unwrap();
        assert_eq!(events.schedule(first.clone(), 10).unwrap(), id);
        assert_eq!(events.scheduled_count(), 1);
        // Even once it has been sent or cancelled, a late retry does not schedule it again.
        events.cancel(&id, 15).unwrap();
        assert_eq!(events.schedule(first.clone(), 20).unwrap(), id);
        assert_eq!(events.scheduled_count(), 0);
        let mut other = first;
        other.txn_id = Some("txn2".to_owned());
        assert_ne!(events.schedule(other, 30).unwrap(), id);
    }

    #[test]
    fn state_set_by_another_user_cancels_delayed_state_events() {
        let events = service(10);
        let alice = owned_user_id!("@alice:example.org");
        let bob = owned_user_id!("@bob:example.org");
        let room = owned_room_id!("!room:example.org");
        let on_key = events
            .schedule(new_event(alice.as_str(), Some("k"), 5000), 0)
            .unwrap();
        let other_key = events
            .schedule(new_event(alice.as_str(), Some("other"), 5000), 0)
            .unwrap();
        let message = events
            .schedule(new_event(alice.as_str(), None, 5000), 0)
            .unwrap();

        assert!(events.has_scheduled_state());
        // Alice's own change leaves her delayed events alone.
        assert!(
            events
                .cancel_overwritten_state(&room, "m.call.member", "k", &alice, 11, 100)
                .unwrap()
                .is_empty()
        );
        // Another type is another piece of state.
        assert!(
            events
                .cancel_overwritten_state(&room, "m.room.topic", "k", &bob, 11, 100)
                .unwrap()
                .is_empty()
        );
        // A change from before the event was scheduled is one its sender saw.
        assert!(
            events
                .cancel_overwritten_state(&room, "m.call.member", "k", &bob, 10, 100)
                .unwrap()
                .is_empty()
        );
        let cancelled = events
            .cancel_overwritten_state(&room, "m.call.member", "k", &bob, 11, 100)
            .unwrap();
        assert_eq!(
            cancelled
                .iter()
                .map(|e| e.delay_id.as_str())
                .collect::<Vec<_>>(),
            vec![on_key.as_str()]
        );
        assert!(events.get(&on_key).unwrap().is_none());
        assert!(events.get(&other_key).unwrap().is_some());
        assert!(events.get(&message).unwrap().is_some());
        events.cancel(&other_key, 100).unwrap();
        assert!(!events.has_scheduled_state(), "only a message is left");
    }

    #[test]
    fn the_schedule_survives_reopening_the_store() {
        let store: Arc<dyn KvStore> = Arc::new(MemoryStore::new());
        let settings = DelayedEventSettings::default();
        let id = DelayedEvents::new(Arc::clone(&store), settings)
            .unwrap()
            .schedule(new_event("@alice:example.org", Some("k"), 5000), 0)
            .unwrap();
        let reopened = DelayedEvents::new(store, settings).unwrap();
        assert_eq!(reopened.scheduled_count(), 1);
        assert_eq!(reopened.next_due_ms().unwrap(), Some(5000));
        assert_eq!(
            reopened.get(&id).unwrap().unwrap().state_key.as_deref(),
            Some("k")
        );
    }

    #[tokio::test]
    async fn changes_wake_the_waiter() {
        let events = service(10);
        // A change made before anyone waits is not lost.
        events
            .schedule(new_event("@alice:example.org", None, 5000), 0)
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), events.changed())
            .await
            .unwrap();
    }

    #[test]
    fn finalised_events_are_kept_with_their_outcome() {
        let events = service(10);
        let alice = owned_user_id!("@alice:example.org");
        let sent_id = events
            .schedule(new_event(alice.as_str(), None, 5000), 0)
            .unwrap();
        let cancelled_id = events
            .schedule(new_event(alice.as_str(), Some("k"), 5000), 0)
            .unwrap();
        let failed_id = events
            .schedule(new_event(alice.as_str(), None, 5000), 0)
            .unwrap();
        events.finalise(&sent_id, sent("$sent"), 100).unwrap();
        events.cancel(&cancelled_id, 200).unwrap();
        let failure = Finalisation {
            outcome: Outcome::Error,
            reason: Reason::Delay,
            event_id: None,
            error: Some(SendFailure {
                errcode: "M_FORBIDDEN".to_owned(),
                error: "no power".to_owned(),
            }),
        };
        events.finalise(&failed_id, failure, 300).unwrap();
        assert!(events.of_user(&alice).unwrap().is_empty());
        assert!(!events.has_scheduled_state());

        let done = events.finalised_of_user(&alice).unwrap();
        let summary: Vec<_> = done
            .iter()
            .map(|e| (e.event.delay_id.as_str(), e.outcome, e.finalised_ts))
            .collect();
        assert_eq!(
            summary,
            vec![
                (sent_id.as_str(), Outcome::Send, 100),
                (cancelled_id.as_str(), Outcome::Cancel, 200),
                (failed_id.as_str(), Outcome::Error, 300),
            ]
        );
        assert_eq!(done[0].event_id.as_ref().unwrap().as_str(), "$sent");
        assert_eq!(done[1].reason, Reason::Action);
        assert_eq!(done[2].error.as_ref().unwrap().errcode, "M_FORBIDDEN");
        assert_eq!(events.finalised(&sent_id).unwrap().unwrap(), done[0]);

        // Actions that contradict the outcome conflict; repeating it does not.
        assert!(matches!(
            events.cancel(&sent_id, 400),
            Err(DelayedEventError::AlreadyFinalised(Outcome::Send))
        ));
        assert!(matches!(
            events.restart(&cancelled_id, 400),
            Err(DelayedEventError::AlreadyFinalised(Outcome::Cancel))
        ));
        assert!(events.cancel(&failed_id, 400).unwrap().is_none());
        assert!(
            events
                .finalised_of_user(&owned_user_id!("@bob:example.org"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn finalised_events_are_pruned_by_count_and_age() {
        let events = service(FINALISED_PER_USER + 10);
        let alice = owned_user_id!("@alice:example.org");
        let retention = u64::try_from(FINALISED_RETENTION.as_millis()).unwrap();
        let first = events
            .schedule(new_event(alice.as_str(), None, 5000), 0)
            .unwrap();
        events.finalise(&first, sent("$first"), 1).unwrap();
        // Finalising another past the retention drops the first.
        let second = events
            .schedule(new_event(alice.as_str(), None, 5000), 0)
            .unwrap();
        events
            .finalise(&second, sent("$second"), retention + 2)
            .unwrap();
        assert!(events.finalised(&first).unwrap().is_none());
        assert_eq!(events.finalised_of_user(&alice).unwrap().len(), 1);

        // Past the count, the oldest go first.
        let now = retention + 10;
        for n in 0..FINALISED_PER_USER {
            let id = events
                .schedule(new_event(alice.as_str(), None, 5000), now)
                .unwrap();
            events
                .finalise(&id, Finalisation::cancelled(Reason::Action), now + n as u64)
                .unwrap();
        }
        let kept = events.finalised_of_user(&alice).unwrap();
        assert_eq!(kept.len(), FINALISED_PER_USER);
        assert!(events.finalised(&second).unwrap().is_none());
        assert_eq!(kept[0].finalised_ts, now);
    }
}
