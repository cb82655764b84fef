//! Extractors for endpoints ruma does not describe (Synapse's admin API): a JSON body with
//! the spec's error codes, and the authenticated user.

use axon_core::accounts::AuthenticatedUser;
use axum::extract::{FromRequest, FromRequestParts, Request};
use http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use crate::auth::{bearer_token, user_from_token};
use crate::error::ApiError;
use crate::ruma::{ClientInfo, read_body};
use crate::state::AppState;

/// A JSON request body: `M_NOT_JSON` when it is not JSON, `M_BAD_JSON` when it has the wrong
/// shape, `M_TOO_LARGE` over the configured size. An empty body reads as `{}`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = read_body(request.into_body(), state.config().http.max_request_bytes).await?;
        let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
        serde_json::from_slice(bytes)
            .map(JsonBody)
            .map_err(|err| match err.classify() {
                Category::Data => ApiError::bad_json(format!("request body is malformed: {err}")),
                _ => ApiError::not_json(format!("request body is not valid JSON: {err}")),
            })
    }
}

/// The user whose access token authenticates the request.
#[derive(Debug)]
pub struct AuthUser(pub AuthenticatedUser);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(parts).ok_or_else(ApiError::missing_token)?;
        let client = ClientInfo::from_parts(parts);
        user_from_token(state, &token, &client).await.map(AuthUser)
    }
}

/// A server administrator, authenticated by access token.
#[derive(Debug)]
pub struct AdminUser(pub AuthenticatedUser);

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let AuthUser(user) = AuthUser::from_request_parts(parts, state).await?;
        if user.is_admin {
            Ok(AdminUser(user))
        } else {
            Err(ApiError::forbidden("You are not a server admin"))
        }
    }
}
