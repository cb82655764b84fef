//! URL previews: `GET /_matrix/client/v1/media/preview_url?url=...` (and the legacy
//! `/_matrix/media/v3/preview_url`).
//!
//! The server fetches the page for the user, so every fetch is fenced: http(s) only, no
//! proxy, a size limit and a time limit over the whole fetch, redirects followed by hand
//! (at most [`MAX_REDIRECTS`]) with every hop checked, and no connection to a private,
//! loopback, link-local or otherwise special address, checked both for IP literals in the
//! URL and for every address a name resolves to (see [`super::address`]), unless
//! `media.url_preview_allow_private` is on. The page's image is stored as media and named
//! by its `mxc://` URI. Previews are cached for an hour.

use std::time::Duration;

use axon_api::{ApiError, ApiResult, AppState, Ruma, RumaResponse};
use axon_config::MediaConfig;
use axon_core::accounts::AuthenticatedUser;
use axon_core::media::NewMedia;
use axon_core::media::thumbnail::dimensions;
use axum::extract::State;
use http::StatusCode;
use reqwest::redirect::Policy;
use ruma::api::client::authenticated_media as authenticated;
use ruma::api::client::media as legacy;
use ruma::api::error::ErrorKind;
use serde_json::{Map, Value};
use tokio::time::Instant;
use url::{Host, Url};

use super::address::{BlockedName, FilteringResolver, is_forbidden};
use super::blocking;
use super::opengraph;

/// How long a preview is served from the cache.
const CACHE_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// Most redirects followed for one fetch.
const MAX_REDIRECTS: usize = 5;

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum FetchError {
    /// The URL is not one the server fetches. 400 `M_INVALID_PARAM`.
    #[error("{0}")]
    BadUrl(String),
    /// The URL leads to a refused address. 403 `M_FORBIDDEN`.
    #[error("{0}")]
    Blocked(String),
    /// Anything the remote side did wrong: 502.
    #[error("{0}")]
    Remote(String),
    /// The document is larger than the limit: 502.
    #[error("the document is too large")]
    TooLarge,
}

impl From<FetchError> for ApiError {
    fn from(error: FetchError) -> Self {
        match error {
            FetchError::BadUrl(reason) => ApiError::invalid_param(reason),
            FetchError::Blocked(reason) => ApiError::forbidden(reason),
            FetchError::TooLarge => ApiError::with_status(
                StatusCode::BAD_GATEWAY,
                ErrorKind::Unknown,
                "Cannot preview the URL: the document is too large",
            ),
            FetchError::Remote(reason) => ApiError::with_status(
                StatusCode::BAD_GATEWAY,
                ErrorKind::Unknown,
                format!("Cannot preview the URL: {reason}"),
            ),
        }
    }
}

/// One fetched document.
pub(super) struct Fetched {
    /// Where it was found, after redirects.
    pub(super) url: Url,
    /// Its declared MIME type.
    pub(super) content_type: Option<String>,
    /// Its bytes.
    pub(super) body: Vec<u8>,
}

/// Fetches URLs on a user's behalf (or for another server's media `Location`) under limits.
pub(super) struct Fetcher {
    client: reqwest::Client,
    allow_private: bool,
    max_bytes: u64,
    deadline: Instant,
}

impl Fetcher {
    fn new(config: &MediaConfig) -> Result<Self, ApiError> {
        Self::with_limits(
            config.url_preview_allow_private,
            config.url_preview_max_bytes,
            config.url_preview_timeout(),
        )
    }

    /// A fetcher refusing special addresses unless `allow_private`, reading at most
    /// `max_bytes`, and done within `timeout` from now.
    pub(super) fn with_limits(
        allow_private: bool,
        max_bytes: u64,
        timeout: Duration,
    ) -> Result<Self, ApiError> {
        let mut builder = reqwest::Client::builder()
            .redirect(Policy::none())
            .no_proxy()
            .timeout(timeout)
            .user_agent(concat!(
                "Axon/",
                env!("CARGO_PKG_VERSION"),
                " (URL preview)"
            ));
        if !allow_private {
            builder = builder.dns_resolver(FilteringResolver);
        }
        Ok(Self {
            client: builder.build().map_err(ApiError::internal)?,
            allow_private,
            max_bytes,
            deadline: Instant::now() + timeout,
        })
    }

