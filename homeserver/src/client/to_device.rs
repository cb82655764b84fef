//! `PUT /sendToDevice`: messages to devices, queued in their inboxes for sync, and for other
//! servers' users in the federation queue.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axon_api::{ApiError, ApiResult, AppState, Ruma, RumaResponse, RumaRouterExt};
use axon_core::e2ee::to_device::expand_targets;
use axon_federation::Federation;
use axon_federation::outbound::{direct_to_device_edu, to_device_message_id};
use axum::extract::State;
use axum::{Extension, Router};
use ruma::api::client::to_device::send_event_to_device;
use ruma::to_device::DeviceIdOrAllDevices;
use ruma::{DeviceId, OwnedDeviceId, OwnedServerName, OwnedUserId, UserId};
use serde_json::Value;
use serde_json::value::RawValue as RawJsonValue;

use super::keys::e2ee_error;
use super::rooms::blocking;

/// The to-device route.
pub(crate) fn routes() -> Router<AppState> {
    Router::new().ruma_route::<send_event_to_device::v3::Request, _, _>(send)
}

/// Messages for one user: by device (`None` for every device).
type UserMessages = BTreeMap<Option<OwnedDeviceId>, Box<RawJsonValue>>;

/// Queues messages to users of other servers: one `m.direct_to_device` EDU per server, in the
/// persisted federation queue (a synced write, so once the client has its answer the messages
/// survive a restart). The EDU's `message_id` comes from the sending device and transaction,
/// so a retried transaction queues the same id and the receiver keeps one copy. Nothing is
/// queued when federation is off or refuses the server (the spec gives the sender no failure
/// to see). Synchronous: call it from `spawn_blocking`.
fn queue_remote(
    federation: &Federation,
    sender: &UserId,
    sender_device: &DeviceId,
    txn_id: &str,
    event_type: &str,
    servers: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, UserMessages>>,
) -> Result<(), ApiError> {
    for (server, users) in servers {
        if !federation.enabled() || !federation.client().allows(&server) {
            tracing::info!(
                %sender,
                %server,
                event_type,
                "to-device messages for a server federation may not reach are dropped"
            );
            continue;
        }
        let mut messages = serde_json::Map::new();
        for (user, devices) in users {
            let mut by_device = serde_json::Map::new();
            for (device, content) in devices {
                let content: Value = serde_json::from_str(content.get())
                    .map_err(|err| ApiError::bad_json(format!("message content: {err}")))?;
                let device = device.map_or_else(|| "*".to_owned(), |device| device.to_string());
                by_device.insert(device, content);
            }
            messages.insert(user.to_string(), Value::Object(by_device));
        }
        let message_id = to_device_message_id(sender, sender_device, txn_id, &server);
        let edu = direct_to_device_edu(sender, event_type, &message_id, &Value::Object(messages));
        federation
            .outbound()
            .enqueue_edu(&BTreeSet::from([server]), &edu)?;
    }
    Ok(())
}

/// # `PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}`
///
/// Idempotent per sending device and transaction id; `*` reaches every device of the user.
pub(crate) async fn send(
    State(state): State<AppState>,
    Extension(federation): Extension<Arc<Federation>>,
    request: Ruma<send_event_to_device::v3::Request>,
) -> ApiResult<RumaResponse<send_event_to_device::v3::Response>> {
    let sender = request.identity;
    let body = request.body;
    let event_type = body.event_type.to_string();
    let local_server = state.services().rooms.server_name().to_owned();
    let mut local: BTreeMap<OwnedUserId, UserMessages> = BTreeMap::new();
    let mut remote: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, UserMessages>> =
        BTreeMap::new();
    for (user, devices) in body.messages {
        let targets: UserMessages = devices
            .into_iter()
            .map(|(device, content)| {
                let device = match device {
                    DeviceIdOrAllDevices::DeviceId(device) => Some(device),
                    _ => None,
                };
                (device, content.into_json())
            })
            .collect();
        if user.server_name() == local_server {
            local.insert(user, targets);
        } else {
            remote
                .entry(user.server_name().to_owned())
                .or_default()
                .insert(user, targets);
        }
    }
    let txn_id = body.txn_id.to_string();
    // Remote messages first: if the local part fails, the client retries the transaction,
    // and the remote part, queued again under the same message ids, reaches each device once.
    blocking(&state, move |services| {
        queue_remote(
            &federation,
            &sender.user_id,
            &sender.device_id,
            &txn_id,
            &event_type,
            remote,
        )?;
        let e2ee = &services.e2ee;
        let messages =
            expand_targets(local, |user| e2ee.devices_for_fan_out(user)).map_err(e2ee_error)?;
        e2ee.send_to_device(
            &services.rooms,
            &sender.user_id,
            &sender.device_id,
            &txn_id,
            &event_type,
            messages,
        )
        .map_err(e2ee_error)
    })
    .await?;
    Ok(send_event_to_device::v3::Response::new().into())
}
