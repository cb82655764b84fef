//! Upgrading a room to another room version.

use axon_api::{ApiResult, AppState, Ruma, RumaResponse};
use axon_core::rooms::room_version::RoomVersion;
use axon_core::rooms::upgrade::{self, UpgradeRoom};
use axum::extract::State;
use ruma::api::client::room::upgrade_room;

use super::blocking;

/// # `POST /_matrix/client/v3/rooms/{roomId}/upgrade`
///
/// An unsupported version is `M_UNSUPPORTED_ROOM_VERSION`; a user without the power to send
/// `m.room.tombstone` gets `M_FORBIDDEN`. The old room stays locked for the whole upgrade, so
/// no event lands in it between the copy of its state and the tombstone.
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    request: Ruma<upgrade_room::v3::Request>,
) -> ApiResult<RumaResponse<upgrade_room::v3::Response>> {
    let body = request.body;
    let new_version =
        RoomVersion::new(&body.new_version).map_err(axon_core::rooms::graph::RoomError::from)?;
    let guard = state.services().rooms.lock(&body.room_id).await;
    let upgrade = UpgradeRoom {
        room_id: body.room_id,
        user_id: request.identity.user_id,
        new_version,
        additional_creators: body.additional_creators,
    };
    let replacement = blocking(&state, move |services| {
        let replacement = upgrade::upgrade_room(&services.rooms, &guard, upgrade)?;
        drop(guard);
        Ok(replacement)
    })
    .await?;
    Ok(upgrade_room::v3::Response::new(replacement).into())
}
