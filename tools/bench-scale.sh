#!/usr/bin/env bash
# Runs the scale benchmark (tools/bench/scale-guest.sh) in the test VM: ZREPL_BENCH_FILESYSTEMS
# (1000) filesystems x ZREPL_BENCH_SNAPSHOTS (100) snapshots; zrepl against the minimal
# `zfs send | zfs recv` loop and bzfs (from PyPI, run by Debian bookworm's Python 3.11,
# unpacked for the guest). By hand, not in CI; at the default size it takes hours under the
# VM's emulated CPU (see README for the figures and the size they were measured at).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
bash tools/vm/setup-host.sh
bash tools/vm/build-image.sh >/dev/null
cargo build --release -p zrepl --bin zrepl
stage=$repo/.vm-bench
rm -rf --one-file-system "$stage"
mkdir -p "$stage/debs" "$stage/py" "$stage/bzfs"
(cd "$stage/debs" && apt-get download python3.11-minimal libpython3.11-minimal \
    libpython3.11-stdlib libexpat1 libffi8 libsqlite3-0 media-types libnsl2 libtirpc3 \
    libtirpc-common libdb5.3 libncursesw6 libreadline8 >/dev/null)
for d in "$stage"/debs/*.deb; do dpkg -x "$d" "$stage/py"; done
python3 -m pip download --quiet --no-deps --dest "$stage/debs" bzfs==1.25.0
python3 -m zipfile -e "$stage"/debs/bzfs-1.25.0-py3-none-any.whl "$stage/bzfs"
cp "${CARGO_TARGET_DIR:-$repo/target}/release/zrepl" tools/bench/scale-guest.sh "$stage/"
ZREPL_VM_PATH_PREPEND=/mnt/host ZREPL_VM_PASS_ENV="ZREPL_BENCH_FILESYSTEMS ZREPL_BENCH_SNAPSHOTS ZREPL_BENCH_DEBUG" \
    exec bash tools/vm/run-in-vm.sh "$stage" ./scale-guest.sh
