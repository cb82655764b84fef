//! User-interactive authentication: the 401 dance that guards registration and sensitive
//! account changes.

use std::net::IpAddr;
use std::time::Instant;

use axon_api::{ApiError, AppState};
use axon_core::accounts::{AccountError, UiaaSession};
use ruma::OwnedUserId;
use ruma::api::client::uiaa::{AuthData, UserIdentifier};
use serde_json::{Value, json};

pub(crate) const DUMMY: &str = "m.login.dummy";
pub(crate) const PASSWORD: &str = "m.login.password";
pub(crate) const REGISTRATION_TOKEN: &str = "m.login.registration_token";

/// What a request must prove before it runs.
#[derive(Debug)]
pub(crate) struct Requirement {
    /// The flows offered; completing any one suffices.
    pub(crate) flows: Vec<Vec<&'static str>>,
    /// Names the request (method and path), so a session cannot authorise another request.
    pub(crate) fingerprint: String,
    /// The authenticated user, for account operations: their password is the one checked, and
    /// the session is bound to them.
    pub(crate) user: Option<OwnedUserId>,
    /// Where the request came from (for the failed-login throttle).
    pub(crate) ip: IpAddr,
}

/// Runs one step of user-interactive auth. Returns the id of a completed session, or the 401
/// (with flows, session and completed stages) the client must answer.
pub(crate) async fn authenticate(
    state: &AppState,
    auth: Option<&AuthData>,
    requirement: Requirement,
) -> Result<String, ApiError> {
    let accounts = &state.services().accounts;
    let flows: Vec<Vec<String>> = requirement
        .flows
        .iter()
        .map(|flow| flow.iter().map(|stage| (*stage).to_owned()).collect())
        .collect();

    let Some(auth) = auth else {
        let session = accounts.uiaa_start(
            flows,
            json!({}),
            requirement.user.clone(),
            requirement.fingerprint.clone(),
        )?;
        return Err(challenge(state, &session, &requirement, None));
    };

    let session_id = match auth.session() {
        Some(session) => session.to_owned(),
        None => accounts.uiaa_start(
            flows,
            json!({}),
            requirement.user.clone(),
            requirement.fingerprint.clone(),
        )?,
    };
    let session = accounts.uiaa().resume(
        &session_id,
        &requirement.fingerprint,
        requirement.user.as_deref(),
        Instant::now(),
    )?;
    if session.is_complete() {
        return Ok(session_id);
    }

    let stage = match complete_stage(state, auth, &session_id, &requirement).await {
        Ok(stage) => stage,
        Err(StageFailure::Challenge(error)) => {
            return Err(challenge(state, &session_id, &requirement, Some(error)));
        }
        Err(StageFailure::Abort(error)) => return Err(error),
    };
    accounts
        .uiaa()
        .complete_stage(&session_id, stage, Instant::now())?;
    if accounts.uiaa().is_complete(&session_id, Instant::now())? {
        Ok(session_id)
    } else {
        Err(challenge(state, &session_id, &requirement, None))
    }
}

enum StageFailure {
    /// The stage failed; the client may try again in the same session.
    Challenge(ApiError),
    /// The request must stop here (rate limit, deactivated account).
    Abort(ApiError),
}

async fn complete_stage(
    state: &AppState,
    auth: &AuthData,
    session_id: &str,
    requirement: &Requirement,
) -> Result<&'static str, StageFailure> {
    let accounts = &state.services().accounts;
    match auth {
        AuthData::Dummy(_) => Ok(DUMMY),
        AuthData::Password(password) => {
            let Some(expected) = requirement.user.clone() else {
                return Err(StageFailure::Challenge(ApiError::forbidden(
                    "Password authentication is not offered for this request",
                )));
            };
            let claimed =
                identified_user(state, &password.identifier).map_err(StageFailure::Challenge)?;
            if claimed != expected {
                return Err(StageFailure::Challenge(ApiError::forbidden(
                    "Password authentication must be for the logged-in user",
                )));
            }
            let secret = password.password.clone();
            let ip = requirement.ip;
            let services = state.services_arc();
            let checked = tokio::task::spawn_blocking(move || {
                services.accounts.check_password(&expected, &secret, ip)
            })
            .await
            .map_err(|err| StageFailure::Abort(ApiError::internal(err)))?;
            match checked {
                Ok(()) => Ok(PASSWORD),
                Err(AccountError::InvalidPassword) => Err(StageFailure::Challenge(
                    AccountError::InvalidPassword.into(),
                )),
                Err(other) => Err(StageFailure::Abort(other.into())),
            }
        }
        AuthData::RegistrationToken(token) => {
            match accounts.uiaa_reserve_registration_token(session_id, &token.token) {
                Ok(()) => Ok(REGISTRATION_TOKEN),
                Err(AccountError::RegistrationTokenInvalid) => Err(StageFailure::Challenge(
                    ApiError::from(AccountError::RegistrationTokenInvalid),
                )),
                Err(other) => Err(StageFailure::Abort(other.into())),
            }
        }
        other => Err(StageFailure::Challenge(ApiError::forbidden(format!(
            "Auth type {} is not supported by this server",
            other
                .auth_type()
                .map_or_else(|| "(unknown)".to_owned(), |kind| kind.to_string())
        )))),
    }
}

fn identified_user(state: &AppState, identifier: &UserIdentifier) -> Result<OwnedUserId, ApiError> {
    match identifier {
        UserIdentifier::Matrix(id) => state
            .services()
            .accounts
            .parse_login_user(&id.user)
            .map_err(ApiError::from),
        _ => Err(ApiError::forbidden(
            "Only user identifiers are supported; this server has no third-party ids",
        )),
    }
}

/// The 401 body: flows, params, session, completed stages, and the last stage's error.
fn challenge(
    state: &AppState,
    session_id: &str,
    requirement: &Requirement,
    error: Option<ApiError>,
) -> ApiError {
    let session: Option<UiaaSession> = state
        .services()
        .accounts
        .uiaa()
        .resume(
            session_id,
            &requirement.fingerprint,
            requirement.user.as_deref(),
            Instant::now(),
        )
        .ok();
    let (flows, params, completed) = match session {
        Some(session) => (session.flows, session.params, session.completed),
        None => (Vec::new(), json!({}), Vec::new()),
    };
    let mut body = json!({
        "flows": flows.iter().map(|stages| json!({ "stages": stages })).collect::<Vec<_>>(),
        "params": params,
        "session": session_id,
        "completed": completed,
    });
    if let (Some(error), Value::Object(map)) = (error, &mut body)
        && let Value::Object(error_body) = error.body()
    {
        map.extend(error_body);
    }
    ApiError::uiaa(body)
}
