//! The parsers of `zfs` output (listings, `zfs get` rows, holds, dry runs, versions) and
//! the stderr classifiers: see `zrepl_fuzz::zfs_output`.
//!
//! Run: `bash tools/fuzz.sh zfs_output 300` (stable toolchain), or `cargo +nightly fuzz run zfs_output` from
//! `fuzz/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zrepl_fuzz::zfs_output::run(data));
