//! Appending a local event: build on the room's head, check auth, persist in one batch,
//! notify.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use ruma::events::room::member::MembershipState;
use ruma::events::room::power_levels::{RoomPowerLevels, RoomPowerLevelsEventContent};
use ruma::events::{StateEventType, TimelineEventType};
use ruma::room_version_rules::AuthorizationRules;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId,
    OwnedUserId, RoomId, UInt, UserId,
};

use super::query::{RoomHead, is_redacted, parse_record};
use super::tables::{
    CURRENT_STATE, EVENTS, EXTREMITIES, EventRecord, EventStatus, MembershipEntry,
    ROOM_MEMBERSHIPS, ROOMS, RoomRecord, SHORT_ROOM_COUNTER, STREAM_COUNTER, STREAM_EVENTS,
    ShortRoomId, StreamPosition, TIMELINE, TOPOLOGY, USER_MEMBERSHIPS,
};
use super::{Audience, RoomError, RoomGuard, Rooms};
use crate::rooms::auth::check_auth;
use crate::rooms::pdu::{Pdu, PduBuilder, redact};
use crate::rooms::room_version::RoomVersion;
use crate::rooms::short_ids::{ShortEventId, SnapshotId, StateBatch};
use crate::rooms::transactions::{self, Transaction};
use crate::storage::{Json, SyncTicket};

/// The most `prev_events` a local event refers to: the most recent forward extremities.
pub const MAX_PREV_EVENTS: usize = 10;

/// A new event from a local user.
#[derive(Clone, Debug)]
pub struct NewEvent {
    /// The room; the guard passed with it must be this room's lock.
    pub room_id: OwnedRoomId,
    /// The sender, a user of this server.
    pub sender: OwnedUserId,
    /// The event type.
    pub kind: TimelineEventType,
    /// The content.
    pub content: CanonicalJsonObject,
    /// The state key, for a state event.
    pub state_key: Option<String>,
    /// For a redaction, the event redacted.
    pub redacts: Option<OwnedEventId>,
    /// The client transaction that sends it, recorded in the event's own batch so a retry
    /// can never send it twice.
    pub transaction: Option<Transaction>,
}

impl NewEvent {
    /// A message-like event.
    pub fn message(
        room_id: OwnedRoomId,
        sender: OwnedUserId,
        kind: TimelineEventType,
        content: CanonicalJsonObject,
    ) -> Self {
        Self {
            room_id,
            sender,
            kind,
            content,
            state_key: None,
            redacts: None,
            transaction: None,
        }
    }

    /// A state event.
    pub fn state(
        room_id: OwnedRoomId,
        sender: OwnedUserId,
        kind: StateEventType,
        state_key: impl Into<String>,
        content: CanonicalJsonObject,
    ) -> Self {
        Self {
            room_id,
            sender,
            kind: kind.to_string().into(),
            content,
            state_key: Some(state_key.into()),
            redacts: None,
            transaction: None,
        }
    }

    /// A redaction of `redacts` (`content` may hold a `reason`).
    pub fn redaction(
        room_id: OwnedRoomId,
        sender: OwnedUserId,
        redacts: OwnedEventId,
        content: CanonicalJsonObject,
    ) -> Self {
        Self {
            room_id,
            sender,
            kind: TimelineEventType::RoomRedaction,
            content,
            state_key: None,
            redacts: Some(redacts),
            transaction: None,
        }
    }
}

/// An event appended to its room.
#[derive(Clone, Debug)]
pub struct AppendedEvent {
    /// Its id.
    pub event_id: OwnedEventId,
    /// Its stream position.
    pub stream: StreamPosition,
    /// The event as persisted.
    pub pdu: Pdu,
}

/// What an accepted redaction changes of a stored target.
pub(super) struct RedactionEffect {
    target: ShortEventId,
    /// The target's record with the event in its redacted form.
    redacted: EventRecord,
    /// The target before redaction, when it was the child of a relation: the relation goes
    /// with its content (edits, thread replies and references of redacted events no longer
    /// count).
    related_original: Option<Pdu>,
}

