//! The message-send benchmark behind the `send_bench` binary.
//!
//! - [`args`]: the command line.
//! - [`matrix`]: the client-server calls (register, create a room, join,
//!   send), errors as values.
//! - [`load`]: the timed phase: concurrent senders, one request in flight
//!   each, every latency recorded.
//! - [`stats`]: percentiles and throughput.
//! - [`report`]: the table, the JSON, and the comparison of two runs.
//!
//! A run: register as many users as the largest phase (untimed); then per
//! phase, a fresh public room created by the first user and joined by the
//! others (untimed), warm-up sends, then the timed sends.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool: the report goes to stdout, progress to stderr"
)]

mod args;
pub(crate) mod axon_bin;
mod error;
mod load;
mod matrix;
mod report;
mod stats;

#[cfg(test)]
mod fake_server;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use axon_complement_tests::{Homeserver, ServerOptions, random_string};
use tokio::task::JoinSet;

use crate::bench::args::{Command, RunArgs, Target, USAGE};
use crate::bench::axon_bin::{AXON_BIN_ENV, reexec_needed, reexec_with_axon_bin};
use crate::bench::error::BenchError;
use crate::bench::matrix::{Sender, User};
use crate::bench::report::{PhaseReport, Report};

/// Registrations in flight at once during set-up: enough to keep set-up
/// short, few enough not to trip anything resembling abuse protection.
const REGISTRATION_CONCURRENCY: usize = 8;
/// Added to the harness defaults for `--axon`: the durable write path a
/// production server runs with (also the default, stated so it cannot
/// silently change under the benchmark).
const AXON_BENCH_TOML: &str = "[storage]\nsync_writes = true\n";

