//! Outbound delivery: every local event of a room with members on other servers, and the EDUs
//! other services queue, reach those servers in transactions (`PUT /send/{txnId}`).
//!
//! - The feeder ([`run`]) follows the event stream from the position stored with the queue,
//!   and queues each local event for the servers with joined members in the room, before or
//!   after it (so a kicked or leaving server hears of it too). Entries and position are written
//!   in one batch ([`axon_core::federation_queue`]), so a restart neither loses nor repeats.
//! - One delivery task per destination sends the queue's transactions in order. A failure
//!   waits with exponential backoff (`federation_sender.retry_initial_ms` doubling up to
//!   `retry_max_ms`) and retries the same transaction; destinations are independent, so one
//!   that is down delays only itself. After a failure, a backlog beyond
//!   `federation_sender.catch_up_threshold` is cut to the newest events of each room (the
//!   destination fetches the gap with `/get_missing_events`, as the specification allows).
//! - [`Outbound::enqueue_pdu`] and [`Outbound::enqueue_edu`] queue directly, for events that
//!   are not local (a join received through `send_join` goes to the room's other servers) and
//!   for EDUs.
//! - A second feeder (`local_edus`) follows local users' presence and device list changes on
//!   the same stream and queues their EDUs for the servers sharing a room with them.

mod edus;
mod local_edus;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axon_config::FederationSenderConfig;
use axon_core::Services;
use axon_core::federation_queue::{FederationQueue, OutgoingTransaction, QueuedPdu};
use axon_core::rooms::graph::{EventStatus, StoredEvent, StreamPosition};
use axon_core::rooms::pdu::Pdu;
use axon_core::storage::KvStore;
use ruma::api::federation::transactions::send_transaction_message;
use ruma::events::TimelineEventType;
use ruma::events::room::member::MembershipState;
use ruma::serde::Raw;
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedServerName, OwnedTransactionId, RoomId,
    ServerName, UserId,
};
use tokio::sync::{Notify, mpsc};

pub use self::edus::{
    AnnouncedDevice, PresenceUpdate, device_list_update_edu, device_update_edu,
    direct_to_device_edu, presence_edu, read_receipt_edu, signing_key_update_edu,
    to_device_message_id, typing_edu,
};
pub use self::local_edus::queue_for_room;
use crate::Federation;
use crate::error::FederationError;

/// Events read from the stream per round of the feeder.
const FEED_BATCH: usize = 100;
/// Wait after a failure of the feeder itself (a storage error), before it tries again.
const FEEDER_RETRY: Duration = Duration::from_secs(1);

/// Retry and catch-up settings.
#[derive(Clone, Debug)]
pub struct SenderSettings {
    /// Wait after the first failure.
    pub retry_initial: Duration,
    /// Longest wait between retries.
    pub retry_max: Duration,
    /// Backlog beyond which catch-up keeps only the newest events per room.
    pub catch_up_threshold: usize,
    /// Events kept per room by catch-up.
    pub catch_up_keep_per_room: usize,
}

impl From<&FederationSenderConfig> for SenderSettings {
    fn from(config: &FederationSenderConfig) -> Self {
        Self {
            retry_initial: config.retry_initial(),
            retry_max: config.retry_max(),
            catch_up_threshold: usize::try_from(config.catch_up_threshold).unwrap_or(usize::MAX),
            catch_up_keep_per_room: usize::try_from(config.catch_up_keep_per_room)
                .unwrap_or(usize::MAX),
        }
    }
}

/// The outbound queue and the doorbell of the delivery tasks.
#[derive(Debug)]
pub struct Outbound {
    queue: FederationQueue,
    settings: SenderSettings,
    wake: mpsc::UnboundedSender<OwnedServerName>,
    /// Taken by [`run`], which owns the delivery tasks.
    wakeups: Mutex<Option<mpsc::UnboundedReceiver<OwnedServerName>>>,
}

impl Outbound {
    /// The queue stored in `store`.
    pub fn new(store: Arc<dyn KvStore>, settings: SenderSettings) -> Result<Self, FederationError> {
        let (wake, wakeups) = mpsc::unbounded_channel();
        Ok(Self {
            queue: FederationQueue::new(store)?,
            settings,
            wake,
            wakeups: Mutex::new(Some(wakeups)),
        })
    }

    /// The persisted queue.
    pub fn queue(&self) -> &FederationQueue {
        &self.queue
    }

