//! End-to-end encryption keys: upload, query, claim, changes, cross-signing and signatures.
//!
//! Local users are served from `core`'s E2EE service. Remote users' servers are asked over
//! federation ([`query_remote`], [`claim_remote`]), all at once, each within the request's
//! `timeout`; a server that cannot be asked in time is listed in `failures`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axon_api::{ApiError, ApiResult, AppState, Ruma, RumaResponse};
use axon_core::e2ee::{CrossSigningUpload, E2eeError, KeyClaims, KeyUpload};
use axon_federation::{Federation, FederationError};
use axum::extract::State;
use axum::{Extension, Router};
use ruma::api::client::keys::{
    claim_keys, get_key_changes, get_keys, upload_keys, upload_signatures, upload_signing_keys,
};
use ruma::api::error::{ErrorKind, WrongRoomKeysVersionErrorData};
use ruma::api::federation::keys as federation_keys;
use ruma::encryption::CrossSigningKey;
use ruma::serde::Raw;
use ruma::{
    CanonicalJsonObject, DeviceId, OwnedDeviceId, OwnedServerName, OwnedUserId, ServerName, UserId,
};
use serde_json::{Value, json};

use super::rooms::blocking;
use super::sync::token::SyncToken;
use super::uiaa::{self, Requirement};
use axon_api::RumaRouterExt;

/// The key routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .ruma_route::<upload_keys::v3::Request, _, _>(upload)
        .ruma_route::<get_keys::v3::Request, _, _>(query)
        .ruma_route::<claim_keys::v3::Request, _, _>(claim)
        .ruma_route::<get_key_changes::v3::Request, _, _>(changes)
        .ruma_route::<upload_signing_keys::v3::Request, _, _>(upload_signing)
        .ruma_route::<upload_signatures::v3::Request, _, _>(upload_signatures)
}

/// The API error for an E2EE service error.
pub(crate) fn e2ee_error(error: E2eeError) -> ApiError {
    match error {
        E2eeError::InvalidParam(reason) => ApiError::invalid_param(reason),
        E2eeError::InvalidSignature(reason) => {
            ApiError::invalid_param(format!("Invalid signature: {reason}"))
        }
        E2eeError::Forbidden(reason) => ApiError::forbidden(reason),
        E2eeError::NotFound(what) => ApiError::not_found(format!("Unknown {what}")),
        E2eeError::WrongBackupVersion { given, current } => ApiError::with_status(
            http::StatusCode::FORBIDDEN,
            ErrorKind::WrongRoomKeysVersion(WrongRoomKeysVersionErrorData::new(
                current.clone().unwrap_or_default(),
            )),
            match current {
                Some(current) => {
                    format!("Backup version {given} is not the current one ({current})")
                }
                None => format!("Backup version {given} is not the current one (there is none)"),
            },
        ),
        E2eeError::Room(error) => ApiError::from(error),
        E2eeError::Accounts(error) => ApiError::from(error),
        other => ApiError::internal(other),
    }
}

/// # `POST /_matrix/client/v3/keys/upload`
pub(crate) async fn upload(
    State(state): State<AppState>,
    request: Ruma<upload_keys::v3::Request>,
) -> ApiResult<RumaResponse<upload_keys::v3::Response>> {
    let user = request.identity;
    let body = request.body;
    let upload = KeyUpload {
        device_keys: body.device_keys,
        one_time_keys: body.one_time_keys,
        fallback_keys: body.fallback_keys,
    };
    let counts = blocking(&state, move |services| {
        services
            .e2ee
            .upload_keys(&services.rooms, &user.user_id, &user.device_id, upload)
            .map_err(e2ee_error)
    })
    .await?;
    Ok(upload_keys::v3::Response::new(counts).into())
}

/// Splits requested users into local ones and the servers of the others.
fn split_local<T>(
    local: &ServerName,
    users: BTreeMap<OwnedUserId, T>,
) -> (
    BTreeMap<OwnedUserId, T>,
    BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, T>>,
) {
    let mut mine = BTreeMap::new();
    let mut remote: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, T>> = BTreeMap::new();
    for (user, value) in users {
        if user.server_name() == local {
            mine.insert(user, value);
        } else {
            remote
                .entry(user.server_name().to_owned())
                .or_default()
                .insert(user, value);
        }
    }
    (mine, remote)
}

