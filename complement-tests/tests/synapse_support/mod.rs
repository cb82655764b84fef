//! A throwaway Synapse on loopback, federating with an `axon` over TLS.
//!
//! Synapse comes from the virtualenv that `complement-tests/bench/synapse.sh --install-only`
//! fills (the path is `$AXON_TEST_SYNAPSE_VENV`, by default the benchmarks' cache). A test that
//! needs Synapse fails, naming that command, when it is not installed: an interop test that
//! skips itself proves nothing.
//!
//! Both servers are named by an IP literal with a port (`127.0.0.1:<port>`), so neither needs
//! `.well-known` or SRV discovery, and both present a certificate for `127.0.0.1` issued by one
//! test CA ([`Pki`]): Axon trusts it through `federation.trusted_ca`, Synapse through
//! `federation_custom_ca_list`, so certificates are really checked both ways.
#![allow(
    clippy::panic,
    dead_code,
    reason = "test helpers report failures by panicking with context; not every test uses all"
)]

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axon_complement_tests::{Client, ServerOptions, try_wait_until};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use tempfile::TempDir;

use crate::federation_support::{Pki, free_port};

pub(crate) mod peers;

/// The environment variable naming Synapse's virtualenv.
pub(crate) const VENV_ENV: &str = "AXON_TEST_SYNAPSE_VENV";
/// Where `complement-tests/bench/synapse.sh` installs Synapse by default.
const DEFAULT_VENV: &str = "/var/cache/axon-bench/synapse-venv";
/// The name both servers' certificates are issued for: every server here is on loopback.
pub(crate) const LOOPBACK: &str = "127.0.0.1";

/// How long Synapse may take to answer `/versions` (about 2 s when idle, much more while the
/// machine builds).
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long Synapse may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Fresh ports tried when another process took a probed port before Synapse bound it.
const PORT_ATTEMPTS: usize = 3;
/// How many lines of Synapse's log a failing test prints.
const LOG_TAIL_LINES: usize = 150;
/// Set this environment variable to keep a failing test's Synapse directory (the harness keeps
/// Axon's under the same variable).
const KEEP_ENV: &str = "AXON_TEST_KEEP";

/// Quick retries of Axon's federation sender, so a restarted Synapse is reached again soon.
pub(crate) const AXON_SENDER: &str =
    "[federation_sender]\nretry_initial_ms = 50\nretry_max_ms = 500\n";

/// The test CA and the loopback certificate both servers present.
pub(crate) fn loopback_pki() -> Pki {
    Pki::new(&[LOOPBACK])
}

/// Options for an `axon` named `127.0.0.1:<tls_port>`, serving federation over TLS on that port
/// with the loopback certificate, trusting the test CA, allowed to reach loopback addresses
/// (Synapse's), with `extra` TOML on top.
pub(crate) fn axon_options(pki: &Pki, tls_port: u16, extra: &str) -> ServerOptions {
    ServerOptions::new().with_toml(&format!(
        r#"
server_name = "{LOOPBACK}:{tls_port}"
[tls]
enabled = true
address = "{LOOPBACK}:{tls_port}"
certificate = "{cert}"
private_key = "{key}"
[federation]
trusted_ca = "{ca}"
allow_private_addresses = true
{extra}
"#,
        cert = pki.path(&format!("{LOOPBACK}.crt")),
        key = pki.path(&format!("{LOOPBACK}.key")),
        ca = pki.path("ca.pem"),
    ))
}

/// A Synapse process with its own directory (configuration, SQLite database, signing key,
/// log), a TLS federation listener and a plain-HTTP client listener on free loopback ports.
/// Dropping it kills its process group and removes the directory; if the test is failing, the
/// tail of Synapse's log is printed first.
#[derive(Debug)]
pub(crate) struct Synapse {
    dir: TempDir,
    python: PathBuf,
    federation_port: u16,
    client_port: u16,
    child: Option<Child>,
}

