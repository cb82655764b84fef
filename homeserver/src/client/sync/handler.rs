//! The `/sync` handler and the stored filter endpoints.
//!
//! A sync computes everything after `since` up to the current stream position and typing
//! serial. When there is nothing new and the client gave a `timeout`, the request waits on
//! the stream notifier and the typing serial (both `watch` channels: an idle long poll is its
//! request future, two receivers and the hashes of the user's rooms, nothing more) until
//! either moves. New positions whose recorded audience (a room, a user, a user's room mates)
//! leaves the user out, and typing changes in rooms the user does not watch, are passed
//! without computing anything; otherwise the sync recomputes and keeps waiting while nothing
//! concerns the user, until the deadline.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use axon_api::{ApiError, ApiResult, AppState, Ruma, RumaResponse};
use axon_core::Services;
use axon_core::accounts::AuthenticatedUser;
use axon_core::rooms::graph::{Audience, StreamAudience, StreamPosition};
use axon_core::sync::Typing;
use axum::extract::State;
use axum::{Extension, Json};
use ruma::api::client::filter::{FilterDefinition, create_filter, get_filter};
use ruma::api::client::sync::sync_events;
use ruma::events::room::member::MembershipState;
use ruma::{RoomId, UserId};
use tokio::time::Instant;

use super::context::Context;
use super::ephemeral::global_account_data;
use super::extensions::fill_device_sections;
use super::filter::resolve;
use super::lazy_members::SentMembers;
use super::presence::presence_events;
use super::response::SyncResponse;
use super::rooms::rooms;
use super::token::SyncToken;
use crate::client::rooms::blocking;

/// The longest a sync waits, whatever the client asks (clients use 30 s).
const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest a sync waits for push rule evaluation to reach its position before it answers
/// with the unread counts as they are (evaluation takes well under a millisecond an event;
/// this only matters when the evaluator is failing).
const MAX_EVALUATION_WAIT: Duration = Duration::from_secs(2);
/// How long a sync computing its response on a blocking thread waits there for evaluation.
/// Longer waits happen off the blocking pool, so that many waking syncs cannot hold every
/// blocking thread while the evaluator needs one.
const BLOCKING_EVALUATION_WAIT: Duration = Duration::from_millis(20);

/// # `GET /_matrix/client/v3/sync`
pub(crate) async fn sync(
    State(state): State<AppState>,
    Extension(sent_members): Extension<Arc<SentMembers>>,
    request: Ruma<sync_events::v3::Request>,
) -> ApiResult<Json<SyncResponse>> {
    let user = Arc::new(request.identity);
    let body = request.body;
    let mut since = body.since.as_deref().map(SyncToken::parse).transpose()?;
    let deadline = Instant::now() + body.timeout.unwrap_or_default().min(MAX_TIMEOUT);
    let full_state = body.full_state;

    let filter = {
        let user = Arc::clone(&user);
        let param = body.filter;
        let set_presence = body.set_presence;
        blocking(&state, move |services| {
            let filter = resolve(services, &user.user_id, param)?;
            services
                .presence
                .user_synced(&services.rooms, &user.user_id, &set_presence)
                .map_err(ApiError::internal)?;
            Ok(filter)
        })
        .await?
    };
    let filter = Arc::new(filter);

    let services = state.services_arc();
    let mut stream = services.rooms.subscribe();
    let mut typing = services.typing.subscribe();
    // Whether this sync already waited for a lagging evaluation: it then answers with the
    // counts as they are rather than waiting again.
    let mut waited_for_evaluation = false;
    loop {
        // Marked seen before reading the positions, so a change published after the read
        // wakes the wait below.
        stream.borrow_and_update();
        typing.borrow_and_update();
        let upto = services.rooms.current_stream_position();
        let typing_now = services.typing.current();
        let (response, counts_final, watched) = {
            let (user, filter) = (Arc::clone(&user), Arc::clone(&filter));
            let sent_members = Arc::clone(&sent_members);
            let evaluation_wait = if waited_for_evaluation {
                Duration::ZERO
            } else {
                BLOCKING_EVALUATION_WAIT
            };
            blocking(&state, move |services| {
                let (response, counts_final) = compute(
                    services,
                    &user,
                    &filter,
                    (since, full_state),
                    (upto, typing_now),
                    evaluation_wait,
                    &sent_members,
                )?;
                // Read only by a sync that is going to wait.
                let answers_now = since.is_none() || full_state || response.has_updates();
                let watched = if answers_now || !counts_final {
                    None
                } else {
                    Some(WatchedRooms::of(services, &user.user_id)?)
                };
                Ok((response, counts_final, watched))
            })
            .await?
        };
        if !counts_final && !waited_for_evaluation {
            // Evaluation lags behind: wait for it here, holding no blocking thread, and
            // compute again.
            waited_for_evaluation = true;
            if services
                .push
                .wait_evaluated(upto, MAX_EVALUATION_WAIT)
                .await
            {
                continue;
            }
            tracing::warn!(
                upto = upto.0,
                "push rule evaluation is behind; unread counts may be late"
            );
        }
        let Some(watched) = watched else {
            return Ok(Json(response));
        };
        if Instant::now() >= deadline {
            return Ok(Json(response));
        }
        // Nothing for this user up to here: what comes next is measured from here.
        let mut token = SyncToken {
            stream: upto,
            typing: typing_now,
        };
        // Wait until something after the token concerns this user. Positions whose audience
        // leaves the user out are passed without computing a response, so a busy server's
        // events wake only the syncs they concern.
        loop {
            tokio::select! {
                changed = stream.changed() => {
                    if changed.is_err() {
                        return Ok(Json(response));
                    }
                }
                changed = typing.changed() => {
                    if changed.is_err() {
                        return Ok(Json(response));
                    }
                }
                () = tokio::time::sleep_until(deadline) => return Ok(Json(response)),
            }
            let upto = services.rooms.current_stream_position();
            // Typing in rooms the user does not watch is passed like the positions below.
            let serial = services.typing.current();
            if serial != token.typing {
                if watched.typing_concerns(&services.typing, token.typing, serial) {
                    break;
                }
                token.typing = serial;
            }
            match services.rooms.notifier().audience(token.stream, upto) {
                StreamAudience::Listed(audiences)
                    if !audiences
                        .iter()
                        .any(|audience| watched.concerned(&user.user_id, audience)) =>
                {
                    token.stream = upto;
                }
                _ => break,
            }
        }
        since = Some(token);
    }
}

