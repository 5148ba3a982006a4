#!/usr/bin/env bash
# README's first command: build zrepl, boot the throwaway OpenZFS 2.3 VM (building its image on
# first use), and run zrepl against real pools inside it (tools/demo-guest.sh), showing the result.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
bash tools/vm/setup-host.sh
bash tools/vm/build-image.sh >/dev/null
cargo build --release -p zrepl --bin zrepl
stage=$repo/.vm-demo
rm -rf --one-file-system "$stage"
mkdir -p "$stage"
cp "${CARGO_TARGET_DIR:-$repo/target}/release/zrepl" tools/demo-guest.sh "$stage/"
ZREPL_VM_PATH_PREPEND=/mnt/host exec bash tools/vm/run-in-vm.sh "$stage" ./demo-guest.sh