    /// Queues a stored event for `destinations` and wakes their delivery. Synchronous (a synced
    /// write).
    pub fn enqueue_pdu(
        &self,
        destinations: &BTreeSet<OwnedServerName>,
        room_id: &RoomId,
        event_id: OwnedEventId,
    ) -> Result<(), FederationError> {
        let entries: Vec<_> = destinations
            .iter()
            .map(|destination| {
                (
                    destination.clone(),
                    QueuedPdu {
                        room_id: room_id.to_owned(),
                        event_id: event_id.clone(),
                    },
                )
            })
            .collect();
        self.queue.enqueue_pdus(&entries, None)?;
        destinations
            .iter()
            .for_each(|destination| self.wake(destination));
        Ok(())
    }

    /// Queues an EDU (`{"edu_type": ..., "content": ...}`) for `destinations` and wakes their
    /// delivery. Synchronous (a synced write).
    pub fn enqueue_edu(
        &self,
        destinations: &BTreeSet<OwnedServerName>,
        edu: &serde_json::Value,
    ) -> Result<(), FederationError> {
        let destinations: Vec<_> = destinations.iter().cloned().collect();
        self.queue.enqueue_edu(&destinations, edu)?;
        destinations
            .iter()
            .for_each(|destination| self.wake(destination));
        Ok(())
    }

    fn wake(&self, destination: &ServerName) {
        // Fails only once `run` has stopped (shutdown): the entry stays queued for next start.
        let _stopped = self.wake.send(destination.to_owned());
    }
}

/// Runs outbound delivery until the runtime shuts down: the feeder that follows the event
/// stream, and one delivery task per destination (those with queued entries at start-up
/// first). Call it once.
pub async fn run(federation: Arc<Federation>, services: Arc<Services>) {
    let Some(mut wakeups) = federation
        .outbound()
        .wakeups
        .lock()
        .ok()
        .and_then(|mut taken| taken.take())
    else {
        tracing::error!("the federation sender was started twice");
        return;
    };
    if !federation.enabled() {
        return;
    }
    tokio::spawn(feed(Arc::clone(&federation), Arc::clone(&services)));
    tokio::spawn(local_edus::run(
        Arc::clone(&federation),
        Arc::clone(&services),
    ));
    let outbound = federation.outbound();
    match outbound.queue.pending_destinations() {
        Ok(pending) => pending
            .iter()
            .for_each(|destination| outbound.wake(destination)),
        Err(error) => tracing::error!(%error, "cannot read the federation queue"),
    }
    let mut workers: HashMap<OwnedServerName, Arc<Notify>> = HashMap::new();
    while let Some(destination) = wakeups.recv().await {
        if let Some(doorbell) = workers.get(&destination) {
            doorbell.notify_one();
            continue;
        }
        let doorbell = Arc::new(Notify::new());
        workers.insert(destination.clone(), Arc::clone(&doorbell));
        tokio::spawn(deliver(
            Arc::clone(&federation),
            Arc::clone(&services),
            destination,
            doorbell,
        ));
    }
}

/// Follows the event stream into the queue.
async fn feed(federation: Arc<Federation>, services: Arc<Services>) {
    let mut positions = services.rooms.subscribe();
    let reader = Arc::clone(&federation);
    let read = tokio::task::spawn_blocking(move || reader.outbound().queue.position()).await;
    let mut read = match read {
        Ok(Ok(position)) => position,
        _ => {
            tracing::error!("cannot read the federation sender's position; starting at the end");
            services.rooms.current_stream_position()
        }
    };
    loop {
        let worker_services = Arc::clone(&services);
        let worker_federation = Arc::clone(&federation);
        let round = tokio::task::spawn_blocking(move || {
            feed_round(&worker_federation, &worker_services, read)
        })
        .await;
        match round {
            Ok(Ok((upto, count, woken))) => {
                read = upto;
                woken
                    .iter()
                    .for_each(|destination| federation.outbound().wake(destination));
                if count == FEED_BATCH {
                    continue;
                }
            }
            Ok(Err(error)) => {
                tracing::error!(%error, "queueing events for other servers failed; retrying");
                tokio::time::sleep(FEEDER_RETRY).await;
                continue;
            }
            Err(error) => {
                tracing::error!(%error, "the federation feeder task failed; retrying");
                tokio::time::sleep(FEEDER_RETRY).await;
                continue;
            }
        }
        if positions
            .wait_for(|position| *position > read)
            .await
            .is_err()
        {
            return;
        }
    }
}

