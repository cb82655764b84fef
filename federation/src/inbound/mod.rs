//! What other servers send and ask: the inbound half of the server-server API.
//!
//! - [`transaction`]: `PUT /send/{txnId}`: limits, idempotence per origin and transaction id,
//!   rooms processed concurrently and each room's PDUs in order.
//! - [`pdu`]: one received PDU: format for the room version, signatures of every required
//!   server, the redacted form on a hash mismatch, then the core's checks, fetching missing
//!   prev events, auth events or the state before the event from the origin ([`fetch`]).
//! - [`edu`]: typing, receipts, presence, device lists, cross-signing keys and to-device
//!   messages, each applied only for users of the sending server.
//! - [`access`]: whether a server may read a room or an event (membership, history
//!   visibility for servers, the room's server ACL).
//! - [`events`], [`directory`], [`user_keys`]: the read endpoints.

mod access;
mod directory;
mod edu;
mod error;
mod events;
mod fetch;
mod pdu;
mod transaction;
mod user_keys;

use std::sync::Arc;

use axon_api::{ApiError, AppState, RumaRouterExt};
use axon_core::Services;
use axum::Router;
use ruma::api::federation::authorization::get_event_authorization;
use ruma::api::federation::backfill::get_backfill;
use ruma::api::federation::device::get_devices;
use ruma::api::federation::directory::{get_public_rooms, get_public_rooms_filtered};
use ruma::api::federation::event::{
    get_event, get_event_by_timestamp, get_missing_events, get_room_state, get_room_state_ids,
};
use ruma::api::federation::keys::{claim_keys, get_keys};
use ruma::api::federation::query::get_room_information;
use ruma::api::federation::transactions::send_transaction_message;

pub(crate) use self::access::{check_acl, joined_servers};
pub use self::error::InboundError;
pub use self::fetch::verify_pdu;

/// The inbound routes (the caller puts them behind the `X-Matrix` verification layer).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .ruma_route::<send_transaction_message::v1::Request, _, _>(transaction::send_transaction)
        .ruma_route::<get_event::v1::Request, _, _>(events::event)
        .ruma_route::<get_room_state::v1::Request, _, _>(events::state)
        .ruma_route::<get_room_state_ids::v1::Request, _, _>(events::state_ids)
        .ruma_route::<get_event_authorization::v1::Request, _, _>(events::event_auth)
        .ruma_route::<get_backfill::v1::Request, _, _>(events::backfill)
        .ruma_route::<get_missing_events::v1::Request, _, _>(events::missing_events)
        .ruma_route::<get_event_by_timestamp::v1::Request, _, _>(events::timestamp_to_event)
        .ruma_route::<get_room_information::v1::Request, _, _>(directory::query_directory)
        .ruma_route::<get_public_rooms::v1::Request, _, _>(directory::public_rooms)
        .ruma_route::<get_public_rooms_filtered::v1::Request, _, _>(
            directory::public_rooms_filtered,
        )
        .ruma_route::<get_devices::v1::Request, _, _>(user_keys::user_devices)
        .ruma_route::<get_keys::v1::Request, _, _>(user_keys::query_keys)
        .ruma_route::<claim_keys::v1::Request, _, _>(user_keys::claim_keys)
}

/// Runs synchronous storage work off the async runtime.
pub(crate) async fn blocking<T, F>(services: &Arc<Services>, work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Services) -> Result<T, ApiError> + Send + 'static,
{
    let services = Arc::clone(services);
    tokio::task::spawn_blocking(move || work(&services))
        .await
        .map_err(|err| ApiError::internal(format!("blocking task failed: {err}")))?
}
