//! `zrepl_rpc::Client` reading a malicious server (banner, HTTP/2 replies, stream
//! connections): see `zrepl_fuzz::client`.
//!
//! Run: `bash tools/fuzz.sh client 300` (stable toolchain), or `cargo +nightly fuzz run client` from
//! `fuzz/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zrepl_fuzz::client::run(data));
