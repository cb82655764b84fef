//! The outbound federation client: ruma request types in, ruma response types out, over
//! HTTPS to the address discovery found, signed with `X-Matrix` where the endpoint asks.
//!
//! Each destination gets its own reqwest client pinned to the addresses discovery returned
//! (so the name is not resolved again behind our back, and a later DNS answer cannot lead
//! into the local network), with the certificate checked against the name discovery says the
//! server must present. Certificates are verified by rustls against the platform's roots plus
//! `federation.trusted_ca`; `federation.skip_tls_verification` turns that off, loudly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axon_core::keys::ServerKeys;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderValue, StatusCode};
use ruma::api::auth_scheme::{AuthScheme, NoAuthentication};
use ruma::api::federation::authentication::ServerSignatures;
use ruma::api::path_builder::SinglePath;
use ruma::api::{IncomingResponse, OutgoingBody, OutgoingRequest};
use ruma::{OwnedServerName, ServerName};

use crate::acl::ServerPolicy;
use crate::error::FederationError;
use crate::resolve::{ResolvedServer, Resolver};
use crate::signing;

/// The `User-Agent` of every outbound request.
pub(crate) const USER_AGENT: &str = concat!("Axon/", env!("CARGO_PKG_VERSION"));
/// Time allowed for a whole request, connection to last byte.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Time allowed to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response body accepted (a `send_join` answer for a big room is tens of MB).
const MAX_RESPONSE_BYTES: usize = 128 * 1024 * 1024;

/// Installs ring as the process's rustls crypto provider if none is: reqwest is built
/// without a default one and panics when a client is built before one is installed.
pub(crate) fn ensure_crypto_provider() {
    // An error means a provider is already installed, which is just as good.
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
}

/// How an endpoint's authentication is added to outbound requests.
pub trait OutgoingAuth: AuthScheme {
    /// Whether requests are signed with `X-Matrix`.
    const SIGNED: bool;
}

impl OutgoingAuth for ServerSignatures {
    const SIGNED: bool = true;
}

impl OutgoingAuth for NoAuthentication {
    const SIGNED: bool = false;
}

/// TLS settings for outbound connections.
#[derive(Clone, Debug, Default)]
pub struct TlsSettings {
    /// Extra trusted CA certificates.
    pub extra_roots: Vec<reqwest::Certificate>,
    /// Whether certificates are not verified at all (test rigs only).
    pub skip_verification: bool,
}

#[derive(Clone, Debug)]
struct Destination {
    resolved: ResolvedServer,
    http: reqwest::Client,
    base_url: String,
    expires: Instant,
}

/// Sends requests to other servers.
#[derive(Debug)]
pub struct FederationClient {
    enabled: bool,
    keys: Arc<ServerKeys>,
    policy: ServerPolicy,
    resolver: Resolver,
    tls: TlsSettings,
    destinations: Mutex<HashMap<OwnedServerName, Destination>>,
}

impl FederationClient {
    /// A client signing with `keys`, refusing servers `policy` denies.
    pub fn new(
        enabled: bool,
        keys: Arc<ServerKeys>,
        policy: ServerPolicy,
        resolver: Resolver,
        tls: TlsSettings,
    ) -> Self {
        ensure_crypto_provider();
        if tls.skip_verification {
            tracing::error!(
                "federation.skip_tls_verification is on: outbound federation does not verify \
                 certificates, so anyone on the network path can impersonate other servers"
            );
        }
        Self {
            enabled,
            keys,
            policy,
            resolver,
            tls,
            destinations: Mutex::new(HashMap::new()),
        }
    }

    /// This server's name.
    pub fn server_name(&self) -> &ServerName {
        self.keys.server_name()
    }

    /// Whether federation with `server` is allowed by the configuration.
    pub fn allows(&self, server: &ServerName) -> bool {
        self.policy.allows(server)
    }

