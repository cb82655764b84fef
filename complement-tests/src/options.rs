//! How a test configures its server: the harness defaults plus overrides.

use toml::{Table, Value};

use crate::random_string;

/// How a test wants its server configured, on top of the harness defaults.
///
/// The defaults: `server_name` and `http.address` on a free loopback port,
/// a fresh `data_dir`, cheap Argon2 parameters (`passwords.argon2_memory_kib
/// = 1024`, `argon2_iterations = 1`) so tests stay fast, open registration,
/// and a random `registration.shared_secret` so tests can create admins.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    overrides: Table,
    env: Vec<(String, String)>,
    shared_secret: Option<String>,
    metrics: bool,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            overrides: Table::new(),
            env: Vec::new(),
            shared_secret: Some(random_string(32)),
            metrics: false,
        }
    }
}

impl ServerOptions {
    /// The harness defaults.
    pub fn new() -> ServerOptions {
        ServerOptions::default()
    }

    /// Merges a TOML snippet over the configuration: tables merge key by
    /// key, other values replace. Panics on invalid TOML (a test bug).
    pub fn with_toml(mut self, snippet: &str) -> ServerOptions {
        let table: Table = match toml::from_str(snippet) {
            Ok(table) => table,
            Err(e) => panic!("invalid TOML in test options: {e}\n{snippet}"),
        };
        merge(&mut self.overrides, table);
        self
    }

    /// Sets an environment variable for the server process (for instance an
    /// `AXON_<SECTION>__<KEY>` override).
    pub fn with_env(mut self, key: &str, value: &str) -> ServerOptions {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Configures no registration shared secret.
    pub fn without_shared_secret(mut self) -> ServerOptions {
        self.shared_secret = None;
        self
    }

    /// Uses this registration shared secret instead of a random one.
    pub fn with_shared_secret(mut self, secret: &str) -> ServerOptions {
        self.shared_secret = Some(secret.to_owned());
        self
    }

    /// Enables the metrics listener on its own free loopback port.
    pub fn with_metrics(mut self) -> ServerOptions {
        self.metrics = true;
        self
    }

    /// The configured registration shared secret, if any.
    pub fn shared_secret(&self) -> Option<&str> {
        self.shared_secret.as_deref()
    }

    /// The full configuration for a server on `port` with `data_dir`.
    pub(crate) fn render(&self, port: u16, metrics_port: Option<u16>, data_dir: &str) -> String {
        let mut root = Table::new();
        root.insert("server_name".into(), format!("127.0.0.1:{port}").into());
        root.insert("data_dir".into(), data_dir.into());

        let mut http = Table::new();
        http.insert("address".into(), format!("127.0.0.1:{port}").into());
        root.insert("http".into(), http.into());

        let mut passwords = Table::new();
        passwords.insert("argon2_memory_kib".into(), 1024.into());
        passwords.insert("argon2_iterations".into(), 1.into());
        root.insert("passwords".into(), passwords.into());

        let mut registration = Table::new();
        registration.insert("enabled".into(), true.into());
        if let Some(secret) = &self.shared_secret {
            registration.insert("shared_secret".into(), secret.as_str().into());
        }
        root.insert("registration".into(), registration.into());

        if let Some(metrics_port) = metrics_port {
            let mut metrics = Table::new();
            metrics.insert("enabled".into(), true.into());
            metrics.insert("address".into(), format!("127.0.0.1:{metrics_port}").into());
            root.insert("metrics".into(), metrics.into());
        }

        merge(&mut root, self.overrides.clone());
        root.to_string()
    }

    /// Whether the metrics listener is wanted.
    pub(crate) fn metrics_enabled(&self) -> bool {
        self.metrics
    }

    /// The extra environment variables for the server process.
    pub(crate) fn env(&self) -> &[(String, String)] {
        &self.env
    }
}

/// Deep-merges `overrides` into `base`.
fn merge(base: &mut Table, overrides: Table) {
    for (key, value) in overrides {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(existing)), Value::Table(inner)) => merge(existing, inner),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_merge_into_sections_without_dropping_defaults() {
        let options = ServerOptions::new()
            .with_shared_secret("s3cret")
            .with_toml("[registration]\nrequire_token = true\n[login]\nmax_failures = 5");
        let rendered: Table = toml::from_str(&options.render(4242, None, "/d")).unwrap();
        assert_eq!(rendered["server_name"].as_str(), Some("127.0.0.1:4242"));
        assert_eq!(rendered["http"]["address"].as_str(), Some("127.0.0.1:4242"));
        assert_eq!(rendered["data_dir"].as_str(), Some("/d"));
        assert_eq!(rendered["registration"]["enabled"].as_bool(), Some(true));
        assert_eq!(
            rendered["registration"]["require_token"].as_bool(),
            Some(true)
        );
        assert_eq!(
            rendered["registration"]["shared_secret"].as_str(),
            Some("s3cret")
        );
        assert_eq!(rendered["login"]["max_failures"].as_integer(), Some(5));
        assert!(rendered.get("metrics").is_none());
    }

    #[test]
    fn overrides_replace_defaults_and_secret_can_be_removed() {
        let options = ServerOptions::new()
            .without_shared_secret()
            .with_toml("[registration]\nenabled = false");
        let rendered: Table = toml::from_str(&options.render(1, Some(2), "/d")).unwrap();
        assert_eq!(rendered["registration"]["enabled"].as_bool(), Some(false));
        assert!(rendered["registration"].get("shared_secret").is_none());
        assert_eq!(rendered["metrics"]["address"].as_str(), Some("127.0.0.1:2"));
    }
}