/// Runs the command line and returns the exit code: 0 on success, 1 when
/// the run failed (any failed send included), 2 on a usage error.
pub(crate) fn main() -> ExitCode {
    let command = match args::parse(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("send_bench: {e}\n\n{USAGE}");
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
            Ok(Some(binary)) => return reexec_with_axon_bin("send_bench", &binary),
            Ok(None) => run_command(&run),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("send_bench: {e}");
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
    match report.failed_phase() {
        Some(phase) => Err(BenchError::SendsFailed {
            senders: phase.senders,
            failed: phase.failed,
            attempted: phase.events + phase.failed,
            samples: phase.failure_samples.join("\n"),
        }),
        None => Ok(()),
    }
}

/// Starts axon if asked to, then runs the workload.
async fn run_target(run: &RunArgs) -> Result<Report, BenchError> {
    match &run.target {
        Target::Url(url) => {
            let label = run.label.clone().unwrap_or_else(|| url.clone());
            run_workload(run, url, label, None).await
        }
        Target::Axon { .. } => {
            let binary = std::env::var(AXON_BIN_ENV).ok();
            let options = ServerOptions::new().with_toml(AXON_BENCH_TOML);
            let server = Homeserver::try_start(options)
                .await
                .map_err(|e| BenchError::Axon(e.to_string()))?;
            eprintln!("send_bench: started axon at {}", server.base_url());
            let label = run.label.clone().unwrap_or_else(|| "axon".to_owned());
            let report = run_workload(run, &server.base_url(), label, binary).await;
            // Dropping the server kills it and removes its data directory.
            drop(server);
            report
        }
    }
}

/// Registers the users, then runs every phase; stops after the first phase
/// with failed sends (the report shows it, and the run fails).
async fn run_workload(
    run: &RunArgs,
    base_url: &str,
    label: String,
    axon_binary: Option<String>,
) -> Result<Report, BenchError> {
    let run_id = random_string(8);
    let http = matrix::http_client()?;
    let setup_start = Instant::now();
    eprintln!(
        "send_bench: {label}: registering {} user(s) at {base_url}",
        run.max_senders()
    );
    let users = register_users(&http, base_url, &run_id, run.max_senders()).await?;
    let mut report = Report {
        label,
        base_url: base_url.to_owned(),
        axon_binary,
        amount: run.amount,
        warmup: run.warmup,
        setup: setup_start.elapsed(),
        phases: Vec::new(),
    };
    for (phase_index, &count) in run.senders.iter().enumerate() {
        let members = &users[..count];
        let room_id = prepare_room(&http, base_url, members, &run_id, phase_index).await?;
        let senders = members
            .iter()
            .enumerate()
            .map(|(i, user)| {
                let txn_prefix = format!("{run_id}-p{phase_index}-s{i}");
                Sender::new(base_url, user, &room_id, txn_prefix)
            })
            .collect::<Result<Vec<_>, _>>()?;
        eprintln!("send_bench: {count} sender(s) in {room_id}: sending");
        let outcome = load::run_phase(senders, run.amount, run.warmup).await;
        let phase = PhaseReport::new(count, outcome);
        eprintln!(
            "send_bench: {count} sender(s): {} events in {:.2} s, {:.1} events/s, {} failed",
            phase.events,
            phase.wall.as_secs_f64(),
            phase.events_per_s,
            phase.failed
        );
        let failed = phase.failed > 0;
        report.phases.push(phase);
        if failed {
            break;
        }
    }
    Ok(report)
}

/// Registers `count` users, a few at a time, in a stable order.
async fn register_users(
    http: &reqwest::Client,
    base_url: &str,
    run_id: &str,
    count: usize,
) -> Result<Vec<User>, BenchError> {
    let mut users: Vec<Option<User>> = vec![None; count];
    let mut pending = JoinSet::new();
    let mut next = 0;
    while next < count || !pending.is_empty() {
        while next < count && pending.len() < REGISTRATION_CONCURRENCY {
            let (http, base_url) = (http.clone(), base_url.to_owned());
            let username = format!("bench_{run_id}_{next}");
            let index = next;
            pending.spawn(async move {
                let password = random_string(24);
                let user = matrix::register(&http, &base_url, &username, &password).await;
                (index, user)
            });
            next += 1;
        }
        match pending.join_next().await {
            Some(Ok((index, user))) => users[index] = Some(user?),
            Some(Err(e)) => {
                return Err(BenchError::Unsupported(format!(
                    "a registration task died: {e}"
                )));
            }
            None => break,
        }
    }
    Ok(users.into_iter().flatten().collect())
}

/// A fresh public room created by the first member and joined by the rest.
async fn prepare_room(
    http: &reqwest::Client,
    base_url: &str,
    members: &[User],
    run_id: &str,
    phase_index: usize,
) -> Result<String, BenchError> {
    let Some((creator, others)) = members.split_first() else {
        return Err(BenchError::Usage(
            "a phase needs at least one sender".to_owned(),
        ));
    };
    let name = format!("send_bench {run_id} phase {phase_index}");
    let room_id = matrix::create_room(http, base_url, creator, &name).await?;
    // One at a time: joins to one room are serialised by any server anyway.
    for user in others {
        matrix::join(http, base_url, user, &room_id).await?;
    }
    Ok(room_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::args::Amount;
    use crate::bench::fake_server::{FakeServer, Script};

    fn run_args(base_url: &str, senders: Vec<usize>, amount: Amount, warmup: u64) -> RunArgs {
        RunArgs {
            target: Target::Url(base_url.to_owned()),
            senders,
            amount,
            warmup,
            label: Some("fake".to_owned()),
            json: true,
        }
    }

    #[tokio::test]
    async fn every_message_is_sent_once_per_sender_over_its_own_connection() {
        let server = FakeServer::start(Script::default()).await;
        let run = run_args(&server.base_url(), vec![1, 3], Amount::Messages(4), 2);
        let report = run_target(&run).await.unwrap();

        assert_eq!(report.phases.len(), 2);
        let counts: Vec<(usize, u64, u64)> = report
            .phases
            .iter()
            .map(|p| (p.senders, p.events, p.failed))
            .collect();
        assert_eq!(counts, vec![(1, 4, 0), (3, 12, 0)]);
        assert!(report.phases.iter().all(|p| p.latency.is_some()));
        assert!(report.failed_phase().is_none());

        let seen = server.seen();
        assert_eq!(seen.registrations, 3);
        assert_eq!(seen.rooms_created, 2);
        assert_eq!(seen.joins, 2, "phase 2's other two senders join");
        // (1 + 3 senders) x (2 warm-up + 4 timed), each transaction id once.
        assert_eq!(seen.sends.len(), 24);
        let unique: std::collections::HashSet<_> = seen.sends.iter().collect();
        assert_eq!(unique.len(), 24, "{:?}", seen.sends);
        // Phase 2 sends come from three users into its own room.
        let phase2_users: std::collections::HashSet<_> = seen
            .sends
            .iter()
            .filter(|(_, room, _)| room == "!room1:fake")
            .map(|(user, _, _)| user.clone())
            .collect();
        assert_eq!(phase2_users.len(), 3);
        // Keep-alive: one connection per sender carried all its sends.
        assert_eq!(seen.connections_with_sends, 4);
    }

    #[tokio::test]
    async fn a_failed_send_fails_the_run_and_stops_it() {
        let script = Script {
            fail_send_number: Some(3),
            ..Script::default()
        };
        let server = FakeServer::start(script).await;
        let run = run_args(&server.base_url(), vec![2, 4], Amount::Messages(5), 0);
        let report = run_target(&run).await.unwrap();
        assert_eq!(
            report.phases.len(),
            1,
            "the run stops after the failing phase"
        );
        let phase = &report.phases[0];
        assert_eq!((phase.events, phase.failed), (9, 1));
        assert!(
            phase.failure_samples[0].starts_with("429 "),
            "{:?}",
            phase.failure_samples
        );
        assert_eq!(report.failed_phase().map(|p| p.senders), Some(2));
    }

    #[tokio::test]
    async fn duration_mode_sends_until_the_time_is_up() {
        let server = FakeServer::start(Script::default()).await;
        let amount = Amount::Duration(std::time::Duration::from_secs(1));
        let run = run_args(&server.base_url(), vec![2], amount, 0);
        let report = run_target(&run).await.unwrap();
        let phase = &report.phases[0];
        assert!(phase.events > 0);
        assert_eq!(phase.failed, 0);
        // A send in flight when time is up may reach the server without being counted: at
        // most one per sender.
        let seen = u64::try_from(server.seen().sends.len()).unwrap();
        assert!(
            (phase.events..=phase.events + 2).contains(&seen),
            "server saw {seen} sends, the report counts {}",
            phase.events
        );
    }

    #[tokio::test]
    async fn registration_that_needs_more_than_dummy_is_refused_clearly() {
        let script = Script {
            registration_stage: "m.login.recaptcha",
            ..Script::default()
        };
        let server = FakeServer::start(script).await;
        let run = run_args(&server.base_url(), vec![1], Amount::Messages(1), 0);
        let err = run_target(&run).await.unwrap_err();
        assert!(matches!(err, BenchError::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("m.login.dummy"), "{err}");
    }
}