    /// Sends `request` to `destination` and parses the answer. Endpoints using
    /// `ServerSignatures` are signed with this server's key; the key endpoints are not.
    pub async fn send<R>(
        &self,
        destination: &ServerName,
        request: R,
    ) -> Result<R::IncomingResponse, FederationError>
    where
        R: OutgoingRequest<PathBuilder = SinglePath>,
        R::Authentication: OutgoingAuth,
    {
        let target = self.destination(destination).await?;
        let mut http_request = into_http(request, &target.base_url)?;
        let host = HeaderValue::from_str(&target.resolved.host_header)
            .map_err(|err| FederationError::BuildRequest(err.to_string()))?;
        http_request.headers_mut().insert(HOST, host);
        if <R::Authentication as OutgoingAuth>::SIGNED {
            signing::sign_request(&self.keys, destination, &mut http_request)?;
        }
        let response = self.execute(destination, &target, http_request).await?;
        let status = response.status();
        if status.as_u16() >= 400 {
            return Err(remote_error(destination, status, response.body()));
        }
        let response = response.map(|body| body.to_vec());
        let (parts, body) = response.into_parts();
        R::IncomingResponse::try_from_http_response_inner(http::Response::from_parts(
            parts,
            body.as_slice(),
        ))
        .map_err(|err| FederationError::invalid(destination, err))
    }

    /// Sends `request` to `destination` like [`FederationClient::send`], but returns the
    /// answer as soon as its headers arrive, whatever its status, with the body left to read:
    /// for answers the caller streams under its own size and time limits (media).
    pub async fn send_streaming<R>(
        &self,
        destination: &ServerName,
        request: R,
    ) -> Result<reqwest::Response, FederationError>
    where
        R: OutgoingRequest<PathBuilder = SinglePath>,
        R::Authentication: OutgoingAuth,
    {
        let target = self.destination(destination).await?;
        let http_request = into_http(request, &target.base_url)?;
        self.start(
            destination,
            &target,
            http_request,
            <R::Authentication as OutgoingAuth>::SIGNED,
        )
        .await
    }

    /// An unsigned `GET` of `path_and_query` (which must start with `/`) on `destination`,
    /// streamed like [`FederationClient::send_streaming`]: for the few client-server
    /// endpoints one server asks of another (the legacy media download).
    pub async fn get_streaming(
        &self,
        destination: &ServerName,
        path_and_query: &str,
    ) -> Result<reqwest::Response, FederationError> {
        let target = self.destination(destination).await?;
        let http_request = http::Request::get(format!("{}{path_and_query}", target.base_url))
            .body(Vec::new())
            .map_err(|err| FederationError::BuildRequest(err.to_string()))?;
        self.start(destination, &target, http_request, false).await
    }

    async fn start(
        &self,
        destination: &ServerName,
        target: &Destination,
        mut request: http::Request<Vec<u8>>,
        signed: bool,
    ) -> Result<reqwest::Response, FederationError> {
        let host = HeaderValue::from_str(&target.resolved.host_header)
            .map_err(|err| FederationError::BuildRequest(err.to_string()))?;
        request.headers_mut().insert(HOST, host);
        if signed {
            signing::sign_request(&self.keys, destination, &mut request)?;
        }
        let request = reqwest::Request::try_from(request.map(reqwest::Body::from))
            .map_err(|err| FederationError::BuildRequest(err.to_string()))?;
        target.http.execute(request).await.map_err(|err| {
            self.forget(destination);
            FederationError::transport(destination, error_chain(&err))
        })
    }

    async fn execute(
        &self,
        destination: &ServerName,
        target: &Destination,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Bytes>, FederationError> {
        let request = reqwest::Request::try_from(request.map(reqwest::Body::from))
            .map_err(|err| FederationError::BuildRequest(err.to_string()))?;
        let mut response = target.http.execute(request).await.map_err(|err| {
            // A dead destination is re-resolved next time: its address may have changed.
            self.forget(destination);
            FederationError::transport(destination, error_chain(&err))
        })?;
        let mut builder = http::Response::builder().status(response.status());
        if let Some(headers) = builder.headers_mut() {
            headers.clone_from(response.headers());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|err| FederationError::transport(destination, error_chain(&err)))?
        {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(FederationError::invalid(destination, "response too large"));
            }
            body.extend_from_slice(&chunk);
        }
        builder
            .body(Bytes::from(body))
            .map_err(|err| FederationError::invalid(destination, err))
    }

