//! The command line, parsed by hand: a dozen flags do not justify a parser
//! dependency in the test crate.

use std::path::PathBuf;
use std::time::Duration;

use crate::bench::error::BenchError;

/// Senders per phase when `--senders` is not given (the issue's 1/8/64).
const DEFAULT_SENDERS: [usize; 3] = [1, 8, 64];
/// Messages per sender when neither `--messages-per-sender` nor
/// `--duration` is given.
const DEFAULT_MESSAGES_PER_SENDER: u64 = 100;
/// Untimed messages per sender before each timed phase.
const DEFAULT_WARMUP: u64 = 5;
/// More concurrent senders than this is a typo, not a benchmark: each one
/// is a registered user and a connection.
const MAX_SENDERS: usize = 1024;

/// The help text, printed for `--help` and after a usage error.
pub(crate) const USAGE: &str = "\
usage:
  send_bench (--base-url URL | --axon [--axon-bin PATH]) [options]
  send_bench compare A.json B.json

Sends m.room.message events into one room from concurrent senders and
reports events/s and send latency per number of senders.

target (one of):
  --base-url URL             a running homeserver (open registration with
                             the m.login.dummy stage)
  --axon                     start an axon with the test harness (loopback,
                             fresh data directory, storage.sync_writes on);
                             the binary is --axon-bin, else $AXON_BIN, else
                             the `axon` next to this executable
  --axon-bin PATH            the axon binary for --axon (implies --axon)

options:
  --senders LIST             concurrent senders per phase, comma-separated
                             (default 1,8,64); each phase gets a fresh room
                             whose members are exactly its senders
  --messages-per-sender N    timed messages each sender sends (default 100)
  --duration SECS            instead: each sender sends until SECS elapsed
  --warmup N                 untimed messages per sender before each phase
                             (default 5)
  --label NAME               the name in the report (default: axon, or the
                             base URL)
  --json                     print the report as JSON on standard output
                             (progress goes to standard error either way)

compare:
  prints both reports side by side with the throughput ratio A/B per
  number of senders (the JSON files come from --json runs).

Exits 1 if any send failed (any answer but 200 with an event_id).";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Command {
    /// Run the benchmark.
    Run(RunArgs),
    /// Compare two JSON reports.
    Compare {
        /// The first report (the numerator of the ratio).
        a: PathBuf,
        /// The second report.
        b: PathBuf,
    },
    /// Print the help text.
    Help,
}

/// Which homeserver to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A server that is already running.
    Url(String),
    /// An axon started for the run, from this binary if given.
    Axon {
        /// `--axon-bin`.
        binary: Option<PathBuf>,
    },
}

/// How much each sender sends in a timed phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Amount {
    /// This many messages.
    Messages(u64),
    /// As many as fit in this time.
    Duration(Duration),
}

/// The benchmark's parameters.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunArgs {
    pub(crate) target: Target,
    /// Concurrent senders, one phase each, in order.
    pub(crate) senders: Vec<usize>,
    pub(crate) amount: Amount,
    /// Untimed messages per sender before each phase.
    pub(crate) warmup: u64,
    pub(crate) label: Option<String>,
    pub(crate) json: bool,
}

impl RunArgs {
    /// The largest phase: how many users the run registers.
    pub(crate) fn max_senders(&self) -> usize {
        self.senders.iter().copied().max().unwrap_or(0)
    }
}

/// Parses the arguments after the program name.
pub(crate) fn parse<I>(args: I) -> Result<Command, BenchError>
where
    I: IntoIterator<Item = String>,
{
    let mut args = args.into_iter().peekable();
    if args.peek().map(String::as_str) == Some("compare") {
        args.next();
        let rest: Vec<String> = args.collect();
        return match rest.as_slice() {
            [a, b] => Ok(Command::Compare {
                a: PathBuf::from(a),
                b: PathBuf::from(b),
            }),
            _ => Err(usage("compare takes exactly two report files")),
        };
    }

    let mut base_url = None;
    let mut axon = false;
    let mut axon_bin = None;
    let mut senders = None;
    let mut messages = None;
    let mut duration = None;
    let mut warmup = None;
    let mut label = None;
    let mut json = false;
    while let Some(arg) = args.next() {
        // Both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, BenchError> {
            match inline.clone().or_else(|| args.next()) {
                Some(v) => Ok(v),
                None => Err(usage(&format!("{name} needs a value"))),
            }
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--base-url" => base_url = Some(value("--base-url")?),
            "--axon" => axon = true,
            "--axon-bin" => {
                axon = true;
                axon_bin = Some(PathBuf::from(value("--axon-bin")?));
            }
            "--senders" => senders = Some(parse_senders(&value("--senders")?)?),
            "--messages-per-sender" => {
                messages = Some(parse_positive("--messages-per-sender", &value(&flag)?)?);
            }
            "--duration" => {
                let secs = parse_positive("--duration", &value(&flag)?)?;
                duration = Some(Duration::from_secs(secs));
            }
            "--warmup" => warmup = Some(parse_u64("--warmup", &value(&flag)?)?),
            "--label" => label = Some(value("--label")?),
            "--json" => json = true,
            other => return Err(usage(&format!("unknown argument {other:?}"))),
        }
        if matches!(flag.as_str(), "--axon" | "--json") && inline.is_some() {
            return Err(usage(&format!("{flag} takes no value")));
        }
    }

    let target = match (base_url, axon) {
        (Some(_), true) => return Err(usage("give either --base-url or --axon, not both")),
        (None, false) => return Err(usage("give --base-url URL or --axon")),
        (Some(url), false) => Target::Url(parse_base_url(&url)?),
        (None, true) => Target::Axon { binary: axon_bin },
    };
    let amount = match (messages, duration) {
        (Some(_), Some(_)) => {
            return Err(usage(
                "give either --messages-per-sender or --duration, not both",
            ));
        }
        (Some(n), None) => Amount::Messages(n),
        (None, Some(d)) => Amount::Duration(d),
        (None, None) => Amount::Messages(DEFAULT_MESSAGES_PER_SENDER),
    };
    Ok(Command::Run(RunArgs {
        target,
        senders: senders.unwrap_or_else(|| DEFAULT_SENDERS.to_vec()),
        amount,
        warmup: warmup.unwrap_or(DEFAULT_WARMUP),
        label,
        json,
    }))
}

