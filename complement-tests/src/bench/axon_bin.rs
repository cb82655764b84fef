//! Which axon binary `--axon` runs, shared by the benchmarks: the harness that starts it reads
//! the binary from `$AXON_BIN` only, so a benchmark given another one re-runs itself with the
//! variable set.
#![allow(
    clippy::print_stderr,
    reason = "a command-line tool: why the re-run failed goes to stderr"
)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::bench::error::BenchError;

/// The harness reads the axon binary from this variable.
pub(crate) const AXON_BIN_ENV: &str = "AXON_BIN";

/// For `--axon` with the binary `flag` (if given), the binary to re-run this program with
/// when `$AXON_BIN` does not already name it (see [`reexec_with_axon_bin`]).
pub(crate) fn reexec_needed(flag: Option<&Path>) -> Result<Option<PathBuf>, BenchError> {
    let binary = axon_binary(flag)?;
    let already = std::env::var_os(AXON_BIN_ENV).as_deref() == Some(binary.as_os_str());
    Ok((!already).then_some(binary))
}

/// The axon binary for `--axon`: the flag, else `$AXON_BIN`, else the
/// `axon` built next to this executable (same target dir and profile).
fn axon_binary(flag: Option<&Path>) -> Result<PathBuf, BenchError> {
    let candidate = match (flag, std::env::var_os(AXON_BIN_ENV)) {
        (Some(path), _) => path.to_owned(),
        (None, Some(env)) => PathBuf::from(env),
        (None, None) => std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.join("axon")))
            .ok_or_else(|| BenchError::Axon("cannot locate this executable".to_owned()))?,
    };
    if !candidate.is_file() {
        return Err(BenchError::Axon(format!(
            "{} is not a file: build it (cargo build --release -p axon-homeserver) or pass \
             --axon-bin PATH",
            candidate.display()
        )));
    }
    // Absolute, so the re-executed process finds the same file.
    std::path::absolute(&candidate).map_err(|e| BenchError::Axon(e.to_string()))
}

/// Runs this program (`program` in messages) again with `$AXON_BIN` set and returns its exit
/// code.
///
/// Setting a variable in the running process is unsafe (other threads may read the
/// environment), so a child gets it instead.
pub(crate) fn reexec_with_axon_bin(program: &str, binary: &Path) -> ExitCode {
    let status = std::env::current_exe().and_then(|exe| {
        std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env(AXON_BIN_ENV, binary)
            .status()
    });
    match status {
        // The child has reported why it failed; pass its exit code on.
        Ok(status) => match status.code().and_then(|code| u8::try_from(code).ok()) {
            Some(code) => ExitCode::from(code),
            None => ExitCode::FAILURE,
        },
        Err(e) => {
            eprintln!("{program}: re-running with {AXON_BIN_ENV}: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_axon_binary_is_named() {
        let err = axon_binary(Some(Path::new("/nonexistent/axon"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/axon"), "{err}");
    }
}
