//! The room directory: `/directory/list/room/{roomId}` and `/publicRooms`.
//!
//! Publishing a room takes the power to change its canonical alias (or being a server admin),
//! as Synapse does; the spec leaves the permission to the server. Only this server's directory
//! is served: asking for another server's is `M_INVALID_PARAM` until federation can fetch it,
//! and third-party networks have no rooms here.

use axon_api::{ApiError, ApiResult, AppState, Ruma, RumaResponse};
use axon_core::rooms::directory::{self, DirectoryError, DirectoryPage, DirectoryQuery};
use axon_core::rooms::power;
use axum::extract::State;
use ruma::api::client::directory::{
    get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility,
};
use ruma::api::client::room::Visibility;
use ruma::directory::RoomNetwork;
use ruma::events::StateEventType;
use ruma::{ServerName, UInt};

use super::blocking;

fn directory_error(error: DirectoryError) -> ApiError {
    match error {
        DirectoryError::InvalidToken(token) => {
            ApiError::invalid_param(format!("Invalid pagination token {token:?}"))
        }
        DirectoryError::Room(error) => ApiError::from(error),
        other => ApiError::internal(other),
    }
}

/// # `GET /_matrix/client/v3/directory/list/room/{roomId}`
pub(crate) async fn get_visibility(
    State(state): State<AppState>,
    request: Ruma<get_room_visibility::v3::Request>,
) -> ApiResult<RumaResponse<get_room_visibility::v3::Response>> {
    let room_id = request.body.room_id;
    let published = blocking(&state, move |services| {
        if services.rooms.room_info(&room_id)?.is_none() {
            return Err(ApiError::not_found(format!("Unknown room {room_id}")));
        }
        directory::is_published(&*services.store, &room_id).map_err(ApiError::internal)
    })
    .await?;
    let visibility = if published {
        Visibility::Public
    } else {
        Visibility::Private
    };
    Ok(get_room_visibility::v3::Response::new(visibility).into())
}

/// # `PUT /_matrix/client/v3/directory/list/room/{roomId}`
pub(crate) async fn set_visibility(
    State(state): State<AppState>,
    request: Ruma<set_room_visibility::v3::Request>,
) -> ApiResult<RumaResponse<set_room_visibility::v3::Response>> {
    let user = request.identity;
    let body = request.body;
    let published = match body.visibility {
        Visibility::Public => true,
        Visibility::Private => false,
        other => {
            return Err(ApiError::invalid_param(format!(
                "Unknown visibility {:?}",
                other.as_str()
            )));
        }
    };
    blocking(&state, move |services| {
        let room_id = body.room_id;
        if services.rooms.room_info(&room_id)?.is_none() {
            return Err(ApiError::not_found(format!("Unknown room {room_id}")));
        }
        let allowed = user.is_admin
            || power::may_send_state(
                &services.rooms,
                &room_id,
                &user.user_id,
                StateEventType::RoomCanonicalAlias,
            )?;
        if !allowed {
            return Err(ApiError::forbidden(
                "You need the power to change the room's canonical alias to publish it",
            ));
        }
        directory::set_published(&*services.store, &room_id, published).map_err(ApiError::internal)
    })
    .await?;
    Ok(set_room_visibility::v3::Response::new().into())
}

/// # `GET /_matrix/client/v3/publicRooms`
pub(crate) async fn public_rooms(
    State(state): State<AppState>,
    request: Ruma<get_public_rooms::v3::Request>,
) -> ApiResult<RumaResponse<get_public_rooms::v3::Response>> {
    let body = request.body;
    let query = DirectoryQuery {
        limit: limit(body.limit),
        since: body.since,
        search_term: None,
    };
    let page = page(&state, body.server.as_deref(), &RoomNetwork::Matrix, query).await?;
    let mut response = get_public_rooms::v3::Response::new(page.chunk);
    response.next_batch = page.next_batch;
    response.prev_batch = page.prev_batch;
    response.total_room_count_estimate = Some(count(page.total));
    Ok(response.into())
}

/// # `POST /_matrix/client/v3/publicRooms`
pub(crate) async fn public_rooms_filtered(
    State(state): State<AppState>,
    request: Ruma<get_public_rooms_filtered::v3::Request>,
) -> ApiResult<RumaResponse<get_public_rooms_filtered::v3::Response>> {
    let body = request.body;
    let query = DirectoryQuery {
        limit: limit(body.limit),
        since: body.since,
        search_term: body.filter.generic_search_term,
    };
    let page = page(&state, body.server.as_deref(), &body.room_network, query).await?;
    let mut response = get_public_rooms_filtered::v3::Response::new();
    response.chunk = page.chunk;
    response.next_batch = page.next_batch;
    response.prev_batch = page.prev_batch;
    response.total_room_count_estimate = Some(count(page.total));
    Ok(response.into())
}

fn limit(limit: Option<UInt>) -> Option<usize> {
    limit.map(|limit| usize::try_from(u64::from(limit)).unwrap_or(usize::MAX))
}

fn count(total: usize) -> UInt {
    UInt::try_from(total).unwrap_or(UInt::MAX)
}

/// A page of this server's directory (`server` must be this server or absent).
async fn page(
    state: &AppState,
    server: Option<&ServerName>,
    network: &RoomNetwork,
    query: DirectoryQuery,
) -> Result<DirectoryPage, ApiError> {
    if let Some(server) = server
        && server != state.services().rooms.server_name()
    {
        return Err(ApiError::invalid_param(format!(
            "The directory of {server} cannot be fetched from here"
        )));
    }
    if let RoomNetwork::ThirdParty(_) = network {
        return Ok(DirectoryPage {
            chunk: Vec::new(),
            next_batch: None,
            prev_batch: None,
            total: 0,
        });
    }
    blocking(state, move |services| {
        directory::public_rooms(&services.rooms, &query).map_err(directory_error)
    })
    .await
}
