//! The `/sync` benchmark behind the `sync_bench` binary.
//!
//! - [`args`]: the command line.
//! - [`client`]: the client-server calls it needs beyond registration.
//! - [`wakeup`]: wake-up latency of a waiting long poll.
//! - [`initial`]: initial sync time for a user in many rooms.
//! - [`idle`] (with [`procfs`]): the server's memory with thousands of idle
//!   long polls.
//! - [`report`]: the text, the JSON, and the comparison of two runs.
//!
//! It shares registration, errors and percentiles with `send_bench`; a run
//! works the same against Axon and against Synapse (HTTP only, plus `/proc`
//! for the server's memory, so the server must run on this machine).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool: the report goes to stdout, progress to stderr"
)]

mod args;
mod client;
mod idle;
mod initial;
mod procfs;
mod report;
mod wakeup;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use axon_complement_tests::{Homeserver, ServerOptions, random_string};
use serde_json::json;

use crate::bench::axon_bin::{AXON_BIN_ENV, reexec_needed, reexec_with_axon_bin};
use crate::bench::error::BenchError;
use crate::bench::sync::args::{Command, RunArgs, Target, USAGE};
use crate::bench::sync::report::{Report, WakeupReport};

/// Added to the harness defaults for `--axon`: the durable write path a
/// production server runs with (also the default, stated so it cannot
/// silently change under the benchmark).
const AXON_BENCH_TOML: &str = "[storage]\nsync_writes = true\n";

/// Runs the command line and returns the exit code: 0 on success, 1 when
/// the run failed, 2 on a usage error.
pub(crate) fn main() -> ExitCode {
    let command = match args::parse(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("sync_bench: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match command {
        Command::Help => {
            println!("{USAGE}");
            Ok(())
        }
        Command::Compare { a, b } => compare_files(&a, &b),
        Command::Run(run) => match axon_to_run(&run) {
            Ok(Some(binary)) => return reexec_with_axon_bin("sync_bench", &binary),
            Ok(None) => run_command(&run),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sync_bench: {e}");
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

/// Starts axon if asked to, then runs the workloads.
async fn run_target(run: &RunArgs) -> Result<Report, BenchError> {
    match &run.target {
        Target::Url(url) => {
            let label = run.label.clone().unwrap_or_else(|| url.clone());
            run_workloads(run, url, run.metrics_url.clone(), label, None).await
        }
        Target::Axon { .. } => {
            let binary = std::env::var(AXON_BIN_ENV).ok();
            let options = ServerOptions::new()
                .with_toml(AXON_BENCH_TOML)
                .with_metrics();
            let server = Homeserver::try_start(options)
                .await
                .map_err(|e| BenchError::Axon(e.to_string()))?;
            eprintln!("sync_bench: started axon at {}", server.base_url());
            let metrics = run
                .metrics_url
                .clone()
                .or_else(|| server.metrics_url().map(|base| format!("{base}/metrics")));
            let label = run.label.clone().unwrap_or_else(|| "axon".to_owned());
            let report = run_workloads(run, &server.base_url(), metrics, label, binary).await;
            // Dropping the server kills it and removes its data directory.
            drop(server);
            report
        }
    }
}

/// Runs the chosen workloads in order: wake-up, initial sync, idle (last,
/// because its thousands of polls stay open until they time out).
async fn run_workloads(
    run: &RunArgs,
    base_url: &str,
    metrics_url: Option<String>,
    label: String,
    axon_binary: Option<String>,
) -> Result<Report, BenchError> {
    let run_id = random_string(8);
    let mut report = Report {
        label,
        base_url: base_url.to_owned(),
        axon_binary,
        workload: json!({
            "wakeup_events": run.workloads.wakeup.then_some(run.wakeup_events),
            "wakeup_warmup": run.wakeup_warmup,
            "room_counts": if run.workloads.initial { run.room_counts.clone() } else { Vec::new() },
            "messages_per_room": run.messages_per_room,
            "initial_runs": run.initial_runs,
            "idle_waiters": run.workloads.idle.then_some(run.idle_waiters),
            "idle_users": run.idle_users,
            "idle_timeout_ms": u64::try_from(run.idle_timeout.as_millis()).unwrap_or(u64::MAX),
        }),
        wakeup: None,
        initial: Vec::new(),
        idle: None,
    };
    if run.workloads.wakeup {
        eprintln!(
            "sync_bench: {}: wake-up latency over {} events",
            report.label, run.wakeup_events
        );
        let outcome = wakeup::run(base_url, &run_id, run.wakeup_events, run.wakeup_warmup).await?;
        report.wakeup = WakeupReport::new(outcome);
    }
    if run.workloads.initial {
        eprintln!("sync_bench: {}: initial sync", report.label);
        report.initial = initial::run(
            base_url,
            &run_id,
            &run.room_counts,
            run.messages_per_room,
            run.initial_runs,
        )
        .await?;
    }
    if run.workloads.idle {
        eprintln!(
            "sync_bench: {}: {} idle long polls",
            report.label, run.idle_waiters
        );
        report.idle = Some(
            idle::run(
                base_url,
                &run_id,
                run.idle_waiters,
                run.idle_users,
                run.idle_timeout,
                metrics_url.as_deref(),
            )
            .await?,
        );
    }
    Ok(report)
}
