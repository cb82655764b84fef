//! Evaluating push rules: following the event stream, deciding who each event notifies, and
//! writing the notifications with the pushers' queue entries.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, TryLockError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use ruma::events::room::member::MembershipState;
use ruma::events::{StateEventType, TimelineEventType};
use ruma::push::{Action, PushConditionPowerLevelsCtx, PushConditionRoomCtx, Ruleset};
use ruma::serde::Raw;
use ruma::{CanonicalJsonValue, OwnedEventId, OwnedUserId, RoomId, ServerName, UInt, UserId};
use serde_json::{Map, Value};

use super::notifications::NotificationRecord;
use super::pushers::{PusherKey, QueuedPush};
use super::tables::{CountEntry, LAST_PROCESSED, NOTIFICATIONS, NOTIFICATIONS_BY_ROOM, PROGRESS};
use super::{Push, PushError, lock};
use crate::Services;
use crate::rooms::graph::{EventStatus, Rooms, StoredEvent, StreamPosition};
use crate::rooms::pdu::Pdu;
use crate::rooms::power;
use crate::storage::{Json, WriteBatch};

/// How many events one round reads.
const BATCH: usize = 200;
/// How long to wait before trying again after a failed round (a full disk, say), so a lasting
/// failure does not spin.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// The event fields push rules look at; the rest of a PDU (hashes, signatures, auth and prev
/// events) only makes the flattened event bigger.
const EVALUATED_FIELDS: [&str; 6] = [
    "type",
    "content",
    "sender",
    "state_key",
    "origin_server_ts",
    "redacts",
];

/// What one round of [`Push::process_next`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Events read from the stream.
    pub read: usize,
    /// The position up to which the stream has now been evaluated.
    pub upto: StreamPosition,
    /// Notifications written.
    pub notifications: usize,
}

impl Push {
    /// Evaluates up to `batch` events after the last position processed, writes the
    /// notifications, the pushers' queue entries and the new position in one batch, and then
    /// announces the position to [`Push::wait_evaluated`]. Synchronous (disk I/O): run it on a
    /// blocking thread.
    ///
    /// The batch takes no stream position of its own: a sync that covers an event waits for
    /// its evaluation instead, so one event wakes a waiting sync once, with its counts. The
    /// batch is not synced either: everything in it is derived from durable events, and a
    /// crash that loses it also loses the position in it, so the events are evaluated again.
    pub fn process_next(&self, rooms: &Rooms, batch: usize) -> Result<Round, PushError> {
        let mut progress = lock(&self.progress);
        self.round(&mut progress, rooms, batch)
    }

    /// Evaluates what has been published so far on the caller's thread, unless a round is
    /// running already: that round, or the evaluator's next one, which a publication after
    /// its start always causes, covers it. Whoever just published events calls this, so that
    /// a sync waiting for their unread counts does not wait for the evaluator task to be
    /// scheduled as well. Synchronous (disk I/O): run it on a blocking thread.
    pub fn evaluate_published(&self, rooms: &Rooms) -> Result<(), PushError> {
        let mut progress = match self.progress.try_lock() {
            Ok(progress) => progress,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return Ok(()),
        };
        while self.round(&mut progress, rooms, BATCH)?.read == BATCH {}
        Ok(())
    }

    /// One round of [`Push::process_next`], under the progress lock.
    fn round(
        &self,
        progress: &mut StreamPosition,
        rooms: &Rooms,
        batch: usize,
    ) -> Result<Round, PushError> {
        let after = *progress;
        // Read before the events: if fewer than a batch come back, everything up to here was
        // seen, including positions that carry no event (account data, receipts...).
        let published = rooms.current_stream_position();
        let events = rooms.events_after(after, batch)?;
        let last_event = events.last().map_or(after, |(position, _)| *position);
        let upto = if events.len() < batch {
            published.max(last_event)
        } else {
            last_event
        };
        let mut found = Vec::new();
        let mut rules = HashMap::new();
        for (position, event) in &events {
            if event.status == EventStatus::Normal {
                self.evaluate_event(rooms, *position, event, &mut rules, &mut found)?;
            }
        }
        let notifications = found.len();
        if found.is_empty() {
            // Only a round that read events persists its position: positions without events
            // are cheap to pass again after a restart.
            if !events.is_empty() {
                let mut write = WriteBatch::new();
                PROGRESS.put(&mut write, &LAST_PROCESSED.to_owned(), &upto.0);
                self.store.write_unsynced(write)?;
            }
        } else {
            self.write_notifications(found, upto)?;
        }
        *progress = upto.max(after);
        self.announce_evaluated(*progress);
        Ok(Round {
            read: events.len(),
            upto,
            notifications,
        })
    }