/// How long remote servers are given when the request names no `timeout`.
const DEFAULT_REMOTE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest `timeout` honoured: a client cannot hold a request open for long.
const MAX_REMOTE_TIMEOUT: Duration = Duration::from_secs(60);

/// The time given to remote servers for a request's `timeout`.
fn remote_timeout(requested: Option<Duration>) -> Duration {
    requested
        .unwrap_or(DEFAULT_REMOTE_TIMEOUT)
        .min(MAX_REMOTE_TIMEOUT)
}

/// The failure entry for a server that could not be asked. The remote server's own error is
/// logged, not shown: clients never see another server's internals.
fn unreachable_server(server: &ServerName, error: &FederationError) -> Value {
    tracing::info!(%server, %error, "a key request to another server failed");
    let status = match error {
        FederationError::Remote { status, .. } => *status,
        _ => 503,
    };
    json!({ "status": status, "message": format!("{server} could not be reached") })
}

/// Asks every server in `requests` concurrently with `ask`, each within `timeout`. Returns
/// each server's answer or why there is none.
async fn ask_servers<T, R, F, Fut>(
    servers: BTreeMap<OwnedServerName, T>,
    timeout: Duration,
    ask: F,
) -> Vec<(OwnedServerName, Result<R, FederationError>)>
where
    F: Fn(OwnedServerName, T) -> Fut,
    Fut: Future<Output = Result<R, FederationError>>,
{
    let asks = servers.into_iter().map(|(server, request)| {
        let answer = ask(server.clone(), request);
        async move {
            let answer = match tokio::time::timeout(timeout, answer).await {
                Ok(answer) => answer,
                Err(_) => Err(FederationError::Transport {
                    server: server.clone(),
                    reason: format!("no answer within {} ms", timeout.as_millis()),
                }),
            };
            (server, answer)
        }
    });
    futures::future::join_all(asks).await
}

/// The `user_id` (and `device_id`) a key object says it belongs to.
#[derive(serde::Deserialize)]
struct KeyOwner {
    user_id: OwnedUserId,
    #[serde(default)]
    device_id: Option<OwnedDeviceId>,
}

/// Whether `raw` is a key of `user` (and of `device`, for device keys): a server answers only
/// for its own users, and a key filed under one user or device but naming another is dropped.
fn owned_by<T>(raw: &Raw<T>, user: &UserId, device: Option<&DeviceId>) -> bool {
    serde_json::from_str::<KeyOwner>(raw.json().get()).is_ok_and(|owner| {
        owner.user_id == user
            && device.is_none_or(|device| owner.device_id.as_deref() == Some(device))
    })
}

/// Queries the keys of users on other servers (`/user/keys/query`), every server at once.
/// Each server's answer is kept only for its own users: a server cannot speak for another's.
pub(crate) async fn query_remote(
    federation: &Federation,
    servers: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>>,
    timeout: Option<Duration>,
    response: &mut get_keys::v3::Response,
) {
    let answers = ask_servers(
        servers,
        remote_timeout(timeout),
        |server, users| async move {
            federation
                .client()
                .send(&server, federation_keys::get_keys::v1::Request::new(users))
                .await
        },
    )
    .await;
    for (server, answer) in answers {
        let answer = match answer {
            Ok(answer) => answer,
            Err(error) => {
                response
                    .failures
                    .insert(server.to_string(), unreachable_server(&server, &error));
                continue;
            }
        };
        let theirs = |user: &UserId| user.server_name() == server;
        for (user, devices) in answer.device_keys {
            if !theirs(&user) {
                continue;
            }
            let devices: BTreeMap<_, _> = devices
                .into_iter()
                .filter(|(device, keys)| owned_by(keys, &user, Some(device)))
                .collect();
            response.device_keys.insert(user, devices);
        }
        for (user, key) in answer.master_keys {
            if theirs(&user) && owned_by(&key, &user, None) {
                response.master_keys.insert(user, key);
            }
        }
        for (user, key) in answer.self_signing_keys {
            if theirs(&user) && owned_by(&key, &user, None) {
                response.self_signing_keys.insert(user, key);
            }
        }
    }
}

