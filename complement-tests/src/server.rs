//! Starting, stopping and restarting `axon` processes.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::json;
use tempfile::TempDir;

use crate::binary::axon_binary;
use crate::cli::{CliOutput, run_cli};
use crate::client::{Client, Response, Session, http_client};
use crate::options::ServerOptions;
use crate::shared_secret::shared_secret_mac;
use crate::wait::try_wait_until;
use crate::wait_until;

/// How long a server may take to answer `GET /health` after it is spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How many fresh ports a first start tries when the chosen port was taken
/// by someone else between probing it and the server binding it.
const PORT_ATTEMPTS: usize = 3;
/// How many lines of the server log a failing test prints.
const LOG_TAIL_LINES: usize = 200;
/// Set this environment variable to keep a failing test's data directory.
const KEEP_ENV: &str = "AXON_TEST_KEEP";

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    match TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(addr) => addr.port(),
        Err(e) => panic!("no free loopback port: {e}"),
    }
}

/// A server that did not become ready.
#[derive(Debug, thiserror::Error)]
#[error("axon did not become ready: {reason}\n--- axon log ---\n{log}")]
pub struct StartError {
    /// Why: it exited, or did not answer in time.
    pub reason: String,
    /// The exit status if the process exited on its own.
    pub exit_status: Option<ExitStatus>,
    /// The server's output so far.
    pub log: String,
}

/// A running (or stopped) `axon` process with its own data directory and
/// port. Dropping it kills the process and removes the directory; if the
/// test is failing, the tail of the server log is printed first.
#[derive(Debug)]
pub struct Homeserver {
    options: ServerOptions,
    dir: TempDir,
    port: u16,
    metrics_port: Option<u16>,
    child: Option<Child>,
    starts: u32,
}

impl Homeserver {
    /// Starts a server and waits until `GET /health` answers 200. Panics
    /// with the server log if it does not.
    pub async fn start(options: ServerOptions) -> Homeserver {
        match Homeserver::try_start(options).await {
            Ok(server) => server,
            Err(e) => panic!("{e}"),
        }
    }

    /// Starts a server and waits until it is ready, or returns why not (for
    /// tests that expect a refusal to start).
    pub async fn try_start(options: ServerOptions) -> Result<Homeserver, StartError> {
        let dir = match tempfile::Builder::new().prefix("axon-test-").tempdir() {
            Ok(dir) => dir,
            Err(e) => panic!("creating a temp dir: {e}"),
        };
        let mut server = Homeserver {
            metrics_port: options.metrics_enabled().then(free_port),
            options,
            dir,
            port: free_port(),
            child: None,
            starts: 0,
        };
        let mut attempt = 1;
        loop {
            match server.spawn_and_wait().await {
                Ok(()) => return Ok(server),
                Err(e) if attempt < PORT_ATTEMPTS && e.log.contains("in use") => {
                    // Someone took the port between our probe and the
                    // server's bind: start over on fresh ports and data.
                    attempt += 1;
                    server.port = free_port();
                    server.metrics_port = server.options.metrics_enabled().then(free_port);
                    let _ = std::fs::remove_dir_all(server.data_dir());
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server name, `127.0.0.1:<port>`.
    pub fn server_name(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `@localpart:<server name>`.
    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.server_name())
    }

    /// An unauthenticated client for this server.
    pub fn client(&self) -> Client {
        Client::new(self.base_url())
    }

    /// The base URL of the metrics listener, when enabled.
    pub fn metrics_url(&self) -> Option<String> {
        self.metrics_port
            .map(|port| format!("http://127.0.0.1:{port}"))
    }

    /// The options the server was started with.
    pub fn options(&self) -> &ServerOptions {
        &self.options
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("axon.toml")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("axon.log")
    }

    /// Everything the server wrote to stdout and stderr, across restarts.
    pub fn log(&self) -> String {
        std::fs::read(self.log_path())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Whether the process is running (started and not yet seen to exit).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_)) | Err(_)) | None => false,
        }
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit
    /// status. Panics if it is not running or does not exit in time.
    pub async fn stop(&mut self) -> ExitStatus {
        let Some(mut child) = self.child.take() else {
            panic!("stop: axon is not running");
        };
        let pid = child.id().to_string();
        match Command::new("kill").args(["-TERM", &pid]).status() {
            Ok(status) if status.success() => {}
            Ok(status) => panic!("kill -TERM {pid} failed: {status}\n{}", self.log()),
            Err(e) => panic!("running kill -TERM {pid}: {e}"),
        }
        let exited = try_wait_until("axon to exit after SIGTERM", STOP_TIMEOUT, || {
            let status = child.try_wait().ok().flatten();
            async move { status }
        })
        .await;
        match exited {
            Ok(status) => status,
            Err(timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{timeout}\n--- axon log ---\n{}", self.log())
            }
        }
    }

    /// Kills the process with SIGKILL (no chance to flush or clean up) and
    /// returns its exit status.
    pub fn kill9(&mut self) -> ExitStatus {
        let Some(mut child) = self.child.take() else {
            panic!("kill9: axon is not running");
        };
        if let Err(e) = child.kill() {
            panic!("SIGKILL to axon: {e}");
        }
        match child.wait() {
            Ok(status) => status,
            Err(e) => panic!("waiting for the killed axon: {e}"),
        }
    }

    /// Starts the server again on the same port and data directory (after
    /// stopping it first if it is running). Panics with the log on failure.
    pub async fn restart(&mut self) {
        if let Err(e) = self.try_restart().await {
            panic!("{e}");
        }
    }