    /// Writes `found` with the queue entries of the users' HTTP pushers and the evaluator's
    /// position `upto` in one batch, then announces the pushers. A notification is filed
    /// under its event's stream position, so a sync that covers the event covers it too.
    fn write_notifications(
        &self,
        found: Vec<(OwnedUserId, NotificationRecord)>,
        upto: StreamPosition,
    ) -> Result<(), PushError> {
        let mut pushers: HashMap<OwnedUserId, Vec<PusherKey>> = HashMap::new();
        for (user, _) in &found {
            if !pushers.contains_key(user) {
                pushers.insert(user.clone(), self.http_pushers(user)?);
            }
        }
        let mut announced = BTreeSet::new();
        let mut batch = WriteBatch::new();
        for (user, record) in found {
            NOTIFICATIONS_BY_ROOM.put(
                &mut batch,
                &(user.clone(), record.room_id.clone(), record.stream),
                &Json(CountEntry {
                    highlight: record.highlight,
                    thread: record.thread_root.clone(),
                }),
            );
            for key in pushers.get(&user).into_iter().flatten() {
                let entry = QueuedPush {
                    room_id: record.room_id.clone(),
                    event_id: record.event_id.clone(),
                    actions: record.actions.clone(),
                };
                Push::enqueue_in(&mut batch, key, record.stream, &entry);
                announced.insert(key.clone());
            }
            NOTIFICATIONS.put(
                &mut batch,
                &(user, record.written, record.stream),
                &Json(record),
            );
        }
        PROGRESS.put(&mut batch, &LAST_PROCESSED.to_owned(), &upto.0);
        self.store.write_unsynced(batch)?;
        self.announce(announced);
        Ok(())
    }

    /// Evaluates `event` for every local user it may notify: the local joined members but
    /// the sender, and a local user it invites. Notifying results go to `found`.
    fn evaluate_event(
        &self,
        rooms: &Rooms,
        position: StreamPosition,
        event: &StoredEvent,
        rules: &mut HashMap<OwnedUserId, Ruleset>,
        found: &mut Vec<(OwnedUserId, NotificationRecord)>,
    ) -> Result<(), PushError> {
        let pdu = &event.pdu;
        let room_id = &event.room_id;
        let server = rooms.server_name();
        let joined = rooms.members(room_id, Some(&MembershipState::Join))?;
        let mut recipients: Vec<OwnedUserId> = joined
            .iter()
            .map(|(user, _)| user)
            .filter(|user| user.server_name() == server && *user != pdu.sender())
            .cloned()
            .collect();
        if let Some(invitee) = invited_local_user(pdu, server)
            && invitee != pdu.sender()
            && !recipients.contains(&invitee)
        {
            recipients.push(invitee);
        }
        if recipients.is_empty() {
            return Ok(());
        }
        // Evaluation happens shortly after the event, against the room as it is now; the
        // membership and power levels rarely differ from the state at the event.
        let member_count = UInt::try_from(joined.len()).unwrap_or(UInt::MAX);
        let power_levels =
            power::power_levels(rooms, room_id)?.map(PushConditionPowerLevelsCtx::from);
        let raw = evaluation_json(pdu, room_id)?;
        let thread_root = thread_root(pdu);
        for user in recipients {
            if !rules.contains_key(&user) {
                let ruleset = self.rules(&user)?;
                rules.insert(user.clone(), ruleset);
            }
            let Some(ruleset) = rules.get(&user) else {
                continue;
            };
            let mut context = PushConditionRoomCtx::new(
                room_id.clone(),
                member_count,
                user.clone(),
                display_name(rooms, room_id, &user)?,
            );
            if let Some(levels) = &power_levels {
                context = context.with_power_levels(levels.clone());
            }
            let actions = evaluate_actions(ruleset, &raw, &context);
            if !actions.iter().any(Action::should_notify) {
                continue;
            }
            found.push((
                user,
                NotificationRecord {
                    room_id: room_id.clone(),
                    event_id: pdu.event_id().to_owned(),
                    stream: position,
                    written: position,
                    highlight: actions.iter().any(Action::is_highlight),
                    thread_root: thread_root.clone(),
                    actions,
                    ts: u64::from(pdu.origin_server_ts().get()),
                },
            ));
        }
        Ok(())
    }
}

