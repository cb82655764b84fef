//! Axon's server-server (federation) API.
//!
//! Today: the key server, the version endpoint and `/.well-known/matrix/server`. Request signing (X-Matrix), server
//! discovery, the inbound PDU pipeline and the outbound queue arrive with federation proper.

use axon_api::{AppState, RumaRouterExt};
use axum::Router;
use ruma::api::federation::discovery::{discover_homeserver, get_server_keys, get_server_version};

mod keys;
mod version;
mod well_known;

/// Every federation route.
pub fn routes() -> Router<AppState> {
    Router::new()
        .ruma_route::<get_server_keys::v2::Request, _, _>(keys::server_keys)
        .ruma_route::<get_server_version::v1::Request, _, _>(version::server_version)
        .ruma_route::<discover_homeserver::Request, _, _>(well_known::well_known_server)
}
