#!/usr/bin/env bash
# The project's one test command (README, .ci/run): formatting, lints, every unit and integration
# test, every fuzz target run for a bounded time (tools/fuzz.sh), the Debian package's scenario in the test VM booted with systemd
# (tools/package-test.sh), and the platform tests on real OpenZFS in the test VM.
#
#   bash tools/test.sh            # everything
#   ZREPL_SKIP_PLATFORM=1 ...     # NOT for CI: host-only tests while iterating (prints a warning;
#                                 # skips the package scenario and the platform tests)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (-D warnings)"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test (unit and integration tests)"
cargo test --workspace

step "fuzz targets: each for ${ZREPL_FUZZ_SECONDS:-20} s from its committed seeds (stable, tools/fuzz.sh)"
bash tools/fuzz.sh

if [[ ${ZREPL_SKIP_PLATFORM:-0} == 1 ]]; then
    printf '\nWARNING: ZREPL_SKIP_PLATFORM=1: platform tests on real OpenZFS were NOT run\n' >&2
    exit 0
fi
step "Debian package: build, install, replicate, upgrade, stop, purge in the VM with systemd"
bash tools/package-test.sh

step "platform tests on real OpenZFS (VM)"
log=$(mktemp)
set +e
bash tools/platform-test.sh 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# The VM prints shutdown lines after the test runner's summary; repeat the summary last so it
# is the closing line.
summary=$(grep -E '^test result: ' "$log" | tail -n 1)
rm -f "$log"
if [[ $summary =~ ([0-9]+)\ passed\;\ ([0-9]+)\ failed ]]; then
    printf '\nplatform: %s passed, %s failed\n' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
else
    printf '\nplatform: no test summary (exit code %s)\n' "$rc"
    [[ $rc -ne 0 ]] || rc=1
fi
exit "$rc"