/// The rooms whose events concern a waiting sync: those the user is joined to, invited to
/// or knocking on (events of rooms they left are not delivered). Held as hashes of the room
/// ids, a few bytes each for thousands of waiters: a collision only makes a sync look.
#[derive(Debug)]
struct WatchedRooms(HashSet<u64>);

impl WatchedRooms {
    fn of(services: &Services, user_id: &UserId) -> Result<Self, ApiError> {
        Ok(Self(
            services
                .rooms
                .rooms_of_user(user_id)?
                .into_iter()
                .filter(|(_, membership)| {
                    matches!(
                        membership,
                        MembershipState::Join | MembershipState::Invite | MembershipState::Knock
                    )
                })
                .map(|(room_id, _)| room_hash(&room_id))
                .collect(),
        ))
    }

    fn contains(&self, room_id: &RoomId) -> bool {
        self.0.contains(&room_hash(room_id))
    }

    /// Whether the typing changes after serial `after` up to `upto` may concern the user: one
    /// is in a watched room, or they are no longer all remembered.
    fn typing_concerns(&self, typing: &Typing, after: u64, upto: u64) -> bool {
        typing
            .rooms_changed_between(after, upto)
            .is_none_or(|rooms| rooms.iter().any(|room_id| self.contains(room_id)))
    }

    /// Whether a position with `audience` may concern `user_id`.
    fn concerned(&self, user_id: &UserId, audience: &Audience) -> bool {
        match audience {
            Audience::Room(room_id) => self.contains(room_id),
            Audience::Member {
                room_id,
                user_id: member,
            } => member == user_id || self.contains(room_id),
            Audience::User(owner) => owner == user_id,
            Audience::Users(owners) => owners.iter().any(|owner| owner == user_id),
            Audience::UserAndRoomMates {
                user_id: subject,
                rooms,
            } => subject == user_id || rooms.iter().any(|room_id| self.contains(room_id)),
        }
    }
}

fn room_hash(room_id: &RoomId) -> u64 {
    let mut hasher = DefaultHasher::new();
    room_id.as_str().hash(&mut hasher);
    hasher.finish()
}

/// One sync response from `since` (with `full_state`) to `upto` (with the typing serial),
/// and whether its unread counts are final: push rule evaluation covered `upto` within
/// `evaluation_wait`.
fn compute(
    services: &Services,
    user: &AuthenticatedUser,
    filter: &FilterDefinition,
    (since, full_state): (Option<SyncToken>, bool),
    (upto, typing_now): (StreamPosition, u64),
    evaluation_wait: Duration,
    sent_members: &SentMembers,
) -> Result<(SyncResponse, bool), ApiError> {
    let ctx = Context::new(
        services,
        user,
        filter,
        since,
        full_state,
        upto,
        sent_members,
    )?;
    // Unread counts come from push rule evaluation, which follows the stream: the counts wait
    // for it to cover `upto`, so the events and their counts arrive in one answer. The wait
    // here is short: a longer one is the caller's, off the blocking pool.
    let mut counts_final = true;
    let counts_ready = || {
        counts_final = services.push.wait_evaluated_blocking(upto, evaluation_wait);
    };
    let mut response = SyncResponse {
        next_batch: SyncToken {
            stream: upto,
            typing: typing_now,
        }
        .to_string(),
        rooms: rooms(&ctx, counts_ready)?,
        account_data: global_account_data(&ctx)?.into(),
        presence: presence_events(&ctx)?.into(),
        ..SyncResponse::default()
    };
    fill_device_sections(
        services,
        user,
        since.map(|since| since.stream),
        upto,
        &mut response,
    )?;
    Ok((response, counts_final))
}

