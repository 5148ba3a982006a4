#!/usr/bin/env bash
# Run the zrepl platform tests (zrepl-platformtest) against real OpenZFS (2.3
# unless ZREPL_VM_ZFS selects another series).
#
#   tools/platform-test.sh [FILTER...]
#
# Builds the test VM image if needed (tools/vm/), builds
# `zrepl-platformtest` and `zrepl` in release mode, copies them into a fresh
# .vm-run/ (.vm-run-<series>/ when ZREPL_VM_ZFS is set, so runs of different series can go
# on at the same time) in the repository root and runs `./zrepl-platformtest [FILTER...]`
# inside the VM (tools/vm/run-in-vm.sh) with /mnt/host (= .vm-run/) at the front
# of PATH, so `zrepl` is found. FILTER... is passed to the libtest-mimic runner
# unchanged (test name filters, --exact, --skip NAME, --list, ...).
#
# Exit status: the test runner's (0 = all passed), 124 on the VM timeout, 125 on
# a VM/harness failure (see tools/vm/run-in-vm.sh); cargo/setup failures exit
# with their own non-zero status.
#
# Environment:
#   ZREPL_VM_ZFS=2.1|2.3|2.4     OpenZFS series of the VM image (default 2.3; see
#                                tools/vm/build-image.sh); passed on to the guest
#                                when set. Ignored by a direct run
#   ZREPL_PLATFORMTEST_SET=core  only the replication core (see in_core in
#                                crates/zrepl-platformtest/src/main.rs); default all
#   ZREPL_PLATFORMTEST_DIRECT=1  if /dev/zfs exists on this host, run the tests
#                                directly here (cwd .vm-run/, as the current user)
#                                instead of in the VM. Without /dev/zfs the VM is used.
#   ZREPL_PLATFORMTEST_PREBUILT_DIR=DIR  use DIR/zrepl-platformtest and DIR/zrepl
#                                instead of running cargo (e.g. CI artifacts)
#   CARGO_TARGET_DIR             honoured when locating the built binaries
#   ZREPL_VM_PASS_ENV            extra variable names for the guest; RUST_LOG is
#                                always forwarded when set
#   ZREPL_VM_MEM, ZREPL_VM_SMP, ZREPL_VM_TIMEOUT, ZREPL_VM_CACHE: see tools/vm/run-in-vm.sh
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
vm=$repo/tools/vm
log() { printf '[platform-test] %s\n' "$*" >&2; }
die() { printf '[platform-test] ERROR: %s\n' "$*" >&2; exit 1; }

direct=0
if [[ ${ZREPL_PLATFORMTEST_DIRECT:-0} == 1 ]]; then
    if [[ -e /dev/zfs ]]; then
        direct=1
    else
        log "ZREPL_PLATFORMTEST_DIRECT=1 but /dev/zfs does not exist on this host: using the VM"
    fi
fi

if [[ $direct == 0 ]]; then
    if [[ -n ${ZREPL_VM_ZFS:-} ]]; then
        case $ZREPL_VM_ZFS in
        2.1 | 2.3 | 2.4) log "OpenZFS $ZREPL_VM_ZFS VM image (ZREPL_VM_ZFS)" ;;
        *) die "ZREPL_VM_ZFS='$ZREPL_VM_ZFS' is not supported (one of 2.1, 2.3, 2.4; default 2.3)" ;;
        esac
    fi
    "$vm/setup-host.sh"
    "$vm/build-image.sh" >/dev/null
fi

if [[ -n ${ZREPL_PLATFORMTEST_PREBUILT_DIR:-} ]]; then
    bindir=$(realpath "$ZREPL_PLATFORMTEST_PREBUILT_DIR")
    log "using prebuilt binaries from $bindir"
else
    command -v cargo >/dev/null || die "cargo not found in PATH"
    cd "$repo"
    log "cargo build --release -p zrepl-platformtest --bin zrepl-platformtest"
    cargo build --release -p zrepl-platformtest --bin zrepl-platformtest
    log "cargo build --release -p zrepl --bin zrepl"
    cargo build --release -p zrepl --bin zrepl
    target=${CARGO_TARGET_DIR:-$repo/target}
    [[ $target == /* ]] || target=$repo/$target
    bindir=$target/release
fi
for b in zrepl-platformtest zrepl; do
    [[ -x $bindir/$b ]] || die "$bindir/$b is missing or not executable"
done

# The whole suite takes about 30 minutes of VM time on 2 busy cores; leave room for slower
# machines (run-in-vm.sh's own default is 2400 s).
export ZREPL_VM_TIMEOUT=${ZREPL_VM_TIMEOUT:-4200}

stage=$repo/.vm-run${ZREPL_VM_ZFS:+-$ZREPL_VM_ZFS}
# Another platform-test.sh of this checkout may be using the same stage right now.
lock=${TMPDIR:-/tmp}/zrepl-platform-test.$(printf '%s' "$stage" | sha256sum | cut -c1-12).lock
exec 9>"$lock"
if ! flock -n 9; then
    log "another platform-test.sh run of $repo is in progress; waiting for it ..."
    flock 9
fi
rm -rf --one-file-system "$stage"
mkdir -p "$stage"
cp "$bindir/zrepl-platformtest" "$bindir/zrepl" "$stage/"

if [[ $direct == 1 ]]; then
    log "running directly on this host in $stage (/dev/zfs exists, ZREPL_PLATFORMTEST_DIRECT=1)"
    cd "$stage"
    PATH=$stage:$PATH RUST_BACKTRACE=${RUST_BACKTRACE:-1} exec ./zrepl-platformtest "$@"
fi

export ZREPL_VM_PATH_PREPEND=/mnt/host
export ZREPL_VM_PASS_ENV="RUST_LOG ${ZREPL_VM_PASS_ENV:-}"
# Only when set, so that a default run passes the guest exactly what it always did.
[[ -n ${ZREPL_VM_ZFS:-} ]] && ZREPL_VM_PASS_ENV+=" ZREPL_VM_ZFS"
[[ -n ${ZREPL_PLATFORMTEST_SET:-} ]] && ZREPL_VM_PASS_ENV+=" ZREPL_PLATFORMTEST_SET"
exec "$vm/run-in-vm.sh" "$stage" ./zrepl-platformtest "$@"