    /// Like [`Homeserver::restart`] but returns why the server did not
    /// become ready.
    pub async fn try_restart(&mut self) -> Result<(), StartError> {
        if self.is_running() {
            self.stop().await;
        }
        self.child = None;
        self.spawn_and_wait().await
    }

    /// Runs `axon <subcommand> --config <this server's config> <args>`, as an
    /// operator would on this server's host. For commands that open the
    /// database, stop the server first: the store admits one process.
    pub async fn cli(&self, subcommand: &str, args: &[&str]) -> CliOutput {
        let config = self.config_path().display().to_string();
        let mut all = vec![subcommand, "--config", config.as_str()];
        all.extend_from_slice(args);
        run_cli(all, &[]).await
    }

    /// Registers a user through `POST /_synapse/admin/v1/register` with the
    /// configured shared secret and returns the raw response.
    pub async fn shared_secret_register(
        &self,
        username: &str,
        password: &str,
        admin: bool,
    ) -> Response {
        let Some(secret) = self.options.shared_secret() else {
            panic!("shared_secret_register: the server has no shared secret configured");
        };
        let client = self.client();
        let nonce_resp = client.get("/_synapse/admin/v1/register").await;
        let nonce = nonce_resp.assert_ok().str_at("/nonce").to_owned();
        let mac = shared_secret_mac(secret, &nonce, username, password, admin);
        client
            .post(
                "/_synapse/admin/v1/register",
                json!({
                    "nonce": nonce,
                    "username": username,
                    "password": password,
                    "admin": admin,
                    "mac": mac,
                }),
            )
            .await
    }

    /// Creates a server admin through shared-secret registration.
    pub async fn register_admin(&self, username: &str, password: &str) -> Session {
        let resp = self.shared_secret_register(username, password, true).await;
        Session::from_response(&resp)
    }

    /// Writes the config, spawns the process and waits for readiness.
    async fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        self.spawn();
        self.wait_ready().await
    }

    fn spawn(&mut self) {
        // Resolved (and if need be built) first, so a failed build is not
        // reported alongside an empty server log.
        let binary = axon_binary();
        let data_dir = self.data_dir().display().to_string();
        let config = self.options.render(self.port, self.metrics_port, &data_dir);
        if let Err(e) = std::fs::write(self.config_path(), config) {
            panic!("writing {}: {e}", self.config_path().display());
        }
        self.starts += 1;
        let log = match OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
        {
            Ok(mut log) => {
                let _ = writeln!(log, "===== axon start #{} =====", self.starts);
                log
            }
            Err(e) => panic!("opening {}: {e}", self.log_path().display()),
        };
        let log_err = match log.try_clone() {
            Ok(clone) => clone,
            Err(e) => panic!("cloning the log handle: {e}"),
        };
        let mut command = Command::new(binary);
        command
            .arg("--config")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        // The test runner's own AXON_* variables (AXON_BIN, or a developer's
        // overrides) must not reconfigure the server under test.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("AXON_") {
                command.env_remove(key);
            }
        }
        command.envs(self.options.env().iter().map(|(k, v)| (k, v)));
        match command.spawn() {
            Ok(child) => self.child = Some(child),
            Err(e) => panic!("starting {}: {e}", binary.display()),
        }
    }

    async fn wait_ready(&mut self) -> Result<(), StartError> {
        let probe = http_client(Duration::from_secs(2));
        let url = format!("{}/health", self.base_url());
        let Some(child) = self.child.as_mut() else {
            panic!("wait_ready: no process");
        };
        let outcome = try_wait_until("axon to answer GET /health with 200", READY_TIMEOUT, || {
            // Checked before the probe so a crash is reported as such
            // rather than as a timeout.
            let exited = child.try_wait().ok().flatten();
            let request = probe.get(&url).send();
            async move {
                if let Some(status) = exited {
                    return Some(Err(status));
                }
                match request.await {
                    Ok(resp) if resp.status().as_u16() == 200 => Some(Ok(())),
                    _ => None,
                }
            }
        })
        .await;
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) => {
                self.child = None;
                Err(StartError {
                    reason: format!("the process exited with {status}"),
                    exit_status: Some(status),
                    log: self.log(),
                })
            }
            Err(timeout) => {
                if let Some(mut child) = self.child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                Err(StartError {
                    reason: timeout.to_string(),
                    exit_status: None,
                    log: self.log(),
                })
            }
        }
    }

    /// The last lines of the log, for failure reports.
    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// Waits until `GET /metrics` on the metrics listener answers 200 and
    /// returns the body. Panics if metrics are not enabled.
    pub async fn scrape_metrics(&self) -> String {
        let Some(base) = self.metrics_url() else {
            panic!("scrape_metrics: metrics are not enabled for this server");
        };
        let client = Client::new(base);
        wait_until("the metrics listener to answer", READY_TIMEOUT, || {
            let client = client.clone();
            async move {
                let resp = client.get("/metrics").await;
                (resp.status == 200).then_some(resp.text)
            }
        })
        .await
    }
}

impl Drop for Homeserver {
    #[allow(
        clippy::print_stderr,
        reason = "the server log is the most useful part of a failure report"
    )]
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() && self.log_path().exists() {
            eprintln!(
                "--- last {LOG_TAIL_LINES} lines of the axon log ({}) ---\n{}\n--- end of axon log ---",
                self.log_path().display(),
                self.log_tail()
            );
            if std::env::var_os(KEEP_ENV).is_some() {
                self.dir.disable_cleanup(true);
                eprintln!(
                    "kept {} (unset {KEEP_ENV} to clean up)",
                    self.dir.path().display()
                );
            }
        }
    }
}
