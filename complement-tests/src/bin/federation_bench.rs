//! `federation_bench`: the inbound federation benchmark.
//!
//! Plays a remote homeserver that joins a room of the target and measures
//! how many PDUs per second the target accepts over `PUT /send`, and how
//! soon a local client's waiting `/sync` returns a remote event. It talks
//! HTTP (and serves its own keys over TLS), so the same run works against
//! Axon and against Synapse. See `complement-tests/bench/README.md` for the
//! workload and the comparison script, and `federation_bench --help` for
//! the flags.
//!
//! The code lives in `src/bench/federation/`, beside the other benchmarks',
//! whose registration, errors and percentiles it reuses; this file is the
//! entry point.

#[path = "../bench/federation/root.rs"]
mod bench;

fn main() -> std::process::ExitCode {
    bench::federation::main()
}