/// A written event that is not yet known to be durable, nor published to the stream.
#[derive(Debug)]
#[must_use = "an event must be made durable with `Rooms::make_durable` before it is acknowledged"]
pub(super) struct PendingDurability {
    pub(super) stream: StreamPosition,
    pub(super) ticket: SyncTicket,
}

/// What [`Rooms::persist_into`] wrote for an event.
pub(super) struct Persisted {
    /// The event's short id.
    pub(super) short: ShortEventId,
    /// Its room's short id (allocated in the batch for a new room).
    pub(super) room_short: ShortRoomId,
    /// Its stream position.
    pub(super) stream: StreamPosition,
    /// The state after it.
    pub(super) state_after: Option<SnapshotId>,
}

/// Which room a persisted event goes to: a known one, or the one its create event makes.
pub(super) enum RoomTarget {
    Existing(ShortRoomId),
    New(RoomRecord),
}

/// Everything [`Rooms::persist`] writes for one event.
pub(super) struct Persist<'a> {
    pub(super) room_id: &'a RoomId,
    pub(super) room: RoomTarget,
    pub(super) version: &'a RoomVersion,
    pub(super) state_before: Option<SnapshotId>,
    /// The forward extremities the event replaces (its prev events).
    pub(super) replaced_extremities: &'a [ShortEventId],
    pub(super) pdu: &'a Pdu,
    /// For an accepted redaction: what it changes of its target.
    pub(super) redaction: Option<RedactionEffect>,
    /// The client transaction that sent the event.
    pub(super) transaction: Option<&'a Transaction>,
}

impl Rooms {
    /// Builds, checks, signs and persists a local event, then wakes the stream's waiters.
    ///
    /// `guard` must be this service's lock of `event.room_id` ([`RoomError::LockMismatch`]
    /// otherwise). The event follows the room's most recent forward extremities (at most
    /// [`MAX_PREV_EVENTS`]), its auth events are taken from the current state, and it must
    /// pass the auth rules against the current state ([`RoomError::Forbidden`] otherwise, and
    /// nothing is written). A redaction that passes also replaces the stored target with its
    /// redacted form, when the sender sent the target or has the power to redact others.
    ///
    /// Returns once the event is durable and published to the stream's waiters.
    /// Synchronous, with a synced write: call it from `spawn_blocking`.
    pub fn append_local(
        &self,
        guard: &RoomGuard,
        event: NewEvent,
    ) -> Result<AppendedEvent, RoomError> {
        let (appended, pending) = self.append_unsynced(guard, event)?;
        self.make_durable(pending)?;
        Ok(appended)
    }

    /// [`Rooms::append_local`], releasing the room's lock as soon as the event is written and
    /// before waiting for the log sync: the next event of the room is built meanwhile, and
    /// concurrent senders share one sync. Still returns only once the event is durable.
    pub fn append_local_and_unlock(
        &self,
        guard: RoomGuard,
        event: NewEvent,
    ) -> Result<AppendedEvent, RoomError> {
        let (appended, pending) = self.append_unsynced(&guard, event)?;
        drop(guard);
        self.make_durable(pending)?;
        Ok(appended)
    }

    /// Waits until the writes of `pending` and everything before it are durable, then
    /// publishes its stream position. Positions are published only once durable, so a sync
    /// token can never name an event a crash could lose.
    pub(super) fn make_durable(&self, pending: PendingDurability) -> Result<(), RoomError> {
        self.group_sync.wait(&*self.store, pending.ticket)?;
        self.notifier.publish(pending.stream);
        Ok(())
    }

