//! The inbound federation benchmark behind the `federation_bench` binary.
//!
//! - [`args`]: the command line.
//! - [`pki`]: the peer's CA and TLS certificate.
//! - [`signing`]: the peer's ed25519 key: request signatures, its key
//!   answer, hashed and signed PDUs.
//! - [`chain`]: the room as the peer sees it after joining, and the chain
//!   of messages it sends.
//! - [`peer`]: the peer's TLS listener (its keys, its events, a sink for
//!   what the target sends it).
//! - [`target`]: the peer's signed requests to the target.
//! - [`workload`]: set-up, the throughput and the latency measurements.
//! - [`report`]: the text, the JSON, and the comparison of two runs.
//!
//! It shares registration, errors and percentiles with the other
//! benchmarks; a run works the same against Axon and against Synapse.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool: the report goes to stdout, progress to stderr"
)]

mod args;
mod chain;
mod peer;
mod pki;
mod report;
mod signing;
mod target;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use axon_complement_tests::{Homeserver, ServerOptions, random_string};
use serde_json::json;

use crate::bench::axon_bin::{AXON_BIN_ENV, reexec_needed, reexec_with_axon_bin};
use crate::bench::error::BenchError;
use crate::bench::federation::args::{Command, RunArgs, Target, USAGE};
use crate::bench::federation::peer::Peer;
use crate::bench::federation::pki::PeerTls;
use crate::bench::federation::report::{LatencyReport, Report, ThroughputReport};

