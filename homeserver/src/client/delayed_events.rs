//! Delayed events (MSC4140): scheduling them (the `org.matrix.msc4140.delay` parameter of
//! `/send` and `/state`, and the newer `delayed_event` endpoint), listing them, restarting,
//! cancelling and sending them, and the scheduler task that sends them when due.
//!
//! The schedule itself lives in `core` ([`axon_core::delayed_events`]). An event is sent
//! through the same append path as a client's (auth rules checked at send time, as the MSC
//! wants), under a transaction keyed by its delay id, so sending it twice (the scheduler and a
//! `send` action racing, or a crash between the append and the removal from the schedule)
//! still appends it once.
//!
//! Finalised events (sent, cancelled, failed) stay queryable: by id, and in the listing with
//! `status=finalised`. Without a `status`, the listing shows the scheduled events only, as
//! this unstable endpoint always did and clients of it expect. A management action repeated
//! on a finalised event succeeds when it matches the outcome and is a 409 when it contradicts
//! it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axon_api::{ApiError, ApiResult, AppState, Ruma, RumaResponse, RumaRouterExt};
use axon_core::accounts::AuthenticatedUser;
use axon_core::delayed_events::{
    DelayedEvent, DelayedEventError, Finalisation, FinalisedDelayedEvent, NewDelayedEvent, Outcome,
    Reason, SendFailure,
};
use axon_core::rooms::graph::{NewEvent, StreamPosition};
use axon_core::rooms::transactions::Transaction;
use axum::extract::{FromRequestParts, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use http::StatusCode;
use http::request::Parts;
use ruma::api::client::delayed_events::update_delayed_event::{
    UpdateAction, unstable_v1, unstable_v2,
};
use ruma::api::client::delayed_events::{
    DelayedEventData, get_all_delayed_events, get_delayed_event, send_delayed_event,
};
use ruma::events::{StateEventType, TimelineEventType};
use ruma::serde::Raw;
use ruma::{
    CanonicalJsonObject, MilliSecondsSinceUnixEpoch, OwnedDeviceId, OwnedEventId, OwnedRoomId, UInt,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::rooms::{append, blocking, canonical_content};

/// The query parameter of `/send` and `/state` that asks for a delayed event.
const DELAY_PARAM: &str = "org.matrix.msc4140.delay";

/// The device under which delayed events are sent. It is no real device, so the transaction
/// mapping that makes sending idempotent never shows up as a client's `transaction_id`; its
/// transaction id is the delay id, which the sender sees in the event's `unsigned`.
pub(crate) const SENDING_DEVICE: &str = "org.matrix.msc4140.delayed_events";

/// How many due events the scheduler sends before it looks at the clock again.
const DUE_BATCH: usize = 32;

/// How many room events the scheduler reads at once when it follows the stream.
const STREAM_BATCH: usize = 256;

/// How long the scheduler waits after a storage error before it tries again.
const ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// Every delayed-event route except the delay parameter of `/send` and `/state`.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .ruma_route::<send_delayed_event::unstable::Request, _, _>(schedule)
        .ruma_route::<get_all_delayed_events::unstable::Request, _, _>(list)
        .ruma_route::<get_delayed_event::unstable::Request, _, _>(get)
        .ruma_route::<unstable_v1::Request, _, _>(update_with_body)
        .ruma_route::<unstable_v2::Request, _, _>(update_by_path)
}

/// The `org.matrix.msc4140.delay` query parameter, when the request has one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DelayParam(pub(crate) Option<Duration>);

#[derive(Deserialize)]
struct DelayQuery {
    #[serde(rename = "org.matrix.msc4140.delay")]
    delay: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for DelayParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Ok(Query(query)) = Query::<DelayQuery>::try_from_uri(&parts.uri) else {
            // A query string that is not a form at all: the endpoint's own parsing reports it.
            return Ok(Self(None));
        };
        match query.delay {
            None => Ok(Self(None)),
            Some(text) => text
                .parse::<u64>()
                .map(|ms| Self(Some(Duration::from_millis(ms))))
                .map_err(|_| {
                    ApiError::invalid_param(format!(
                        "{DELAY_PARAM} must be a whole number of milliseconds"
                    ))
                }),
        }
    }
}

