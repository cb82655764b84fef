//! The few client-server API calls the benchmark makes, with errors as
//! values (the harness's `Client` panics, which suits tests, not a tool).

use std::time::Duration;

use axon_complement_tests::encode_path_segment;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde_json::{Value, json};

use crate::bench::error::BenchError;

/// Longest a single request may take. Generous: a send stuck this long is
/// a failure either way, and a bound keeps every loop finite.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How many user-interactive authentication rounds registration may take;
/// the dummy flow needs two requests.
const MAX_UIAA_ROUNDS: usize = 4;
/// How much of an unexpected response body goes into an error.
const BODY_EXCERPT_CHARS: usize = 300;

/// A reqwest client for one sender (or for set-up).
///
/// Each sender gets its own client with one kept-alive connection, as a
/// real client device has: requests never queue behind another sender's in
/// a shared pool, and the server sees as many connections as senders.
pub(crate) fn http_client() -> Result<reqwest::Client, BenchError> {
    // reqwest is built without a default TLS crypto provider and refuses
    // to build a client until one is installed, even for plain HTTP. An
    // error means one is already installed, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1)
        .build()
        .map_err(|source| BenchError::Http {
            what: "building the HTTP client".to_owned(),
            source,
        })
}

/// A registered user.
#[derive(Clone)]
pub(crate) struct User {
    pub(crate) user_id: String,
    access_token: String,
}

impl std::fmt::Debug for User {
    // The access token stays out of any output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

impl User {
    /// The `Authorization` header value for this user.
    pub(crate) fn authorization(&self) -> Result<HeaderValue, BenchError> {
        HeaderValue::from_str(&format!("Bearer {}", self.access_token)).map_err(|_| {
            BenchError::Unsupported(format!(
                "the access token of {} is not a valid header value",
                self.user_id
            ))
        })
    }
}

/// Sends a JSON request and returns the status and the body parsed as JSON
/// (`Value::Null` if it is not JSON), plus the raw text for errors.
async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    user: Option<&User>,
    body: &Value,
    what: &str,
) -> Result<(u16, Value, String), BenchError> {
    let mut request = http.request(method, url).json(body);
    if let Some(user) = user {
        request = request.header(AUTHORIZATION, user.authorization()?);
    }
    let http_error = |source| BenchError::Http {
        what: what.to_owned(),
        source,
    };
    let response = request.send().await.map_err(http_error)?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(http_error)?;
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok((status, json, text))
}

fn unexpected(what: &str, status: u16, text: &str) -> BenchError {
    BenchError::Status {
        what: what.to_owned(),
        status,
        body: excerpt(text),
    }
}

