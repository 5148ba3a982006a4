#!/usr/bin/env bash
# Runs the agentless benchmark (tools/bench/agentless-guest.sh) in the test VM: one incremental
# round of ZREPL_BENCH_FILESYSTEMS (40) filesystems to a remote reached over sshd, zrepl's
# `ssh+zfs` against syncoid (Debian bookworm's sanoid package, unpacked for the guest with the
# Perl modules it needs) and against the minimal `zfs send -i | ssh zfs recv` loop. By hand,
# not in CI.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
bash tools/vm/setup-host.sh
bash tools/vm/build-image.sh >/dev/null
cargo build --release -p zrepl --bin zrepl
stage=$repo/.vm-bench
rm -rf --one-file-system "$stage"
mkdir -p "$stage/debs" "$stage/perl"
(cd "$stage/debs" && apt-get download sanoid libcapture-tiny-perl libconfig-inifiles-perl perl-modules-5.36 >/dev/null)
for d in "$stage"/debs/*.deb; do dpkg -x "$d" "$stage/perl"; done
cp "${CARGO_TARGET_DIR:-$repo/target}/release/zrepl" tools/bench/agentless-guest.sh "$stage/"
ZREPL_VM_PATH_PREPEND=/mnt/host ZREPL_VM_PASS_ENV="ZREPL_BENCH_FILESYSTEMS" \
    exec bash tools/vm/run-in-vm.sh "$stage" ./agentless-guest.sh
