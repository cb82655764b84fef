//! Shared-secret registration, compatible with Synapse's `/_synapse/admin/v1/register`.
//!
//! The client fetches a nonce, then posts the user with
//! `mac = hex(HMAC-SHA1(shared_secret, nonce NUL username NUL password NUL admin|notadmin))`.

use std::sync::Arc;
use std::time::Instant;

use axon_api::{ApiError, ApiResult, AppState, JsonBody};
use axon_core::accounts::{LoginRequest, RegisterRequest};
use axum::extract::State;
use axum::{Extension, Json};
use hmac::{Hmac, Mac};
use ruma::api::error::ErrorKind;
use serde::Deserialize;
use serde_json::{Value, json};
use sha1::Sha1;

use crate::nonces::Nonces;

fn shared_secret(state: &AppState) -> Result<&str, ApiError> {
    state
        .config()
        .registration
        .shared_secret
        .as_deref()
        .ok_or_else(|| {
            ApiError::with_status(
                http::StatusCode::BAD_REQUEST,
                ErrorKind::Unknown,
                "Shared secret registration is not enabled",
            )
        })
}

/// # `GET /_synapse/admin/v1/register`
pub(crate) async fn nonce(
    State(state): State<AppState>,
    Extension(nonces): Extension<Arc<Nonces>>,
) -> ApiResult<Json<Value>> {
    shared_secret(&state)?;
    Ok(Json(json!({ "nonce": nonces.issue(Instant::now()) })))
}

#[derive(Debug, Deserialize)]
pub(crate) struct RegisterBody {
    nonce: String,
    username: String,
    password: String,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    displayname: Option<String>,
    mac: String,
}

/// # `POST /_synapse/admin/v1/register`
pub(crate) async fn register(
    State(state): State<AppState>,
    Extension(nonces): Extension<Arc<Nonces>>,
    JsonBody(body): JsonBody<RegisterBody>,
) -> ApiResult<Json<Value>> {
    let secret = shared_secret(&state)?;
    if !nonces.consume(&body.nonce, Instant::now()) {
        return Err(ApiError::with_status(
            http::StatusCode::BAD_REQUEST,
            ErrorKind::Unknown,
            "Unrecognised or expired nonce",
        ));
    }
    for (field, value) in [("username", &body.username), ("password", &body.password)] {
        if value.contains('\0') || value.len() > 512 {
            return Err(ApiError::invalid_param(format!("Invalid {field}")));
        }
    }
    if !mac_matches(secret, &body) {
        tracing::warn!(username = %body.username, "shared-secret registration with a wrong MAC");
        return Err(ApiError::forbidden("HMAC incorrect"));
    }

    let username = body.username.to_lowercase();
    let password = body.password;
    let admin = body.admin;
    let displayname = body.displayname;
    let services = state.services_arc();
    let (user_id, tokens) = tokio::task::spawn_blocking(move || {
        let accounts = &services.accounts;
        let hash = accounts.hash_password(&password)?;
        let mut request = RegisterRequest::user(username, Some(hash));
        request.admin = admin;
        request.displayname = displayname;
        let user_id = accounts.register(request)?;
        let tokens = accounts.login(LoginRequest::new(&user_id))?;
        Ok::<_, axon_core::accounts::AccountError>((user_id, tokens))
    })
    .await
    .map_err(ApiError::internal)??;
    tracing::info!(user_id = %user_id, admin, "registered a user with the shared secret");
    Ok(Json(json!({
        "user_id": user_id,
        "access_token": tokens.access_token,
        "device_id": tokens.device_id,
        "home_server": state.config().server_name,
    })))
}

fn mac_matches(secret: &str, body: &RegisterBody) -> bool {
    let Ok(expected) = hex::decode(body.mac.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body.nonce.as_bytes());
    mac.update(b"\0");
    mac.update(body.username.as_bytes());
    mac.update(b"\0");
    mac.update(body.password.as_bytes());
    mac.update(b"\0");
    mac.update(if body.admin { b"admin" } else { b"notadmin" });
    // Constant-time comparison.
    mac.verify_slice(&expected).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(mac: &str) -> RegisterBody {
        RegisterBody {
            nonce: "abc".to_owned(),
            username: "alice".to_owned(),
            password: "secret pw".to_owned(),
            admin: true,
            displayname: None,
            mac: mac.to_owned(),
        }
    }

    #[test]
    fn mac_is_hmac_sha1_over_the_nul_separated_fields() {
        // Independently: HMAC-SHA1("shared", "abc\0alice\0secret pw\0admin").
        let mut mac = Hmac::<Sha1>::new_from_slice(b"shared").unwrap();
        mac.update(b"abc\0alice\0secret pw\0admin");
        let good = hex::encode(mac.finalize().into_bytes());
        assert!(mac_matches("shared", &body(&good)));
        assert!(!mac_matches("other secret", &body(&good)));
        let mut not_admin = body(&good);
        not_admin.admin = false;
        assert!(
            !mac_matches("shared", &not_admin),
            "the admin flag is covered by the MAC"
        );
        assert!(!mac_matches("shared", &body("zz")));
        assert!(!mac_matches("shared", &body("")));
    }
}
