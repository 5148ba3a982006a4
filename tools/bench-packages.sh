#!/usr/bin/env bash
# Runs the packages benchmark (tools/bench/packages-guest.sh) in the test VM: zrepl with
# `replication.packages: true` against the minimal `zfs send -I | zfs recv` loop, by hand (not
# in CI). ZREPL_BENCH_FILESYSTEMS (40), ZREPL_BENCH_SNAPSHOTS (6), ZREPL_BENCH_BACKLOG (300; 2000 takes more than the VM timeout under TCG emulation).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
bash tools/vm/setup-host.sh
bash tools/vm/build-image.sh >/dev/null
cargo build --release -p zrepl --bin zrepl
stage=$repo/.vm-bench
rm -rf --one-file-system "$stage"
mkdir -p "$stage"
cp "${CARGO_TARGET_DIR:-$repo/target}/release/zrepl" tools/bench/packages-guest.sh "$stage/"
ZREPL_VM_PATH_PREPEND=/mnt/host ZREPL_VM_PASS_ENV="ZREPL_BENCH_FILESYSTEMS ZREPL_BENCH_SNAPSHOTS ZREPL_BENCH_BACKLOG ZREPL_BENCH_DEBUG" \
    exec bash tools/vm/run-in-vm.sh "$stage" ./packages-guest.sh
