//! Running `axon` as a command-line tool.

use std::ffi::OsStr;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use crate::binary::axon_binary;

/// Longest a CLI invocation may run; the commands under test do one thing
/// and exit, so hitting this is a failure (for instance a server that
/// started instead of rejecting its config).
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// The result of one `axon` invocation.
#[derive(Debug)]
pub struct CliOutput {
    /// The exit status.
    pub status: ExitStatus,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
}

impl CliOutput {
    /// stdout and stderr together, for searching a message wherever the
    /// command chose to print it.
    pub fn combined(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// Asserts a zero exit status and returns `self` for chaining.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(self.status.success(), "axon failed: {self}");
        self
    }

    /// Asserts a non-zero exit status and returns `self` for chaining.
    #[track_caller]
    pub fn assert_failure(&self) -> &Self {
        assert!(
            !self.status.success(),
            "axon unexpectedly succeeded: {self}"
        );
        self
    }
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `axon <args>` with a clean `AXON_*` environment plus `env`, and
/// captures its exit status and output. Panics if it cannot be started or
/// runs longer than a minute.
pub async fn run_cli<I, S>(args: I, env: &[(&str, &str)]) -> CliOutput
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = tokio::process::Command::new(axon_binary());
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AXON_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    let child = match command.spawn() {
        Ok(child) => child,
        Err(e) => panic!("starting {}: {e}", axon_binary().display()),
    };
    match tokio::time::timeout(CLI_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(output)) => CliOutput {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        },
        Ok(Err(e)) => panic!("waiting for axon: {e}"),
        // Dropping the future drops the child, which kills it.
        Err(_) => panic!("axon did not exit within {CLI_TIMEOUT:?}"),
    }
}
