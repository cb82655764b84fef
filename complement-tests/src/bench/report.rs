//! The report of a run: as a table, as JSON, and two reports compared.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use crate::bench::args::Amount;
use crate::bench::error::BenchError;
use crate::bench::load::PhaseOutcome;
use crate::bench::stats::{LatencySummary, events_per_second};

/// The `format` field of a JSON report, checked by `compare`.
const FORMAT: &str = "axon-send-bench/1";

/// One phase's figures.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PhaseReport {
    pub(crate) senders: usize,
    /// Timed events sent successfully.
    pub(crate) events: u64,
    /// Failed sends (warm-up included); a good run has none.
    pub(crate) failed: u64,
    pub(crate) wall: Duration,
    pub(crate) events_per_s: f64,
    /// `None` only when no timed send succeeded.
    pub(crate) latency: Option<LatencySummary>,
    pub(crate) failure_samples: Vec<String>,
}

impl PhaseReport {
    /// Summarises what a phase with `senders` senders measured.
    pub(crate) fn new(senders: usize, outcome: PhaseOutcome) -> PhaseReport {
        PhaseReport {
            senders,
            events: outcome.succeeded,
            failed: outcome.failed,
            wall: outcome.wall,
            events_per_s: events_per_second(outcome.succeeded, outcome.wall),
            latency: LatencySummary::from_samples(outcome.latencies),
            failure_samples: outcome.failure_samples,
        }
    }
}

/// A whole run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Report {
    pub(crate) label: String,
    pub(crate) base_url: String,
    /// The binary, when the run started its own axon.
    pub(crate) axon_binary: Option<String>,
    pub(crate) amount: Amount,
    pub(crate) warmup: u64,
    /// Registration of every user (rooms and joins are per phase and not
    /// counted here).
    pub(crate) setup: Duration,
    pub(crate) phases: Vec<PhaseReport>,
}

impl Report {
    /// The first phase with failed sends, if any.
    pub(crate) fn failed_phase(&self) -> Option<&PhaseReport> {
        self.phases.iter().find(|phase| phase.failed > 0)
    }

    /// One line describing the workload.
    pub(crate) fn workload(&self) -> String {
        let amount = match self.amount {
            Amount::Messages(n) => format!("{n} messages per sender"),
            Amount::Duration(d) => format!("{} s per phase", d.as_secs()),
        };
        format!("{amount}, {} warm-up messages per sender", self.warmup)
    }

    /// The report as a table for people.
    pub(crate) fn to_text(&self) -> String {
        let mut out = format!("{} ({}): {}\n", self.label, self.base_url, self.workload());
        if let Some(binary) = &self.axon_binary {
            let _ = writeln!(out, "axon binary: {binary}");
        }
        out.push_str(
            "senders  events   wall s    events/s   p50 ms   p90 ms   p99 ms   max ms  failed\n",
        );
        for phase in &self.phases {
            let ms = |pick: fn(&LatencySummary) -> Duration| {
                phase
                    .latency
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |l| format!("{:.2}", millis(pick(l))))
            };
            let _ = writeln!(
                out,
                "{:>7} {:>7} {:>8.2} {:>11.1} {:>8} {:>8} {:>8} {:>8} {:>7}",
                phase.senders,
                phase.events,
                phase.wall.as_secs_f64(),
                phase.events_per_s,
                ms(|l| l.p50),
                ms(|l| l.p90),
                ms(|l| l.p99),
                ms(|l| l.max),
                phase.failed,
            );
        }
        out
    }

    /// The report as JSON, the input of `compare`.
    pub(crate) fn to_json(&self) -> Value {
        let (messages, duration) = match self.amount {
            Amount::Messages(n) => (Value::from(n), Value::Null),
            Amount::Duration(d) => (Value::Null, Value::from(d.as_secs())),
        };
        let phases: Vec<Value> = self
            .phases
            .iter()
            .map(|phase| {
                let latency = phase.latency.as_ref().map_or(Value::Null, |l| {
                    json!({
                        "p50": millis(l.p50),
                        "p90": millis(l.p90),
                        "p99": millis(l.p99),
                        "max": millis(l.max),
                        "mean": millis(l.mean),
                    })
                });
                json!({
                    "senders": phase.senders,
                    "events": phase.events,
                    "failed": phase.failed,
                    "wall_s": phase.wall.as_secs_f64(),
                    "events_per_s": phase.events_per_s,
                    "latency_ms": latency,
                    "failure_samples": phase.failure_samples,
                })
            })
            .collect();
        json!({
            "format": FORMAT,
            "label": self.label,
            "base_url": self.base_url,
            "axon_binary": self.axon_binary,
            "messages_per_sender": messages,
            "duration_s": duration,
            "warmup": self.warmup,
            "setup_s": self.setup.as_secs_f64(),
            "phases": phases,
        })
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The parts of a JSON report that `compare` uses.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReportSummary {
    pub(crate) label: String,
    pub(crate) workload: Value,
    pub(crate) axon_binary: Option<String>,
    pub(crate) phases: Vec<PhaseSummary>,
}

/// One phase of a JSON report.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PhaseSummary {
    pub(crate) senders: u64,
    pub(crate) events_per_s: f64,
    /// `None` when no send succeeded.
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    pub(crate) failed: u64,
}

