//! Receipts and read markers.
//!
//! `m.read` and `m.read.private` are receipts (threaded with `thread_id`); `m.fully_read` is
//! the `m.fully_read` room account data `{"event_id": ...}`. Each counts as activity for
//! presence.

use std::sync::Arc;

use axon_api::{ApiError, ApiResult, AppState, Ruma, RumaResponse};
use axon_core::Services;
use axon_core::sync::{ReceiptKind, ReceiptThread};
use axon_federation::Federation;
use axon_federation::outbound::{queue_for_room, read_receipt_edu};
use axum::Extension;
use axum::extract::State;
use ruma::api::client::read_marker::set_read_marker;
use ruma::api::client::receipt::create_receipt::{self, v3::ReceiptType};
use ruma::events::receipt::ReceiptThread as ThreadParam;
use ruma::events::room::member::MembershipState;
use ruma::{EventId, RoomId, UserId};
use serde_json::json;

use crate::client::rooms::blocking;
use crate::client::sync::sync_error;

/// What one receipt request asks for.
#[derive(Debug, Clone)]
enum Marker {
    Receipt(ReceiptKind, ReceiptThread),
    FullyRead,
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}`
pub(crate) async fn receipt(
    State(state): State<AppState>,
    Extension(federation): Extension<Arc<Federation>>,
    request: Ruma<create_receipt::v3::Request>,
) -> ApiResult<RumaResponse<create_receipt::v3::Response>> {
    let user = request.identity;
    let body = request.body;
    let thread = thread_of(&body.thread)?;
    let marker = match body.receipt_type {
        ReceiptType::Read => Marker::Receipt(ReceiptKind::Read, thread),
        ReceiptType::ReadPrivate => Marker::Receipt(ReceiptKind::ReadPrivate, thread),
        ReceiptType::FullyRead if thread == ReceiptThread::Unthreaded => Marker::FullyRead,
        ReceiptType::FullyRead => {
            return Err(ApiError::invalid_param("m.fully_read cannot be threaded"));
        }
        other => {
            return Err(ApiError::invalid_param(format!(
                "unsupported receipt type {}",
                other.as_str()
            )));
        }
    };
    blocking(&state, move |services| {
        check_joined(services, &body.room_id, &user.user_id)?;
        mark(
            services,
            &body.room_id,
            &user.user_id,
            &marker,
            &body.event_id,
        )?;
        share_receipt(
            &federation,
            services,
            &body.room_id,
            &user.user_id,
            &marker,
            &body.event_id,
        )?;
        bump_active(services, &user.user_id)
    })
    .await?;
    Ok(create_receipt::v3::Response::new().into())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/read_markers`
pub(crate) async fn read_markers(
    State(state): State<AppState>,
    Extension(federation): Extension<Arc<Federation>>,
    request: Ruma<set_read_marker::v3::Request>,
) -> ApiResult<RumaResponse<set_read_marker::v3::Response>> {
    let user = request.identity;
    let body = request.body;
    blocking(&state, move |services| {
        check_joined(services, &body.room_id, &user.user_id)?;
        let markers = [
            (Marker::FullyRead, body.fully_read),
            (
                Marker::Receipt(ReceiptKind::Read, ReceiptThread::Unthreaded),
                body.read_receipt,
            ),
            (
                Marker::Receipt(ReceiptKind::ReadPrivate, ReceiptThread::Unthreaded),
                body.private_read_receipt,
            ),
        ];
        for (marker, event_id) in markers {
            if let Some(event_id) = event_id {
                mark(services, &body.room_id, &user.user_id, &marker, &event_id)?;
                share_receipt(
                    &federation,
                    services,
                    &body.room_id,
                    &user.user_id,
                    &marker,
                    &event_id,
                )?;
            }
        }
        bump_active(services, &user.user_id)
    })
    .await?;
    Ok(set_read_marker::v3::Response::new().into())
}

fn mark(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
    marker: &Marker,
    event_id: &EventId,
) -> Result<(), ApiError> {
    match marker {
        Marker::Receipt(kind, thread) => {
            services
                .receipts
                .set(&services.rooms, room_id, user_id, *kind, thread, event_id)
                .map_err(sync_error)?;
        }
        Marker::FullyRead => {
            let known = services
                .rooms
                .get_event(event_id)?
                .is_some_and(|event| event.room_id == room_id && event.stream.is_some());
            if !known {
                return Err(ApiError::not_found("Unknown event"));
            }
            services
                .account_data
                .set(
                    &services.rooms,
                    user_id,
                    Some(room_id),
                    "m.fully_read",
                    json!({ "event_id": event_id }),
                )
                .map_err(sync_error)?;
        }
    }
    Ok(())
}

/// Sends a public read receipt to the room's other servers; private receipts and the fully
/// read marker stay here. Receipts are indexed per room, with no server-wide stream a feeder
/// could follow, so the handler queues them right after storing them.
fn share_receipt(
    federation: &Federation,
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
    marker: &Marker,
    event_id: &EventId,
) -> Result<(), ApiError> {
    let Marker::Receipt(ReceiptKind::Read, thread) = marker else {
        return Ok(());
    };
    let edu = read_receipt_edu(room_id, user_id, event_id, thread.thread_id(), now_ms());
    queue_for_room(federation, services, room_id, &edu)?;
    Ok(())
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The thread of a receipt request.
fn thread_of(param: &ThreadParam) -> Result<ReceiptThread, ApiError> {
    Ok(match param {
        ThreadParam::Unthreaded => ReceiptThread::Unthreaded,
        ThreadParam::Main => ReceiptThread::Main,
        ThreadParam::Thread(root) => ReceiptThread::Thread(root.clone()),
        other => {
            return Err(ApiError::invalid_param(format!(
                "invalid thread_id {}",
                other.as_str().unwrap_or_default()
            )));
        }
    })
}

/// Only members of a room send receipts in it.
fn check_joined(services: &Services, room_id: &RoomId, user_id: &UserId) -> Result<(), ApiError> {
    if services.rooms.membership(room_id, user_id)? == Some(MembershipState::Join) {
        Ok(())
    } else {
        Err(ApiError::forbidden("You are not joined to this room"))
    }
}

fn bump_active(services: &Services, user_id: &UserId) -> Result<(), ApiError> {
    services
        .presence
        .bump_active(&services.rooms, user_id)
        .map_err(sync_error)
}
