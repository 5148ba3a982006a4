#!/usr/bin/env bash
# Runs the orchestration benchmark (tools/bench/orchestration-guest.sh) in the test VM and prints
# zrepl's time for one incremental round of 40 filesystems against the minimal shell loop.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
bash tools/vm/setup-host.sh
bash tools/vm/build-image.sh >/dev/null
cargo build --release -p zrepl --bin zrepl
stage=$repo/.vm-bench
rm -rf --one-file-system "$stage"
mkdir -p "$stage"
cp "${CARGO_TARGET_DIR:-$repo/target}/release/zrepl" tools/bench/orchestration-guest.sh "$stage/"
ZREPL_VM_PATH_PREPEND=/mnt/host ZREPL_VM_PASS_ENV="ZREPL_BENCH_FILESYSTEMS ZREPL_BENCH_STEPS ZREPL_BENCH_DEBUG ZREPL_BENCH_EXPERIMENTS" \
    exec bash tools/vm/run-in-vm.sh "$stage" ./orchestration-guest.sh
