//! `[well_known]`: the `/.well-known/matrix/*` documents.

use crate::checks;
use crate::error::Issues;
use crate::schema::raw_section;

raw_section! {
    /// The `/.well-known/matrix/client` and `/.well-known/matrix/server` documents, for
    /// when the server name's host is not where this server is reached.
    RawWellKnown {
        /// Homeserver base URL announced in `/.well-known/matrix/client`. Defaults to
        /// `public_baseurl`.
        client_base_url: Option<String> = None, example "\"https://matrix.example.org/\"";
        /// Delegated server ("host" or "host:port") announced in
        /// `/.well-known/matrix/server`. Unset: that document is not served (404), and other
        /// servers connect to the server name itself (its port, or 8448 without one).
        server: Option<String> = None, example "\"matrix.example.org:443\"";
    }
}

/// The validated `[well_known]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WellKnownConfig {
    /// Base URL announced to clients (with a trailing slash).
    pub client_base_url: String,
    /// Delegated server announced to servers; `None` means the document is not served.
    pub server: Option<String>,
}

/// `public_baseurl` is the validated top-level value, the default of `client_base_url`.
pub(crate) fn validate(
    raw: RawWellKnown,
    public_baseurl: &str,
    issues: &mut Issues,
) -> WellKnownConfig {
    let client_base_url = match &raw.client_base_url {
        Some(url) => checks::base_url(issues, "well_known.client_base_url", url),
        None => public_baseurl.to_owned(),
    };
    if let Some(server) = &raw.server {
        checks::server_name(issues, "well_known.server", server);
    }
    WellKnownConfig {
        client_base_url,
        server: raw.server,
    }
}