/// Claims one-time keys of devices on other servers (`/user/keys/claim`), every server at
/// once, keeping each server's keys of its own users only.
pub(crate) async fn claim_remote(
    federation: &Federation,
    servers: BTreeMap<OwnedServerName, KeyClaims>,
    timeout: Option<Duration>,
    response: &mut claim_keys::v3::Response,
) {
    let answers = ask_servers(
        servers,
        remote_timeout(timeout),
        |server, claims| async move {
            federation
                .client()
                .send(
                    &server,
                    federation_keys::claim_keys::v1::Request::new(claims),
                )
                .await
        },
    )
    .await;
    for (server, answer) in answers {
        match answer {
            Ok(answer) => {
                for (user, devices) in answer.one_time_keys {
                    if user.server_name() == server {
                        response.one_time_keys.insert(user, devices);
                    }
                }
            }
            Err(error) => {
                response
                    .failures
                    .insert(server.to_string(), unreachable_server(&server, &error));
            }
        }
    }
}

/// # `POST /_matrix/client/v3/keys/query`
pub(crate) async fn query(
    State(state): State<AppState>,
    Extension(federation): Extension<Arc<Federation>>,
    request: Ruma<get_keys::v3::Request>,
) -> ApiResult<RumaResponse<get_keys::v3::Response>> {
    let requester = request.identity.user_id;
    let timeout = request.body.timeout;
    let (local, remote) = split_local(
        state.services().rooms.server_name(),
        request.body.device_keys,
    );
    let viewer = requester.clone();
    let found = blocking(&state, move |services| {
        services
            .e2ee
            .query_keys(&viewer, &local)
            .map_err(e2ee_error)
    })
    .await?;
    let mut response = get_keys::v3::Response::new();
    response.device_keys = found.device_keys;
    response.master_keys = found.master_keys;
    response.self_signing_keys = found.self_signing_keys;
    response.user_signing_keys = found.user_signing_keys;
    let own = state.services().rooms.server_name().to_owned();
    query_remote(&federation, remote, timeout, &mut response).await;
    let remote_masters: Vec<(OwnedUserId, Raw<CrossSigningKey>)> = response
        .master_keys
        .iter()
        .filter(|(user, _)| user.server_name() != own)
        .map(|(user, key)| (user.clone(), key.clone()))
        .collect();
    if !remote_masters.is_empty() {
        // The requester's own signatures of remote users' master keys (its verifications of
        // them) are kept here, not by those users' servers.
        let signed = blocking(&state, move |services| {
            remote_masters
                .into_iter()
                .map(|(user, key)| {
                    let Some(object) = canonical(&key) else {
                        return Ok((user, key));
                    };
                    let object = services
                        .e2ee
                        .with_own_signatures(&requester, &user, object)?;
                    Ok((user, to_raw(&object).unwrap_or(key)))
                })
                .collect::<Result<Vec<_>, E2eeError>>()
                .map_err(e2ee_error)
        })
        .await?;
        response.master_keys.extend(signed);
    }
    Ok(response.into())
}

/// A key object as canonical JSON; `None` if it is not an object.
fn canonical<T>(raw: &Raw<T>) -> Option<CanonicalJsonObject> {
    serde_json::from_str(raw.json().get()).ok()
}

/// A canonical JSON object as a raw key object.
fn to_raw<T>(object: &CanonicalJsonObject) -> Option<Raw<T>> {
    serde_json::value::to_raw_value(object)
        .ok()
        .map(Raw::from_json)
}