/// What a client asks to schedule.
#[derive(Debug)]
pub(crate) struct Schedule {
    /// The room.
    pub(crate) room_id: OwnedRoomId,
    /// The event type.
    pub(crate) event_type: String,
    /// The state key, for a state event.
    pub(crate) state_key: Option<String>,
    /// The client's transaction id, for the endpoints that take one.
    pub(crate) txn_id: Option<String>,
    /// The content.
    pub(crate) content: CanonicalJsonObject,
    /// The delay.
    pub(crate) delay: Duration,
}

/// Schedules an event for `user` and answers `{"delay_id": ...}`: the shared tail of `/send`
/// and `/state` with a delay and of the `delayed_event` endpoint.
pub(crate) async fn schedule_for(
    state: &AppState,
    user: AuthenticatedUser,
    request: Schedule,
) -> ApiResult<Response> {
    let new = NewDelayedEvent {
        user_id: user.user_id,
        device_id: user.device_id,
        txn_id: request.txn_id,
        room_id: request.room_id,
        event_type: request.event_type,
        state_key: request.state_key,
        content: request.content,
        delay: request.delay,
        after_stream: 0,
    };
    let scheduled = blocking(state, move |services| {
        let new = NewDelayedEvent {
            after_stream: services.rooms.current_stream_position().0,
            ..new
        };
        Ok(services.delayed_events.schedule(new, now_ms()))
    })
    .await?;
    match scheduled {
        Ok(delay_id) => Ok(Json(json!({ "delay_id": delay_id })).into_response()),
        Err(error) => Ok(schedule_error(error)),
    }
}

/// The response for a refused schedule. `M_MAX_DELAY_EXCEEDED` carries the maximum, which
/// [`ApiError`] has no field for, so it is built here.
fn schedule_error(error: DelayedEventError) -> Response {
    match error {
        DelayedEventError::MaxDelayExceeded { max } => {
            let max_ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
            (
                StatusCode::BAD_REQUEST,
                Json(json!({
                    "errcode": "M_MAX_DELAY_EXCEEDED",
                    "error": format!("The delay must be between 1 and {max_ms} milliseconds"),
                    "max_delay": max_ms,
                    "org.matrix.msc4140.max_delay": max_ms,
                })),
            )
                .into_response()
        }
        DelayedEventError::TooMany { retry_after } => {
            // Retry-After counts whole seconds; round up so a retry is not refused again.
            let retry_after = Duration::from_secs(retry_after.as_millis().div_ceil(1000) as u64);
            ApiError::limit_exceeded(retry_after).into_response()
        }
        other => delayed_error(other).into_response(),
    }
}

/// The `ApiError` for errors of the management endpoints.
fn delayed_error(error: DelayedEventError) -> ApiError {
    match error {
        DelayedEventError::NotFound => ApiError::not_found("No delayed event with this id"),
        DelayedEventError::AlreadyFinalised(outcome) => ApiError::with_status(
            StatusCode::CONFLICT,
            ruma::api::error::ErrorKind::Unknown,
            format!(
                "The delayed event was already finalised (outcome: {outcome}) and cannot be \
                 changed"
            ),
        ),
        other => ApiError::internal(other),
    }
}

/// The filters of the listing (MSC4140's query parameters).
#[derive(Debug, Default)]
pub(crate) struct ListFilter {
    status: Option<Status>,
    outcome: Option<Outcome>,
    reason: Option<Reason>,
    room_id: Option<String>,
    event_type: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Scheduled,
    Finalised,
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    outcome: Option<String>,
    reason: Option<String>,
    room_id: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for ListFilter {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Ok(Query(query)) = Query::<ListQuery>::try_from_uri(&parts.uri) else {
            return Err(ApiError::invalid_param("the query string is not a form"));
        };
        let invalid = |name: &str, value: &str| {
            ApiError::invalid_param(format!("unsupported {name}: {value:?}"))
        };
        let status = match query.status.as_deref() {
            None => None,
            Some("scheduled") => Some(Status::Scheduled),
            Some("finalised") => Some(Status::Finalised),
            Some(other) => return Err(invalid("status", other)),
        };
        let outcome = match query.outcome.as_deref() {
            None => None,
            Some("send") => Some(Outcome::Send),
            Some("cancel") => Some(Outcome::Cancel),
            Some("error") => Some(Outcome::Error),
            Some(other) => return Err(invalid("outcome", other)),
        };
        let reason = match query.reason.as_deref() {
            None => None,
            Some("action") => Some(Reason::Action),
            Some("delay") => Some(Reason::Delay),
            Some(other) => return Err(invalid("reason", other)),
        };
        Ok(Self {
            status,
            outcome,
            reason,
            room_id: query.room_id,
            event_type: query.event_type,
        })
    }
}

