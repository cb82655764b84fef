//! Registration tokens, on Synapse's admin paths.

use axon_api::{AdminUser, ApiError, ApiResult, AppState, JsonBody};
use axon_core::accounts::{NewRegistrationToken, RegistrationToken, RegistrationTokenUpdate};
use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    valid: Option<bool>,
}

fn to_json(token: &RegistrationToken) -> Value {
    json!({
        "token": token.token,
        "uses_allowed": token.uses_allowed,
        "pending": token.pending,
        "completed": token.completed,
        "expiry_time": token.expiry_time,
    })
}

/// # `GET /_synapse/admin/v1/registration_tokens`
pub(crate) async fn list(
    State(state): State<AppState>,
    _: AdminUser,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let tokens = state
        .services()
        .accounts
        .registration_tokens()
        .list(query.valid)?;
    Ok(Json(
        json!({ "registration_tokens": tokens.iter().map(to_json).collect::<Vec<_>>() }),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct CreateBody {
    token: Option<String>,
    uses_allowed: Option<u32>,
    expiry_time: Option<u64>,
    length: Option<usize>,
}

/// # `POST /_synapse/admin/v1/registration_tokens/new`
pub(crate) async fn create(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    JsonBody(body): JsonBody<CreateBody>,
) -> ApiResult<Json<Value>> {
    let token = state
        .services()
        .accounts
        .registration_tokens()
        .create(NewRegistrationToken {
            token: body.token,
            length: body.length,
            uses_allowed: body.uses_allowed,
            expiry_time: body.expiry_time,
        })?;
    tracing::info!(admin = %admin.user_id, token = %token.token, "created a registration token");
    Ok(Json(to_json(&token)))
}

/// # `GET /_synapse/admin/v1/registration_tokens/{token}`
pub(crate) async fn get(
    State(state): State<AppState>,
    _: AdminUser,
    Path(token): Path<String>,
) -> ApiResult<Json<Value>> {
    let token = state
        .services()
        .accounts
        .registration_tokens()
        .get(&token)?
        .ok_or_else(|| ApiError::not_found("No such registration token"))?;
    Ok(Json(to_json(&token)))
}

/// A JSON field that may be absent (leave alone), `null` (unlimited) or a value.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct UpdateBody {
    #[serde(deserialize_with = "present")]
    uses_allowed: Option<Option<u32>>,
    #[serde(deserialize_with = "present")]
    expiry_time: Option<Option<u64>>,
}

fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// # `PUT /_synapse/admin/v1/registration_tokens/{token}`
pub(crate) async fn update(
    State(state): State<AppState>,
    _: AdminUser,
    Path(token): Path<String>,
    JsonBody(body): JsonBody<UpdateBody>,
) -> ApiResult<Json<Value>> {
    let updated = state.services().accounts.registration_tokens().update(
        &token,
        RegistrationTokenUpdate {
            uses_allowed: body.uses_allowed,
            expiry_time: body.expiry_time,
        },
    )?;
    Ok(Json(to_json(&updated)))
}

/// # `DELETE /_synapse/admin/v1/registration_tokens/{token}`
pub(crate) async fn delete(
    State(state): State<AppState>,
    _: AdminUser,
    Path(token): Path<String>,
) -> ApiResult<Json<Value>> {
    state
        .services()
        .accounts
        .registration_tokens()
        .delete(&token)?;
    Ok(Json(json!({})))
}
