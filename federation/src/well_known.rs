//! `GET /.well-known/matrix/server`: server-server delegation, served only when configured.

use axon_api::{ApiError, ApiResult, AppState, Ruma, RumaResponse};
use axum::extract::State;
use ruma::OwnedServerName;
use ruma::api::federation::discovery::discover_homeserver;

/// # `GET /.well-known/matrix/server`
pub(crate) async fn well_known_server(
    State(state): State<AppState>,
    _: Ruma<discover_homeserver::Request>,
) -> ApiResult<RumaResponse<discover_homeserver::Response>> {
    let delegated = state
        .config()
        .well_known
        .server
        .as_deref()
        .ok_or_else(|| ApiError::not_found("No server delegation is configured"))?;
    let server = OwnedServerName::try_from(delegated)
        .map_err(|err| ApiError::internal(format!("well_known.server is invalid: {err}")))?;
    Ok(discover_homeserver::Response::new(server).into())
}