impl ListFilter {
    /// Whether finalised events are listed: when asked for by status, or implied by an
    /// outcome or reason filter.
    fn finalised(&self) -> bool {
        self.status == Some(Status::Finalised)
            || (self.status.is_none() && (self.outcome.is_some() || self.reason.is_some()))
    }

    fn scheduled(&self) -> bool {
        !self.finalised()
    }

    fn keeps(&self, event: &DelayedEvent) -> bool {
        self.room_id
            .as_deref()
            .is_none_or(|room| room == event.room_id.as_str())
            && self
                .event_type
                .as_deref()
                .is_none_or(|kind| kind == event.event_type)
    }

    fn keeps_finalised(&self, done: &FinalisedDelayedEvent) -> bool {
        self.keeps(&done.event)
            && self.outcome.is_none_or(|outcome| outcome == done.outcome)
            && self.reason.is_none_or(|reason| reason == done.reason)
    }
}

/// # `PUT /_matrix/client/unstable/org.matrix.msc4140/rooms/{roomId}/delayed_event/{eventType}/{txnId}`
async fn schedule(
    State(state): State<AppState>,
    request: Ruma<send_delayed_event::unstable::Request>,
) -> ApiResult<Response> {
    let body = request.body;
    let content = canonical_content(&body.content)?;
    let schedule = Schedule {
        room_id: body.room_id,
        event_type: body.event_type.to_string(),
        state_key: body.state_key,
        txn_id: Some(body.txn_id.to_string()),
        content,
        delay: body.delay,
    };
    schedule_for(&state, request.identity, schedule).await
}

/// # `GET /_matrix/client/unstable/org.matrix.msc4140/delayed_events`
///
/// The user's scheduled events, the next due first; with `status=finalised` (or an `outcome`
/// or `reason` filter) their finalised events still kept, the earliest finalised first.
/// `room_id` and `type` filter either list.
async fn list(
    State(state): State<AppState>,
    filter: ListFilter,
    request: Ruma<get_all_delayed_events::unstable::Request>,
) -> ApiResult<Response> {
    let user_id = request.identity.user_id;
    let finalised = filter.finalised();
    let (scheduled, done) = blocking(&state, move |services| {
        let events = &services.delayed_events;
        let scheduled = if finalised {
            Vec::new()
        } else {
            events.of_user(&user_id).map_err(ApiError::internal)?
        };
        let done = if finalised {
            events
                .finalised_of_user(&user_id)
                .map_err(ApiError::internal)?
        } else {
            Vec::new()
        };
        Ok((scheduled, done))
    })
    .await?;
    let mut listed = Vec::new();
    if filter.scheduled() {
        for event in scheduled.iter().filter(|event| filter.keeps(event)) {
            listed.push(event_json(event)?);
        }
    }
    for done in done.iter().filter(|done| filter.keeps_finalised(done)) {
        listed.push(finalised_json(done)?);
    }
    Ok(Json(json!({ "delayed_events": listed })).into_response())
}

