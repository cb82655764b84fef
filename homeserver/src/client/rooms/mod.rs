//! Rooms: creating them, sending and reading events and state, membership, pagination.
//!
//! The handlers stay thin: they parse, check what belongs to the client-server API (history
//! visibility, transaction ids, pagination tokens), call `core`'s rooms service, and shape
//! the response. Events are served in the client format of [`format`].

pub(crate) mod aliases;
pub(crate) mod context;
pub(crate) mod create;
pub(crate) mod directory;
pub(crate) mod filter;
pub(crate) mod format;
pub(crate) mod hierarchy;
pub(crate) mod knock;
pub(crate) mod members;
pub(crate) mod membership;
pub(crate) mod messages;
pub(crate) mod read;
pub(crate) mod relations;
pub(crate) mod report;
pub(crate) mod send;
pub(crate) mod summary;
pub(crate) mod threads;
pub(crate) mod timestamp;
pub(crate) mod tokens;
pub(crate) mod upgrade;
pub(crate) mod visibility;

use std::sync::Arc;

use axon_api::{ApiError, AppState};
use axon_core::Services;
use axon_core::accounts::AuthenticatedUser;
use axon_core::rooms::graph::NewEvent;
use axon_core::rooms::pdu::Pdu;
use axon_core::rooms::transactions::{self, Transaction};
use axum::Router;
use axum::handler::Handler;
use axum::routing::{MethodFilter, on};
use ruma::api::IncomingRequest;
use ruma::api::client::state::{get_state_event_for_key, send_state_event};
use ruma::api::path_builder::PathBuilder;
use ruma::serde::Raw;
use ruma::{CanonicalJsonObject, OwnedEventId};

use super::delayed_events;

/// Runs synchronous rooms work (store reads, appends with their synced write) on the blocking
/// pool.
pub(crate) async fn blocking<T, F>(state: &AppState, work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Services) -> Result<T, ApiError> + Send + 'static,
{
    let services: Arc<Services> = state.services_arc();
    tokio::task::spawn_blocking(move || work(&services))
        .await
        .map_err(|err| ApiError::internal(format!("blocking task failed: {err}")))?
}

/// Appends a local event under its room's write lock and returns its id.
///
/// With a transaction, a retry of the same device's transaction id returns the first event's
/// id instead: the mapping is looked up again under the lock, so concurrent retries cannot
/// both append, and it is written in the event's own batch, so a crash cannot forget it.
pub(crate) async fn append(
    state: &AppState,
    mut event: NewEvent,
    transaction: Option<Transaction>,
) -> Result<OwnedEventId, ApiError> {
    let services = state.services_arc();
    let guard = match sent_in(&services, transaction.as_ref())? {
        Some(_) => None,
        None => Some(services.rooms.lock(&event.room_id).await),
    };
    blocking(state, move |services| {
        if let Some(done) = sent_in(services, transaction.as_ref())? {
            // The first attempt may still be waiting for its write to become durable: the
            // retry must not be acknowledged before it.
            services.rooms.sync_written()?;
            return Ok(done);
        }
        let Some(guard) = guard else {
            return Err(ApiError::internal("transaction mapping vanished"));
        };
        event.transaction = transaction;
        let sender = event.sender.clone();
        let appended = services.rooms.append_local_and_unlock(guard, event)?;
        // The room's members' syncs wait for the event's push evaluation: doing it here saves
        // them waiting for the evaluator to be scheduled. A failure leaves it to the evaluator.
        if let Err(err) = services.push.evaluate_published(&services.rooms) {
            tracing::warn!(%err, "evaluating push rules after a send failed");
        }
        // Sending is activity: the sender is online and active now. The event is already
        // durable, so a failure here must not fail the send.
        if let Err(err) = services.presence.bump_active(&services.rooms, &sender) {
            tracing::warn!(%sender, %err, "could not record activity for presence");
        }
        Ok(appended.event_id)
    })
    .await
}

