//! The report of a run: text, JSON, and the comparison of two runs.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::bench::error::BenchError;
use crate::bench::federation::workload::{LatencyOutcome, ThroughputOutcome};
use crate::bench::stats::{LatencySummary, events_per_second};

/// What a run measured, and on what.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Report {
    pub(crate) label: String,
    pub(crate) base_url: String,
    pub(crate) server_name: String,
    pub(crate) room_version: String,
    pub(crate) axon_binary: Option<String>,
    /// The workload parameters, so a comparison can tell runs apart.
    pub(crate) workload: Value,
    pub(crate) throughput: ThroughputReport,
    pub(crate) latency: LatencyReport,
    /// Events the target fetched back from the peer (`get_missing_events`,
    /// `/backfill`) over the whole run: PDUs it was sent but did not keep
    /// at first.
    pub(crate) fetched_back: u64,
}

/// The throughput workload's figures.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ThroughputReport {
    pub(crate) transactions: usize,
    pub(crate) pdus: usize,
    /// First request to the last PDU visible to the local user.
    pub(crate) wall: Duration,
    /// PDUs over `wall`: the headline figure.
    pub(crate) pdus_per_s: f64,
    /// First request to the last answer.
    pub(crate) answered: Duration,
    /// PDUs over `answered`.
    pub(crate) answered_pdus_per_s: f64,
    pub(crate) transaction: Option<LatencySummary>,
    /// PDUs (warm-up included) found afterwards in the local user's
    /// `/messages`: every one the run sent.
    pub(crate) checked_in_messages: usize,
}

impl ThroughputReport {
    /// The figures of `outcome`.
    pub(crate) fn new(outcome: ThroughputOutcome) -> ThroughputReport {
        let pdus = u64::try_from(outcome.pdus).unwrap_or(u64::MAX);
        ThroughputReport {
            transactions: outcome.transactions,
            pdus: outcome.pdus,
            wall: outcome.wall,
            pdus_per_s: events_per_second(pdus, outcome.wall),
            answered: outcome.answered,
            answered_pdus_per_s: events_per_second(pdus, outcome.answered),
            transaction: LatencySummary::from_samples(outcome.transaction_latencies),
            checked_in_messages: outcome.seen_in_messages,
        }
    }
}

/// The latency workload's figures.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LatencyReport {
    pub(crate) events: usize,
    pub(crate) other_wakeups: u64,
    /// Remote send start to the local sync answer.
    pub(crate) sync: Option<LatencySummary>,
    /// Remote send start to the `/send` answer.
    pub(crate) send: Option<LatencySummary>,
}

impl LatencyReport {
    /// The figures of `outcome`.
    pub(crate) fn new(outcome: LatencyOutcome) -> LatencyReport {
        LatencyReport {
            events: outcome.latencies.len(),
            other_wakeups: outcome.other_wakeups,
            sync: LatencySummary::from_samples(outcome.latencies),
            send: LatencySummary::from_samples(outcome.send_latencies),
        }
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn summary_json(summary: Option<&LatencySummary>) -> Value {
    match summary {
        Some(s) => json!({
            "p50": ms(s.p50), "p90": ms(s.p90), "p99": ms(s.p99), "max": ms(s.max),
            "mean": ms(s.mean),
        }),
        None => Value::Null,
    }
}

fn summary_from_json(value: &Value) -> Option<LatencySummary> {
    let field = |name: &str| {
        value[name]
            .as_f64()
            .map(|v| Duration::from_secs_f64(v / 1000.0))
    };
    Some(LatencySummary {
        p50: field("p50")?,
        p90: field("p90")?,
        p99: field("p99")?,
        max: field("max")?,
        mean: field("mean")?,
    })
}

/// A figure for display: 3 significant digits or so.
fn show(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

impl Report {
    /// The report as JSON, for `compare`.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "label": self.label,
            "base_url": self.base_url,
            "server_name": self.server_name,
            "room_version": self.room_version,
            "axon_binary": self.axon_binary,
            "workload": self.workload,
            "throughput": {
                "transactions": self.throughput.transactions,
                "pdus": self.throughput.pdus,
                "wall_s": self.throughput.wall.as_secs_f64(),
                "pdus_per_s": self.throughput.pdus_per_s,
                "answered_s": self.throughput.answered.as_secs_f64(),
                "answered_pdus_per_s": self.throughput.answered_pdus_per_s,
                "transaction_ms": summary_json(self.throughput.transaction.as_ref()),
                "checked_in_messages": self.throughput.checked_in_messages,
            },
            "fetched_back": self.fetched_back,
            "latency": {
                "events": self.latency.events,
                "other_wakeups": self.latency.other_wakeups,
                "sync_ms": summary_json(self.latency.sync.as_ref()),
                "send_ms": summary_json(self.latency.send.as_ref()),
            },
        })
    }