/// # `GET /_matrix/client/unstable/org.matrix.msc4140/delayed_events/{delayId}`
///
/// A scheduled event, or a finalised one still kept.
async fn get(
    State(state): State<AppState>,
    request: Ruma<get_delayed_event::unstable::Request>,
) -> ApiResult<Response> {
    let user_id = request.identity.user_id;
    let delay_id = request.body.delay_id;
    let (scheduled, done) = blocking(&state, move |services| {
        let events = &services.delayed_events;
        let scheduled = events.get(&delay_id).map_err(ApiError::internal)?;
        let done = match scheduled {
            Some(_) => None,
            None => events.finalised(&delay_id).map_err(ApiError::internal)?,
        };
        Ok((scheduled, done))
    })
    .await?;
    // Another user's event is as unknown as a missing one.
    let data = match (scheduled, done) {
        (Some(event), _) if event.user_id == user_id => event_json(&event)?,
        (None, Some(done)) if done.event.user_id == user_id => finalised_json(&done)?,
        _ => return Err(delayed_error(DelayedEventError::NotFound)),
    };
    Ok(Json(data).into_response())
}

/// # `POST /_matrix/client/unstable/org.matrix.msc4140/delayed_events/{delayId}`
///
/// The earlier form of the management endpoint, with the action in the body and an access
/// token: only the user's own events can be managed through it.
async fn update_with_body(
    State(state): State<AppState>,
    request: Ruma<unstable_v1::Request>,
) -> ApiResult<RumaResponse<unstable_v1::Response>> {
    let user_id = request.identity.user_id;
    let delay_id = request.body.delay_id;
    let owner = {
        let delay_id = delay_id.clone();
        blocking(&state, move |services| {
            let events = &services.delayed_events;
            Ok(match events.get(&delay_id).map_err(ApiError::internal)? {
                Some(event) => Some(event.user_id),
                None => events
                    .finalised(&delay_id)
                    .map_err(ApiError::internal)?
                    .map(|done| done.event.user_id),
            })
        })
        .await?
    };
    if owner.as_deref() != Some(&*user_id) {
        return Err(delayed_error(DelayedEventError::NotFound));
    }
    apply(&state, delay_id, request.body.action).await?;
    Ok(unstable_v1::Response::new().into())
}

/// # `POST /_matrix/client/unstable/org.matrix.msc4140/delayed_events/{delayId}/{action}`
///
/// Unauthenticated: knowing the (unguessable) delay id is the authorisation, so a client can
/// hand the control of its event to another service, such as the SFU of a call.
async fn update_by_path(
    State(state): State<AppState>,
    request: Ruma<unstable_v2::Request>,
) -> ApiResult<RumaResponse<unstable_v2::Response>> {
    apply(&state, request.body.delay_id, request.body.action).await?;
    Ok(unstable_v2::Response::new().into())
}

/// Restarts, cancels or sends `delay_id`.
async fn apply(state: &AppState, delay_id: String, action: UpdateAction) -> ApiResult<()> {
    match action {
        UpdateAction::Restart => blocking(state, move |services| {
            Ok(services.delayed_events.restart(&delay_id, now_ms()))
        })
        .await?
        .map(drop)
        .map_err(delayed_error),
        UpdateAction::Cancel => blocking(state, move |services| {
            Ok(services.delayed_events.cancel(&delay_id, now_ms()))
        })
        .await?
        .map(drop)
        .map_err(delayed_error),
        UpdateAction::Send => {
            let (scheduled, done) = blocking(state, move |services| {
                let events = &services.delayed_events;
                let scheduled = events.get(&delay_id).map_err(ApiError::internal)?;
                let done = match scheduled {
                    Some(_) => None,
                    None => events.finalised(&delay_id).map_err(ApiError::internal)?,
                };
                Ok((scheduled, done))
            })
            .await?;
            match (scheduled, done) {
                // On failure the event stays scheduled: the cause (a missing permission) may
                // be gone by its due time, and the client may retry the action until then.
                (Some(event), _) => send(state, event, Reason::Action).await.map(drop),
                // A retry of a send that went through.
                (None, Some(done)) if done.outcome == Outcome::Send => Ok(()),
                (None, Some(done)) => Err(delayed_error(DelayedEventError::AlreadyFinalised(
                    done.outcome,
                ))),
                (None, None) => Err(delayed_error(DelayedEventError::NotFound)),
            }
        }
        other => Err(ApiError::invalid_param(format!(
            "unknown action {:?}: expected restart, cancel or send",
            other.as_str()
        ))),
    }
}