/// The first [`BODY_EXCERPT_CHARS`] characters of a body.
pub(crate) fn excerpt(text: &str) -> String {
    let mut out: String = text.chars().take(BODY_EXCERPT_CHARS).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// Registers `username` through `POST /_matrix/client/v3/register`,
/// completing user-interactive authentication with `m.login.dummy`.
pub(crate) async fn register(
    http: &reqwest::Client,
    base_url: &str,
    username: &str,
    password: &str,
) -> Result<User, BenchError> {
    let url = format!("{base_url}/_matrix/client/v3/register");
    let what = format!("registering {username}");
    let mut body = json!({
        "username": username,
        "password": password,
        "initial_device_display_name": "send_bench",
    });
    for _ in 0..MAX_UIAA_ROUNDS {
        let (status, json, text) =
            call(http, reqwest::Method::POST, &url, None, &body, &what).await?;
        match status {
            200 => {
                let field = |name: &str| json[name].as_str().map(str::to_owned);
                return match (field("user_id"), field("access_token")) {
                    (Some(user_id), Some(access_token)) => Ok(User {
                        user_id,
                        access_token,
                    }),
                    _ => Err(unexpected(&what, status, &text)),
                };
            }
            401 if json["flows"].is_array() => {
                if !offers_dummy_flow(&json) {
                    return Err(BenchError::Unsupported(format!(
                        "{what}: the server offers no registration flow of only \
                         m.login.dummy (open registration without verification is \
                         needed): {}",
                        excerpt(&text)
                    )));
                }
                let mut auth = json!({ "type": "m.login.dummy" });
                if let Some(session) = json["session"].as_str() {
                    auth["session"] = Value::from(session);
                }
                body["auth"] = auth;
            }
            _ => return Err(unexpected(&what, status, &text)),
        }
    }
    Err(BenchError::Unsupported(format!(
        "{what}: user-interactive authentication did not finish in {MAX_UIAA_ROUNDS} rounds"
    )))
}

/// Whether a UIAA challenge has a flow made of `m.login.dummy` only.
fn offers_dummy_flow(challenge: &Value) -> bool {
    challenge["flows"].as_array().is_some_and(|flows| {
        flows.iter().any(|flow| {
            flow["stages"]
                .as_array()
                .is_some_and(|stages| stages.iter().all(|s| s == "m.login.dummy"))
        })
    })
}

/// Creates a public room as `creator` and returns its id.
pub(crate) async fn create_room(
    http: &reqwest::Client,
    base_url: &str,
    creator: &User,
    name: &str,
) -> Result<String, BenchError> {
    let url = format!("{base_url}/_matrix/client/v3/createRoom");
    let what = format!("creating a room as {}", creator.user_id);
    let body = json!({ "preset": "public_chat", "name": name });
    let (status, json, text) = call(
        http,
        reqwest::Method::POST,
        &url,
        Some(creator),
        &body,
        &what,
    )
    .await?;
    match (status, json["room_id"].as_str()) {
        (200, Some(room_id)) => Ok(room_id.to_owned()),
        _ => Err(unexpected(&what, status, &text)),
    }
}

/// Joins `user` to the public room `room_id`.
pub(crate) async fn join(
    http: &reqwest::Client,
    base_url: &str,
    user: &User,
    room_id: &str,
) -> Result<(), BenchError> {
    let url = format!(
        "{base_url}/_matrix/client/v3/join/{}",
        encode_path_segment(room_id)
    );
    let what = format!("joining {room_id} as {}", user.user_id);
    let (status, _, text) = call(
        http,
        reqwest::Method::POST,
        &url,
        Some(user),
        &json!({}),
        &what,
    )
    .await?;
    match status {
        200 => Ok(()),
        _ => Err(unexpected(&what, status, &text)),
    }
}

/// One sender: a user in a room, with its own connection.
#[derive(Debug)]
pub(crate) struct Sender {
    http: reqwest::Client,
    /// `.../rooms/{room}/send/m.room.message/`, the transaction id follows.
    send_url_prefix: String,
    authorization: HeaderValue,
    /// Makes transaction ids unique across senders, phases and runs.
    txn_prefix: String,
}

impl Sender {
    /// A sender posting into `room_id` as `user`; `txn_prefix` must be
    /// unique to this sender within the run.
    pub(crate) fn new(
        base_url: &str,
        user: &User,
        room_id: &str,
        txn_prefix: String,
    ) -> Result<Sender, BenchError> {
        Ok(Sender {
            http: http_client()?,
            send_url_prefix: format!(
                "{base_url}/_matrix/client/v3/rooms/{}/send/m.room.message/",
                encode_path_segment(room_id)
            ),
            authorization: user.authorization()?,
            txn_prefix,
        })
    }

    /// `PUT /_matrix/client/v3/rooms/{room}/send/m.room.message/{txnId}`
    /// with a text message; the transaction id ends in `seq`. Succeeds on a
    /// 200 whose body names the new event; any other outcome is a failure,
    /// described for the report.
    pub(crate) async fn send(&self, seq: &str) -> Result<(), String> {
        let txn = format!("{}-{seq}", self.txn_prefix);
        let body = json!({ "msgtype": "m.text", "body": format!("send_bench {txn}") });
        let response = self
            .http
            .put(format!("{}{txn}", self.send_url_prefix))
            .header(AUTHORIZATION, self.authorization.clone())
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status().as_u16();
        // The whole body is read: the connection is reused only then, and
        // the event id is part of the answer a client waits for.
        let text = response
            .text()
            .await
            .map_err(|e| format!("{status}, reading the body failed: {e}"))?;
        let has_event_id = serde_json::from_str::<Value>(&text)
            .is_ok_and(|json| json["event_id"].as_str().is_some_and(|id| !id.is_empty()));
        if status == 200 && has_event_id {
            Ok(())
        } else {
            Err(format!("{status} {}", excerpt(&text)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_dummy_only_flow_will_do() {
        let challenge = |flows: Value| json!({ "flows": flows, "session": "s" });
        assert!(offers_dummy_flow(&challenge(json!([
            { "stages": ["m.login.recaptcha"] },
            { "stages": ["m.login.dummy"] },
        ]))));
        assert!(!offers_dummy_flow(&challenge(json!([
            { "stages": ["m.login.registration_token", "m.login.dummy"] },
        ]))));
        assert!(!offers_dummy_flow(&json!({})));
    }

    #[test]
    fn excerpts_are_bounded() {
        assert_eq!(excerpt("short"), "short");
        let long = "x".repeat(1000);
        assert_eq!(excerpt(&long).chars().count(), BODY_EXCERPT_CHARS + 1);
    }
}
