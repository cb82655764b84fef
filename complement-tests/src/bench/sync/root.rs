//! The module tree of the `sync_bench` binary (its `crate::bench`): the
//! modules shared with `send_bench`, which uses parts of them this
//! benchmark does not, and the benchmark itself.

#[path = "../axon_bin.rs"]
pub(crate) mod axon_bin;
#[allow(dead_code, reason = "send_bench's share of the module")]
#[path = "../error.rs"]
pub(crate) mod error;
#[allow(dead_code, reason = "send_bench's share of the module")]
#[path = "../matrix.rs"]
pub(crate) mod matrix;
#[allow(dead_code, reason = "send_bench's share of the module")]
#[path = "../stats.rs"]
pub(crate) mod stats;
#[path = "mod.rs"]
pub(crate) mod sync;
