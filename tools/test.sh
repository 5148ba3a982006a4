#!/usr/bin/env bash
# The project's one test command (README, .ci/run): formatting, lints, every unit and integration
# test, every fuzz target run for a bounded time (tools/fuzz.sh), the Debian package's scenario in
# the test VM booted with systemd (tools/package-test.sh), and the whole platform suite on real
# OpenZFS 2.3 in the test VM.
#
# The VM image is built (or found in its cache) in the background from the start, at the lowest
# CPU priority (SCHED_IDLE: it gets what cargo leaves idle, and never delays it).
#
#   bash tools/test.sh            # everything
#   ZREPL_TEST_EXTRA_SERIES="2.1 2.4" bash tools/test.sh
#                                 # also the suite's replication core on those OpenZFS series
#                                 # (ZREPL_PLATFORMTEST_SET=core), each after the 2.3 suite;
#                                 # not in CI: see README, "Testing"
#   ZREPL_SKIP_PLATFORM=1 ...     # NOT for CI: host-only tests while iterating (prints a warning;
#                                 # skips the package scenario and the platform tests)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
step() { printf '\n==> %s\n' "$*"; }

platform=1
[[ ${ZREPL_SKIP_PLATFORM:-0} == 1 ]] && platform=0
read -r -a extra_series <<<"${ZREPL_TEST_EXTRA_SERIES:-}"
for v in "${extra_series[@]}"; do
    case $v in
    2.1 | 2.4) ;;
    *)
        echo "ZREPL_TEST_EXTRA_SERIES: '$v' is not an OpenZFS series besides the default (2.1, 2.4)" >&2
        exit 2
        ;;
    esac
done
scratch=$(mktemp -d)
# A failure on the way stops the background image build too (a normal end has waited for it).
kill_tree() {
    local child
    for child in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$child"; done
    kill "$1" 2>/dev/null || true
}
image_job=
on_exit() {
    [[ -z $image_job ]] || kill_tree "$image_job"
    rm -rf "$scratch"
}
trap on_exit EXIT
if [[ $platform == 1 ]]; then
    # Lowest priority; nice 19 where SCHED_IDLE is not available. A failure shows when the
    # image is needed (build-image.sh below, which then builds it itself).
    if chrt -i 0 true 2>/dev/null; then
        chrt -i 0 bash tools/vm/build-image.sh >"$scratch/image.log" 2>&1 &
    else
        nice -n 19 bash tools/vm/build-image.sh >"$scratch/image.log" 2>&1 &
    fi
    image_job=$!
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (-D warnings)"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test (unit and integration tests)"
cargo test --workspace

step "fuzz targets: each for ${ZREPL_FUZZ_SECONDS:-20} s from its committed seeds (stable, tools/fuzz.sh)"
bash tools/fuzz.sh

if [[ $platform == 0 ]]; then
    printf '\nWARNING: ZREPL_SKIP_PLATFORM=1: platform tests on real OpenZFS were NOT run\n' >&2
    exit 0
fi
step "release binaries for the VM (while the image may still be building)"
cargo build --release -p zrepl-platformtest --bin zrepl-platformtest
cargo build --release -p zrepl --bin zrepl

step "the OpenZFS 2.3 VM image (built in the background since the start)"
# Waits for the background build if it is still going (the image cache's lock), or builds.
wait "$image_job" || true
image_job=
if ! bash tools/vm/build-image.sh >/dev/null; then
    cat "$scratch/image.log" >&2
    exit 1
fi

step "Debian package: build, install, replicate, upgrade, stop, purge in the VM with systemd"
package_rc=0
bash tools/package-test.sh || package_rc=$?

step "platform tests on real OpenZFS 2.3 (VM): the whole suite"
set +e
bash tools/platform-test.sh 2>&1 | tee "$scratch/2.3.log"
suite_rc=${PIPESTATUS[0]}
set -e
for v in "${extra_series[@]}"; do
    step "platform tests' replication core on OpenZFS $v (ZREPL_TEST_EXTRA_SERIES)"
    set +e
    ZREPL_VM_ZFS=$v ZREPL_PLATFORMTEST_SET=core bash tools/platform-test.sh 2>&1 | tee "$scratch/$v.log"
    printf '%s\n' "${PIPESTATUS[0]}" >"$scratch/$v.rc"
    set -e
done

rc=$package_rc
passed=0
failed=0
# One run's closing test summary: adds to the totals, prints a line; fails when missing.
tally() {
    local what=$1 log=$2 run_rc=$3 summary
    summary=$(grep -E '^test result: ' "$log" | tail -n 1)
    if [[ $summary =~ ([0-9]+)\ passed\;\ ([0-9]+)\ failed ]]; then
        passed=$((passed + BASH_REMATCH[1]))
        failed=$((failed + BASH_REMATCH[2]))
        printf 'platform %s: %s passed, %s failed\n' "$what" "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
    else
        printf 'platform %s: no test summary (exit code %s)\n' "$what" "$run_rc"
        [[ $run_rc -ne 0 ]] || run_rc=1
    fi
    if [[ $rc -eq 0 && $run_rc -ne 0 ]]; then rc=$run_rc; fi
}
printf '\n'
tally "OpenZFS 2.3 (whole suite)" "$scratch/2.3.log" "$suite_rc"
for v in "${extra_series[@]}"; do
    tally "OpenZFS $v (replication core)" "$scratch/$v.log" "$(cat "$scratch/$v.rc")"
done
# The VM prints shutdown lines after the test runner's summary; the totals are the closing line.
printf '\nplatform: %s passed, %s failed\n' "$passed" "$failed"
exit "$rc"