/// One round of the feeder: queues the local events after `after` and records the position.
/// Returns the new position, the number of events read and the destinations given work.
fn feed_round(
    federation: &Federation,
    services: &Services,
    after: StreamPosition,
) -> Result<(StreamPosition, usize, BTreeSet<OwnedServerName>), FederationError> {
    let rooms = &services.rooms;
    let published = rooms.current_stream_position();
    let events = rooms.events_after(after, FEED_BATCH)?;
    let last = events.last().map_or(after, |(position, _)| *position);
    let upto = if events.len() < FEED_BATCH {
        published.max(last)
    } else {
        last
    };
    let own = rooms.server_name().to_owned();
    let mut entries = Vec::new();
    let mut woken = BTreeSet::new();
    for (_, event) in &events {
        if !is_local_event(event, &own) {
            continue;
        }
        for destination in destinations_of(services, &event.pdu, &own)? {
            if !federation.client().allows(&destination) {
                continue;
            }
            woken.insert(destination.clone());
            entries.push((
                destination,
                QueuedPdu {
                    room_id: event.room_id.clone(),
                    event_id: event.pdu.event_id().to_owned(),
                },
            ));
        }
    }
    // Nothing to queue: the position is written only after a full batch, which costs a few
    // re-read events after a restart instead of a write per event.
    if !entries.is_empty() || events.len() == FEED_BATCH {
        federation
            .outbound()
            .queue
            .enqueue_pdus(&entries, Some(upto))?;
    }
    Ok((upto, events.len(), woken))
}

fn is_local_event(event: &StoredEvent, own: &ServerName) -> bool {
    event.status == EventStatus::Normal && event.pdu.sender().server_name() == own
}

/// The servers to send `pdu` to: those with a joined member in the room after it (and, for a
/// state event, before it), other than `own`.
pub fn destinations_of(
    services: &Services,
    pdu: &Pdu,
    own: &ServerName,
) -> Result<BTreeSet<OwnedServerName>, FederationError> {
    let rooms = &services.rooms;
    let mut servers = if pdu.is_state() {
        let mut servers = joined_servers(&rooms.state_at_event(pdu.event_id())?);
        servers.extend(joined_servers(&rooms.state_before_event(pdu.event_id())?));
        servers
    } else {
        // A message changes no membership: its room's servers come from the membership
        // index, without loading every member event of the room for every message.
        joined_servers_now(services, pdu.room_id())?
    };
    servers.remove(own);
    Ok(servers)
}

/// The servers with a joined member in the room now, from the membership index.
fn joined_servers_now(
    services: &Services,
    room_id: &RoomId,
) -> Result<BTreeSet<OwnedServerName>, FederationError> {
    Ok(services
        .rooms
        .members(room_id, Some(&MembershipState::Join))?
        .into_iter()
        .map(|(user_id, _)| user_id.server_name().to_owned())
        .collect())
}

/// The servers of the joined members in `state`.
pub fn joined_servers(state: &[Pdu]) -> BTreeSet<OwnedServerName> {
    state
        .iter()
        .filter(|pdu| *pdu.kind() == TimelineEventType::RoomMember)
        .filter(|pdu| {
            matches!(
                pdu.content_object().get("membership"),
                Some(ruma::CanonicalJsonValue::String(membership)) if membership == "join"
            )
        })
        .filter_map(|pdu| pdu.state_key())
        .filter_map(|user| UserId::parse(user).ok())
        .map(|user| user.server_name().to_owned())
        .collect()
}

/// The servers currently in `room_id` (joined members), other than this one.
pub fn servers_in_room(
    services: &Services,
    room_id: &RoomId,
) -> Result<BTreeSet<OwnedServerName>, FederationError> {
    let mut servers = joined_servers_now(services, room_id)?;
    servers.remove(services.rooms.server_name());
    Ok(servers)
}

/// The other servers sharing a joined room with `user_id`: who receives a local user's
/// presence and device list updates.
pub fn servers_sharing_rooms_with(
    services: &Services,
    user_id: &UserId,
) -> Result<BTreeSet<OwnedServerName>, FederationError> {
    let mut servers = BTreeSet::new();
    for room_id in services.rooms.joined_rooms(user_id)? {
        servers.extend(servers_in_room(services, &room_id)?);
    }
    Ok(servers)
}

