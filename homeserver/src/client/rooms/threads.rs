//! `GET /rooms/{roomId}/threads`: the room's thread roots, most recently active first.
//!
//! Tokens are those of [`super::relations`] (`r<stream>`), naming the latest activity of the
//! last thread looked at; a thread that gets a reply meanwhile moves to the front and is not
//! repeated further down.

use axon_api::{ApiResult, AppState, Ruma, RumaResponse};
use axon_core::rooms::relations;
use axum::extract::State;
use ruma::api::client::threads::get_threads;
use ruma::api::client::threads::get_threads::v1::IncludeThreads;

use super::relations::{parse_token, participated, token, visible_event};
use super::visibility::Reader;
use super::{blocking, client_event_for};

/// Threads per page when the client does not say.
const DEFAULT_LIMIT: usize = 20;
/// The most threads one page returns.
const MAX_LIMIT: usize = 100;
/// How many threads a page may look at, per thread asked for, before answering with fewer.
const SCAN_FACTOR: usize = 4;

/// # `GET /_matrix/client/v1/rooms/{roomId}/threads`
pub(crate) async fn threads(
    State(state): State<AppState>,
    request: Ruma<get_threads::v1::Request>,
) -> ApiResult<RumaResponse<get_threads::v1::Response>> {
    let user = request.identity;
    let body = request.body;
    let from = body.from.as_deref().map(parse_token).transpose()?;
    let limit = body
        .limit
        .map_or(DEFAULT_LIMIT, |limit| {
            usize::try_from(u64::from(limit)).unwrap_or(MAX_LIMIT)
        })
        .clamp(1, MAX_LIMIT);
    let only_participated = body.include == IncludeThreads::Participated;
    blocking(&state, move |services| {
        let rooms = &services.rooms;
        let room_id = &body.room_id;
        let reader = Reader::new(rooms, room_id, &user.user_id)?;
        reader.check_may_paginate(rooms, room_id)?;

        let mut chunk = Vec::new();
        let mut cursor = from;
        let mut exhausted = false;
        let mut budget = limit.saturating_mul(SCAN_FACTOR).saturating_add(20);
        'pages: while chunk.len() < limit && budget > 0 {
            let want = limit.min(budget).max(1);
            let page = relations::threads(&*services.store, room_id, cursor, want)
                .map_err(axon_api::ApiError::internal)?;
            let short = page.len() < want;
            for (stream, root_id) in page {
                budget = budget.saturating_sub(1);
                cursor = Some(stream);
                let Some(root) = visible_event(rooms, &reader, room_id, &root_id)? else {
                    continue;
                };
                if only_participated && !participated(services, &root, &user.user_id)? {
                    continue;
                }
                chunk.push(client_event_for(services, &root, &user)?);
                if chunk.len() == limit {
                    break 'pages;
                }
            }
            if short {
                exhausted = true;
                break;
            }
        }
        let mut response = get_threads::v1::Response::new(chunk);
        response.next_batch = match (exhausted, cursor) {
            (false, Some(stream)) => Some(token(stream)),
            _ => None,
        };
        Ok(response.into())
    })
    .await
}