/// The master keys of `users` (users of other servers), as their servers serve them now;
/// a user whose server does not answer, or who has none, is left out.
async fn remote_master_keys(
    federation: &Federation,
    users: impl Iterator<Item = OwnedUserId>,
) -> BTreeMap<OwnedUserId, CanonicalJsonObject> {
    let mut servers: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>> =
        BTreeMap::new();
    for user in users {
        servers
            .entry(user.server_name().to_owned())
            .or_default()
            .insert(user, Vec::new());
    }
    if servers.is_empty() {
        return BTreeMap::new();
    }
    let mut answer = get_keys::v3::Response::new();
    query_remote(federation, servers, None, &mut answer).await;
    answer
        .master_keys
        .iter()
        .filter_map(|(user, key)| Some((user.clone(), canonical(key)?)))
        .collect()
}

/// # `POST /_matrix/client/v3/keys/claim`
pub(crate) async fn claim(
    State(state): State<AppState>,
    Extension(federation): Extension<Arc<Federation>>,
    request: Ruma<claim_keys::v3::Request>,
) -> ApiResult<RumaResponse<claim_keys::v3::Response>> {
    let timeout = request.body.timeout;
    let (local, remote) = split_local(
        state.services().rooms.server_name(),
        request.body.one_time_keys,
    );
    let claimed = blocking(&state, move |services| {
        services.e2ee.claim_keys(&local).map_err(e2ee_error)
    })
    .await?;
    let mut response = claim_keys::v3::Response::new(claimed);
    claim_remote(&federation, remote, timeout, &mut response).await;
    Ok(response.into())
}

/// A `from`/`to` token of `/keys/changes`: a sync token, or a bare stream position.
fn changes_token(token: &str) -> Result<axon_core::rooms::graph::StreamPosition, ApiError> {
    if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
        return token
            .parse()
            .map(axon_core::rooms::graph::StreamPosition)
            .map_err(|_| ApiError::invalid_param(format!("invalid token: {token}")));
    }
    Ok(SyncToken::parse(token)?.stream)
}

/// # `GET /_matrix/client/v3/keys/changes`
pub(crate) async fn changes(
    State(state): State<AppState>,
    request: Ruma<get_key_changes::v3::Request>,
) -> ApiResult<RumaResponse<get_key_changes::v3::Response>> {
    let user = request.identity.user_id;
    let from = changes_token(&request.body.from)?;
    let to = changes_token(&request.body.to)?;
    let changes = blocking(&state, move |services| {
        services
            .e2ee
            .device_list_changes(&services.rooms, &user, from, to)
            .map_err(e2ee_error)
    })
    .await?;
    Ok(get_key_changes::v3::Response::new(changes.changed, changes.left).into())
}

/// # `POST /_matrix/client/v3/keys/device_signing/upload`
///
/// The first upload of a user without a master key needs no user-interactive auth, as the
/// spec allows; so does repeating an upload that is already stored. Any other change of the
/// keys needs the user's password.
pub(crate) async fn upload_signing(
    State(state): State<AppState>,
    request: Ruma<upload_signing_keys::v3::Request>,
) -> ApiResult<RumaResponse<upload_signing_keys::v3::Response>> {
    let user = request.identity;
    let body = request.body;
    let upload = CrossSigningUpload {
        master_key: body.master_key,
        self_signing_key: body.self_signing_key,
        user_signing_key: body.user_signing_key,
    };
    let e2ee = &state.services().e2ee;
    let exempt = !e2ee.has_master_key(&user.user_id).map_err(e2ee_error)?
        || e2ee
            .cross_signing_unchanged(&user.user_id, &upload)
            .map_err(e2ee_error)?;
    if !exempt {
        uiaa::authenticate(
            &state,
            body.auth.as_ref(),
            Requirement {
                flows: vec![vec![uiaa::PASSWORD]],
                fingerprint: "POST /keys/device_signing/upload".to_owned(),
                user: Some(user.user_id.clone()),
                ip: request.client.ip,
            },
        )
        .await?;
    }
    blocking(&state, move |services| {
        services
            .e2ee
            .upload_cross_signing_keys(&services.rooms, &user.user_id, upload)
            .map_err(e2ee_error)
    })
    .await?;
    Ok(upload_signing_keys::v3::Response::new().into())
}

