//! Authentication as types: each ruma authentication scheme says what identity a handler
//! receives, so a handler for an authenticated endpoint cannot forget to check the token.

use std::future::Future;

use axon_core::accounts::AuthenticatedUser;
use http::request::Parts;
use ruma::api::auth_scheme::{
    AccessToken, AccessTokenOptional, AppserviceToken, AppserviceTokenOptional, NoAccessToken,
    NoAuthentication,
};

use crate::error::ApiError;
use crate::ruma::ClientInfo;
use crate::state::AppState;

/// An authentication scheme Axon can check.
pub trait Authenticate: ruma::api::auth_scheme::AuthScheme {
    /// What a handler learns about the sender.
    type Identity: Send + std::fmt::Debug;

    /// Checks the request's credentials.
    fn authenticate(
        state: &AppState,
        token: Option<&str>,
        client: &ClientInfo,
    ) -> impl Future<Output = Result<Self::Identity, ApiError>> + Send;
}

/// The access token of a request: `Authorization: Bearer`, or the deprecated `access_token`
/// query parameter that older clients still send.
pub(crate) fn bearer_token(parts: &Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned());
    }
    let query = parts.uri.query()?;
    form_urlencoded_value(query, "access_token")
}

fn form_urlencoded_value(query: &str, wanted: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == wanted)
        .map(|(_, value)| value.into_owned())
}

pub(crate) async fn user_from_token(
    state: &AppState,
    token: &str,
    client: &ClientInfo,
) -> Result<AuthenticatedUser, ApiError> {
    let accounts = &state.services().accounts;
    let user = accounts.authenticate(token).map_err(ApiError::from)?;
    tracing::Span::current().record("user_id", user.user_id.as_str());
    // Devices show when and from where they were last used; failing to note that must not
    // fail the request itself.
    if let Err(error) = accounts.record_last_seen(&user.user_id, &user.device_id, client.ip) {
        tracing::warn!(%error, "cannot record the device's last use");
    }
    Ok(user)
}

impl Authenticate for AccessToken {
    type Identity = AuthenticatedUser;

    async fn authenticate(
        state: &AppState,
        token: Option<&str>,
        client: &ClientInfo,
    ) -> Result<AuthenticatedUser, ApiError> {
        let token = token.ok_or_else(ApiError::missing_token)?;
        user_from_token(state, token, client).await
    }
}

impl Authenticate for AccessTokenOptional {
    type Identity = Option<AuthenticatedUser>;

    async fn authenticate(
        state: &AppState,
        token: Option<&str>,
        client: &ClientInfo,
    ) -> Result<Option<AuthenticatedUser>, ApiError> {
        match token {
            Some(token) => user_from_token(state, token, client).await.map(Some),
            None => Ok(None),
        }
    }
}

impl Authenticate for NoAuthentication {
    type Identity = ();

    async fn authenticate(_: &AppState, _: Option<&str>, _: &ClientInfo) -> Result<(), ApiError> {
        Ok(())
    }
}

/// Endpoints that take no access token; a token sent anyway is ignored, as the spec allows.
impl Authenticate for NoAccessToken {
    type Identity = ();

    async fn authenticate(_: &AppState, _: Option<&str>, _: &ClientInfo) -> Result<(), ApiError> {
        Ok(())
    }
}

/// No application services are registered yet, so an appservice token is never valid.
impl Authenticate for AppserviceToken {
    type Identity = ();

    async fn authenticate(
        _: &AppState,
        token: Option<&str>,
        _: &ClientInfo,
    ) -> Result<(), ApiError> {
        match token {
            Some(_) => Err(ApiError::unknown_token(false)),
            None => Err(ApiError::missing_token()),
        }
    }
}

/// Endpoints such as `/login` where an application service may identify itself; without
/// registered application services, any token presented is unknown.
impl Authenticate for AppserviceTokenOptional {
    type Identity = ();

    async fn authenticate(
        _: &AppState,
        token: Option<&str>,
        _: &ClientInfo,
    ) -> Result<(), ApiError> {
        match token {
            Some(_) => Err(ApiError::unknown_token(false)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, authorization: Option<&str>) -> Parts {
        let mut builder = http::Request::builder().uri(uri);
        if let Some(value) = authorization {
            builder = builder.header(http::header::AUTHORIZATION, value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn bearer_header_wins_and_is_case_insensitive() {
        assert_eq!(
            bearer_token(&parts("/x", Some("Bearer abc"))).as_deref(),
            Some("abc")
        );
        assert_eq!(
            bearer_token(&parts("/x", Some("bearer abc"))).as_deref(),
            Some("abc")
        );
        assert_eq!(
            bearer_token(&parts("/x?access_token=q", Some("Bearer h"))).as_deref(),
            Some("h")
        );
        assert_eq!(bearer_token(&parts("/x", Some("Basic abc"))), None);
    }

    #[test]
    fn query_token_is_percent_decoded() {
        assert_eq!(
            bearer_token(&parts("/x?a=1&access_token=t%2Bk", None)).as_deref(),
            Some("t+k")
        );
        assert_eq!(bearer_token(&parts("/x?a=1", None)), None);
        assert_eq!(
            bearer_token(&parts("/x?access_token=%zz", None)).as_deref(),
            Some("%zz")
        );
        assert_eq!(
            bearer_token(&parts("/x?access_token=%4", None)).as_deref(),
            Some("%4")
        );
    }
}