/// Sends `destination` its queued transactions, one after the other, until the process ends.
async fn deliver(
    federation: Arc<Federation>,
    services: Arc<Services>,
    destination: OwnedServerName,
    doorbell: Arc<Notify>,
) {
    let settings = federation.outbound().settings.clone();
    let mut failures: u32 = 0;
    loop {
        let reader = Arc::clone(&federation);
        let target = destination.clone();
        let next =
            tokio::task::spawn_blocking(move || reader.outbound().queue.next_transaction(&target))
                .await;
        let transaction = match next {
            Ok(Ok(Some(transaction))) => transaction,
            Ok(Ok(None)) => {
                doorbell.notified().await;
                continue;
            }
            Ok(Err(error)) => {
                tracing::error!(%destination, %error, "cannot read the federation queue");
                tokio::time::sleep(settings.retry_initial).await;
                continue;
            }
            Err(error) => {
                tracing::error!(%destination, %error, "the federation queue task failed");
                tokio::time::sleep(settings.retry_initial).await;
                continue;
            }
        };
        let outcome = send_transaction(&federation, &services, &destination, &transaction).await;
        let permanent = matches!(
            outcome,
            Err(FederationError::Disabled | FederationError::Denied(_) | FederationError::ToSelf)
        );
        if outcome.is_ok() || permanent {
            if let Err(error) = outcome {
                tracing::warn!(%destination, %error, "dropping a transaction that cannot be sent");
            }
            failures = 0;
            let writer = Arc::clone(&federation);
            let target = destination.clone();
            let done = tokio::task::spawn_blocking(move || {
                writer.outbound().queue.complete(&target, &transaction)
            })
            .await;
            if !matches!(done, Ok(Ok(()))) {
                tracing::error!(%destination, "cannot remove a sent transaction from the queue");
                tokio::time::sleep(settings.retry_initial).await;
            }
            continue;
        }
        if let Err(error) = outcome {
            tracing::info!(%destination, %error, failures, "federation transaction failed");
        }
        failures = failures.saturating_add(1);
        catch_up(&federation, &destination, &settings).await;
        tokio::time::sleep(backoff(&settings, failures)).await;
    }
}

/// The wait after `failures` consecutive failures: the initial delay doubled each time, capped.
fn backoff(settings: &SenderSettings, failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(31));
    settings
        .retry_initial
        .saturating_mul(factor)
        .min(settings.retry_max)
}

/// Cuts a long backlog down to the newest events of each room.
async fn catch_up(
    federation: &Arc<Federation>,
    destination: &ServerName,
    settings: &SenderSettings,
) {
    let federation = Arc::clone(federation);
    let target = destination.to_owned();
    let (threshold, keep) = (settings.catch_up_threshold, settings.catch_up_keep_per_room);
    let result = tokio::task::spawn_blocking(move || {
        let queue = &federation.outbound().queue;
        if queue.pdu_backlog(&target)? <= threshold {
            return Ok::<_, FederationError>(0);
        }
        Ok(queue.keep_latest_per_room(&target, keep)?)
    })
    .await;
    match result {
        Ok(Ok(0)) => {}
        Ok(Ok(dropped)) => {
            tracing::info!(%destination, dropped, "federation catch-up: older events left out");
        }
        _ => tracing::error!(%destination, "federation catch-up failed"),
    }
}

/// Sends one transaction. Events no longer stored are left out.
async fn send_transaction(
    federation: &Federation,
    services: &Arc<Services>,
    destination: &ServerName,
    transaction: &OutgoingTransaction,
) -> Result<(), FederationError> {
    let events: Vec<OwnedEventId> = transaction
        .pdus
        .iter()
        .map(|(_, pdu)| pdu.event_id.clone())
        .collect();
    let loader = Arc::clone(services);
    let pdus = tokio::task::spawn_blocking(move || {
        let mut pdus = Vec::with_capacity(events.len());
        for event_id in events {
            if let Some(json) = loader.rooms.pdu_json_for_federation(&event_id)? {
                pdus.push(serde_json::value::to_raw_value(&json).map_err(|err| {
                    FederationError::BuildRequest(format!("event {event_id}: {err}"))
                })?);
            }
        }
        Ok::<_, FederationError>(pdus)
    })
    .await
    .map_err(|err| FederationError::BuildRequest(err.to_string()))??;
    let edus = transaction
        .edus
        .iter()
        .map(|(_, edu)| serde_json::value::to_raw_value(edu).map(Raw::from_json))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| FederationError::BuildRequest(err.to_string()))?;
    let mut request = send_transaction_message::v1::Request::new(
        OwnedTransactionId::from(transaction.txn_id.as_str()),
        federation.client().server_name().to_owned(),
        MilliSecondsSinceUnixEpoch::now(),
    );
    request.pdus = pdus;
    request.edus = edus;
    let response = federation.client().send(destination, request).await?;
    for (event_id, result) in response.pdus {
        if let Err(reason) = result {
            tracing::debug!(%destination, %event_id, %reason, "the destination refused an event");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let settings = SenderSettings {
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_millis(1000),
            catch_up_threshold: 10,
            catch_up_keep_per_room: 1,
        };
        let waits: Vec<u128> = (1..=6)
            .map(|failures| backoff(&settings, failures).as_millis())
            .collect();
        assert_eq!(waits, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff(&settings, u32::MAX), Duration::from_millis(1000));
    }
}
