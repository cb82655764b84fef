//! Sessions: login flows and login, refresh, logout, short-lived login tokens, whoami.

use std::time::Duration;

use axon_api::{ApiError, ApiResult, AppState, Ruma, RumaResponse};
use axon_core::accounts::{AccountError, LoginRequest};
use axum::extract::State;
use ruma::api::client::account::whoami;
use ruma::api::client::session::{
    get_login_token, get_login_types, login, logout, logout_all, refresh_token,
};
use ruma::api::client::uiaa::UserIdentifier;
use ruma::{OwnedServerName, OwnedUserId};

use super::uiaa::{self, Requirement};

/// How long an `m.login.token` from `/login/get_token` stays usable.
const LOGIN_TOKEN_LIFETIME: Duration = Duration::from_secs(2 * 60);

/// # `GET /_matrix/client/v3/login`
pub(crate) async fn login_types(
    _: Ruma<get_login_types::v3::Request>,
) -> ApiResult<RumaResponse<get_login_types::v3::Response>> {
    use get_login_types::v3::{LoginType, PasswordLoginType, TokenLoginType};
    let mut token = TokenLoginType::new();
    token.get_login_token = true;
    Ok(get_login_types::v3::Response::new(vec![
        LoginType::Password(PasswordLoginType::new()),
        LoginType::Token(token),
    ])
    .into())
}

/// # `POST /_matrix/client/v3/login`
pub(crate) async fn login(
    State(state): State<AppState>,
    request: Ruma<login::v3::Request>,
) -> ApiResult<RumaResponse<login::v3::Response>> {
    let accounts = &state.services().accounts;
    let body = request.body;
    let user_id = match body.login_info {
        login::v3::LoginInfo::Password(password) => {
            #[allow(deprecated)]
            let legacy_user = password.user.as_deref();
            let user_id = password_login_user(&state, password.identifier.as_ref(), legacy_user)?;
            let secret = password.password;
            let ip = request.client.ip;
            let checked_user = user_id.clone();
            let services = state.services_arc();
            tokio::task::spawn_blocking(move || {
                services.accounts.check_password(&checked_user, &secret, ip)
            })
            .await
            .map_err(ApiError::internal)?
            .map_err(|err| {
                if matches!(err, AccountError::InvalidPassword) {
                    tracing::warn!(user_id = %user_id, ip = %ip, "failed login");
                }
                ApiError::from(err)
            })?;
            user_id
        }
        login::v3::LoginInfo::Token(token) => {
            accounts
                .consume_login_token(&token.token)
                .map_err(|err| match err {
                    AccountError::UnknownToken | AccountError::TokenExpired => {
                        ApiError::forbidden("Invalid or expired login token")
                    }
                    other => other.into(),
                })?
        }
        _ => {
            return Err(ApiError::with_status(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::Unknown,
                "Unsupported login type",
            ));
        }
    };

    let mut login = LoginRequest::new(&user_id);
    login.device_id = body.device_id;
    login.initial_display_name = body.initial_device_display_name;
    login.want_refresh = body.refresh_token && state.config().login.refresh_tokens;
    let tokens = accounts.login(login)?;
    tracing::info!(user_id = %user_id, device_id = %tokens.device_id, "logged in");

    let home_server = OwnedServerName::try_from(state.config().server_name.as_str()).ok();
    let mut response = login::v3::Response::new(user_id, tokens.access_token, tokens.device_id);
    #[allow(deprecated)]
    {
        response.home_server = home_server;
    }
    response.refresh_token = tokens.refresh_token;
    response.expires_in = tokens.expires_in;
    response.well_known = Some(login::v3::DiscoveryInfo::new(
        login::v3::HomeserverInfo::new(state.config().well_known.client_base_url.clone()),
    ));
    Ok(response.into())
}

/// The user a password login names: `identifier` (`m.id.user`), or the deprecated top-level
/// `user` field older clients send.
fn password_login_user(
    state: &AppState,
    identifier: Option<&UserIdentifier>,
    legacy_user: Option<&str>,
) -> Result<OwnedUserId, ApiError> {
    let accounts = &state.services().accounts;
    match (identifier, legacy_user) {
        (Some(UserIdentifier::Matrix(id)), _) => Ok(accounts.parse_login_user(&id.user)?),
        (Some(_), _) => Err(ApiError::forbidden(
            "Third-party identifiers are not supported for login on this server",
        )),
        (None, Some(user)) => Ok(accounts.parse_login_user(user)?),
        (None, None) => Err(ApiError::missing_param("Missing user identifier")),
    }
}

/// # `POST /_matrix/client/v3/refresh`
pub(crate) async fn refresh(
    State(state): State<AppState>,
    request: Ruma<refresh_token::v3::Request>,
) -> ApiResult<RumaResponse<refresh_token::v3::Response>> {
    let tokens = state
        .services()
        .accounts
        .refresh(&request.body.refresh_token)?;
    let mut response = refresh_token::v3::Response::new(tokens.access_token);
    response.refresh_token = tokens.refresh_token;
    response.expires_in_ms = tokens.expires_in;
    Ok(response.into())
}

/// # `POST /_matrix/client/v3/logout`
pub(crate) async fn logout(
    State(state): State<AppState>,
    request: Ruma<logout::v3::Request>,
) -> ApiResult<RumaResponse<logout::v3::Response>> {
    let user = request.identity;
    state
        .services()
        .accounts
        .logout(&user.user_id, &user.device_id)?;
    Ok(logout::v3::Response::new().into())
}

/// # `POST /_matrix/client/v3/logout/all`
pub(crate) async fn logout_all(
    State(state): State<AppState>,
    request: Ruma<logout_all::v3::Request>,
) -> ApiResult<RumaResponse<logout_all::v3::Response>> {
    state
        .services()
        .accounts
        .logout_all(&request.identity.user_id)?;
    Ok(logout_all::v3::Response::new().into())
}

/// # `POST /_matrix/client/v1/login/get_token`
pub(crate) async fn get_login_token(
    State(state): State<AppState>,
    request: Ruma<get_login_token::v1::Request>,
) -> ApiResult<RumaResponse<get_login_token::v1::Response>> {
    let user = request.identity;
    uiaa::authenticate(
        &state,
        request.body.auth.as_ref(),
        Requirement {
            flows: vec![vec![uiaa::PASSWORD]],
            fingerprint: "POST /login/get_token".to_owned(),
            user: Some(user.user_id.clone()),
            ip: request.client.ip,
        },
    )
    .await?;
    let token = state
        .services()
        .accounts
        .create_login_token(&user.user_id, LOGIN_TOKEN_LIFETIME)?;
    Ok(get_login_token::v1::Response::new(LOGIN_TOKEN_LIFETIME, token).into())
}

/// # `GET /_matrix/client/v3/account/whoami`
pub(crate) async fn whoami(
    request: Ruma<whoami::v3::Request>,
) -> ApiResult<RumaResponse<whoami::v3::Response>> {
    let user = request.identity;
    let mut response = whoami::v3::Response::new(user.user_id, user.is_guest);
    response.device_id = Some(user.device_id);
    Ok(response.into())
}