impl Synapse {
    /// Starts Synapse presenting the loopback certificate of `pki` and trusting its CA, and
    /// waits until its client API answers.
    pub(crate) async fn start(pki: &Pki) -> Synapse {
        let python = venv_python();
        let dir = tempfile::Builder::new()
            .prefix("axon-test-synapse-")
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a temp dir: {e}"));
        let mut synapse = Synapse {
            dir,
            python,
            federation_port: free_port(),
            client_port: free_port(),
            child: None,
        };
        write_signing_key(&synapse.path("signing.key"));
        synapse.write_log_config();
        let mut attempt = 1;
        loop {
            synapse.write_config(pki);
            match synapse.spawn_and_wait().await {
                Ok(()) => return synapse,
                Err(e) if attempt < PORT_ATTEMPTS && e.contains("Address already in use") => {
                    attempt += 1;
                    synapse.federation_port = free_port();
                    synapse.client_port = free_port();
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// The server name, `127.0.0.1:<federation port>`.
    pub(crate) fn server_name(&self) -> String {
        format!("{LOOPBACK}:{}", self.federation_port)
    }

    /// `@localpart:<server name>`.
    pub(crate) fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.server_name())
    }

    /// An unauthenticated client of Synapse's client API.
    pub(crate) fn client(&self) -> Client {
        Client::new(format!("http://{LOOPBACK}:{}", self.client_port))
    }

    /// Everything Synapse logged, across restarts.
    pub(crate) fn log(&self) -> String {
        std::fs::read(self.path("homeserver.log"))
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Sends SIGTERM to Synapse's process group and waits for it to exit (killing it after
    /// a deadline).
    pub(crate) async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            panic!("stop: Synapse is not running");
        };
        signal_group(&child, "-TERM");
        let exited = try_wait_until("Synapse to exit after SIGTERM", STOP_TIMEOUT, || {
            let status = child.try_wait().ok().flatten();
            async move { status }
        })
        .await;
        if let Err(timeout) = exited {
            signal_group(&child, "-KILL");
            let _ = child.wait();
            panic!("{timeout}\n{}", self.log_tail());
        }
    }

    /// Starts Synapse again on the same ports and data, stopping it first if it runs.
    pub(crate) async fn restart(&mut self) {
        if self.child.is_some() {
            self.stop().await;
        }
        if let Err(e) = self.spawn_and_wait().await {
            panic!("{e}");
        }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn write_config(&self, pki: &Pki) {
        let dir = self.dir.path().display();
        let secret = |_| STANDARD_NO_PAD.encode(rand::random::<[u8; 32]>());
        // Every limiter the tests can reach, raised out of the way (keys as read by
        // synapse/config/ratelimiting.py).
        let high = "{per_second: 100000, burst_count: 1000000}";
        let config = format!(
            r#"server_name: "{server_name}"
pid_file: "{dir}/homeserver.pid"
listeners:
  - port: {federation_port}
    bind_addresses: ["{LOOPBACK}"]
    type: http
    tls: true
    x_forwarded: false
    resources:
      - names: [federation]
        compress: false
  - port: {client_port}
    bind_addresses: ["{LOOPBACK}"]
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
tls_certificate_path: "{cert}"
tls_private_key_path: "{key}"
# Axon's certificate is checked, against the test CA.
federation_verify_certificates: true
federation_custom_ca_list: ["{ca}"]
# Loopback is blocked by default; the peer here is on loopback.
federation_ip_range_blacklist: []
# Retry an unreachable server soon, so a restarted Axon hears of what it missed quickly.
federation:
  destination_min_retry_interval: 200
  destination_retry_multiplier: 2
  destination_max_retry_interval: 2000
database:
  name: sqlite3
  args:
    database: "{dir}/homeserver.db"
log_config: "{dir}/log.yaml"
media_store_path: "{dir}/media"
signing_key_path: "{dir}/signing.key"
report_stats: false
macaroon_secret_key: "{macaroon}"
form_secret: "{form}"
# Keys are fetched from Axon itself, not from a notary.
trusted_key_servers: []
suppress_key_server_warning: true
enable_registration: true
enable_registration_without_verification: true
bcrypt_rounds: 4
# A test polls /sync until something arrives: a cached answer would hide it.
caches:
  sync_response_cache_duration: 0
rc_message: {high}
rc_registration: {high}
rc_login:
  address: {high}
  account: {high}
  failed_attempts: {high}
rc_admin_redaction: {high}
rc_joins:
  local: {high}
  remote: {high}
rc_joins_per_room: {high}
rc_invites:
  per_room: {high}
  per_user: {high}
  per_issuer: {high}
rc_room_creation: {high}
rc_presence:
  per_user: {high}
rc_profile: {high}
rc_federation:
  window_size: 1000
  sleep_limit: 100000
  sleep_delay: 1
  reject_limit: 100000
  concurrent: 100
"#,
            server_name = self.server_name(),
            federation_port = self.federation_port,
            client_port = self.client_port,
            cert = pki.path(&format!("{LOOPBACK}.crt")),
            key = pki.path(&format!("{LOOPBACK}.key")),
            ca = pki.path("ca.pem"),
            macaroon = secret(()),
            form = secret(()),
        );
        write_file(&self.path("homeserver.yaml"), &config);
    }

    fn write_log_config(&self) {
        let log_file = self.path("homeserver.log");
        write_file(
            &self.path("log.yaml"),
            &format!(
                r#"version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: "{}"
    filters: [context]
filters:
  context:
    (): synapse.logging.context.LoggingContextFilter
    request: ""
root:
  level: INFO
  handlers: [file]
disable_existing_loggers: false
"#,
                log_file.display()
            ),
        );
    }

    /// Spawns Synapse in its own process group and waits until `/versions` answers; on
    /// failure returns a report with the end of its output and log.
    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        let stdout_path = self.path("stdout.log");
        let stdout = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stdout_path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", stdout_path.display()));
        let stderr = stdout
            .try_clone()
            .unwrap_or_else(|e| panic!("cloning a file handle: {e}"));
        // Where this start's lines begin in the log, which restarts append to.
        let log_start = std::fs::metadata(self.path("homeserver.log"))
            .map(|meta| usize::try_from(meta.len()).unwrap_or(usize::MAX))
            .unwrap_or(0);
        let child = Command::new(&self.python)
            .args(["-m", "synapse.app.homeserver", "--config-path"])
            .arg(self.path("homeserver.yaml"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            // Its own group, so stopping it stops anything it started.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.python.display()));
        self.child = Some(child);

        let client = self.client();
        // Both listeners must be up, and announced by this very process: a probe alone could
        // be answered by another server that took the port first.
        let log_path = self.path("homeserver.log");
        let announcements = [
            format!(
                "Synapse now listening on TCP port {} (TLS)",
                self.federation_port
            ),
            format!("Synapse now listening on TCP port {}\n", self.client_port),
        ];
        let Some(child) = self.child.as_mut() else {
            panic!("spawn_and_wait: no process");
        };
        let outcome = try_wait_until(
            "Synapse to listen and answer /_matrix/client/versions",
            READY_TIMEOUT,
            || {
                let exited = child.try_wait().ok().flatten();
                let log = std::fs::read(&log_path).unwrap_or_default();
                let this_start = String::from_utf8_lossy(log.get(log_start..).unwrap_or_default());
                let listening = announcements.iter().all(|line| this_start.contains(line));
                let client = client.clone();
                async move {
                    if let Some(status) = exited {
                        return Some(Err(status));
                    }
                    (listening && probe(&client).await).then_some(Ok(()))
                }
            },
        )
        .await;
        let failure = match outcome {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(status)) => format!("Synapse exited with {status}"),
            Err(timeout) => {
                if let Some(child) = self.child.as_mut() {
                    signal_group(child, "-KILL");
                    let _ = child.wait();
                }
                timeout.to_string()
            }
        };
        self.child = None;
        let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
        Err(format!(
            "{failure}\n--- Synapse output ---\n{}\n{}",
            tail(&stdout),
            self.log_tail()
        ))
    }

    fn log_tail(&self) -> String {
        format!(
            "--- last {LOG_TAIL_LINES} lines of Synapse's log ({}) ---\n{}\n--- end of Synapse's log ---",
            self.path("homeserver.log").display(),
            tail(&self.log())
        )
    }
}

impl Drop for Synapse {
    #[allow(
        clippy::print_stderr,
        reason = "Synapse's log is the most useful part of a failure report"
    )]
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal_group(&child, "-KILL");
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
            if std::env::var_os(KEEP_ENV).is_some() {
                self.dir.disable_cleanup(true);
                eprintln!(
                    "kept Synapse's directory {} (unset {KEEP_ENV} to clean up)",
                    self.dir.path().display()
                );
            }
        }
    }
}