    /// The cached client for `server`, or a fresh one after discovery.
    async fn destination(&self, server: &ServerName) -> Result<Destination, FederationError> {
        if !self.enabled {
            return Err(FederationError::Disabled);
        }
        if server == self.keys.server_name() {
            return Err(FederationError::ToSelf);
        }
        if !self.policy.allows(server) {
            return Err(FederationError::Denied(server.to_owned()));
        }
        let now = Instant::now();
        if let Ok(cache) = self.destinations.lock()
            && let Some(found) = cache.get(server)
            && found.expires > now
        {
            return Ok(found.clone());
        }
        let (resolved, ttl) = self.resolver.resolve(server).await?;
        if self.tls.skip_verification {
            tracing::error!(
                destination = %server,
                "not verifying the TLS certificate of this destination \
                 (federation.skip_tls_verification)"
            );
        }
        tracing::debug!(destination = %server, ?resolved, "resolved federation destination");
        let destination = self.build_destination(server, resolved, now + ttl)?;
        if let Ok(mut cache) = self.destinations.lock() {
            cache.insert(server.to_owned(), destination.clone());
        }
        Ok(destination)
    }

    fn build_destination(
        &self,
        server: &ServerName,
        resolved: ResolvedServer,
        expires: Instant,
    ) -> Result<Destination, FederationError> {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .http1_only()
            .user_agent(USER_AGENT)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .tls_certs_merge(self.tls.extra_roots.clone());
        if self.tls.skip_verification {
            builder = builder
                .tls_danger_accept_invalid_certs(true)
                .tls_danger_accept_invalid_hostnames(true);
        }
        let base_url = match resolved.tls_name.parse::<std::net::IpAddr>() {
            // A literal address is connected to directly: the URL carries the port.
            Ok(std::net::IpAddr::V4(ip)) => format!("https://{ip}:{}", first_port(&resolved)),
            Ok(std::net::IpAddr::V6(ip)) => format!("https://[{ip}]:{}", first_port(&resolved)),
            // A name is pinned to the addresses found, each with its own port; without a port
            // in the URL, the connector keeps the pinned ports.
            Err(_) => {
                builder = builder.resolve_to_addrs(&resolved.tls_name, &resolved.addresses);
                format!("https://{}", resolved.tls_name)
            }
        };
        let http = builder.build().map_err(|err| {
            FederationError::ClientSetup(format!("client for {server}: {}", error_chain(&err)))
        })?;
        Ok(Destination {
            resolved,
            http,
            base_url,
            expires,
        })
    }

    fn forget(&self, server: &ServerName) {
        if let Ok(mut cache) = self.destinations.lock() {
            cache.remove(server);
        }
    }
}

fn first_port(resolved: &ResolvedServer) -> u16 {
    resolved
        .addresses
        .first()
        .map_or(crate::resolve::DEFAULT_PORT, std::net::SocketAddr::port)
}

/// A ruma request as an HTTP request with a byte body (what `OutgoingRequestExt` does, minus
/// the authentication, which is added by [`signing::sign_request`]).
fn into_http<R>(request: R, base_url: &str) -> Result<http::Request<Vec<u8>>, FederationError>
where
    R: OutgoingRequest<PathBuilder = SinglePath>,
{
    let build = |err: &dyn std::fmt::Display| FederationError::BuildRequest(err.to_string());
    let (mut parts, body) = request
        .try_into_http_request_inner(base_url, ())
        .map_err(|err| build(&err))?
        .into_parts();
    if let Some(content_type) = body.content_type() {
        parts.headers.entry(CONTENT_TYPE).or_insert(content_type);
    }
    let bytes: Vec<u8> = body
        .try_into_buf()
        .map_err(|err| build(&Into::<ruma::api::error::IntoHttpError>::into(err)))?;
    Ok(http::Request::from_parts(parts, bytes))
}

/// An error answer, reduced to its errcode and message.
fn remote_error(server: &ServerName, status: StatusCode, body: &[u8]) -> FederationError {
    let parsed: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let text = |field: &str| {
        parsed
            .get(field)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    FederationError::Remote {
        server: server.to_owned(),
        status: status.as_u16(),
        errcode: text("errcode").unwrap_or_else(|| "M_UNKNOWN".to_owned()),
        message: text("error").unwrap_or_default(),
    }
}

/// An error with its causes, which is where reqwest keeps the useful part (TLS, DNS).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