    /// Reads what [`Report::to_json`] wrote.
    pub(crate) fn from_json(json: &Value) -> Option<Report> {
        let text = |value: &Value| value.as_str().map(str::to_owned);
        let count = |value: &Value| value.as_u64().and_then(|n| usize::try_from(n).ok());
        let t = &json["throughput"];
        let l = &json["latency"];
        Some(Report {
            label: text(&json["label"])?,
            base_url: text(&json["base_url"])?,
            server_name: text(&json["server_name"])?,
            room_version: text(&json["room_version"])?,
            axon_binary: text(&json["axon_binary"]),
            workload: json["workload"].clone(),
            throughput: ThroughputReport {
                transactions: count(&t["transactions"])?,
                pdus: count(&t["pdus"])?,
                wall: Duration::from_secs_f64(t["wall_s"].as_f64()?),
                pdus_per_s: t["pdus_per_s"].as_f64()?,
                answered: Duration::from_secs_f64(t["answered_s"].as_f64()?),
                answered_pdus_per_s: t["answered_pdus_per_s"].as_f64()?,
                transaction: summary_from_json(&t["transaction_ms"]),
                checked_in_messages: count(&t["checked_in_messages"])?,
            },
            fetched_back: json["fetched_back"].as_u64()?,
            latency: LatencyReport {
                events: count(&l["events"])?,
                other_wakeups: l["other_wakeups"].as_u64()?,
                sync: summary_from_json(&l["sync_ms"]),
                send: summary_from_json(&l["send_ms"]),
            },
        })
    }

    /// The report for a reader.
    pub(crate) fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} ({}, server name {}, room version {})",
            self.label, self.base_url, self.server_name, self.room_version
        );
        let t = &self.throughput;
        let _ = writeln!(
            out,
            "throughput: {} PDUs in {} transactions, all visible to the local user after \
             {:.2} s: {} PDUs/s",
            t.pdus,
            t.transactions,
            t.wall.as_secs_f64(),
            show(t.pdus_per_s)
        );
        let _ = writeln!(
            out,
            "  last transaction answered after {:.2} s: {} PDUs/s answered",
            t.answered.as_secs_f64(),
            show(t.answered_pdus_per_s)
        );
        if let Some(s) = &t.transaction {
            let _ = writeln!(
                out,
                "  per transaction: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
                show(ms(s.p50)),
                show(ms(s.p90)),
                show(ms(s.p99)),
                show(ms(s.max))
            );
        }
        let _ = writeln!(
            out,
            "  all {} PDUs sent (warm-up included) are in the local user's /messages",
            t.checked_in_messages
        );
        if self.fetched_back > 0 {
            let _ = writeln!(
                out,
                "  the target fetched {} events back from the peer (get_missing_events, \
                 /backfill): it answered /send before keeping every PDU",
                self.fetched_back
            );
        }
        let l = &self.latency;
        let _ = writeln!(
            out,
            "send to sync: {} events, {} other wake-ups",
            l.events, l.other_wakeups
        );
        if let Some(s) = &l.sync {
            let _ = writeln!(
                out,
                "  remote send start to local sync answer: p50 {} ms, p90 {} ms, p99 {} ms, \
                 max {} ms",
                show(ms(s.p50)),
                show(ms(s.p90)),
                show(ms(s.p99)),
                show(ms(s.max))
            );
        }
        if let Some(s) = &l.send {
            let _ = writeln!(
                out,
                "  remote send start to /send answer: p50 {} ms, p99 {} ms",
                show(ms(s.p50)),
                show(ms(s.p99))
            );
        }
        out
    }
}