/// The event already sent in `transaction`, if any.
fn sent_in(
    services: &Services,
    transaction: Option<&Transaction>,
) -> Result<Option<OwnedEventId>, ApiError> {
    let Some(transaction) = transaction else {
        return Ok(None);
    };
    transactions::transaction_event(
        &*services.store,
        &transaction.user_id,
        &transaction.device_id,
        &transaction.txn_id,
    )
    .map_err(ApiError::internal)
}

/// An event content from a client as canonical JSON (`M_BAD_JSON` for floats or values out
/// of the canonical range, which no event may hold).
pub(crate) fn canonical_content<T>(raw: &Raw<T>) -> Result<CanonicalJsonObject, ApiError> {
    serde_json::from_str(raw.json().get())
        .map_err(|err| ApiError::bad_json(format!("event content is not canonical JSON: {err}")))
}

/// `pdu` in the client format for `reader`, with its transaction id when `reader` is the
/// device that sent it.
pub(crate) fn client_event_for<T>(
    services: &Services,
    pdu: &Pdu,
    reader: &AuthenticatedUser,
) -> Result<Raw<T>, ApiError> {
    format::to_raw(&client_event_value(services, pdu, reader)?)
}

/// [`client_event_for`] as a JSON value, for callers that reshape it further.
pub(crate) fn client_event_value(
    services: &Services,
    pdu: &Pdu,
    reader: &AuthenticatedUser,
) -> Result<serde_json::Value, ApiError> {
    let transaction = if pdu.sender() == reader.user_id {
        transactions::event_transaction(&*services.store, pdu.event_id())
            .map_err(ApiError::internal)?
    } else {
        None
    };
    // The transaction id only for the device that sent the event; an event a delayed event
    // sent carries its delay id for every device of the sender (MSC4140).
    let transaction_id = transaction
        .as_ref()
        .filter(|transaction| transaction.device_id == reader.device_id)
        .map(|transaction| transaction.txn_id.as_str());
    let delay_id = transaction
        .as_ref()
        .filter(|transaction| transaction.device_id.as_str() == delayed_events::SENDING_DEVICE)
        .map(|transaction| transaction.txn_id.as_str());
    // Bundled aggregations (edits, threads, references): one index scan per served event.
    let relations = relations::bundled(services, pdu, &reader.user_id)?;
    Ok(format::client_event_json(
        pdu,
        format::Serving {
            transaction_id,
            delay_id,
            relations: relations.as_ref(),
        },
    ))
}

/// The forms of the state endpoints without a state key: the spec lets clients leave an empty
/// `{stateKey}` out of `/state/{eventType}/{stateKey}`, with or without the trailing slash,
/// and the router cannot match an empty path segment. The paths are derived from ruma's
/// metadata of each endpoint, like every other route.
pub(crate) fn empty_state_key_routes() -> Router<AppState> {
    let router = Router::new();
    let router =
        without_state_key::<get_state_event_for_key::v3::Request, _, _>(router, read::state_event);
    without_state_key::<send_state_event::v3::Request, _, _>(router, send::send_state)
}

/// Routes `handler` under every path of `R` that ends in `{state_key}`, with that segment
/// left out.
fn without_state_key<R, H, T>(router: Router<AppState>, handler: H) -> Router<AppState>
where
    R: IncomingRequest,
    H: Handler<T, AppState>,
    T: 'static,
{
    let Ok(filter) = MethodFilter::try_from(R::METHOD) else {
        return router;
    };
    let mut router = router;
    let mut seen = Vec::new();
    for path in R::PATH_BUILDER.all_paths() {
        let Some(prefix) = path.strip_suffix("/{state_key}") else {
            continue;
        };
        for short in [prefix.to_owned(), format!("{prefix}/")] {
            if !seen.contains(&short) {
                router = router.route(&short, on(filter, handler.clone()));
                seen.push(short);
            }
        }
    }
    router
}