/// The actions `ruleset` gives `event` in `context` (empty: no rule matched, or the user sent
/// the event).
///
/// Ruma's evaluation is `async` only for thread subscriptions (MSC4306), which this server
/// does not offer: without them the future completes on its first poll, so it is polled once
/// here rather than requiring a runtime on the blocking thread evaluation runs on.
pub fn evaluate_actions<T>(
    ruleset: &Ruleset,
    event: &Raw<T>,
    context: &PushConditionRoomCtx,
) -> Vec<Action> {
    let future = pin!(ruleset.get_actions(event, context));
    match future.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(actions) => actions.to_vec(),
        Poll::Pending => Vec::new(),
    }
}

/// The thread an event belongs to: the root of its `m.thread` relation (`None`: the main
/// timeline, thread roots included).
pub fn thread_root(pdu: &Pdu) -> Option<OwnedEventId> {
    let Some(CanonicalJsonValue::Object(relation)) = pdu.content_object().get("m.relates_to")
    else {
        return None;
    };
    if relation.get("rel_type") != Some(&CanonicalJsonValue::String("m.thread".to_owned())) {
        return None;
    }
    match relation.get("event_id") {
        Some(CanonicalJsonValue::String(root)) => OwnedEventId::try_from(root.as_str()).ok(),
        _ => None,
    }
}

/// The user an `m.room.member` invite event invites, when that user is local.
fn invited_local_user(pdu: &Pdu, server: &ServerName) -> Option<OwnedUserId> {
    if *pdu.kind() != TimelineEventType::RoomMember {
        return None;
    }
    let invite = CanonicalJsonValue::String(MembershipState::Invite.as_str().to_owned());
    if pdu.content_object().get("membership") != Some(&invite) {
        return None;
    }
    let invitee = OwnedUserId::try_from(pdu.state_key()?).ok()?;
    (invitee.server_name() == server).then_some(invitee)
}

/// The display name of `user_id` in the room, from their member event ("" when they have
/// none, which only an empty body matches).
fn display_name(rooms: &Rooms, room_id: &RoomId, user_id: &UserId) -> Result<String, PushError> {
    let member = rooms.state_event(room_id, &StateEventType::RoomMember, user_id.as_str())?;
    Ok(member
        .and_then(|member| match member.content_object().get("displayname") {
            Some(CanonicalJsonValue::String(name)) => Some(name.clone()),
            _ => None,
        })
        .unwrap_or_default())
}

/// The event as push rules see it: its client-visible fields, with its id and room id (which
/// a PDU of a recent room version does not carry).
fn evaluation_json(pdu: &Pdu, room_id: &RoomId) -> Result<Raw<Value>, PushError> {
    let mut object = Map::new();
    for (key, value) in pdu.json() {
        if EVALUATED_FIELDS.contains(&key.as_str()) {
            object.insert(key.clone(), Value::from(value.clone()));
        }
    }
    object.insert("event_id".to_owned(), Value::from(pdu.event_id().as_str()));
    object.insert("room_id".to_owned(), Value::from(room_id.as_str()));
    let raw = serde_json::value::to_raw_value(&Value::Object(object))
        .map_err(|err| PushError::InvalidParam(format!("unserialisable event: {err}")))?;
    Ok(Raw::from_json(raw))
}

/// Follows the event stream through push rule evaluation until the runtime shuts down:
/// catches up in rounds, then waits for the stream to move (the notifier, no polling).
pub async fn run_evaluator(services: Arc<Services>) {
    let mut positions = services.rooms.subscribe();
    loop {
        let worker = Arc::clone(&services);
        let round =
            tokio::task::spawn_blocking(move || worker.push.process_next(&worker.rooms, BATCH))
                .await;
        let upto = match round {
            Ok(Ok(round)) if round.read == BATCH => continue,
            Ok(Ok(round)) => round.upto,
            Ok(Err(error)) => {
                tracing::error!(%error, "evaluating push rules failed; retrying");
                tokio::time::sleep(RETRY_AFTER_FAILURE).await;
                continue;
            }
            Err(error) => {
                tracing::error!(%error, "the push rule evaluation task failed; retrying");
                tokio::time::sleep(RETRY_AFTER_FAILURE).await;
                continue;
            }
        };
        if positions
            .wait_for(|position| *position > upto)
            .await
            .is_err()
        {
            // The rooms service is gone: the server is shutting down.
            return;
        }
    }
}