/// Reads a JSON report from `path`.
pub(crate) fn read_report(path: &Path) -> Result<Report, BenchError> {
    let error = |reason: String| BenchError::Report {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    let json: Value = serde_json::from_str(&text).map_err(|e| error(e.to_string()))?;
    Report::from_json(&json).ok_or_else(|| error("not a federation_bench report".to_owned()))
}

/// One row of the comparison.
struct Row {
    name: &'static str,
    value: fn(&Report) -> Option<f64>,
    higher_is_better: bool,
}

const ROWS: [Row; 8] = [
    Row {
        name: "PDUs/s, sent to visible",
        value: |r| Some(r.throughput.pdus_per_s),
        higher_is_better: true,
    },
    Row {
        name: "PDUs/s, sent to answered",
        value: |r| Some(r.throughput.answered_pdus_per_s),
        higher_is_better: true,
    },
    Row {
        name: "transaction p50 ms",
        value: |r| r.throughput.transaction.map(|s| ms(s.p50)),
        higher_is_better: false,
    },
    Row {
        name: "transaction p99 ms",
        value: |r| r.throughput.transaction.map(|s| ms(s.p99)),
        higher_is_better: false,
    },
    Row {
        name: "send to sync p50 ms",
        value: |r| r.latency.sync.map(|s| ms(s.p50)),
        higher_is_better: false,
    },
    Row {
        name: "send to sync p99 ms",
        value: |r| r.latency.sync.map(|s| ms(s.p99)),
        higher_is_better: false,
    },
    Row {
        name: "send to sync max ms",
        value: |r| r.latency.sync.map(|s| ms(s.max)),
        higher_is_better: false,
    },
    Row {
        name: "single-PDU /send answer p50 ms",
        value: |r| r.latency.send.map(|s| ms(s.p50)),
        higher_is_better: false,
    },
];

/// Both reports side by side; the last column says how many times better
/// `a` is than `b` on each figure.
pub(crate) fn compare(a: &Report, b: &Report) -> String {
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
        let _ = writeln!(
            out,
            "{}: room version {}, {} PDUs in {} transactions, {} send-to-sync events, {} \
             events fetched back by the target",
            report.label,
            report.room_version,
            report.throughput.pdus,
            report.throughput.transactions,
            report.latency.events,
            report.fetched_back
        );
    }
    let (la, lb) = (&a.label, &b.label);
    let _ = writeln!(out, "\n| figure | {la} | {lb} | {la} better by |");
    out.push_str("|---|---:|---:|---:|\n");
    for row in &ROWS {
        let (Some(va), Some(vb)) = ((row.value)(a), (row.value)(b)) else {
            continue;
        };
        let (num, den) = if row.higher_is_better {
            (va, vb)
        } else {
            (vb, va)
        };
        let ratio = if den > 0.0 {
            format!("{:.1}x", num / den)
        } else {
            "-".to_owned()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {ratio} |",
            row.name,
            show(va),
            show(vb)
        );
    }
    let _ = writeln!(
        out,
        "\n(PDUs/s: {la}/{lb}; times: {lb}/{la}. Above 1x, {la} is better.)"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    fn report(label: &str, wall_ms: u64, txn: &[u64], sync: &[u64]) -> Report {
        Report {
            label: label.to_owned(),
            base_url: "http://127.0.0.1:1".to_owned(),
            server_name: "127.0.0.1:1".to_owned(),
            room_version: "10".to_owned(),
            axon_binary: None,
            workload: json!({ "transactions": txn.len() }),
            throughput: ThroughputReport::new(ThroughputOutcome {
                transactions: txn.len(),
                pdus: txn.len() * 50,
                wall: Duration::from_millis(wall_ms),
                answered: Duration::from_millis(wall_ms / 2),
                transaction_latencies: millis(txn),
                seen_in_messages: txn.len() * 50,
            }),
            latency: LatencyReport::new(LatencyOutcome {
                latencies: millis(sync),
                send_latencies: millis(sync),
                other_wakeups: 3,
            }),
            fetched_back: 0,
        }
    }

    #[test]
    fn the_json_reads_back_to_the_same_report() {
        let report = report("axon", 500, &[100, 200, 200], &[5, 6, 7]);
        assert_eq!(report.throughput.pdus_per_s, 300.0);
        let back = Report::from_json(&report.to_json()).unwrap();
        assert_eq!(back.throughput.pdus, 150);
        assert_eq!(back.latency.other_wakeups, 3);
        assert_eq!(back.to_text(), report.to_text());
        assert!(Report::from_json(&json!({ "label": "x" })).is_none());
    }

    #[test]
    fn the_text_names_the_figures() {
        let text = report("axon", 500, &[100, 200, 200], &[5, 6, 7]).to_text();
        assert!(
            text.contains(
                "150 PDUs in 3 transactions, all visible to the local user after 0.50 s: 300 PDUs/s"
            ),
            "{text}"
        );
        assert!(text.contains("p50 6.00 ms"), "{text}");
    }

    #[test]
    fn compare_shows_how_many_times_better_the_first_is() {
        let a = report("axon", 500, &[100, 200, 200], &[5, 6, 7]);
        let b = report("synapse", 5000, &[1000, 2000, 2000], &[50, 60, 70]);
        let table = compare(&a, &b);
        assert!(
            table.contains("| PDUs/s, sent to visible | 300 | 30.0 | 10.0x |"),
            "{table}"
        );
        assert!(
            table.contains("| send to sync p50 ms | 6.00 | 60.0 | 10.0x |"),
            "{table}"
        );
        assert!(!table.contains("warning"), "{table}");
        let c = report("other", 500, &[100], &[5]);
        assert!(compare(&a, &c).contains("warning: the workloads differ"));
    }
}