    /// Refuses URLs the server must not fetch, before any connection.
    pub(super) fn check(&self, url: &Url) -> Result<(), FetchError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::BadUrl(format!(
                "only http and https URLs can be previewed, not {}",
                url.scheme()
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(FetchError::BadUrl(
                "URLs with credentials are not previewed".to_owned(),
            ));
        }
        let ip = match url.host() {
            Some(Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
            Some(Host::Domain(_)) => None,
            None => return Err(FetchError::BadUrl("the URL has no host".to_owned())),
        };
        if !self.allow_private && ip.is_some_and(is_forbidden) {
            return Err(FetchError::Blocked(
                "the URL points at an address this server does not fetch from".to_owned(),
            ));
        }
        Ok(())
    }

    /// Fetches `url`, following redirects, within the size and time limits.
    pub(super) async fn fetch(&self, url: Url) -> Result<Fetched, FetchError> {
        let mut url = url;
        for _ in 0..=MAX_REDIRECTS {
            self.check(&url)?;
            let sent = tokio::time::timeout_at(self.deadline, self.client.get(url.clone()).send());
            let mut response = match sent.await {
                Err(_) => return Err(FetchError::Remote("the fetch timed out".to_owned())),
                Ok(Err(error)) => return Err(transport_error(&error)),
                Ok(Ok(response)) => response,
            };
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|value| value.to_str().ok())
                    .ok_or_else(|| {
                        FetchError::Remote("a redirect without a Location".to_owned())
                    })?;
                url = url
                    .join(location)
                    .map_err(|error| FetchError::Remote(format!("bad redirect: {error}")))?;
                continue;
            }
            if !status.is_success() {
                return Err(FetchError::Remote(format!("the server answered {status}")));
            }
            if response
                .content_length()
                .is_some_and(|length| length > self.max_bytes)
            {
                return Err(FetchError::TooLarge);
            }
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            let mut body = Vec::new();
            loop {
                let chunk = tokio::time::timeout_at(self.deadline, response.chunk());
                match chunk.await {
                    Err(_) => return Err(FetchError::Remote("the fetch timed out".to_owned())),
                    Ok(Err(error)) => return Err(transport_error(&error)),
                    Ok(Ok(None)) => break,
                    Ok(Ok(Some(chunk))) => {
                        body.extend_from_slice(&chunk);
                        if u64::try_from(body.len()).unwrap_or(u64::MAX) > self.max_bytes {
                            return Err(FetchError::TooLarge);
                        }
                    }
                }
            }
            return Ok(Fetched {
                url,
                content_type,
                body,
            });
        }
        Err(FetchError::Remote("too many redirects".to_owned()))
    }
}

/// A transport error, told apart when the cause is a refused address.
fn transport_error(error: &reqwest::Error) -> FetchError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(blocked) = cause.downcast_ref::<BlockedName>() {
            return FetchError::Blocked(blocked.to_string());
        }
        source = cause.source();
    }
    FetchError::Remote(format!("cannot fetch the URL: {error}"))
}