/// Runs the command line and returns the exit code: 0 on success, 1 when
/// the run failed, 2 on a usage error.
pub(crate) fn main() -> ExitCode {
    let command = match args::parse(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("federation_bench: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match command {
        Command::Help => {
            println!("{USAGE}");
            Ok(())
        }
        Command::Pki(dir) => pki::write(&dir).map(|()| {
            eprintln!(
                "federation_bench: wrote {}/{{ca.pem,peer.crt,peer.key}}",
                dir.display()
            );
        }),
        Command::Compare { a, b } => compare_files(&a, &b),
        Command::Run(run) => match axon_to_run(&run) {
            Ok(Some(binary)) => return reexec_with_axon_bin("federation_bench", &binary),
            Ok(None) => run_command(&run),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("federation_bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn compare_files(a: &Path, b: &Path) -> Result<(), BenchError> {
    let a = report::read_report(a)?;
    let b = report::read_report(b)?;
    print!("{}", report::compare(&a, &b));
    Ok(())
}

/// For `--axon`, the binary to re-run this program with (see [`reexec_needed`]).
fn axon_to_run(run: &RunArgs) -> Result<Option<PathBuf>, BenchError> {
    let Target::Axon { binary } = &run.target else {
        return Ok(None);
    };
    reexec_needed(binary.as_deref())
}

fn run_command(run: &RunArgs) -> Result<(), BenchError> {
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| BenchError::Unsupported(format!("starting the async runtime: {e}")))?;
    let report = runtime.block_on(run_target(run))?;
    if run.json {
        println!("{:#}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

/// The configuration `--axon` adds to the harness defaults: the durable
/// write path a production server runs with (also the default, stated so it
/// cannot silently change under the benchmark), trust in the peer's CA, and
/// outbound requests to loopback, where the peer is.
fn axon_toml(ca_path: &Path) -> String {
    let ca = toml::Value::String(ca_path.display().to_string());
    format!(
        "[storage]\nsync_writes = true\n[federation]\ntrusted_ca = {ca}\n\
         allow_private_addresses = true\n"
    )
}

/// Starts axon if asked to, then runs the workloads.
async fn run_target(run: &RunArgs) -> Result<Report, BenchError> {
    // reqwest and the peer's listener need a crypto provider installed; an
    // error means one already is.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // A fresh CA when none is given; the directory lives as long as the run.
    let (tls, _pki_dir) = match &run.pki {
        Some(dir) => (pki::read(dir)?, None),
        None => {
            let dir = tempfile::tempdir()
                .map_err(|e| BenchError::Unsupported(format!("creating a temp dir: {e}")))?;
            pki::write(dir.path())?;
            (pki::read(dir.path())?, Some(dir))
        }
    };
    match &run.target {
        Target::Url(url) => {
            let label = run.label.clone().unwrap_or_else(|| url.clone());
            run_workloads(run, &tls, url, label, None).await
        }
        Target::Axon { .. } => {
            let binary = std::env::var(AXON_BIN_ENV).ok();
            let options = ServerOptions::new().with_toml(&axon_toml(&tls.ca_path));
            let server = Homeserver::try_start(options)
                .await
                .map_err(|e| BenchError::Axon(e.to_string()))?;
            eprintln!("federation_bench: started axon at {}", server.base_url());
            let label = run.label.clone().unwrap_or_else(|| "axon".to_owned());
            let report = run_workloads(run, &tls, &server.base_url(), label, binary).await;
            // Dropping the server kills it and removes its data directory.
            drop(server);
            report
        }
    }
}

/// Set-up, then the throughput and the latency workloads.
async fn run_workloads(
    run: &RunArgs,
    tls: &PeerTls,
    base_url: &str,
    label: String,
    axon_binary: Option<String>,
) -> Result<Report, BenchError> {
    let run_id = random_string(8);
    let peer = Peer::start(tls).await?;
    eprintln!(
        "federation_bench: {label}: the peer {} joins a room at {base_url}",
        peer.signer().server_name()
    );
    let mut setup = workload::setup(base_url, &run_id, &run.room_version, &peer).await?;
    eprintln!(
        "federation_bench: {label}: joined {} (room version {}); {} transactions of {} PDUs",
        setup.room_id,
        setup.room_version(),
        run.transactions,
        run.pdus_per_transaction
    );
    let throughput = workload::throughput(
        &mut setup,
        &peer,
        base_url,
        &run_id,
        run.warmup_transactions,
        run.transactions,
        run.pdus_per_transaction,
    )
    .await?;
    let throughput = ThroughputReport::new(throughput);
    eprintln!(
        "federation_bench: {label}: {} PDUs in {:.2} s, {:.1} PDUs/s; send to sync over {} \
         events",
        throughput.pdus,
        throughput.wall.as_secs_f64(),
        throughput.pdus_per_s,
        run.latency_events
    );
    let latency = workload::latency(
        &mut setup,
        &peer,
        base_url,
        &run_id,
        run.latency_warmup,
        run.latency_events,
    )
    .await?;
    eprintln!(
        "federation_bench: {label}: the target sent the peer {} transaction(s)",
        peer.inbound_transactions()
    );

    Ok(Report {
        label,
        base_url: base_url.to_owned(),
        server_name: setup.server_name.clone(),
        room_version: setup.room_version(),
        axon_binary,
        workload: json!({
            "transactions": run.transactions,
            "pdus_per_transaction": run.pdus_per_transaction,
            "warmup_transactions": run.warmup_transactions,
            "latency_events": run.latency_events,
            "latency_warmup": run.latency_warmup,
            "room_version": run.room_version,
        }),
        throughput,
        latency: LatencyReport::new(latency),
        fetched_back: peer.fetched_back(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_axon_configuration_trusts_the_ca_and_allows_loopback() {
        let toml: toml::Table = axon_toml(Path::new("/tmp/a \"b\"/ca.pem")).parse().unwrap();
        assert_eq!(
            toml["federation"]["trusted_ca"].as_str(),
            Some("/tmp/a \"b\"/ca.pem")
        );
        assert_eq!(
            toml["federation"]["allow_private_addresses"].as_bool(),
            Some(true)
        );
        assert_eq!(toml["storage"]["sync_writes"].as_bool(), Some(true));
    }
}
