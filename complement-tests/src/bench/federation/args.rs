//! The command line of `federation_bench`, parsed by hand like the other
//! benchmarks'.

use std::path::PathBuf;

use crate::bench::error::BenchError;

/// Timed transactions of the throughput workload.
const DEFAULT_TRANSACTIONS: usize = 40;
/// PDUs per transaction: the spec's maximum.
pub(crate) const MAX_PDUS_PER_TRANSACTION: usize = 50;
/// Untimed transactions first (key fetch, caches, connections).
const DEFAULT_WARMUP_TRANSACTIONS: usize = 2;
/// Timed events of the latency workload.
const DEFAULT_LATENCY_EVENTS: usize = 200;
/// Untimed events of the latency workload first.
const DEFAULT_LATENCY_WARMUP: usize = 5;
/// The room version both servers are asked for, so they do the same work
/// (their defaults differ).
const DEFAULT_ROOM_VERSION: &str = "11";

/// The help text, printed for `--help` and after a usage error.
pub(crate) const USAGE: &str = "\
usage:
  federation_bench (--base-url URL --pki DIR | --axon [--axon-bin PATH]) [options]
  federation_bench pki DIR
  federation_bench compare A.json B.json

Plays a remote homeserver (TLS on 127.0.0.1, its own signing key) that joins
a public room of the target through make_join/send_join, then measures:
  - how many PDUs per second the target accepts over
    PUT /_matrix/federation/v1/send/{txnId} (signed m.room.message events,
    each following the previous one, 50 to a transaction, one transaction
    in flight);
  - how long after the start of a remote send a local client's waiting
    /sync returns the event (one PDU per transaction).

target (one of):
  --base-url URL             a running homeserver on this machine serving the
                             client and federation APIs at URL, with open
                             registration (m.login.dummy), trusting
                             DIR/ca.pem for outbound TLS and allowed to reach
                             127.0.0.1
  --axon                     start an axon with the test harness (loopback,
                             fresh data directory, trusting the peer's CA);
                             the binary is --axon-bin, else $AXON_BIN, else
                             the `axon` next to this executable
  --axon-bin PATH            the axon binary for --axon (implies --axon)
  --pki DIR                  the peer's CA and certificate, as written by
                             `federation_bench pki DIR` (required with
                             --base-url: the server must trust DIR/ca.pem
                             before it starts; --axon makes a fresh one
                             when it is not given)

workload:
  --transactions N           timed transactions (default 40)
  --pdus-per-transaction N   PDUs in each (default and maximum 50)
  --warmup-transactions N    untimed transactions first (default 2)
  --latency-events N         timed send-to-sync events (default 200)
  --latency-warmup N         untimed ones first (default 5)
  --room-version V           the version of the room the local user creates
                             (default 11; 3 and later)

output:
  --label NAME               the name in the report (default: axon, or the
                             base URL)
  --json                     print the report as JSON on standard output
                             (progress goes to standard error either way)

pki DIR:
  writes DIR/ca.pem (a new CA), DIR/peer.crt and DIR/peer.key (the peer's
  certificate for 127.0.0.1, issued by that CA)

compare:
  prints both reports side by side with the ratio of every figure.";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Command {
    /// Run the benchmark.
    Run(RunArgs),
    /// Write a CA and the peer's certificate into a directory.
    Pki(PathBuf),
    /// Compare two JSON reports.
    Compare {
        /// The first report.
        a: PathBuf,
        /// The second report.
        b: PathBuf,
    },
    /// Print the help text.
    Help,
}

/// Which homeserver to measure.
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

/// The benchmark's parameters.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunArgs {
    pub(crate) target: Target,
    pub(crate) pki: Option<PathBuf>,
    pub(crate) transactions: usize,
    pub(crate) pdus_per_transaction: usize,
    pub(crate) warmup_transactions: usize,
    pub(crate) latency_events: usize,
    pub(crate) latency_warmup: usize,
    pub(crate) room_version: String,
    pub(crate) label: Option<String>,
    pub(crate) json: bool,
}