/// # `POST /_matrix/client/v3/user/{userId}/filter`
pub(crate) async fn create(
    State(state): State<AppState>,
    request: Ruma<create_filter::v3::Request>,
) -> ApiResult<RumaResponse<create_filter::v3::Response>> {
    let user = request.identity;
    let body = request.body;
    if body.user_id != user.user_id {
        return Err(ApiError::forbidden("Cannot create filters for other users"));
    }
    let filter = serde_json::to_value(&body.filter)
        .map_err(|err| ApiError::internal(format!("cannot serialise a filter: {err}")))?;
    let filter_id = blocking(&state, move |services| {
        services
            .filters
            .create(&user.user_id, &filter)
            .map_err(sync_error)
    })
    .await?;
    Ok(create_filter::v3::Response::new(filter_id).into())
}

/// # `GET /_matrix/client/v3/user/{userId}/filter/{filterId}`
pub(crate) async fn get(
    State(state): State<AppState>,
    request: Ruma<get_filter::v3::Request>,
) -> ApiResult<RumaResponse<get_filter::v3::Response>> {
    let user = request.identity;
    let body = request.body;
    if body.user_id != user.user_id {
        return Err(ApiError::forbidden("Cannot read other users' filters"));
    }
    let stored = blocking(&state, move |services| {
        services
            .filters
            .get(&user.user_id, &body.filter_id)
            .map_err(sync_error)
    })
    .await?
    .ok_or_else(|| ApiError::not_found("No such filter"))?;
    let filter: FilterDefinition = serde_json::from_value(stored)
        .map_err(|err| ApiError::internal(format!("stored filter unreadable: {err}")))?;
    Ok(get_filter::v3::Response::new(filter).into())
}

/// The API error for a sync service error.
pub(crate) fn sync_error(error: axon_core::sync::SyncError) -> ApiError {
    use axon_core::sync::SyncError;
    match error {
        SyncError::NotFound(what) => ApiError::not_found(format!("Unknown {what}")),
        SyncError::InvalidParam(reason) => ApiError::invalid_param(reason),
        SyncError::Rooms(error) => ApiError::from(error),
        other => ApiError::internal(other),
    }
}

#[cfg(test)]
mod tests {
    use ruma::{OwnedRoomId, OwnedUserId};

    use super::*;

    fn room(id: &str) -> OwnedRoomId {
        OwnedRoomId::try_from(id).unwrap()
    }

    fn user(id: &str) -> OwnedUserId {
        OwnedUserId::try_from(id).unwrap()
    }

    #[tokio::test]
    async fn only_typing_in_a_watched_room_concerns_a_waiting_sync() {
        let watched = WatchedRooms([room_hash(&room("!mine:a.test"))].into_iter().collect());
        let typing = Typing::new(axon_core::sync::TypingSettings::default());
        let you = user("@you:a.test");
        typing.start(&room("!other:a.test"), &you, None);
        typing.start(&room("!third:a.test"), &you, None);
        assert!(!watched.typing_concerns(&typing, 0, 2));
        typing.start(&room("!mine:a.test"), &you, None);
        assert!(watched.typing_concerns(&typing, 0, 3));
        assert!(watched.typing_concerns(&typing, 2, 3));
        assert!(!watched.typing_concerns(&typing, 1, 2));
        // Serials the typing service cannot place may be anywhere.
        assert!(watched.typing_concerns(&typing, 1, 4));
    }

    #[test]
    fn only_audiences_naming_the_user_or_a_watched_room_concern_a_waiting_sync() {
        let watched = WatchedRooms([room_hash(&room("!mine:a.test"))].into_iter().collect());
        let me = user("@me:a.test");
        let concerned = |audience: Audience| watched.concerned(&me, &audience);

        assert!(concerned(Audience::Room(room("!mine:a.test"))));
        assert!(!concerned(Audience::Room(room("!other:a.test"))));
        // Invited to, or removed from, a room not watched yet.
        assert!(concerned(Audience::Member {
            room_id: room("!other:a.test"),
            user_id: me.clone(),
        }));
        assert!(!concerned(Audience::Member {
            room_id: room("!other:a.test"),
            user_id: user("@you:a.test"),
        }));
        assert!(concerned(Audience::User(me.clone())));
        assert!(!concerned(Audience::User(user("@you:a.test"))));
        assert!(concerned(Audience::Users(vec![
            user("@you:a.test"),
            me.clone()
        ])));
        assert!(!concerned(Audience::Users(vec![user("@you:a.test")])));
        assert!(concerned(Audience::UserAndRoomMates {
            user_id: user("@you:a.test"),
            rooms: vec![room("!other:a.test"), room("!mine:a.test")],
        }));
        assert!(!concerned(Audience::UserAndRoomMates {
            user_id: user("@you:a.test"),
            rooms: vec![room("!other:a.test")],
        }));
        assert!(concerned(Audience::UserAndRoomMates {
            user_id: me.clone(),
            rooms: Vec::new(),
        }));
    }
}
