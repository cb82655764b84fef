//! Axon's server-server (federation) API.
//!
//! - [`resolve`]: server discovery (`.well-known`, SRV, IP literals) over an injectable
//!   [`resolve::Dns`].
//! - [`client`]: the outbound [`FederationClient`] (TLS, address checks, `X-Matrix` signing)
//!   that everything sending to other servers uses.
//! - [`signing`]: `X-Matrix` signing and the verification layer in front of every
//!   authenticated `/_matrix/federation/` route.
//! - [`key_fetch`]: other servers' keys, fetched, verified, cached and persisted; the key
//!   server and the notary endpoints serve ours and theirs.
//! - [`acl`]: the configured allow/deny lists and rooms' `m.room.server_acl`.
//! - [`inbound`]: `/send` transactions (PDUs and EDUs) and the endpoints other servers read
//!   rooms, events, directories and keys through.
//! - [`hierarchy`]: the space hierarchy served to other servers, and asked of them (cached
//!   briefly) for rooms this server is not in.
//!
//! The [`Federation`] service is built once at start-up and installed on the router as an
//! `axum::Extension<Arc<Federation>>`, where federation handlers (and client handlers that
//! need a remote server) find it.

use std::collections::HashMap;
use std::sync::Arc;

use axon_api::{AppState, RumaRouterExt};
use axon_config::Config;
use axon_core::Services;
use axon_core::keys::ServerKeys;
use axum::Router;
use ruma::OwnedServerName;
use ruma::api::federation::discovery::{
    discover_homeserver, get_remote_server_keys, get_remote_server_keys_batch, get_server_keys,
    get_server_version,
};
use ruma::api::federation::openid::get_openid_userinfo;
use ruma::api::federation::query::get_profile_information;

pub mod acl;
pub mod client;
mod error;
pub mod hierarchy;
pub mod inbound;
pub mod ip;
pub mod key_fetch;
mod keys;
pub mod media;
pub mod membership;
mod notary;
mod openid;
pub mod outbound;
mod profile;
pub mod resolve;
pub mod signing;
mod version;
mod well_known;

pub use crate::acl::{ServerPolicy, server_acl_allows};
pub use crate::client::FederationClient;
pub use crate::error::FederationError;
pub use crate::key_fetch::KeyFetcher;

/// The federation service: the outbound client and the key fetcher, with the settings the
/// inbound verification needs.
#[derive(Debug)]
pub struct Federation {
    enabled: bool,
    max_request_bytes: u64,
    own_keys: Arc<ServerKeys>,
    client: Arc<FederationClient>,
    key_fetcher: KeyFetcher,
    outbound: outbound::Outbound,
    hierarchy: hierarchy::RemoteHierarchy,
}

impl Federation {
    /// Builds the service from the configuration, with DNS from the system's resolvers.
    pub fn new(config: &Config, services: &Services) -> Result<Arc<Self>, FederationError> {
        let dns: Arc<dyn resolve::Dns> = if config.federation.enabled {
            Arc::new(resolve::HickoryDns::from_system()?)
        } else {
            Arc::new(resolve::StaticDns::new())
        };
        Self::with_dns(config, services, dns)
    }

    /// Builds the service with the given DNS (tests answer from a table).
    pub fn with_dns(
        config: &Config,
        services: &Services,
        dns: Arc<dyn resolve::Dns>,
    ) -> Result<Arc<Self>, FederationError> {
        let federation = &config.federation;
        let extra_roots = match &federation.trusted_ca {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|err| {
                    FederationError::ClientSetup(format!(
                        "federation.trusted_ca {}: {err}",
                        path.display()
                    ))
                })?;
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|err| {
                    FederationError::ClientSetup(format!(
                        "federation.trusted_ca {}: {err}",
                        path.display()
                    ))
                })?
            }
            None => Vec::new(),
        };
        let policy = ServerPolicy::new(&federation.allow_servers, &federation.deny_servers);
        let resolver = resolve::Resolver::new(
            dns,
            resolve::ResolverSettings {
                allow_private_addresses: federation.allow_private_addresses,
                server_addresses: federation
                    .server_addresses
                    .iter()
                    .cloned()
                    .collect::<HashMap<_, _>>(),
                extra_roots: extra_roots.clone(),
                skip_tls_verification: federation.skip_tls_verification,
            },
        )?;
        let client = Arc::new(FederationClient::new(
            federation.enabled,
            Arc::clone(&services.keys),
            policy,
            resolver,
            client::TlsSettings {
                extra_roots,
                skip_verification: federation.skip_tls_verification,
            },
        ));
        let trusted_key_servers = federation
            .trusted_key_servers
            .iter()
            .filter_map(|name| OwnedServerName::try_from(name.as_str()).ok())
            .collect();
        let key_fetcher = KeyFetcher::new(
            Arc::clone(&services.store),
            Arc::clone(&services.keys),
            Arc::clone(&client),
            trusted_key_servers,
        );
        let outbound = outbound::Outbound::new(
            Arc::clone(&services.store),
            outbound::SenderSettings::from(&config.federation_sender),
        )?;
        Ok(Arc::new(Self {
            outbound,
            hierarchy: hierarchy::RemoteHierarchy::new(),
            enabled: federation.enabled,
            max_request_bytes: config.http.max_request_bytes,
            own_keys: Arc::clone(&services.keys),
            client,
            key_fetcher,
        }))
    }

    /// Whether federation is on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The outbound client.
    pub fn client(&self) -> &FederationClient {
        &self.client
    }

    /// Other servers' keys.
    pub fn key_fetcher(&self) -> &KeyFetcher {
        &self.key_fetcher
    }

    /// The outbound queue ([`outbound::run`] delivers it).
    pub fn outbound(&self) -> &outbound::Outbound {
        &self.outbound
    }

    /// Other servers' space hierarchies, cached briefly.
    pub fn hierarchy(&self) -> &hierarchy::RemoteHierarchy {
        &self.hierarchy
    }

    /// This server's signing key.
    pub fn own_keys(&self) -> &ServerKeys {
        &self.own_keys
    }

    /// The largest request body accepted.
    pub fn max_request_bytes(&self) -> u64 {
        self.max_request_bytes
    }
}

/// Every federation route, behind the `X-Matrix` verification layer. The router must also
/// carry the [`Federation`] service as an `Extension<Arc<Federation>>`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .ruma_route::<get_server_keys::v2::Request, _, _>(keys::server_keys)
        .ruma_route::<get_remote_server_keys::v2::Request, _, _>(notary::query_one)
        .ruma_route::<get_remote_server_keys_batch::v2::Request, _, _>(notary::query_batch)
        .ruma_route::<get_server_version::v1::Request, _, _>(version::server_version)
        .ruma_route::<discover_homeserver::Request, _, _>(well_known::well_known_server)
        .ruma_route::<get_profile_information::v1::Request, _, _>(profile::get_profile)
        .ruma_route::<get_openid_userinfo::v1::Request, _, _>(openid::userinfo)
        .ruma_route::<ruma::api::federation::authenticated_media::get_content::v1::Request, _, _>(
            media::download,
        )
        .ruma_route::<
            ruma::api::federation::authenticated_media::get_content_thumbnail::v1::Request,
            _,
            _,
        >(media::thumbnail)
        .ruma_route::<ruma::api::federation::space::get_hierarchy::v1::Request, _, _>(
            hierarchy::serve,
        )
        .merge(inbound::routes())
        .merge(membership::routes())
        .route_layer(axum::middleware::from_fn(signing::verify_layer))
}
