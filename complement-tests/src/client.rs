//! A small typed HTTP client for the client-server API.

use std::fmt;
use std::sync::Once;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

/// Longest a single request may take before the test fails, so a hung
/// server fails the test instead of hanging it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How many user-interactive authentication rounds [`Client::uiaa`] runs
/// before giving up; more stages than this means a server loop.
const MAX_UIAA_ROUNDS: usize = 6;

/// Installs the ring crypto provider for rustls once per process: reqwest
/// is built without a default provider and refuses to build a client
/// without one, even for plain HTTP.
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // An error means another provider is already installed, which is
        // just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A plain reqwest client whose requests time out after `timeout`.
pub(crate) fn http_client(timeout: Duration) -> reqwest::Client {
    install_crypto_provider();
    match reqwest::Client::builder().timeout(timeout).build() {
        Ok(http) => http,
        Err(e) => panic!("building the HTTP client: {e}"),
    }
}

/// A response as a test sees it.
#[derive(Debug, Clone)]
pub struct Response {
    /// The request method, for failure messages.
    pub method: Method,
    /// The request path, for failure messages.
    pub path: String,
    /// The HTTP status code.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body parsed as JSON, or `Value::Null` if it was empty or not
    /// JSON (see [`Response::text`]).
    pub body: Value,
    /// The raw body.
    pub text: String,
}

impl Response {
    /// A one-line summary of the request and response, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "{} {} -> {} {}",
            self.method, self.path, self.status, self.text
        )
    }

    /// A header's value as text, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status code and returns `self` for chaining.
    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(
            self.status,
            status,
            "unexpected status: {}",
            self.describe()
        );
        self
    }

    /// Asserts a 200 response and returns `self` for chaining.
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        self.assert_status(200)
    }

    /// The string at a JSON pointer (`"/user_id"`, `"/m.homeserver/base_url"`),
    /// panicking with the body if it is missing or not a string.
    #[track_caller]
    pub fn str_at(&self, pointer: &str) -> &str {
        match self.body.pointer(pointer).and_then(Value::as_str) {
            Some(value) => value,
            None => panic!("no string at {pointer} in {}", self.describe()),
        }
    }

    /// The unsigned integer at a JSON pointer, panicking with the body if it
    /// is missing or not one.
    #[track_caller]
    pub fn u64_at(&self, pointer: &str) -> u64 {
        match self.body.pointer(pointer).and_then(Value::as_u64) {
            Some(value) => value,
            None => panic!("no unsigned integer at {pointer} in {}", self.describe()),
        }
    }

    /// Whether this is a user-interactive authentication challenge: a 401
    /// whose body lists `flows`.
    pub fn is_uiaa_challenge(&self) -> bool {
        self.status == 401 && self.body["flows"].is_array()
    }
}

/// What a test can offer to complete user-interactive authentication stages.
///
/// [`Client::uiaa`] only picks flows made entirely of stages listed here, so
/// a test that offers only a password proves the server demanded one.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    dummy: bool,
    password: Option<(String, String)>,
    registration_token: Option<String>,
}

impl Auth {
    /// Offers `m.login.dummy` only.
    pub fn dummy() -> Auth {
        Auth {
            dummy: true,
            ..Auth::default()
        }
    }

    /// Offers `m.login.password` for this user id (or localpart).
    pub fn password(user: &str, password: &str) -> Auth {
        Auth {
            password: Some((user.to_owned(), password.to_owned())),
            ..Auth::default()
        }
    }

    /// Also offers `m.login.registration_token` with this token.
    pub fn with_registration_token(mut self, token: &str) -> Auth {
        self.registration_token = Some(token.to_owned());
        self
    }

    /// Also offers `m.login.dummy`.
    pub fn with_dummy(mut self) -> Auth {
        self.dummy = true;
        self
    }

    fn can_do(&self, stage: &str) -> bool {
        match stage {
            "m.login.dummy" => self.dummy,
            "m.login.password" => self.password.is_some(),
            "m.login.registration_token" => self.registration_token.is_some(),
            _ => false,
        }
    }

    /// The `auth` object for one stage, or `None` if not offered.
    fn stage_body(&self, stage: &str, session: Option<&str>) -> Option<Value> {
        let mut body = match stage {
            "m.login.dummy" if self.dummy => json!({ "type": stage }),
            "m.login.password" => {
                let (user, password) = self.password.as_ref()?;
                json!({
                    "type": stage,
                    "identifier": { "type": "m.id.user", "user": user },
                    "password": password,
                })
            }
            "m.login.registration_token" => {
                json!({ "type": stage, "token": self.registration_token.as_ref()? })
            }
            _ => return None,
        };
        if let Some(session) = session {
            body["session"] = Value::from(session);
        }
        Some(body)
    }
}