/// # `POST /_matrix/client/v3/keys/signatures/upload`
///
/// A signature of a remote user's master key is checked against that key as the user's
/// server serves it now, and kept here (see [`query`]).
pub(crate) async fn upload_signatures(
    State(state): State<AppState>,
    Extension(federation): Extension<Arc<Federation>>,
    request: Ruma<upload_signatures::v3::Request>,
) -> ApiResult<RumaResponse<upload_signatures::v3::Response>> {
    let signer = request.identity.user_id;
    let signed: BTreeMap<OwnedUserId, BTreeMap<String, Box<serde_json::value::RawValue>>> = request
        .body
        .signed_keys
        .into_iter()
        .map(|(user, keys)| {
            let keys = keys
                .iter()
                .map(|(id, json)| (id.to_owned(), json.to_owned()))
                .collect();
            (user, keys)
        })
        .collect();
    let own = state.services().rooms.server_name().to_owned();
    let remote_masters = remote_master_keys(
        &federation,
        signed
            .keys()
            .filter(|user| user.server_name() != own)
            .cloned(),
    )
    .await;
    let failures = blocking(&state, move |services| {
        services
            .e2ee
            .upload_signatures_with(&services.rooms, &signer, &signed, &remote_masters)
            .map_err(e2ee_error)
    })
    .await?;
    let mut response = upload_signatures::v3::Response::new();
    for (user, keys) in failures {
        for (key, failure) in keys {
            let failure = serde_json::from_value(failure)
                .map_err(|err| ApiError::internal(format!("signature failure shape: {err}")))?;
            response
                .failures
                .entry(user.clone())
                .or_default()
                .insert(key, failure);
        }
    }
    Ok(response.into())
}

#[cfg(test)]
mod tests {
    use ruma::{device_id, server_name, user_id};

    use super::*;

    #[test]
    fn remote_timeouts_default_to_ten_seconds_and_are_capped() {
        assert_eq!(remote_timeout(None), Duration::from_secs(10));
        assert_eq!(
            remote_timeout(Some(Duration::from_millis(1500))),
            Duration::from_millis(1500)
        );
        assert_eq!(
            remote_timeout(Some(Duration::from_secs(3600))),
            MAX_REMOTE_TIMEOUT
        );
    }

    #[test]
    fn keys_must_name_the_user_and_device_they_are_filed_under() {
        let raw = |value: Value| -> Raw<Value> { Raw::new(&value).unwrap() };
        let alice = user_id!("@alice:a.test");
        let keys = raw(json!({"user_id": "@alice:a.test", "device_id": "D1"}));
        assert!(owned_by(&keys, alice, Some(device_id!("D1"))));
        assert!(!owned_by(&keys, alice, Some(device_id!("D2"))));
        assert!(!owned_by(
            &keys,
            user_id!("@mallory:a.test"),
            Some(device_id!("D1"))
        ));
        let master = raw(json!({"user_id": "@alice:a.test", "usage": ["master"]}));
        assert!(owned_by(&master, alice, None));
        assert!(!owned_by(&raw(json!({"usage": ["master"]})), alice, None));
    }

    #[tokio::test]
    async fn a_server_that_does_not_answer_in_time_is_a_failure_and_others_still_count() {
        let servers = BTreeMap::from([
            (server_name!("fast.test").to_owned(), 1),
            (server_name!("silent.test").to_owned(), 2),
        ]);
        let answers = ask_servers(servers, Duration::from_millis(50), |_, n| async move {
            if n == 2 {
                std::future::pending::<()>().await;
            }
            Ok::<_, FederationError>(n * 10)
        })
        .await;
        let answers: BTreeMap<String, Result<i32, String>> = answers
            .into_iter()
            .map(|(server, answer)| (server.to_string(), answer.map_err(|e| e.to_string())))
            .collect();
        assert_eq!(answers["fast.test"], Ok(10));
        assert!(answers["silent.test"].is_err());
        let failure = unreachable_server(
            server_name!("silent.test"),
            &FederationError::Transport {
                server: server_name!("silent.test").to_owned(),
                reason: "secret internals".to_owned(),
            },
        );
        assert_eq!(failure["status"], 503);
        assert!(!failure.to_string().contains("secret internals"));
    }
}
