//! `/sync` (v3) and stored filters.
//!
//! - [`token`]: the composite `next_batch` token;
//! - [`filter`]: resolving and applying filters;
//! - [`lazy_members`]: the membership events lazy-loading syncs sent to each device;
//! - [`context`]: what one computation knows (user, filter, range, per-user data);
//! - [`rooms`], [`timeline`], [`ephemeral`]: the room sections;
//! - [`presence`]: presence events and who may see them;
//! - [`extensions`]: the sections other services fill (to-device, device lists, key counts,
//!   unread counts);
//! - [`response`]: the response shape;
//! - [`handler`]: the endpoint with its long poll, and the filter endpoints.

mod context;
mod ephemeral;
mod extensions;
pub(crate) mod filter;
mod handler;
mod lazy_members;
pub(crate) mod presence;
mod response;
mod rooms;
mod timeline;
pub(crate) mod token;

use std::sync::Arc;

use axon_api::{AppState, RumaRouterExt};
use axum::{Extension, Router};
use ruma::api::client::filter::{create_filter, get_filter};
use ruma::api::client::sync::sync_events;

pub(crate) use self::handler::sync_error;

/// The sync and filter routes. The record of the members sent to each device lives with
/// the sync route: it is the route's own state, kept for as long as the server runs.
pub(crate) fn routes() -> Router<AppState> {
    let sent_members = Arc::new(lazy_members::SentMembers::default());
    Router::new()
        .ruma_route::<sync_events::v3::Request, _, _>(handler::sync)
        .layer(Extension(sent_members))
        .ruma_route::<create_filter::v3::Request, _, _>(handler::create)
        .ruma_route::<get_filter::v3::Request, _, _>(handler::get)
}
