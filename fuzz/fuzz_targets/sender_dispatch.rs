//! The sender's request dispatch (`zrepl_rpc::serve_sender`) fed arbitrary requests:
//! see `zrepl_fuzz::sender_dispatch` for the input format and the properties checked.
//!
//! Run: `bash tools/fuzz.sh sender_dispatch 300` (stable toolchain), or `cargo +nightly fuzz run sender_dispatch` from
//! `fuzz/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zrepl_fuzz::sender_dispatch::run(data));