    /// Writes per-user stream data (account data, receipts, to-device messages, device list
    /// changes...) at the next position of the server-wide stream, so one sync token position
    /// covers events and everything else: `fill` adds its changes, keyed by the position it
    /// is given, to the batch. Returns once the batch is durable and the position published
    /// (which wakes waiting syncs). Synchronous: call it from `spawn_blocking`.
    pub fn write_at_next_position(
        &self,
        fill: impl FnOnce(&mut crate::storage::WriteBatch, StreamPosition) -> Result<(), RoomError>,
    ) -> Result<StreamPosition, RoomError> {
        self.write_at_next_position_inner(None, fill)
    }

    /// [`Rooms::write_at_next_position`] for data that concerns only `audience`: waiting
    /// syncs of other users need not look.
    pub fn write_at_next_position_for(
        &self,
        audience: Audience,
        fill: impl FnOnce(&mut crate::storage::WriteBatch, StreamPosition) -> Result<(), RoomError>,
    ) -> Result<StreamPosition, RoomError> {
        self.write_at_next_position_inner(Some(audience), fill)
    }

    fn write_at_next_position_inner(
        &self,
        audience: Option<Audience>,
        fill: impl FnOnce(&mut crate::storage::WriteBatch, StreamPosition) -> Result<(), RoomError>,
    ) -> Result<StreamPosition, RoomError> {
        let mut batch = self.short_ids.begin();
        let stream = StreamPosition(batch.allocate(&*self.store, STREAM_COUNTER)?);
        if let Some(audience) = audience {
            self.notifier.record(stream, audience);
        }
        fill(batch.write_batch(), stream)?;
        let ticket = batch.commit_unsynced(&*self.store, &self.group_sync)?;
        self.make_durable(PendingDurability { stream, ticket })?;
        Ok(stream)
    }

    /// Waits until every event written so far is durable (for a retried transaction whose
    /// first attempt may still be waiting for its log sync).
    pub fn sync_written(&self) -> Result<(), RoomError> {
        let ticket = self.group_sync.written();
        self.group_sync.wait(&*self.store, ticket)?;
        Ok(())
    }

    /// Builds, checks and writes the event (unsynced, unpublished): the work of
    /// [`Rooms::append_local`] done under the room's lock.
    pub(super) fn append_unsynced(
        &self,
        guard: &RoomGuard,
        event: NewEvent,
    ) -> Result<(AppendedEvent, PendingDurability), RoomError> {
        self.check_guard(guard, &event.room_id)?;
        let transaction = event.transaction;
        let head = self
            .head(&event.room_id)?
            .ok_or(RoomError::NotFound("room"))?;
        let view = StateView::new(self, head.current);

        let prevs: Vec<(ShortEventId, Pdu)> = head
            .extremities
            .iter()
            .take(MAX_PREV_EVENTS)
            .map(|short| Ok((*short, self.existing_pdu(*short)?)))
            .collect::<Result<_, RoomError>>()?;
        let deepest = prevs
            .iter()
            .map(|(_, pdu)| u64::from(pdu.depth()))
            .max()
            .unwrap_or(0);
        // Canonical JSON caps integers at 2^53 - 1, below the specification's 2^63 - 1.
        let depth = UInt::try_from(deepest.saturating_add(1)).unwrap_or(UInt::MAX);

        let mut builder = PduBuilder::new(
            Some(event.room_id.clone()),
            event.sender,
            event.kind,
            event.content,
        );
        builder.state_key = event.state_key;
        builder.redacts = event.redacts;
        builder.prev_events = prevs.iter().map(|(_, pdu)| pdu.reference()).collect();
        builder.depth = depth;
        builder.origin_server_ts = MilliSecondsSinceUnixEpoch::now();
        builder.select_auth_events(&head.version, |kind, state_key| {
            view.get(kind, state_key).map(|pdu| pdu.reference())
        })?;
        view.finish()?;
        let pdu = builder.build_pdu(&head.version, &self.keys)?;

        let verdict = check_auth(&head.version, &pdu, |kind: &StateEventType, key: &str| {
            view.get(kind, key)
        });
        // A storage failure during the check makes its verdict meaningless: report it first.
        view.finish()?;
        verdict.map_err(|err| RoomError::Forbidden(err.reason()))?;
        let redaction = self.redaction_effect(&head, &view, &pdu)?;
        view.finish()?;

        let prev_shorts: Vec<ShortEventId> = prevs.iter().map(|(short, _)| *short).collect();
        let pending = self.persist(Persist {
            room_id: &head.room_id,
            room: RoomTarget::Existing(head.short),
            version: &head.version,
            state_before: head.current,
            replaced_extremities: &prev_shorts,
            pdu: &pdu,
            redaction,
            transaction: transaction.as_ref(),
        })?;
        let appended = AppendedEvent {
            event_id: pdu.event_id().to_owned(),
            stream: pending.stream,
            pdu,
        };
        Ok((appended, pending))
    }