impl ReportSummary {
    /// Reads a report written by `--json`; `Err` names what is missing.
    pub(crate) fn from_json(json: &Value) -> Result<ReportSummary, String> {
        if json["format"] != FORMAT {
            return Err(format!("not a send_bench report (format is not {FORMAT})"));
        }
        let phases = json["phases"]
            .as_array()
            .ok_or("no phases")?
            .iter()
            .map(|phase| {
                let number = |pointer: &str| {
                    phase
                        .pointer(pointer)
                        .and_then(Value::as_f64)
                        .ok_or_else(|| format!("a phase has no number at {pointer}"))
                };
                let count = |pointer: &str| {
                    phase
                        .pointer(pointer)
                        .and_then(Value::as_u64)
                        .ok_or_else(|| format!("a phase has no count at {pointer}"))
                };
                Ok(PhaseSummary {
                    senders: count("/senders")?,
                    events_per_s: number("/events_per_s")?,
                    p50_ms: phase.pointer("/latency_ms/p50").and_then(Value::as_f64),
                    p99_ms: phase.pointer("/latency_ms/p99").and_then(Value::as_f64),
                    failed: count("/failed")?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(ReportSummary {
            label: json["label"].as_str().unwrap_or("?").to_owned(),
            workload: json!({
                "messages_per_sender": json["messages_per_sender"],
                "duration_s": json["duration_s"],
                "warmup": json["warmup"],
            }),
            axon_binary: json["axon_binary"].as_str().map(str::to_owned),
            phases,
        })
    }
}

/// Reads a JSON report file.
pub(crate) fn read_report(path: &std::path::Path) -> Result<ReportSummary, BenchError> {
    let report_error = |reason: String| BenchError::Report {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| report_error(e.to_string()))?;
    let json: Value = serde_json::from_str(&text).map_err(|e| report_error(e.to_string()))?;
    ReportSummary::from_json(&json).map_err(report_error)
}

/// Two reports side by side (a Markdown table), with the throughput ratio
/// `a / b` for every number of senders both measured.
pub(crate) fn compare(a: &ReportSummary, b: &ReportSummary) -> String {
    let mut out = String::new();
    if a.workload != b.workload {
        let _ = writeln!(
            out,
            "warning: the workloads differ: {} ran {}, {} ran {}\n",
            a.label, a.workload, b.label, b.workload
        );
    }
    for report in [a, b] {
        if let Some(binary) = &report.axon_binary {
            let _ = writeln!(out, "{}: {binary}", report.label);
        }
    }
    let (la, lb) = (&a.label, &b.label);
    let _ = writeln!(
        out,
        "| senders | {la} events/s | {lb} events/s | {la}/{lb} | {la} p50 / p99 ms | {lb} p50 / p99 ms |"
    );
    out.push_str("|---:|---:|---:|---:|---:|---:|\n");
    for pa in &a.phases {
        let Some(pb) = b.phases.iter().find(|pb| pb.senders == pa.senders) else {
            continue;
        };
        let ratio = if pb.events_per_s > 0.0 {
            format!("{:.1}x", pa.events_per_s / pb.events_per_s)
        } else {
            "-".to_owned()
        };
        let latency = |p: &PhaseSummary| match (p.p50_ms, p.p99_ms) {
            (Some(p50), Some(p99)) => format!("{p50:.2} / {p99:.2}"),
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} | {ratio} | {} | {} |",
            pa.senders,
            pa.events_per_s,
            pb.events_per_s,
            latency(pa),
            latency(pb)
        );
    }
    for report in [a, b] {
        if report.phases.iter().any(|p| p.failed > 0) {
            let _ = writeln!(out, "warning: {} had failed sends", report.label);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(label: &str, rates: &[(usize, f64)]) -> Report {
        Report {
            label: label.to_owned(),
            base_url: "http://127.0.0.1:1".to_owned(),
            axon_binary: None,
            amount: Amount::Messages(10),
            warmup: 2,
            setup: Duration::from_secs(1),
            phases: rates
                .iter()
                .map(|&(senders, rate)| PhaseReport {
                    senders,
                    events: 10 * senders as u64,
                    failed: 0,
                    wall: Duration::from_secs(1),
                    events_per_s: rate,
                    latency: LatencySummary::from_samples(vec![
                        Duration::from_millis(2),
                        Duration::from_millis(4),
                    ]),
                    failure_samples: Vec::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn json_round_trips_through_the_compare_reader() {
        let mut original = report("axon", &[(1, 900.0), (8, 4000.0)]);
        original.axon_binary = Some("/t/release/axon".to_owned());
        let summary = ReportSummary::from_json(&original.to_json()).unwrap();
        assert_eq!(summary.label, "axon");
        assert_eq!(summary.axon_binary.as_deref(), Some("/t/release/axon"));
        assert_eq!(
            summary.phases,
            vec![
                PhaseSummary {
                    senders: 1,
                    events_per_s: 900.0,
                    p50_ms: Some(2.0),
                    p99_ms: Some(4.0),
                    failed: 0
                },
                PhaseSummary {
                    senders: 8,
                    events_per_s: 4000.0,
                    p50_ms: Some(2.0),
                    p99_ms: Some(4.0),
                    failed: 0
                },
            ]
        );
        assert!(ReportSummary::from_json(&json!({ "phases": [] })).is_err());
    }

    #[test]
    fn compare_prints_the_ratio_per_concurrency() {
        let a = ReportSummary::from_json(&report("axon", &[(1, 1000.0), (8, 3000.0)]).to_json())
            .unwrap();
        let b =
            ReportSummary::from_json(&report("synapse", &[(1, 50.0), (8, 0.0)]).to_json()).unwrap();
        let table = compare(&a, &b);
        assert!(
            table.contains("| 1 | 1000.0 | 50.0 | 20.0x | 2.00 / 4.00 | 2.00 / 4.00 |"),
            "{table}"
        );
        assert!(table.contains("| 8 | 3000.0 | 0.0 | - |"), "{table}");
        assert!(!table.contains("warning"), "{table}");
    }

    #[test]
    fn compare_warns_about_different_workloads_and_failures() {
        let a = report("axon", &[(1, 10.0)]);
        let mut b = report("synapse", &[(1, 10.0)]);
        b.amount = Amount::Messages(11);
        b.phases[0].failed = 1;
        let table = compare(
            &ReportSummary::from_json(&a.to_json()).unwrap(),
            &ReportSummary::from_json(&b.to_json()).unwrap(),
        );
        assert!(table.contains("warning: the workloads differ"), "{table}");
        assert!(
            table.contains("warning: synapse had failed sends"),
            "{table}"
        );
    }

    #[test]
    fn text_table_has_a_row_per_phase() {
        let text = report("axon", &[(1, 123.45), (64, 6789.0)]).to_text();
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(text.contains("123.5"), "{text}");
        assert!(text.contains("6789.0"), "{text}");
    }
}
