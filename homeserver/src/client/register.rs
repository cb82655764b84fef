//! Registration: `/register` with user-interactive auth, username availability, and
//! registration-token validity.

use axon_api::{ApiError, ApiResult, AppState, Ruma, RumaResponse};
use axon_core::accounts::{LoginRequest, RegisterRequest};
use axum::extract::State;
use ruma::api::client::account::{
    check_registration_token_validity, get_username_availability, register,
};
use ruma::api::error::ErrorKind;

use super::blocking;
use super::uiaa::{self, Requirement};

/// # `POST /_matrix/client/v3/register`
pub(crate) async fn register(
    State(state): State<AppState>,
    request: Ruma<register::v3::Request>,
) -> ApiResult<RumaResponse<register::v3::Response>> {
    let config = state.config();
    let accounts = &state.services().accounts;
    let body = request.body;

    if body.kind == register::RegistrationKind::Guest {
        if !config.registration.allow_guests {
            return Err(ApiError::new(
                ErrorKind::GuestAccessForbidden,
                "Guest registration is disabled on this server",
            ));
        }
        let user_id = accounts.register(RegisterRequest::guest())?;
        return finish(&state, user_id, &body, false).await;
    }
    if !config.registration.enabled {
        return Err(ApiError::forbidden(
            "Registration has been disabled on this server",
        ));
    }

    // Problems the client can fix are reported before any auth stage is asked for.
    if let Some(username) = &body.username
        && !accounts.is_available(username)?
    {
        return Err(ApiError::new(ErrorKind::UserInUse, "User ID already taken"));
    }
    let password = body
        .password
        .clone()
        .ok_or_else(|| ApiError::missing_param("A password is required to register"))?;
    accounts.check_password_strength(&password)?;

    let flow = if config.registration.require_token {
        vec![uiaa::REGISTRATION_TOKEN]
    } else {
        vec![uiaa::DUMMY]
    };
    let session = uiaa::authenticate(
        &state,
        body.auth.as_ref(),
        Requirement {
            flows: vec![flow],
            fingerprint: "POST /register".to_owned(),
            user: None,
            ip: request.client.ip,
        },
    )
    .await?;

    let hash = blocking(&state, move |services| {
        services.accounts.hash_password(&password)
    })
    .await?;
    let mut registration = RegisterRequest::user(String::new(), Some(hash));
    registration.localpart = body.username.clone();
    let user_id = accounts.register_after_uiaa(&session, registration)?;
    tracing::info!(user_id = %user_id, "registered a new user");
    let refresh = body.refresh_token && config.login.refresh_tokens;
    finish(&state, user_id, &body, refresh).await
}

/// The response to a successful registration: with tokens unless `inhibit_login`.
async fn finish(
    state: &AppState,
    user_id: ruma::OwnedUserId,
    body: &register::v3::Request,
    refresh: bool,
) -> ApiResult<RumaResponse<register::v3::Response>> {
    let mut response = register::v3::Response::new(user_id.clone());
    if body.inhibit_login {
        return Ok(response.into());
    }
    let mut login = LoginRequest::new(&user_id);
    login.device_id = body.device_id.clone();
    login.initial_display_name = body.initial_device_display_name.clone();
    login.want_refresh = refresh;
    let tokens = state.services().accounts.login(login)?;
    response.access_token = Some(tokens.access_token);
    response.device_id = Some(tokens.device_id);
    response.refresh_token = tokens.refresh_token;
    response.expires_in = tokens.expires_in;
    Ok(response.into())
}

/// # `GET /_matrix/client/v3/register/available`
pub(crate) async fn username_available(
    State(state): State<AppState>,
    request: Ruma<get_username_availability::v3::Request>,
) -> ApiResult<RumaResponse<get_username_availability::v3::Response>> {
    if state
        .services()
        .accounts
        .is_available(&request.body.username)?
    {
        Ok(get_username_availability::v3::Response::new(true).into())
    } else {
        Err(ApiError::new(ErrorKind::UserInUse, "User ID already taken"))
    }
}

/// # `GET /_matrix/client/v1/register/m.login.registration_token/validity`
pub(crate) async fn registration_token_validity(
    State(state): State<AppState>,
    request: Ruma<check_registration_token_validity::v1::Request>,
) -> ApiResult<RumaResponse<check_registration_token_validity::v1::Response>> {
    let valid = state
        .services()
        .accounts
        .registration_tokens()
        .is_valid(&request.body.token)?;
    Ok(check_registration_token_validity::v1::Response::new(valid).into())
}