/// An authenticated session from registration or login.
#[derive(Debug, Clone)]
pub struct Session {
    /// The full user id, `@localpart:server_name`.
    pub user_id: String,
    /// The access token.
    pub access_token: String,
    /// The device id.
    pub device_id: String,
    /// The refresh token, when one was asked for and issued.
    pub refresh_token: Option<String>,
    /// The access token's lifetime, when it expires.
    pub expires_in_ms: Option<u64>,
}

impl Session {
    /// Reads a session from a successful register/login/refresh-less
    /// response, panicking with the body if it is not one.
    #[track_caller]
    pub fn from_response(resp: &Response) -> Session {
        resp.assert_ok();
        Session {
            user_id: resp.str_at("/user_id").to_owned(),
            access_token: resp.str_at("/access_token").to_owned(),
            device_id: resp.str_at("/device_id").to_owned(),
            refresh_token: resp.body["refresh_token"].as_str().map(str::to_owned),
            expires_in_ms: resp.body["expires_in_ms"].as_u64(),
        }
    }
}

/// Percent-encodes one path segment (a user id, a device id), keeping only
/// RFC 3986 unreserved characters, as clients do.
pub fn encode_path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// An HTTP client bound to one server, optionally with an access token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
    token: Option<String>,
}

impl fmt::Debug for Client {
    // The token stays out of test output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url)
            .field("authenticated", &self.token.is_some())
            .finish()
    }
}

