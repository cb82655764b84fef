//! Delivery of queued notifications to push gateways (`POST /_matrix/push/v1/notify`).
//!
//! One worker task per HTTP pusher with work delivers its queue in order, one notification
//! at a time: a failure is retried after a delay that doubles up to `push.retry_max_ms`,
//! and a notification still failing after `push.max_attempts` attempts is dropped, so a dead
//! gateway cannot hold a queue forever. A gateway that lists the pushkey in `rejected` has
//! the pusher removed. Workers wake on the announcements of `core`'s push service (no
//! polling) and end when their pusher is gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axon_config::PushConfig;
use axon_core::Services;
use axon_core::push::{PushError, PusherKey, QueuedPush, StoredPusher};
use axon_core::rooms::graph::{EventStatus, RoomError, StreamPosition};
use axon_core::sync::SyncError;
use reqwest::StatusCode;
use ruma::api::client::push::PusherKind;
use ruma::api::push_gateway::send_event_notification::v1::{
    Device, Notification, NotificationCounts, NotificationPriority, PusherData,
};
use ruma::events::room::member::MembershipState;
use ruma::events::{StateEventType, TimelineEventType};
use ruma::push::{Action, HttpPusherData, PushFormat, Tweak};
use ruma::{CanonicalJsonValue, OwnedRoomAliasId, SecondsSinceUnixEpoch, UInt, UserId};
use serde::Deserialize;
use tokio::sync::Notify;
use tokio::sync::broadcast::error::RecvError;

use super::address::{PublicResolver, check_gateway_url};