/// The Python of Synapse's virtualenv; fails the test, saying how to install it, if Synapse
/// is not there.
fn venv_python() -> PathBuf {
    let venv =
        std::env::var_os(VENV_ENV).map_or_else(|| PathBuf::from(DEFAULT_VENV), PathBuf::from);
    let python = venv.join("bin").join("python");
    let installed = venv
        .join("lib")
        .read_dir()
        .into_iter()
        .flatten()
        .flatten()
        .any(|lib| lib.path().join("site-packages").join("synapse").is_dir());
    if !python.exists() || !installed {
        panic!(
            "Synapse is not installed in {} (${VENV_ENV}, by default {DEFAULT_VENV}): \
             `complement-tests/bench/synapse.sh --install-only` installs it in \
             $AXON_BENCH_CACHE/synapse-venv (by default {DEFAULT_VENV}); point {VENV_ENV} at \
             that virtualenv",
            venv.display(),
        );
    }
    python
}

/// Whether Synapse's client API answers `/versions` with 200.
async fn probe(client: &Client) -> bool {
    // A fresh, short-lived request: the harness client panics on connection errors, and
    // "connection refused" is what a starting Synapse answers.
    let url = format!("{}/_matrix/client/versions", client.base_url());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build();
    match http {
        Ok(http) => {
            matches!(http.get(&url).send().await, Ok(resp) if resp.status().as_u16() == 200)
        }
        Err(_) => false,
    }
}

/// Writes a fresh ed25519 signing key in Synapse's format (`ed25519 <version> <unpadded
/// base64 seed>`), which saves a Python start for `--generate-keys`.
fn write_signing_key(path: &std::path::Path) {
    let seed = rand::random::<[u8; 32]>();
    let version: String = axon_complement_tests::random_string(6);
    write_file(
        path,
        &format!("ed25519 a_{version} {}\n", STANDARD_NO_PAD.encode(seed)),
    );
}

/// Sends `signal` (`-TERM`, `-KILL`) to the process group led by `child`.
fn signal_group(child: &Child, signal: &str) {
    let group = format!("-{}", child.id());
    // Best effort: the group may already be gone.
    let _ = Command::new("kill")
        .args([signal, "--", &group])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn write_file(path: &std::path::Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}