    /// Writes an accepted event and everything that follows from it in one batch, unsynced:
    /// the caller makes it durable and publishes it with [`Rooms::make_durable`].
    pub(super) fn persist(&self, input: Persist<'_>) -> Result<PendingDurability, RoomError> {
        // From here to the commit the allocation lock is held: no await, nothing slow.
        let mut batch = self.short_ids.begin();
        let persisted = self.persist_into(&mut batch, input)?;
        let ticket = batch.commit_unsynced(&*self.store, &self.group_sync)?;
        Ok(PendingDurability {
            stream: persisted.stream,
            ticket,
        })
    }

    /// Adds everything [`Rooms::persist`] writes for an accepted event to `batch`, for a caller
    /// that adds more to the same batch (received events, whose room state may also change by
    /// state resolution) before committing it.
    pub(super) fn persist_into(
        &self,
        batch: &mut StateBatch<'_>,
        input: Persist<'_>,
    ) -> Result<Persisted, RoomError> {
        let store = &*self.store;
        let pdu = input.pdu;
        let depth = u64::from(pdu.depth());
        let membership = membership_change(pdu)?;
        let mut event = pdu.json().clone();
        let unsigned = match event.remove("unsigned") {
            Some(CanonicalJsonValue::Object(unsigned)) => Some(unsigned),
            _ => None,
        };

        let room_short = match input.room {
            RoomTarget::Existing(short) => short,
            RoomTarget::New(mut record) => {
                let short = ShortRoomId(batch.allocate(store, SHORT_ROOM_COUNTER)?);
                record.short = short;
                ROOMS.put(
                    batch.write_batch(),
                    &input.room_id.to_owned(),
                    &Json(record),
                );
                short
            }
        };
        let short = self
            .short_ids
            .get_or_create_event(store, batch, pdu.event_id())?;
        let stream = StreamPosition(batch.allocate(store, STREAM_COUNTER)?);
        self.notifier.record(
            stream,
            match &membership {
                Some((user_id, _)) => Audience::Member {
                    room_id: input.room_id.to_owned(),
                    user_id: user_id.clone(),
                },
                None => Audience::Room(input.room_id.to_owned()),
            },
        );
        let state_after = match pdu.state_key() {
            Some(state_key) => {
                let kind = StateEventType::from(pdu.kind().to_string());
                let key = self
                    .short_ids
                    .get_or_create_state_key(store, batch, &kind, state_key)?;
                Some(self.states.save_delta(
                    store,
                    batch,
                    input.state_before,
                    &[(key, Some(short))],
                )?)
            }
            None => input.state_before,
        };

        let record = EventRecord {
            room_id: input.room_id.to_owned(),
            room_version: input.version.id().clone(),
            status: EventStatus::Normal,
            stream: Some(stream),
            state_before: input.state_before.map(Into::into),
            state_after: state_after.map(Into::into),
            event,
            reference_hash: Some(pdu.reference_hash().to_owned()),
            unsigned,
        };
        let writes = batch.write_batch();
        EVENTS.put(writes, &short, &Json(record));
        TIMELINE.put(writes, &(room_short, stream), &short);
        STREAM_EVENTS.put(writes, &stream, &short);
        TOPOLOGY.put(writes, &(room_short, depth, stream), &short);
        for prev in input.replaced_extremities {
            EXTREMITIES.delete(writes, &(room_short, *prev));
        }
        EXTREMITIES.put(writes, &(room_short, short), &depth);
        if let Some(after) = state_after
            && state_after != input.state_before
        {
            CURRENT_STATE.put(writes, &room_short, &after);
        }
        if let Some((user_id, membership)) = membership {
            let entry = MembershipEntry {
                event: short,
                membership,
            };
            let room_id = input.room_id.to_owned();
            USER_MEMBERSHIPS.put(writes, &(user_id.clone(), room_id.clone()), &entry);
            ROOM_MEMBERSHIPS.put(writes, &(room_id, user_id), &entry);
        }
        if let Some(effect) = input.redaction {
            if let (Some(original), Some(target_stream)) =
                (&effect.related_original, effect.redacted.stream)
            {
                crate::rooms::relations::remove_from_batch(
                    writes,
                    input.room_id,
                    original,
                    target_stream,
                );
            }
            EVENTS.put(writes, &effect.target, &Json(effect.redacted));
        }
        if let Some(transaction) = input.transaction {
            transactions::add_to_batch(writes, transaction, pdu.event_id());
        }
        // The relation and thread indexes go in the event's own batch (see `rooms::relations`).
        crate::rooms::relations::add_to_batch(store, writes, input.room_id, pdu, stream)?;
        Ok(Persisted {
            short,
            room_short,
            stream,
            state_after,
        })
    }