/// Why one delivery attempt failed.
#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error(transparent)]
    Push(#[from] PushError),
    #[error(transparent)]
    Room(#[from] RoomError),
    #[error(transparent)]
    Receipts(#[from] SyncError),
    #[error("request to the push gateway failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the push gateway answered {0}")]
    Status(StatusCode),
    #[error("a blocking task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What became of one queued notification.
enum Outcome {
    /// The gateway took it.
    Delivered,
    /// The gateway rejected the pushkey: the pusher must go.
    Rejected,
    /// Nothing to send (the event is gone, the URL is no longer allowed, the gateway refused
    /// the request for good).
    Dropped,
}

/// The gateway's answer.
#[derive(Debug, Default, Deserialize)]
struct GatewayResponse {
    #[serde(default)]
    rejected: Vec<String>,
}

/// The delivery side of push: a worker per pusher with work.
struct Sender {
    services: Arc<Services>,
    config: PushConfig,
    http: reqwest::Client,
    /// The running workers, with the handle that wakes each.
    workers: Mutex<HashMap<PusherKey, Arc<Notify>>>,
}

/// Delivers queued notifications until the runtime shuts down: a worker for each pusher
/// with queued notifications at start, and for each pusher the push service announces.
pub(crate) async fn run_sender(services: Arc<Services>, config: PushConfig) {
    let mut builder = reqwest::Client::builder()
        .timeout(config.request_timeout())
        // A redirect could lead to an address the checks below would refuse.
        .redirect(reqwest::redirect::Policy::none());
    if !config.allow_private_addresses {
        builder = builder.dns_resolver(PublicResolver);
    }
    let http = match builder.build() {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(%error, "cannot build the push gateway client; push delivery is off");
            return;
        }
    };
    // Subscribed before the first scan, so nothing announced in between is missed.
    let mut announcements = services.push.subscribe_queue();
    let sender = Arc::new(Sender {
        services,
        config,
        http,
        workers: Mutex::new(HashMap::new()),
    });
    sender.kick_all().await;
    loop {
        match announcements.recv().await {
            Ok(key) => sender.kick(key),
            Err(RecvError::Lagged(_)) => sender.kick_all().await,
            Err(RecvError::Closed) => return,
        }
    }
}

impl Sender {
    fn workers(&self) -> MutexGuard<'_, HashMap<PusherKey, Arc<Notify>>> {
        // The map stays consistent whatever a panicking holder did: entries are whole.
        self.workers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the worker of `key`, starting one if it has none.
    fn kick(self: &Arc<Self>, key: PusherKey) {
        let mut workers = self.workers();
        if let Some(wake) = workers.get(&key) {
            wake.notify_one();
            return;
        }
        let wake = Arc::new(Notify::new());
        workers.insert(key.clone(), Arc::clone(&wake));
        tokio::spawn(Arc::clone(self).work(key, wake));
    }

    /// Kicks every pusher with queued notifications.
    async fn kick_all(self: &Arc<Self>) {
        let services = Arc::clone(&self.services);
        match tokio::task::spawn_blocking(move || services.push.pushers_with_queued()).await {
            Ok(Ok(keys)) => keys.into_iter().for_each(|key| self.kick(key)),
            Ok(Err(error)) => tracing::error!(%error, "cannot list the push queues"),
            Err(error) => tracing::error!(%error, "listing the push queues failed"),
        }
    }

    /// The worker of one pusher: delivers its queue in order, then waits to be woken.
    async fn work(self: Arc<Self>, key: PusherKey, wake: Arc<Notify>) {
        let mut failures = 0u32;
        loop {
            let next = self.next(&key).await;
            let (pusher, (stream, entry)) = match next {
                Ok(Some((pusher, Some(entry)))) => (pusher, entry),
                Ok(Some((_, None))) => {
                    wake.notified().await;
                    continue;
                }
                Ok(None) => {
                    self.retire(&key).await;
                    return;
                }
                Err(error) => {
                    tracing::error!(%error, pusher = ?key, "cannot read the push queue");
                    tokio::time::sleep(self.config.retry_delay(1)).await;
                    continue;
                }
            };
            match self.deliver(&key, &pusher, &entry).await {
                Ok(Outcome::Delivered | Outcome::Dropped) => {
                    failures = 0;
                    self.dequeue(&key, stream).await;
                }
                Ok(Outcome::Rejected) => {
                    tracing::info!(pusher = ?key, "the push gateway rejected the pushkey; removing the pusher");
                    let services = Arc::clone(&self.services);
                    let gone = key.clone();
                    match tokio::task::spawn_blocking(move || services.push.delete_pusher(&gone))
                        .await
                    {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => tracing::error!(%error, "cannot remove the pusher"),
                        Err(error) => tracing::error!(%error, "removing the pusher failed"),
                    }
                    self.retire(&key).await;
                    return;
                }
                Err(error) => {
                    failures += 1;
                    if failures >= self.config.max_attempts {
                        tracing::warn!(%error, pusher = ?key, event = %entry.event_id, attempts = failures, "giving up on a push notification");
                        failures = 0;
                        self.dequeue(&key, stream).await;
                    } else {
                        let delay = self.config.retry_delay(failures);
                        tracing::info!(%error, pusher = ?key, ?delay, "push delivery failed; retrying");
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }
    }

    /// The pusher and its oldest queued notification (`None`: the pusher is gone).
    async fn next(
        &self,
        key: &PusherKey,
    ) -> Result<Option<(StoredPusher, Option<(StreamPosition, QueuedPush)>)>, DeliveryError> {
        let services = Arc::clone(&self.services);
        let key = key.clone();
        let next = tokio::task::spawn_blocking(move || {
            let Some(pusher) = services.push.pusher(&key)? else {
                return Ok::<_, PushError>(None);
            };
            let entry = services.push.queued(&key, 1)?.into_iter().next();
            Ok(Some((pusher, entry)))
        })
        .await??;
        Ok(next)
    }

    async fn dequeue(&self, key: &PusherKey, stream: StreamPosition) {
        let services = Arc::clone(&self.services);
        let key = key.clone();
        let done = tokio::task::spawn_blocking(move || services.push.dequeue(&key, stream)).await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "cannot dequeue a push notification"),
            Err(error) => tracing::error!(%error, "dequeuing a push notification failed"),
        }
    }

    /// Ends the worker of `key`. A pusher set again with the same key in the meantime gets a
    /// new worker, so its work is not left to the one ending.
    async fn retire(self: &Arc<Self>, key: &PusherKey) {
        self.workers().remove(key);
        if let Ok(Some(_)) = self.next(key).await {
            self.kick(key.clone());
        }
    }

    /// One attempt at delivering `entry`.
    async fn deliver(
        &self,
        key: &PusherKey,
        pusher: &StoredPusher,
        entry: &QueuedPush,
    ) -> Result<Outcome, DeliveryError> {
        let PusherKind::Http(data) = &pusher.pusher.kind else {
            return Ok(Outcome::Dropped);
        };
        let url = match check_gateway_url(&data.url, &self.config) {
            Ok(url) => url,
            Err(reason) => {
                tracing::warn!(pusher = ?key, %reason, "not pushing to this gateway URL");
                return Ok(Outcome::Dropped);
            }
        };
        let services = Arc::clone(&self.services);
        let (key_for, pusher_for, data_for, entry_for) =
            (key.clone(), pusher.clone(), data.clone(), entry.clone());
        let notification = tokio::task::spawn_blocking(move || {
            notification(&services, &key_for, &pusher_for, &data_for, &entry_for)
        })
        .await??;
        let Some(notification) = notification else {
            return Ok(Outcome::Dropped);
        };
        let response = self
            .http
            .post(url)
            .json(&serde_json::json!({ "notification": notification }))
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            // A gateway that refuses the request itself will refuse it again; a busy or
            // broken one may take it later.
            let retry = status.is_server_error()
                || status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::REQUEST_TIMEOUT;
            if retry {
                return Err(DeliveryError::Status(status));
            }
            tracing::warn!(pusher = ?key, %status, "the push gateway refused a notification");
            return Ok(Outcome::Dropped);
        }
        // A gateway that answers 200 with another body still took the notification.
        let answer: GatewayResponse = response.json().await.unwrap_or_default();
        if answer.rejected.contains(&key.pushkey) {
            Ok(Outcome::Rejected)
        } else {
            Ok(Outcome::Delivered)
        }
    }
}

/// The notification for `entry` in the format of the Push Gateway API (`None`: its event is
/// gone). With `format: event_id_only` the event's details are left out.
fn notification(
    services: &Services,
    key: &PusherKey,
    pusher: &StoredPusher,
    data: &HttpPusherData,
    entry: &QueuedPush,
) -> Result<Option<Notification>, DeliveryError> {
    let Some(event) = services.rooms.get_event(&entry.event_id)? else {
        return Ok(None);
    };
    if event.status != EventStatus::Normal {
        return Ok(None);
    }
    let pdu = &event.pdu;
    let tweaks: Vec<Tweak> = entry
        .actions
        .iter()
        .filter_map(|action| match action {
            Action::SetTweak(tweak) => Some(tweak.clone()),
            _ => None,
        })
        .collect();
    let urgent = entry
        .actions
        .iter()
        .any(|action| action.is_highlight() || action.sound().is_some())
        || *pdu.kind() == TimelineEventType::RoomEncrypted;

    let mut device = Device::new(key.app_id.clone(), key.pushkey.clone());
    device.pushkey_ts = Some(SecondsSinceUnixEpoch(
        UInt::try_from(pusher.pushkey_ts).unwrap_or(UInt::MAX),
    ));
    // Everything the client put in `data` but the URL, which is only for this server.
    device.data = PusherData::from(data.clone());
    device.tweaks = tweaks;

    let mut notification = Notification::new(vec![device]);
    notification.event_id = Some(entry.event_id.clone());
    notification.room_id = Some(entry.room_id.clone());
    notification.prio = if urgent {
        NotificationPriority::High
    } else {
        NotificationPriority::Low
    };
    let unread = unread_total(services, &key.user_id)?;
    notification.counts = NotificationCounts::new(
        UInt::try_from(unread).unwrap_or(UInt::MAX),
        UInt::from(0u32),
    );
    if data.format != Some(PushFormat::EventIdOnly) {
        notification.event_type = Some(pdu.kind().clone());
        notification.sender = Some(pdu.sender().to_owned());
        notification.content = Some(pdu.content().to_owned());
        notification.user_is_target = pdu.state_key() == Some(key.user_id.as_str());
        notification.sender_display_name = state_string(
            services,
            &entry.room_id,
            StateEventType::RoomMember,
            pdu.sender().as_str(),
            "displayname",
        )?;
        notification.room_name = state_string(
            services,
            &entry.room_id,
            StateEventType::RoomName,
            "",
            "name",
        )?;
        notification.room_alias = state_string(
            services,
            &entry.room_id,
            StateEventType::RoomCanonicalAlias,
            "",
            "alias",
        )?
        .and_then(|alias| OwnedRoomAliasId::try_from(alias).ok());
    }
    Ok(Some(notification))
}

/// The unread notifications of `user_id` over the rooms they are in, as their receipts
/// leave them: the badge count of the push.
fn unread_total(services: &Services, user_id: &UserId) -> Result<u64, DeliveryError> {
    let mut total = 0;
    for (room_id, membership) in services.rooms.rooms_of_user(user_id)? {
        if !matches!(membership, MembershipState::Join | MembershipState::Invite) {
            continue;
        }
        let read = services.receipts.read_position(user_id, &room_id, None)?;
        let counts = services.push.unread_counts(
            user_id,
            &room_id,
            read,
            &Default::default(),
            StreamPosition(u64::MAX),
        )?;
        total += counts.total().0;
    }
    Ok(total)
}

/// A string field of the content of a current state event of the room.
fn state_string(
    services: &Services,
    room_id: &ruma::RoomId,
    kind: StateEventType,
    state_key: &str,
    field: &str,
) -> Result<Option<String>, DeliveryError> {
    let Some(event) = services.rooms.state_event(room_id, &kind, state_key)? else {
        return Ok(None);
    };
    Ok(match event.content_object().get(field) {
        Some(CanonicalJsonValue::String(value)) if !value.is_empty() => Some(value.clone()),
        _ => None,
    })
}
