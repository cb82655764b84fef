//! `GET /_matrix/federation/v1/version`.

use axon_api::{ApiResult, Ruma, RumaResponse};
use ruma::api::federation::discovery::get_server_version;

/// # `GET /_matrix/federation/v1/version`
pub(crate) async fn server_version(
    _: Ruma<get_server_version::v1::Request>,
) -> ApiResult<RumaResponse<get_server_version::v1::Response>> {
    let mut server = get_server_version::v1::Server::new();
    server.name = Some("Axon".to_owned());
    server.version = Some(env!("CARGO_PKG_VERSION").to_owned());
    let mut response = get_server_version::v1::Response::new();
    response.server = Some(server);
    Ok(response.into())
}