/// Appends `event` to its room, then finalises it as sent (for `reason`).
async fn send(state: &AppState, event: DelayedEvent, reason: Reason) -> ApiResult<OwnedEventId> {
    let delay_id = event.delay_id.clone();
    let transaction = Transaction {
        user_id: event.user_id.clone(),
        device_id: OwnedDeviceId::from(SENDING_DEVICE),
        txn_id: delay_id.clone(),
    };
    let new_event = match event.state_key {
        Some(state_key) => NewEvent::state(
            event.room_id,
            event.user_id,
            StateEventType::from(event.event_type),
            state_key,
            event.content,
        ),
        None => NewEvent::message(
            event.room_id,
            event.user_id,
            TimelineEventType::from(event.event_type),
            event.content,
        ),
    };
    let event_id = append(state, new_event, Some(transaction)).await?;
    let how = Finalisation {
        outcome: Outcome::Send,
        reason,
        event_id: Some(event_id.clone()),
        error: None,
    };
    finalise(state, delay_id, how).await?;
    Ok(event_id)
}

async fn finalise(state: &AppState, delay_id: String, how: Finalisation) -> ApiResult<()> {
    blocking(state, move |services| {
        services
            .delayed_events
            .finalise(&delay_id, how, now_ms())
            .map(drop)
            .map_err(ApiError::internal)
    })
    .await
}

/// The scheduler: sends each delayed event when it falls due (at once for those that fell due
/// while the server was down), and cancels delayed state events whose state another user
/// changed. It sleeps until the next due time, waking early when the schedule changes or new
/// events arrive; it never polls.
pub(crate) async fn run_scheduler(state: AppState) {
    let services = state.services_arc();
    let mut stream = services.rooms.subscribe();
    // The stream is followed from start-up on: a state change that a crash kept from being
    // handled does not cancel anything after the restart (the position followed is not
    // persisted).
    let mut followed = *stream.borrow_and_update();
    let mut next_due = None;
    let mut schedule_changed = true;
    loop {
        let step = async {
            followed = cancel_overwritten(&state, followed).await?;
            if schedule_changed {
                next_due = send_due(&state).await?;
            }
            Ok::<(), ApiError>(())
        };
        if let Err(error) = step.await {
            tracing::error!(%error, "delayed events: scheduler step failed; retrying");
            tokio::time::sleep(ERROR_BACKOFF).await;
            continue;
        }
        schedule_changed = false;
        if services.rooms.current_stream_position() > followed {
            continue;
        }
        let sleep = next_due.map(|due| {
            let wait = Duration::from_millis(due.saturating_sub(now_ms()));
            tokio::time::sleep(wait)
        });
        tokio::select! {
            () = services.delayed_events.changed() => schedule_changed = true,
            changed = stream.changed() => {
                if changed.is_err() {
                    // The rooms service is gone: the server is shutting down.
                    return;
                }
            }
            () = async {
                match sleep {
                    Some(sleep) => sleep.await,
                    None => std::future::pending().await,
                }
            } => schedule_changed = true,
        }
    }
}

/// Sends the events due now, a batch at a time; returns when the next one is due.
async fn send_due(state: &AppState) -> Result<Option<u64>, ApiError> {
    loop {
        let (due, next_due) = blocking(state, |services| {
            let now = now_ms();
            let due = services
                .delayed_events
                .due(now, DUE_BATCH)
                .map_err(ApiError::internal)?;
            let next = services
                .delayed_events
                .next_due_ms()
                .map_err(ApiError::internal)?;
            Ok((due, next))
        })
        .await?;
        if due.is_empty() {
            return Ok(next_due);
        }
        for event in due {
            let delay_id = event.delay_id.clone();
            let room_id = event.room_id.clone();
            match send(state, event, Reason::Delay).await {
                Ok(event_id) => {
                    tracing::debug!(%delay_id, %room_id, %event_id, "delayed event sent");
                }
                Err(error) => {
                    // Not retried (the MSC): kept as failed, with the error, for the client.
                    tracing::info!(
                        %delay_id, %room_id, error = %error.message(),
                        "delayed event could not be sent"
                    );
                    let errcode = error
                        .body()
                        .get("errcode")
                        .and_then(Value::as_str)
                        .unwrap_or("M_UNKNOWN")
                        .to_owned();
                    let how = Finalisation {
                        outcome: Outcome::Error,
                        reason: Reason::Delay,
                        event_id: None,
                        error: Some(SendFailure {
                            errcode,
                            error: error.message().to_owned(),
                        }),
                    };
                    finalise(state, delay_id, how).await?;
                }
            }
        }
    }
}

