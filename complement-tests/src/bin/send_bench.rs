//! `send_bench`: the message-send load generator.
//!
//! Measures how fast a homeserver accepts `m.room.message` events from
//! local users over the client-server API: events per second and send
//! latency, one room, at several numbers of concurrent senders. It talks
//! HTTP only, so the same run works against Axon and against Synapse. See
//! `complement-tests/bench/README.md` for the workload and the comparison
//! script, and `send_bench --help` for the flags.
//!
//! The code lives in `src/bench/` (not in the library: it is a tool, and
//! the test harness stays free of it); this file is the entry point.

#[path = "../bench/mod.rs"]
mod bench;

fn main() -> std::process::ExitCode {
    bench::main()
}