    /// For a redaction that passed the auth rules: the redacted record of its target, if the
    /// target is here, not redacted yet, and the sender may redact it.
    pub(super) fn redaction_effect(
        &self,
        head: &RoomHead,
        view: &StateView<'_>,
        pdu: &Pdu,
    ) -> Result<Option<RedactionEffect>, RoomError> {
        let Some(target_id) = pdu
            .redacts()
            .filter(|_| *pdu.kind() == TimelineEventType::RoomRedaction)
        else {
            return Ok(None);
        };
        // An unknown target is no error (it may arrive later over federation); there is
        // nothing to redact now.
        let Some(short) = self.short_ids.event(&*self.store, target_id)? else {
            return Ok(None);
        };
        let Some(Json(record)) = EVENTS.get(&*self.store, &short)? else {
            return Ok(None);
        };
        if record.room_id != head.room_id {
            return Err(RoomError::InvalidParam(format!(
                "{target_id} is not an event of {}",
                head.room_id
            )));
        }
        let target = parse_record(record.clone())?.event.pdu;
        if target.sender() != pdu.sender() && !can_redact_others(&head.version, view, pdu.sender())
        {
            return Err(RoomError::Forbidden(format!(
                "{} may not redact events of other users",
                pdu.sender()
            )));
        }
        if is_redacted(&record) {
            // The first accepted redaction stays in `redacted_because`.
            return Ok(None);
        }
        let mut redacted = redact(&target, &head.version, Some(pdu))?.into_json();
        let unsigned = match redacted.remove("unsigned") {
            Some(CanonicalJsonValue::Object(unsigned)) => Some(unsigned),
            _ => None,
        };
        let related_original = crate::rooms::relations::relation_of(&target)
            .is_some()
            .then_some(target);
        Ok(Some(RedactionEffect {
            target: short,
            redacted: EventRecord {
                event: redacted,
                unsigned,
                ..record
            },
            related_original,
        }))
    }
}