impl Client {
    /// A client for the server at `base_url` (`http://127.0.0.1:1234`),
    /// without an access token.
    pub fn new(base_url: impl Into<String>) -> Client {
        Client {
            http: http_client(REQUEST_TIMEOUT),
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            token: None,
        }
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The same client, sending this access token as a bearer token.
    pub fn with_token(&self, token: &str) -> Client {
        Client {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    /// The same client, authenticated as `session`.
    pub fn as_session(&self, session: &Session) -> Client {
        self.with_token(&session.access_token)
    }

    /// The same client without an access token.
    pub fn anonymous(&self) -> Client {
        Client {
            token: None,
            ..self.clone()
        }
    }

    /// Sends a request with an optional raw body and extra headers.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(Vec<u8>, &str)>,
        headers: &[(&str, &str)],
    ) -> Response {
        let url = format!("{}{path}", self.base_url);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some((bytes, content_type)) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(bytes);
        }
        for (name, value) in headers {
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) else {
                panic!("invalid test header {name}: {value}");
            };
            request = request.header(name, value);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => panic!("{method} {path}: request failed: {e}"),
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = match response.text().await {
            Ok(text) => text,
            Err(e) => panic!("{method} {path}: reading the body failed: {e}"),
        };
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Response {
            method,
            path: path.to_owned(),
            status,
            headers,
            body,
            text,
        }
    }

    /// Sends `body` as JSON with `method`.
    pub async fn json(&self, method: Method, path: &str, body: &Value) -> Response {
        let bytes = body.to_string().into_bytes();
        self.send(method, path, Some((bytes, "application/json")), &[])
            .await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Response {
        self.send(Method::GET, path, None, &[]).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.json(Method::POST, path, &body).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put(&self, path: &str, body: Value) -> Response {
        self.json(Method::PUT, path, &body).await
    }

    /// `DELETE path` with a JSON body (device deletion carries `auth`).
    pub async fn delete(&self, path: &str, body: Value) -> Response {
        self.json(Method::DELETE, path, &body).await
    }

    /// Runs a request through user-interactive authentication.
    ///
    /// Sends `body` without `auth`; while the answer is a 401 challenge,
    /// picks the first flow whose stages `auth` can all complete, and sends
    /// `body` again with the next uncompleted stage. Returns the first
    /// answer that is not a challenge, or a challenge that made no progress
    /// (a failed stage, or no flow the test can complete) for the test to
    /// inspect.
    pub async fn uiaa(&self, method: Method, path: &str, body: Value, auth: &Auth) -> Response {
        let mut resp = self.json(method.clone(), path, &body).await;
        let mut completed_before: Option<usize> = None;
        for _ in 0..MAX_UIAA_ROUNDS {
            if !resp.is_uiaa_challenge() {
                return resp;
            }
            let completed: Vec<&str> = resp.body["completed"]
                .as_array()
                .map(|stages| stages.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            // A stage that was just attempted and not added to `completed`
            // failed; return the challenge with its errcode.
            if completed_before.is_some_and(|before| completed.len() <= before) {
                return resp;
            }
            completed_before = Some(completed.len());
            let Some(stage) = next_stage(&resp.body, &completed, auth) else {
                return resp;
            };
            let session = resp.body["session"].as_str();
            let Some(stage_auth) = auth.stage_body(&stage, session) else {
                return resp;
            };
            let mut with_auth = body.clone();
            with_auth["auth"] = stage_auth;
            resp = self.json(method.clone(), path, &with_auth).await;
        }
        panic!("user-interactive auth did not finish: {}", resp.describe());
    }

    /// `POST /_matrix/client/v3/register` with `body`, completing
    /// user-interactive authentication with `auth`.
    pub async fn register_with(&self, body: Value, auth: &Auth) -> Response {
        self.uiaa(Method::POST, "/_matrix/client/v3/register", body, auth)
            .await
    }

    /// Registers `username` with `password` through the dummy flow.
    pub async fn register(&self, username: &str, password: &str) -> Session {
        let resp = self
            .register_with(
                json!({ "username": username, "password": password }),
                &Auth::dummy(),
            )
            .await;
        registered(&resp)
    }

    /// Registers `username` with `password` using a registration token.
    pub async fn register_with_token(
        &self,
        username: &str,
        password: &str,
        token: &str,
    ) -> Session {
        let resp = self
            .register_with(
                json!({ "username": username, "password": password }),
                &Auth::dummy().with_registration_token(token),
            )
            .await;
        registered(&resp)
    }

    /// `POST /_matrix/client/v3/login` with `body`.
    pub async fn login(&self, body: Value) -> Response {
        self.post("/_matrix/client/v3/login", body).await
    }

    /// The body of a password login with an `m.id.user` identifier.
    pub fn password_login_body(user: &str, password: &str) -> Value {
        json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": user },
            "password": password,
        })
    }

    /// Logs in with a password (`user` is a localpart or a full user id).
    pub async fn login_password(&self, user: &str, password: &str) -> Session {
        let resp = self
            .login(Client::password_login_body(user, password))
            .await;
        if resp.status != 200 {
            panic!("login failed: {}", resp.describe());
        }
        Session::from_response(&resp)
    }

    /// `POST /_matrix/client/v3/logout` with this client's token.
    pub async fn logout(&self) -> Response {
        self.post("/_matrix/client/v3/logout", json!({})).await
    }

    /// `GET /_matrix/client/v3/account/whoami` with this client's token.
    pub async fn whoami(&self) -> Response {
        self.get("/_matrix/client/v3/account/whoami").await
    }
}

/// The next stage to attempt: the first uncompleted stage of the first flow
/// that starts with the completed stages and that `auth` can finish.
fn next_stage(challenge: &Value, completed: &[&str], auth: &Auth) -> Option<String> {
    let flows = challenge["flows"].as_array()?;
    flows.iter().find_map(|flow| {
        let stages: Vec<&str> = flow["stages"]
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let fits = stages.len() > completed.len()
            && stages.starts_with(completed)
            && stages.iter().all(|stage| auth.can_do(stage));
        fits.then(|| stages[completed.len()].to_owned())
    })
}

#[track_caller]
fn registered(resp: &Response) -> Session {
    if resp.status != 200 {
        panic!("registration failed: {}", resp.describe());
    }
    Session::from_response(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(
            encode_path_segment("@alice:127.0.0.1:8448"),
            "%40alice%3A127.0.0.1%3A8448"
        );
        assert_eq!(encode_path_segment("AbC-._~"), "AbC-._~");
        assert_eq!(encode_path_segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn next_stage_follows_the_first_flow_the_test_can_complete() {
        let challenge = json!({
            "flows": [
                { "stages": ["m.login.recaptcha"] },
                { "stages": ["m.login.registration_token", "m.login.dummy"] },
            ],
            "session": "s",
        });
        let auth = Auth::dummy().with_registration_token("tok");
        assert_eq!(
            next_stage(&challenge, &[], &auth).as_deref(),
            Some("m.login.registration_token")
        );
        assert_eq!(
            next_stage(&challenge, &["m.login.registration_token"], &auth).as_deref(),
            Some("m.login.dummy")
        );
        assert_eq!(next_stage(&challenge, &[], &Auth::dummy()), None);
    }

    #[test]
    fn password_stage_uses_a_user_identifier_and_the_session() {
        let auth = Auth::password("@a:hs", "pw");
        let body = auth.stage_body("m.login.password", Some("sess")).unwrap();
        assert_eq!(
            body,
            json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": "@a:hs" },
                "password": "pw",
                "session": "sess",
            })
        );
        assert!(auth.stage_body("m.login.dummy", None).is_none());
    }
}
