//! Account management: password change and deactivation, both behind user-interactive auth.

use axon_api::{ApiError, ApiResult, AppState, Ruma, RumaResponse};
use axum::extract::State;
use ruma::api::client::account::{ThirdPartyIdRemovalStatus, change_password, deactivate};

use super::blocking;
use super::uiaa::{self, Requirement};

/// # `POST /_matrix/client/v3/account/password`
pub(crate) async fn change_password(
    State(state): State<AppState>,
    request: Ruma<change_password::v3::Request>,
) -> ApiResult<RumaResponse<change_password::v3::Response>> {
    let user = request.identity.ok_or_else(ApiError::missing_token)?;
    let body = request.body;
    state
        .services()
        .accounts
        .check_password_strength(&body.new_password)?;
    uiaa::authenticate(
        &state,
        body.auth.as_ref(),
        Requirement {
            flows: vec![vec![uiaa::PASSWORD]],
            fingerprint: "POST /account/password".to_owned(),
            user: Some(user.user_id.clone()),
            ip: request.client.ip,
        },
    )
    .await?;
    let new_password = body.new_password;
    let logout_others = body.logout_devices;
    blocking(&state, move |services| {
        let hash = services.accounts.hash_password(&new_password)?;
        services.accounts.set_password(
            &user.user_id,
            Some(hash),
            Some(&user.device_id),
            logout_others,
        )
    })
    .await?;
    Ok(change_password::v3::Response::new().into())
}

/// # `POST /_matrix/client/v3/account/deactivate`
pub(crate) async fn deactivate(
    State(state): State<AppState>,
    request: Ruma<deactivate::v3::Request>,
) -> ApiResult<RumaResponse<deactivate::v3::Response>> {
    let user = request.identity.ok_or_else(ApiError::missing_token)?;
    uiaa::authenticate(
        &state,
        request.body.auth.as_ref(),
        Requirement {
            flows: vec![vec![uiaa::PASSWORD]],
            fingerprint: "POST /account/deactivate".to_owned(),
            user: Some(user.user_id.clone()),
            ip: request.client.ip,
        },
    )
    .await?;
    state
        .services()
        .accounts
        .deactivate(&user.user_id, request.body.erase)?;
    tracing::info!(user_id = %user.user_id, "account deactivated");
    // No identity server bindings exist on this server, so there is nothing to unbind.
    Ok(deactivate::v3::Response::new(ThirdPartyIdRemovalStatus::NoSupport).into())
}