/// Cancels the delayed state events overwritten by state events appended after `followed`;
/// returns the position now followed.
async fn cancel_overwritten(
    state: &AppState,
    followed: StreamPosition,
) -> Result<StreamPosition, ApiError> {
    // Read the position before the check: anything scheduled after the check was scheduled
    // after this position, so the events skipped cannot concern it. Most of the time nothing
    // is scheduled, and new events cost the scheduler no read at all.
    let current = state.services().rooms.current_stream_position();
    if !state.services().delayed_events.has_scheduled_state() {
        return Ok(current.max(followed));
    }
    blocking(state, move |services| {
        let mut followed = followed;
        loop {
            // Not every position holds an event (per-user data shares the stream), so a batch
            // that is not full means everything up to `published` was seen.
            let published = services.rooms.current_stream_position();
            let events = services.rooms.events_after(followed, STREAM_BATCH)?;
            let caught_up = events.len() < STREAM_BATCH;
            if let Some((last, _)) = events.last() {
                followed = followed.max(*last);
            }
            if caught_up {
                followed = followed.max(published);
            }
            for (position, stored) in &events {
                let pdu = &stored.pdu;
                let Some(state_key) = pdu.state_key() else {
                    continue;
                };
                let cancelled = services
                    .delayed_events
                    .cancel_overwritten_state(
                        &stored.room_id,
                        &pdu.kind().to_string(),
                        state_key,
                        pdu.sender(),
                        position.0,
                        now_ms(),
                    )
                    .map_err(ApiError::internal)?;
                for event in cancelled {
                    tracing::debug!(
                        delay_id = %event.delay_id,
                        "delayed state event cancelled: another user changed that state"
                    );
                }
            }
            if caught_up {
                return Ok(followed);
            }
        }
    })
    .await
}

/// A scheduled `event` as the MSC's `GET` endpoints show it.
fn event_json(event: &DelayedEvent) -> ApiResult<Value> {
    serde_json::to_value(event_data(event)?).map_err(ApiError::internal)
}

/// A finalised event as the MSC's `GET` endpoints show it: the scheduled fields, plus
/// `event_id` when sent, `error` when sending failed, and when it was finalised
/// (`origin_server_ts` in the MSC's current text, `finalised_ts` in its earlier one), with its
/// `outcome` and `reason`.
fn finalised_json(done: &FinalisedDelayedEvent) -> ApiResult<Value> {
    let mut value = event_json(&done.event)?;
    let Some(object) = value.as_object_mut() else {
        return Err(ApiError::internal("a delayed event is not a JSON object"));
    };
    if let Some(event_id) = &done.event_id {
        object.insert("event_id".to_owned(), Value::from(event_id.as_str()));
    }
    if let Some(error) = &done.error {
        object.insert(
            "error".to_owned(),
            json!({ "errcode": error.errcode, "error": error.error }),
        );
    }
    object.insert(
        "origin_server_ts".to_owned(),
        Value::from(done.finalised_ts),
    );
    object.insert("finalised_ts".to_owned(), Value::from(done.finalised_ts));
    object.insert("outcome".to_owned(), Value::from(done.outcome.as_str()));
    object.insert("reason".to_owned(), Value::from(done.reason.as_str()));
    Ok(value)
}

/// `event` as ruma's type for the MSC's `GET` endpoints.
fn event_data(event: &DelayedEvent) -> ApiResult<DelayedEventData> {
    let content = serde_json::value::to_raw_value(&event.content).map_err(ApiError::internal)?;
    Ok(DelayedEventData::new(
        event.delay_id.clone(),
        event.room_id.clone(),
        TimelineEventType::from(event.event_type.clone()),
        event.state_key.clone(),
        Raw::from_json(content),
        Duration::from_millis(event.delay_ms),
        MilliSecondsSinceUnixEpoch(UInt::new_saturating(event.running_since_ms)),
    ))
}

/// Now, in milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}