/// Parses the arguments after the program name.
pub(crate) fn parse<I>(args: I) -> Result<Command, BenchError>
where
    I: IntoIterator<Item = String>,
{
    let mut args = args.into_iter().peekable();
    match args.peek().map(String::as_str) {
        Some("compare") => {
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
        Some("pki") => {
            args.next();
            let rest: Vec<String> = args.collect();
            return match rest.as_slice() {
                [dir] => Ok(Command::Pki(PathBuf::from(dir))),
                _ => Err(usage("pki takes exactly one directory")),
            };
        }
        _ => {}
    }

    let mut base_url = None;
    let mut axon = false;
    let mut axon_bin = None;
    let mut run = RunArgs {
        target: Target::Axon { binary: None },
        pki: None,
        transactions: DEFAULT_TRANSACTIONS,
        pdus_per_transaction: MAX_PDUS_PER_TRANSACTION,
        warmup_transactions: DEFAULT_WARMUP_TRANSACTIONS,
        latency_events: DEFAULT_LATENCY_EVENTS,
        latency_warmup: DEFAULT_LATENCY_WARMUP,
        room_version: DEFAULT_ROOM_VERSION.to_owned(),
        label: None,
        json: false,
    };
    while let Some(arg) = args.next() {
        // Both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        if matches!(flag.as_str(), "--axon" | "--json") && inline.is_some() {
            return Err(usage(&format!("{flag} takes no value")));
        }
        let mut value = || -> Result<String, BenchError> {
            match inline.clone().or_else(|| args.next()) {
                Some(v) => Ok(v),
                None => Err(usage(&format!("{flag} needs a value"))),
            }
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--base-url" => base_url = Some(parse_base_url(&value()?)?),
            "--axon" => axon = true,
            "--axon-bin" => {
                axon = true;
                axon_bin = Some(PathBuf::from(value()?));
            }
            "--pki" => run.pki = Some(PathBuf::from(value()?)),
            "--transactions" => run.transactions = parse_positive(&flag, &value()?)?,
            "--pdus-per-transaction" => {
                let n = parse_positive(&flag, &value()?)?;
                if n > MAX_PDUS_PER_TRANSACTION {
                    return Err(usage(&format!(
                        "{flag}: a transaction holds at most {MAX_PDUS_PER_TRANSACTION} PDUs"
                    )));
                }
                run.pdus_per_transaction = n;
            }
            "--warmup-transactions" => run.warmup_transactions = parse_count(&flag, &value()?)?,
            "--latency-events" => run.latency_events = parse_positive(&flag, &value()?)?,
            "--latency-warmup" => run.latency_warmup = parse_count(&flag, &value()?)?,
            "--room-version" => run.room_version = value()?,
            "--label" => run.label = Some(value()?),
            "--json" => run.json = true,
            other => return Err(usage(&format!("unknown argument '{other}'"))),
        }
    }
    run.target = match (base_url, axon) {
        (Some(_), true) => {
            return Err(usage("--base-url and --axon/--axon-bin exclude each other"));
        }
        (Some(url), false) => {
            if run.pki.is_none() {
                return Err(usage(
                    "--base-url needs --pki DIR: the server must already trust DIR/ca.pem",
                ));
            }
            Target::Url(url)
        }
        (None, _) => Target::Axon { binary: axon_bin },
    };
    Ok(Command::Run(run))
}

fn usage(message: &str) -> BenchError {
    BenchError::Usage(message.to_owned())
}

/// An `http://` or `https://` URL, without a trailing slash.
fn parse_base_url(value: &str) -> Result<String, BenchError> {
    if !(value.starts_with("http://") || value.starts_with("https://")) {
        return Err(usage(&format!(
            "--base-url must start with http:// or https://, got '{value}'"
        )));
    }
    Ok(value.trim_end_matches('/').to_owned())
}

fn parse_count(flag: &str, value: &str) -> Result<usize, BenchError> {
    value
        .parse()
        .map_err(|_| usage(&format!("{flag} needs a whole number, got '{value}'")))
}

fn parse_positive(flag: &str, value: &str) -> Result<usize, BenchError> {
    match parse_count(flag, value)? {
        0 => Err(usage(&format!("{flag} must be at least 1"))),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &str) -> Result<Command, BenchError> {
        parse(args.split_whitespace().map(str::to_owned))
    }

    fn run(args: &str) -> RunArgs {
        match parse_str(args) {
            Ok(Command::Run(run)) => run,
            other => panic!("{args}: {other:?}"),
        }
    }

    #[test]
    fn defaults_start_axon_with_full_transactions() {
        let run = run("");
        assert_eq!(run.target, Target::Axon { binary: None });
        assert_eq!(run.pdus_per_transaction, 50);
        assert_eq!(run.transactions, DEFAULT_TRANSACTIONS);
        assert_eq!(run.latency_events, DEFAULT_LATENCY_EVENTS);
        assert!(run.pki.is_none());
        assert_eq!(run.room_version, "11");
        assert!(!run.json);
    }

    #[test]
    fn every_flag_is_read_in_both_spellings() {
        let run = run(
            "--base-url=http://127.0.0.1:8008/ --pki /tmp/p --transactions 3 \
             --pdus-per-transaction=10 --warmup-transactions 0 --latency-events 7 \
             --latency-warmup=1 --room-version 12 --label synapse --json",
        );
        assert_eq!(run.target, Target::Url("http://127.0.0.1:8008".to_owned()));
        assert_eq!(run.pki, Some(PathBuf::from("/tmp/p")));
        assert_eq!(
            (
                run.transactions,
                run.pdus_per_transaction,
                run.warmup_transactions
            ),
            (3, 10, 0)
        );
        assert_eq!((run.latency_events, run.latency_warmup), (7, 1));
        assert_eq!(run.room_version, "12");
        assert_eq!(run.label.as_deref(), Some("synapse"));
        assert!(run.json);
        assert_eq!(
            self::run("--axon-bin target/release/axon").target,
            Target::Axon {
                binary: Some(PathBuf::from("target/release/axon"))
            }
        );
    }

    #[test]
    fn bad_command_lines_are_usage_errors() {
        for args in [
            "--pdus-per-transaction 51",
            "--transactions 0",
            "--latency-events many",
            "--base-url 127.0.0.1:8008 --pki d",
            "--base-url http://x",
            "--base-url http://x --pki d --axon",
            "--json=yes",
            "--label",
            "--frobnicate",
            "compare one.json",
            "pki",
            "pki a b",
        ] {
            assert!(
                matches!(parse_str(args), Err(BenchError::Usage(_))),
                "{args}: {:?}",
                parse_str(args)
            );
        }
    }

    #[test]
    fn subcommands_and_help() {
        assert_eq!(
            parse_str("pki /tmp/ca").unwrap(),
            Command::Pki(PathBuf::from("/tmp/ca"))
        );
        assert_eq!(
            parse_str("compare a.json b.json").unwrap(),
            Command::Compare {
                a: PathBuf::from("a.json"),
                b: PathBuf::from("b.json")
            }
        );
        assert_eq!(parse_str("--axon --help").unwrap(), Command::Help);
    }
}
