//! The module tree of the `federation_bench` binary (its `crate::bench`):
//! the modules shared with `send_bench` and `sync_bench`, which use parts of
//! them this benchmark does not, and the benchmark itself.

#[path = "../axon_bin.rs"]
pub(crate) mod axon_bin;
#[allow(dead_code, reason = "the other benchmarks' share of the module")]
#[path = "../error.rs"]
pub(crate) mod error;
#[path = "mod.rs"]
pub(crate) mod federation;
#[allow(dead_code, reason = "the other benchmarks' share of the module")]
#[path = "../matrix.rs"]
pub(crate) mod matrix;
#[allow(dead_code, reason = "the other benchmarks' share of the module")]
#[path = "../stats.rs"]
pub(crate) mod stats;
#[allow(dead_code, reason = "the other benchmarks' share of the module")]
#[path = "../sync/client.rs"]
pub(crate) mod sync_client;
