//! The fuzz targets' code, shared by `fuzz_targets/*.rs` (one `fuzz_target!` each) and
//! `examples/seeds.rs` (which writes the committed seed corpus in `fuzz/seeds/`).
//!
//! Every target runs in-process: no `zfs` is spawned, no socket opened, no file touched. The
//! async targets run on a current-thread tokio runtime with a paused clock ([`runtime`]): when
//! every task waits, time jumps to the next timer, so a timeout the code under test relies on
//! fires at once instead of stalling the fuzzer, and a real hang (waiting on nothing) is what
//! libFuzzer's `-timeout` reports.

pub mod client;
pub mod input;
pub mod mock;
pub mod script;
pub mod sender_dispatch;
pub mod zfs_output;

/// A current-thread runtime with a paused clock (see the crate docs).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("tokio runtime")
}