/// The membership an `m.room.member` event sets, and for whom.
pub(super) fn membership_change(
    pdu: &Pdu,
) -> Result<Option<(OwnedUserId, MembershipState)>, RoomError> {
    if *pdu.kind() != TimelineEventType::RoomMember {
        return Ok(None);
    }
    let Some(state_key) = pdu.state_key() else {
        return Ok(None);
    };
    let user_id = OwnedUserId::try_from(state_key)
        .map_err(|err| RoomError::InvalidParam(format!("member state key {state_key:?}: {err}")))?;
    let Some(CanonicalJsonValue::String(membership)) = pdu.content_object().get("membership")
    else {
        return Err(RoomError::InvalidParam(
            "member event without a `membership`".to_owned(),
        ));
    };
    Ok(Some((user_id, MembershipState::from(membership.as_str()))))
}

/// Whether `user_id` may redact other users' events under the room's power levels.
fn can_redact_others(version: &RoomVersion, view: &StateView<'_>, user_id: &UserId) -> bool {
    let rules = &version.rules().authorization;
    let creators = view
        .get(&StateEventType::RoomCreate, "")
        .map(|create| room_creators(&create, rules))
        .unwrap_or_default();
    let content = match view.get(&StateEventType::RoomPowerLevels, "") {
        // Power levels we cannot read grant nothing.
        Some(levels) => {
            match serde_json::from_str::<RoomPowerLevelsEventContent>(levels.content().get()) {
                Ok(content) => Some(content),
                Err(_) => return false,
            }
        }
        None => None,
    };
    RoomPowerLevels::new(content.into(), rules, creators).user_can_redact_event_of_other(user_id)
}

/// The room's creators per its create event: the sender (or, before v11, `content.creator`)
/// and, from v12, `content.additional_creators`.
pub(super) fn room_creators(create: &Pdu, rules: &AuthorizationRules) -> Vec<OwnedUserId> {
    let content = create.content_object();
    let mut creators = Vec::new();
    if rules.use_room_create_sender {
        creators.push(create.sender().to_owned());
    } else if let Some(CanonicalJsonValue::String(creator)) = content.get("creator")
        && let Ok(creator) = OwnedUserId::try_from(creator.as_str())
    {
        creators.push(creator);
    }
    if rules.additional_room_creators
        && let Some(CanonicalJsonValue::Array(additional)) = content.get("additional_creators")
    {
        for user in additional {
            if let CanonicalJsonValue::String(user) = user
                && let Ok(user) = OwnedUserId::try_from(user.as_str())
                && !creators.contains(&user)
            {
                creators.push(user);
            }
        }
    }
    creators
}

/// State events looked up so far, found or not.
type FetchedState = HashMap<(StateEventType, String), Option<Arc<Pdu>>>;

/// Lookups of one state snapshot for the closures of the auth functions, which cannot fail:
/// a storage error is kept and reported by [`StateView::finish`].
pub(super) struct StateView<'a> {
    rooms: &'a Rooms,
    snapshot: Option<SnapshotId>,
    fetched: RefCell<FetchedState>,
    error: RefCell<Option<RoomError>>,
}

impl<'a> StateView<'a> {
    pub(super) fn new(rooms: &'a Rooms, snapshot: Option<SnapshotId>) -> Self {
        Self {
            rooms,
            snapshot,
            fetched: RefCell::new(HashMap::new()),
            error: RefCell::new(None),
        }
    }

    pub(super) fn get(&self, kind: &StateEventType, state_key: &str) -> Option<Arc<Pdu>> {
        let key = (kind.clone(), state_key.to_owned());
        if let Some(found) = self.fetched.borrow().get(&key) {
            return found.clone();
        }
        let found = match self.snapshot {
            Some(snapshot) => match self.rooms.state_pdu(snapshot, kind, state_key) {
                Ok(found) => found.map(Arc::new),
                Err(err) => {
                    self.error.borrow_mut().get_or_insert(err);
                    None
                }
            },
            None => None,
        };
        self.fetched.borrow_mut().insert(key, found.clone());
        found
    }

    /// The first storage error met by the lookups so far, if any.
    pub(super) fn finish(&self) -> Result<(), RoomError> {
        match self.error.borrow_mut().take() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}
