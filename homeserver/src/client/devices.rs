//! Devices: list, get, rename, delete (one or many, behind user-interactive auth).

use axon_api::{ApiError, ApiResult, AppState, Ruma, RumaResponse};
use axon_core::accounts::devices::DeviceRecord;
use axum::extract::State;
use ruma::api::client::device::{
    self as device_api, delete_device, delete_devices, get_device, get_devices, update_device,
};
use ruma::{MilliSecondsSinceUnixEpoch, OwnedDeviceId, UInt};

use super::keys::e2ee_error;
use super::rooms::blocking;
use super::uiaa::{self, Requirement};

fn to_api(device_id: OwnedDeviceId, record: DeviceRecord) -> device_api::Device {
    let mut device = device_api::Device::new(device_id);
    device.display_name = record.display_name;
    device.last_seen_ip = record.last_seen_ip;
    device.last_seen_ts = record
        .last_seen_ts
        .and_then(UInt::new)
        .map(MilliSecondsSinceUnixEpoch);
    device
}

/// # `GET /_matrix/client/v3/devices`
pub(crate) async fn list(
    State(state): State<AppState>,
    request: Ruma<get_devices::v3::Request>,
) -> ApiResult<RumaResponse<get_devices::v3::Response>> {
    let devices = state
        .services()
        .accounts
        .devices(&request.identity.user_id)?;
    let devices = devices
        .into_iter()
        .map(|(id, record)| to_api(id, record))
        .collect();
    Ok(get_devices::v3::Response::new(devices).into())
}

/// # `GET /_matrix/client/v3/devices/{deviceId}`
pub(crate) async fn get(
    State(state): State<AppState>,
    request: Ruma<get_device::v3::Request>,
) -> ApiResult<RumaResponse<get_device::v3::Response>> {
    let device_id = request.body.device_id;
    let record = state
        .services()
        .accounts
        .device(&request.identity.user_id, &device_id)?
        .ok_or_else(|| ApiError::not_found("Device not found"))?;
    Ok(get_device::v3::Response::new(to_api(device_id, record)).into())
}

/// # `PUT /_matrix/client/v3/devices/{deviceId}`
pub(crate) async fn update(
    State(state): State<AppState>,
    request: Ruma<update_device::v3::Request>,
) -> ApiResult<RumaResponse<update_device::v3::Response>> {
    let user = request.identity.user_id;
    state.services().accounts.update_device_display_name(
        &user,
        &request.body.device_id,
        request.body.display_name,
    )?;
    // Other users' clients and servers show device names: a rename is a device list change.
    blocking(&state, move |services| {
        services
            .e2ee
            .record_device_change(&services.rooms, &user)
            .map_err(e2ee_error)
    })
    .await?;
    Ok(update_device::v3::Response::new().into())
}

/// # `DELETE /_matrix/client/v3/devices/{deviceId}`
pub(crate) async fn delete(
    State(state): State<AppState>,
    request: Ruma<delete_device::v3::Request>,
) -> ApiResult<RumaResponse<delete_device::v3::Response>> {
    let user = request.identity;
    let device_id = request.body.device_id;
    // An unknown device is reported before any password is asked for.
    if state
        .services()
        .accounts
        .device(&user.user_id, &device_id)?
        .is_none()
    {
        return Err(ApiError::not_found("Device not found"));
    }
    uiaa::authenticate(
        &state,
        request.body.auth.as_ref(),
        Requirement {
            flows: vec![vec![uiaa::PASSWORD]],
            fingerprint: format!("DELETE /devices/{device_id}"),
            user: Some(user.user_id.clone()),
            ip: request.client.ip,
        },
    )
    .await?;
    state
        .services()
        .accounts
        .delete_device(&user.user_id, &device_id)?;
    Ok(delete_device::v3::Response::new().into())
}

/// # `POST /_matrix/client/v3/delete_devices`
pub(crate) async fn delete_many(
    State(state): State<AppState>,
    request: Ruma<delete_devices::v3::Request>,
) -> ApiResult<RumaResponse<delete_devices::v3::Response>> {
    let user = request.identity;
    let mut devices = request.body.devices;
    devices.sort();
    uiaa::authenticate(
        &state,
        request.body.auth.as_ref(),
        Requirement {
            flows: vec![vec![uiaa::PASSWORD]],
            fingerprint: format!(
                "POST /delete_devices {}",
                devices
                    .iter()
                    .map(|d| d.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            user: Some(user.user_id.clone()),
            ip: request.client.ip,
        },
    )
    .await?;
    state
        .services()
        .accounts
        .delete_devices(&user.user_id, &devices)?;
    Ok(delete_devices::v3::Response::new().into())
}
