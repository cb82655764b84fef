//! The state every handler receives.

use std::fmt;
use std::sync::Arc;

use axon_config::Config;
use axon_core::Services;

/// Shared, immutable handles on the configuration and the core services. Cloning is cheap.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Config>,
    services: Arc<Services>,
}

impl AppState {
    /// State over `config` and `services`.
    pub fn new(config: Arc<Config>, services: Arc<Services>) -> Self {
        Self {
            inner: Arc::new(Inner { config, services }),
        }
    }

    /// The validated configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The core services.
    pub fn services(&self) -> &Services {
        &self.inner.services
    }

    /// The core services, shared (for work moved to a blocking thread).
    pub fn services_arc(&self) -> Arc<Services> {
        Arc::clone(&self.inner.services)
    }
}

impl fmt::Debug for AppState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}