fn essence(content_type: Option<&str>) -> String {
    content_type
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Stores a fetched image as media of `user` and adds it to `properties` as `og:image`
/// (with its type, size and, when the page did not say, its dimensions).
async fn attach_image(
    state: &AppState,
    user: &AuthenticatedUser,
    image: Fetched,
    properties: &mut Map<String, Value>,
) -> ApiResult<()> {
    let content_type = essence(image.content_type.as_deref());
    if !content_type.starts_with("image/") {
        return Ok(());
    }
    let user_id = user.user_id.clone();
    let size = image.body.len();
    let filename = image
        .url
        .path_segments()
        .and_then(|mut segments| segments.next_back().map(str::to_owned))
        .filter(|name| !name.is_empty());
    let stored_type = content_type.clone();
    let (media_id, found_dimensions) = blocking(state, move |services| {
        let limits = services.media.settings().decode_limits;
        let media_id = services.media.store_fetched(NewMedia {
            uploader: &user_id,
            content: &image.body,
            content_type: Some(&stored_type),
            filename: filename.as_deref(),
        })?;
        Ok((media_id, dimensions(&image.body, limits)))
    })
    .await?;
    let mxc = format!("mxc://{}/{media_id}", state.config().server_name);
    properties.insert("og:image".to_owned(), Value::String(mxc));
    properties.insert("og:image:type".to_owned(), Value::String(content_type));
    properties.insert("matrix:image:size".to_owned(), Value::from(size));
    if let Some((width, height)) = found_dimensions {
        properties
            .entry("og:image:width")
            .or_insert_with(|| Value::from(width));
        properties
            .entry("og:image:height")
            .or_insert_with(|| Value::from(height));
    }
    Ok(())
}

/// The preview of `url` for `user`: from the cache, or fetched now.
async fn preview_url(state: &AppState, user: &AuthenticatedUser, url: &str) -> ApiResult<Value> {
    let config = &state.config().media;
    if !config.url_previews {
        return Err(ApiError::forbidden(
            "URL previews are disabled on this server",
        ));
    }
    let mut parsed =
        Url::parse(url).map_err(|error| ApiError::invalid_param(format!("bad URL: {error}")))?;
    parsed.set_fragment(None);
    let key = parsed.to_string();
    let cache_key = key.clone();
    if let Some(cached) = blocking(state, move |services| {
        services.media.cached_preview(&cache_key, CACHE_LIFETIME)
    })
    .await?
    {
        return Ok(cached);
    }

    let fetcher = Fetcher::new(config)?;
    fetcher.check(&parsed)?;
    let page = fetcher.fetch(parsed).await?;
    let mut properties = Map::new();
    let page_type = essence(page.content_type.as_deref());
    if page_type.starts_with("image/") {
        attach_image(state, user, page, &mut properties).await?;
    } else if page_type == "text/html" || page_type == "application/xhtml+xml" {
        let base = page.url.clone();
        let body = page.body;
        // Parsing a large page is CPU work: keep it off the async workers.
        let extracted = tokio::task::spawn_blocking(move || {
            opengraph::extract(&String::from_utf8_lossy(&body), &base)
        })
        .await
        .map_err(|error| ApiError::internal(format!("parsing task failed: {error}")))?;
        properties = extracted.properties;
        if let Some(image_url) = extracted.image {
            // A page whose image cannot be fetched still has a preview.
            match fetcher.fetch(image_url).await {
                Ok(image) => attach_image(state, user, image, &mut properties).await?,
                Err(error) => tracing::debug!(%error, "cannot fetch a preview image"),
            }
        }
    }
    let data = Value::Object(properties);
    let stored = data.clone();
    blocking(state, move |services| {
        services.media.store_preview(&key, &stored)
    })
    .await?;
    Ok(data)
}

fn response<T>(data: &Value, build: fn(&Value) -> serde_json::Result<T>) -> ApiResult<T> {
    build(data).map_err(ApiError::internal)
}

/// # `GET /_matrix/client/v1/media/preview_url`
pub(crate) async fn preview(
    State(state): State<AppState>,
    request: Ruma<authenticated::get_media_preview::v1::Request>,
) -> ApiResult<RumaResponse<authenticated::get_media_preview::v1::Response>> {
    let data = preview_url(&state, &request.identity, &request.body.url).await?;
    response(
        &data,
        authenticated::get_media_preview::v1::Response::from_serialize,
    )
    .map(Into::into)
}

/// # `GET /_matrix/media/v3/preview_url`
#[allow(
    deprecated,
    reason = "the legacy endpoint is deprecated but still served"
)]
pub(crate) async fn legacy_preview(
    State(state): State<AppState>,
    request: Ruma<legacy::get_media_preview::v3::Request>,
) -> ApiResult<RumaResponse<legacy::get_media_preview::v3::Response>> {
    let data = preview_url(&state, &request.identity, &request.body.url).await?;
    response(
        &data,
        legacy::get_media_preview::v3::Response::from_serialize,
    )
    .map(Into::into)
}