fn usage(message: &str) -> BenchError {
    BenchError::Usage(message.to_owned())
}

fn parse_u64(flag: &str, value: &str) -> Result<u64, BenchError> {
    value
        .parse()
        .map_err(|_| usage(&format!("{flag}: {value:?} is not a whole number")))
}

fn parse_positive(flag: &str, value: &str) -> Result<u64, BenchError> {
    match parse_u64(flag, value)? {
        0 => Err(usage(&format!("{flag} must be at least 1"))),
        n => Ok(n),
    }
}

fn parse_senders(list: &str) -> Result<Vec<usize>, BenchError> {
    let senders = list
        .split(',')
        .map(|item| {
            let n = parse_positive("--senders", item.trim())?;
            match usize::try_from(n) {
                Ok(n) if n <= MAX_SENDERS => Ok(n),
                _ => Err(usage(&format!(
                    "--senders: at most {MAX_SENDERS} per phase"
                ))),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(senders)
}

/// Accepts `http(s)://host[:port]` with an optional trailing slash, which
/// is dropped so paths can be appended.
fn parse_base_url(url: &str) -> Result<String, BenchError> {
    let trimmed = url.trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains('/') => Ok(trimmed.to_owned()),
        _ => Err(usage(&format!(
            "--base-url: {url:?} is not http(s)://host[:port]"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<RunArgs, BenchError> {
        match parse(args.iter().map(|s| (*s).to_owned()))? {
            Command::Run(run) => Ok(run),
            other => panic!("expected a run, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_the_issues_workload() {
        let args = run(&["--base-url", "http://127.0.0.1:8008/"]).unwrap();
        assert_eq!(
            args,
            RunArgs {
                target: Target::Url("http://127.0.0.1:8008".to_owned()),
                senders: vec![1, 8, 64],
                amount: Amount::Messages(100),
                warmup: 5,
                label: None,
                json: false,
            }
        );
        assert_eq!(args.max_senders(), 64);
    }

    #[test]
    fn every_flag_is_read_in_both_spellings() {
        let args = run(&[
            "--axon-bin=/x/axon",
            "--senders",
            "2, 4",
            "--duration=3",
            "--warmup",
            "0",
            "--label=mine",
            "--json",
        ])
        .unwrap();
        assert_eq!(
            args.target,
            Target::Axon {
                binary: Some(PathBuf::from("/x/axon"))
            }
        );
        assert_eq!(args.senders, vec![2, 4]);
        assert_eq!(args.amount, Amount::Duration(Duration::from_secs(3)));
        assert_eq!(args.warmup, 0);
        assert_eq!(args.label.as_deref(), Some("mine"));
        assert!(args.json);
        let args = run(&["--axon", "--messages-per-sender", "7"]).unwrap();
        assert_eq!(args.target, Target::Axon { binary: None });
        assert_eq!(args.amount, Amount::Messages(7));
    }

    #[test]
    fn contradictions_and_nonsense_are_usage_errors() {
        for bad in [
            &[][..],
            &["--axon", "--base-url", "http://h"],
            &["--axon", "--duration", "1", "--messages-per-sender", "1"],
            &["--axon", "--senders", "1,0"],
            &["--axon", "--senders", "1,x"],
            &["--axon", "--senders", "2000"],
            &["--axon", "--warmup"],
            &["--axon", "--json=yes"],
            &["--base-url", "127.0.0.1:8008"],
            &["--base-url", "http://h/path"],
            &["--axon", "--frobnicate"],
        ] {
            let err = run(bad).unwrap_err();
            assert!(matches!(err, BenchError::Usage(_)), "{bad:?}: {err}");
        }
    }

    #[test]
    fn compare_and_help() {
        let parsed = parse(["compare", "a.json", "b.json"].map(str::to_owned)).unwrap();
        assert_eq!(
            parsed,
            Command::Compare {
                a: PathBuf::from("a.json"),
                b: PathBuf::from("b.json")
            }
        );
        assert!(parse(["compare", "a.json"].map(str::to_owned)).is_err());
        assert_eq!(
            parse(["--axon", "--help"].map(str::to_owned)).unwrap(),
            Command::Help
        );
    }
}
