//! Start-up and shutdown of a serving `axon`: open storage, load keys, build the services and
//! the router, bind the listeners, and on SIGTERM/SIGINT let in-flight requests finish before
//! closing the database cleanly.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axon_api::AppState;
use axon_config::{Config, TurnCredentials};
use axon_core::Services;
use axon_core::accounts::{AccountSettings, Accounts, Argon2Params, ThrottleSettings};
use axon_core::delayed_events::{DelayedEventSettings, DelayedEvents};
use axon_core::keys::ServerKeys;
use axon_core::media::{
    AnimationLimits, DecodeLimits, FsBackend, Media, MediaError, MediaSettings,
};
use axon_core::rooms::graph::Rooms;
use axon_core::search::{SearchError, SearchIndex};
use axon_core::storage::{
    ColumnFamilyStats, KvStore, RocksOptions, StorageError, catalogue, open_database,
};
use axon_core::sync::{
    AccountData, Filters, Presence, PresenceSettings, Receipts, Typing, TypingSettings,
};
use axon_core::turn::{Turn, TurnAuth, TurnSettings};
use axum::Router;
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use ruma::OwnedServerName;

use crate::observability::{self, Metrics};
use crate::router;

/// How long in-flight requests may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The database could not be opened.
    #[error("cannot open the database: {0}")]
    Storage(#[from] StorageError),
    /// The search index could not be opened.
    #[error("cannot open the search index: {0}")]
    Search(#[from] SearchError),
    /// The signing key could not be loaded or created.
    #[error(transparent)]
    Keys(#[from] axon_core::keys::KeyError),
    /// The media store could not be opened.
    #[error("cannot open the media store: {0}")]
    Media(#[from] axon_core::media::MediaError),
    /// The configured default room version is not one this server supports.
    #[error("rooms.default_room_version: {0}")]
    RoomVersion(#[from] axon_core::rooms::room_version::UnsupportedRoomVersion),
    /// The configured server name is not a valid Matrix server name.
    #[error("server_name {0:?} is not a valid Matrix server name")]
    ServerName(String),
    /// The federation client could not be set up (DNS configuration, CA file).
    #[error("cannot set up federation: {0}")]
    Federation(#[from] axon_federation::FederationError),
    /// A listener could not be bound.
    #[error("cannot listen on {address} ({what}): {source}")]
    Bind {
        /// What the listener is for.
        what: &'static str,
        /// The address.
        address: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("cannot load the TLS certificate {certificate} / key {key}: {source}")]
    Tls {
        /// The certificate path.
        certificate: PathBuf,
        /// The key path.
        key: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A listener failed while serving.
    #[error("listener {what} failed: {source}")]
    Serve {
        /// What the listener is for.
        what: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The services of a server, built from its configuration.
pub fn build_services(config: &Config) -> Result<Arc<Services>, ServeError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServeError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let server_name = OwnedServerName::try_from(config.server_name.as_str())
        .map_err(|_| ServeError::ServerName(config.server_name.clone()))?;
    axon_core::rooms::room_version::default_room_version(&config.rooms.default_room_version)?;
    let store = open_database(
        &config.data_dir.join("db"),
        RocksOptions {
            sync_writes: config.storage.sync_writes,
            block_cache_bytes: config.storage.block_cache_bytes(),
            max_open_files: config.storage.max_open_files,
        },
    )?;
    let keys = Arc::new(ServerKeys::load_or_create(&config.data_dir, &server_name)?);
    let media = media_service(config, &store, &server_name)?;
    let accounts = Accounts::new(Arc::clone(&store), account_settings(config, server_name));
    let rooms = Rooms::new(Arc::clone(&store), Arc::clone(&keys))?;
    let search = SearchIndex::open(&config.data_dir.join("search"))?;
    let delayed_events = DelayedEvents::new(
        Arc::clone(&store),
        DelayedEventSettings {
            max_delay: config.delayed_events.max_delay(),
            max_per_user: usize::try_from(config.delayed_events.max_per_user).unwrap_or(usize::MAX),
        },
    )?;
    Ok(Arc::new(Services {
        media,
        search,
        delayed_events,
        turn: Turn::new(turn_settings(config)),
        push: axon_core::push::Push::new(Arc::clone(&store))?,
        e2ee: axon_core::e2ee::E2ee::new(Arc::clone(&store), rooms.subscribe()),
        filters: Filters::new(Arc::clone(&store)),
        account_data: AccountData::new(Arc::clone(&store)),
        receipts: Receipts::new(Arc::clone(&store)),
        typing: Typing::new(TypingSettings {
            default_timeout: config.presence.typing_default_timeout(),
            max_timeout: config.presence.typing_max_timeout(),
        }),
        presence: Presence::new(
            Arc::clone(&store),
            PresenceSettings {
                enabled: config.presence.enabled,
                idle_after: config.presence.idle_after(),
                offline_after: config.presence.offline_after(),
            },
        ),
        store,
        keys,
        accounts,
        rooms,
    }))
}

fn turn_settings(config: &Config) -> TurnSettings {
    let auth = match &config.turn.credentials {
        TurnCredentials::SharedSecret(secret) => TurnAuth::SharedSecret(secret.clone()),
        TurnCredentials::Static { username, password } => TurnAuth::Static {
            username: username.clone(),
            password: password.clone(),
        },
        _ => TurnAuth::None,
    };
    TurnSettings {
        uris: config.turn.uris.clone(),
        auth,
        ttl: config.turn.ttl(),
        allow_guests: config.turn.allow_guests,
    }
}

/// The media repository, its files under `<data_dir>/media`.
fn media_service(
    config: &Config,
    store: &Arc<dyn KvStore>,
    server_name: &OwnedServerName,
) -> Result<Media, ServeError> {
    let media = &config.media;
    let backend = FsBackend::open(config.data_dir.join("media")).map_err(MediaError::Io)?;
    let settings = MediaSettings {
        max_upload_bytes: media.max_upload_bytes,
        user_quota_bytes: media.user_quota_bytes,
        max_pending_uploads: media.max_pending_uploads,
        unused_expiry: media.unused_expiry(),
        freeze_legacy_media: media.freeze_legacy_media,
        decode_limits: DecodeLimits {
            max_dimension: media.thumbnail_max_dimension,
            max_alloc_bytes: media.thumbnail_max_decode_bytes,
        },
        animated_max_bytes: media.animated_thumbnail_max_bytes,
        animation_limits: AnimationLimits {
            max_frames: media.animated_thumbnail_max_frames,
            max_pixels: media.animated_thumbnail_max_pixels,
        },
    };
    Ok(Media::new(
        Arc::clone(store),
        Arc::new(backend),
        server_name.clone(),
        settings,
    )?)
}

fn account_settings(config: &Config, server_name: OwnedServerName) -> AccountSettings {
    let mut settings = AccountSettings::new(server_name);
    settings.password_min_length = config.passwords.minimum_length;
    settings.argon2 = Argon2Params {
        memory_kib: config.passwords.argon2_memory_kib,
        iterations: config.passwords.argon2_iterations,
        parallelism: config.passwords.argon2_parallelism,
    };
    settings.throttle = ThrottleSettings {
        max_failures: config.login.max_failures,
        window: config.login.failure_window(),
    };
    settings.access_token_lifetime = config.login.access_token_lifetime(false);
    if let Some(lifetime) = config.login.access_token_lifetime(true) {
        settings.refresh_access_token_lifetime = lifetime;
    }
    settings
}

/// Runs the server until SIGTERM or SIGINT.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let config = Arc::new(config);
    let services = build_services(&config)?;
    // The stream consumers: they catch up with what was written before start-up, then follow.
    tokio::spawn(axon_core::search::run_indexer(Arc::clone(&services)));
    tokio::spawn(axon_core::user_directory::run_updater(Arc::clone(
        &services,
    )));
    tokio::spawn(axon_core::e2ee::run_device_cleanup(Arc::clone(&services)));
    tokio::spawn(axon_core::push::run_evaluator(Arc::clone(&services)));
    // Deletes old notifications once read, hourly.
    tokio::spawn(axon_core::push::run_pruner(
        Arc::clone(&services),
        config.push.notification_retention(),
    ));
    tokio::spawn(crate::push::run_sender(
        Arc::clone(&services),
        config.push.clone(),
    ));
    let metrics = Metrics::new();
    register_storage_metrics(&metrics, &services);

    let state = AppState::new(Arc::clone(&config), Arc::clone(&services));
    // Sends delayed events when due, those that fell due while the server was down first.
    tokio::spawn(crate::client::delayed_events::run_scheduler(state.clone()));
    // Expires cached remote media and lapsed upload reservations.
    tokio::spawn(crate::client::media::run_cleanup(state.clone()));
    let federation = axon_federation::Federation::new(&config, &services)?;
    // Delivers local events and queued EDUs to other servers, what was queued before a
    // restart first.
    tokio::spawn(axon_federation::outbound::run(
        Arc::clone(&federation),
        Arc::clone(&services),
    ));
    // Federation handlers (and client handlers reaching other servers) find the service here.
    let app = router::build(state, metrics.clone()).layer(axum::Extension(federation));
    let handle = Handle::new();

    let mut listeners = tokio::task::JoinSet::new();
    let http = bind("client and federation HTTP", config.http.address)?;
    listeners.spawn(serve_plain(
        "client and federation HTTP",
        http,
        app.clone(),
        handle.clone(),
    ));
    if let Some(tls) = config.tls.listener() {
        let rustls = RustlsConfig::from_pem_file(tls.certificate, tls.private_key)
            .await
            .map_err(|source| ServeError::Tls {
                certificate: tls.certificate.to_owned(),
                key: tls.private_key.to_owned(),
                source,
            })?;
        let listener = bind("TLS", tls.address)?;
        let server = axum_server::from_tcp_rustls(listener, rustls)
            .map_err(|source| ServeError::Bind {
                what: "TLS",
                address: tls.address,
                source,
            })?
            .handle(handle.clone());
        let service = app
            .clone()
            .into_make_service_with_connect_info::<SocketAddr>();
        listeners.spawn(async move {
            server
                .serve(service)
                .await
                .map_err(|source| ServeError::Serve {
                    what: "TLS",
                    source,
                })
        });
        tracing::info!(address = %tls.address, "listening (TLS)");
    }
    if config.metrics.enabled {
        let listener = bind("metrics", config.metrics.address)?;
        let metrics_app = observability::metrics_router(metrics.clone());
        listeners.spawn(serve_plain(
            "metrics",
            listener,
            metrics_app,
            handle.clone(),
        ));
        tracing::info!(address = %config.metrics.address, "serving Prometheus metrics");
    }
    tracing::info!(
        server_name = %config.server_name,
        address = %config.http.address,
        version = env!("CARGO_PKG_VERSION"),
        "axon is ready"
    );

    let shutdown_handle = handle.clone();
    tokio::spawn(async move {
        wait_for_shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        shutdown_handle.graceful_shutdown(Some(SHUTDOWN_GRACE));
    });

    let mut result = Ok(());
    while let Some(joined) = listeners.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::error!(error = %err, "listener failed; shutting down");
                handle.graceful_shutdown(Some(SHUTDOWN_GRACE));
                result = Err(err);
            }
            Err(err) => tracing::error!(error = %err, "listener task failed"),
        }
    }
    drop(app);
    if let Err(err) = services.store.flush() {
        tracing::error!(error = %err, "final flush of the database failed");
    }
    tracing::info!("stopped");
    result
}

fn bind(what: &'static str, address: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(address).map_err(|source| ServeError::Bind {
        what,
        address,
        source,
    })
}

async fn serve_plain(
    what: &'static str,
    listener: TcpListener,
    app: Router,
    handle: Handle<SocketAddr>,
) -> Result<(), ServeError> {
    let address = listener.local_addr().ok();
    let server = axum_server::from_tcp(listener)
        .map_err(|source| ServeError::Serve { what, source })?
        .handle(handle);
    if let Some(address) = address {
        tracing::info!(%address, "listening ({what})");
    }
    server
        .serve(app.into_make_service_with_connect_info::<SocketAddr>())
        .await
        .map_err(|source| ServeError::Serve { what, source })
}

async fn wait_for_shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// The sum of one figure over every column family.
fn database_total(services: &Services, figure: fn(ColumnFamilyStats) -> u64) -> i64 {
    let total: u64 = catalogue::ALL
        .iter()
        .filter_map(|cf| services.store.stats(cf).ok())
        .map(figure)
        .sum();
    i64::try_from(total).unwrap_or(i64::MAX)
}

/// Gauges read at scrape time: database size, users, active tokens.
fn register_storage_metrics(metrics: &Metrics, services: &Arc<Services>) {
    let mut results = Vec::new();
    let for_size = Arc::clone(services);
    results.push(metrics.register_gauge_fn(
        "axon_database_size_bytes",
        "Bytes used by the database (SST files and memtables)",
        move || database_total(&for_size, |stats| stats.bytes),
    ));
    let for_keys = Arc::clone(services);
    results.push(metrics.register_gauge_fn(
        "axon_database_keys",
        "Estimated number of keys in the database",
        move || database_total(&for_keys, |stats| stats.estimated_keys),
    ));
    let for_users = Arc::clone(services);
    results.push(metrics.register_gauge_fn(
        "axon_registered_users",
        "Local user accounts",
        move || {
            for_users
                .accounts
                .count_users()
                .map_or(-1, |counts| counts.total as i64)
        },
    ));
    let for_tokens = Arc::clone(services);
    results.push(metrics.register_gauge_fn(
        "axon_active_access_tokens",
        "Access tokens that are currently valid",
        move || {
            for_tokens
                .accounts
                .count_active_access_tokens()
                .map_or(-1, |count| count as i64)
        },
    ));
    let for_delayed = Arc::clone(services);
    results.push(metrics.register_gauge_fn(
        "axon_delayed_events_scheduled",
        "Delayed events (MSC4140) scheduled and not yet sent or cancelled",
        move || i64::try_from(for_delayed.delayed_events.scheduled_count()).unwrap_or(i64::MAX),
    ));
    let for_turn = Arc::clone(services);
    results.push(metrics.register_counter_fn(
        "axon_turn_credentials_issued",
        "TURN credentials handed to clients since start-up",
        move || for_turn.turn.issued(),
    ));
    let for_media = Arc::clone(services);
    results.push(metrics.register_gauge_fn(
        "axon_media_bytes_stored",
        "Bytes of distinct media content stored (uploads and thumbnails)",
        move || i64::try_from(for_media.media.bytes_stored()).unwrap_or(i64::MAX),
    ));
    let for_queued = Arc::clone(services);
    results.push(metrics.register_counter_fn(
        "axon_to_device_messages_queued",
        "To-device messages queued for local devices since start-up",
        move || for_queued.e2ee.to_device_queued_total(),
    ));
    let for_pruned = Arc::clone(services);
    results.push(metrics.register_counter_fn(
        "axon_push_notifications_pruned",
        "Notifications deleted after the retention period since start-up",
        move || for_pruned.push.pruned_total(),
    ));
    let for_pending = Arc::clone(services);
    results.push(metrics.register_gauge_fn(
        "axon_to_device_messages_pending",
        "To-device messages stored and not yet acknowledged by their device",
        move || for_pending.e2ee.to_device_pending(),
    ));
    for error in results.into_iter().filter_map(Result::err) {
        tracing::error!(%error, "cannot register a metric");
    }
}
