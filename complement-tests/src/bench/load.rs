//! The timed part: concurrent senders, one request in flight each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Barrier;

use crate::bench::args::Amount;
use crate::bench::matrix::Sender;

/// How many failure descriptions a phase keeps for the report.
const MAX_FAILURE_SAMPLES: usize = 5;

/// What one phase measured.
#[derive(Debug, Default)]
pub(crate) struct PhaseOutcome {
    /// Timed sends that succeeded.
    pub(crate) succeeded: u64,
    /// Sends that failed, warm-up included.
    pub(crate) failed: u64,
    /// From the moment every sender was released to the end of the last
    /// timed request.
    pub(crate) wall: Duration,
    /// The latency of every successful timed send.
    pub(crate) latencies: Vec<Duration>,
    /// The first few failures, described.
    pub(crate) failure_samples: Vec<String>,
}

impl PhaseOutcome {
    fn record_failure(&mut self, description: String) {
        self.failed += 1;
        if self.failure_samples.len() < MAX_FAILURE_SAMPLES {
            self.failure_samples.push(description);
        }
    }
}

/// What one sender task reports back.
#[derive(Debug, Default)]
struct SenderOutcome {
    latencies: Vec<Duration>,
    failures: Vec<String>,
    /// Failures beyond those described.
    more_failures: u64,
    finished: Option<Instant>,
}

impl SenderOutcome {
    fn fail(&mut self, description: String) {
        if self.failures.len() < MAX_FAILURE_SAMPLES {
            self.failures.push(description);
        } else {
            self.more_failures += 1;
        }
    }
}

/// Runs one phase: every sender first sends `warmup` untimed messages;
/// once all have, they are released together and each sends `amount`,
/// one request at a time, recording each request's latency.
pub(crate) async fn run_phase(senders: Vec<Sender>, amount: Amount, warmup: u64) -> PhaseOutcome {
    // The senders and this task: the clock starts when all have arrived.
    let barrier = Arc::new(Barrier::new(senders.len() + 1));
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|sender| tokio::spawn(drive(sender, amount, warmup, barrier.clone())))
        .collect();
    barrier.wait().await;
    let started = Instant::now();

    let mut phase = PhaseOutcome::default();
    let mut last_finish = started;
    for task in tasks {
        match task.await {
            Ok(sender) => {
                phase.succeeded += u64::try_from(sender.latencies.len()).unwrap_or(u64::MAX);
                phase.latencies.extend(sender.latencies);
                for failure in sender.failures {
                    phase.record_failure(failure);
                }
                phase.failed += sender.more_failures;
                if let Some(finished) = sender.finished {
                    last_finish = last_finish.max(finished);
                }
            }
            Err(e) => phase.record_failure(format!("a sender task died: {e}")),
        }
    }
    phase.wall = last_finish - started;
    phase
}

/// One sender's loop.
async fn drive(
    sender: Sender,
    amount: Amount,
    warmup: u64,
    barrier: Arc<Barrier>,
) -> SenderOutcome {
    let mut outcome = SenderOutcome::default();
    for seq in 0..warmup {
        if let Err(e) = sender.send(&format!("w{seq}")).await {
            outcome.fail(format!("warm-up send: {e}"));
        }
    }
    barrier.wait().await;
    let deadline = match amount {
        Amount::Duration(duration) => Some(Instant::now() + duration),
        Amount::Messages(_) => None,
    };
    let mut seq: u64 = 0;
    loop {
        let more = match (amount, deadline) {
            (Amount::Messages(count), _) => seq < count,
            (_, Some(deadline)) => Instant::now() < deadline,
            (Amount::Duration(_), None) => false,
        };
        if !more {
            break;
        }
        let start = Instant::now();
        match sender.send(&seq.to_string()).await {
            Ok(()) => outcome.latencies.push(start.elapsed()),
            Err(e) => outcome.fail(e),
        }
        seq += 1;
    }
    outcome.finished = Some(Instant::now());
    outcome
}
