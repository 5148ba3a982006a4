#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/) for a bounded time, starting from the committed
# seed corpus (fuzz/seeds/<target>/; the config target also reads zrepl's samples from
# ../shared/zrepl-samples or ZREPL_SAMPLES_DIR when present), on the stable toolchain.
#
#   bash tools/fuzz.sh                 # every target, ZREPL_FUZZ_SECONDS (default 20) each
#   bash tools/fuzz.sh client 300      # one target for 300 s
#
# How: libFuzzer (built by libfuzzer-sys) with SanitizerCoverage instrumentation through stable
# rustc flags (-C passes=sancov-module and LLVM options), the flags cargo-fuzz uses minus
# AddressSanitizer, which needs nightly (-Zsanitizer). Rust is memory safe outside `unsafe`, and
# what we look for are panics, overflows (debug assertions and overflow checks are on), hangs
# (-timeout) and runaway memory (-rss_limit_mb); `cargo +nightly fuzz run <target>` adds ASan
# for local runs. Needs a C++ compiler for libFuzzer (installed with apt-get when missing and
# root).
#
# New inputs go to a temporary directory, never into the committed seeds. A crash leaves its
# input in fuzz/artifacts/<target>/ and fails the run; replay it with
#   fuzz/target/<host>/release/<target> fuzz/artifacts/<target>/crash-...
# (or, for sender_dispatch, client and zfs_output, in a debugger or with ZREPL_FUZZ_TRACE=1:
#   cd fuzz && cargo run --example replay -- <target> artifacts/<target>/crash-...)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo/fuzz"

seconds=${2:-${ZREPL_FUZZ_SECONDS:-20}}
if [[ $# -ge 1 ]]; then
    targets=("$1")
else
    mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -vx zrepl-fuzz)
fi

if ! command -v c++ >/dev/null && ! command -v g++ >/dev/null && ! command -v clang++ >/dev/null; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        echo "fuzz: installing g++ (libFuzzer is C++)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends g++ >/dev/null ||
            { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends g++ >/dev/null; }
    else
        echo "fuzz: a C++ compiler is needed to build libFuzzer (apt-get install g++)" >&2
        exit 1
    fi
fi

host=$(rustc -vV | sed -n 's/^host: //p')
# --target keeps these flags off build scripts and proc macros (they would not link).
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
bins=()
for t in "${targets[@]}"; do bins+=(--bin "$t"); done
cargo build --release --target "$host" "${bins[@]}"
out=${CARGO_TARGET_DIR:-target}/$host/release

failed=()
for t in "${targets[@]}"; do
    seeds="$repo/fuzz/seeds/$t"
    [[ -d $seeds ]] || { echo "fuzz: $t has no seed corpus in fuzz/seeds/$t" >&2; exit 1; }
    work=$(mktemp -d)
    log="$work/log"
    mkdir -p "$work/corpus" "$repo/fuzz/artifacts/$t"
    start=$(date +%s)
    set +e
    extra=()
    # zrepl's sample configs (not copied into the repository, see fuzz/examples/seeds.rs).
    samples=${ZREPL_SAMPLES_DIR:-$repo/../shared/zrepl-samples}
    [[ $t == config && -d $samples ]] && extra+=("$samples")
    "$out/$t" "$work/corpus" "$seeds" "${extra[@]}" -max_total_time="$seconds" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$repo/fuzz/artifacts/$t/" \
        >"$log" 2>&1
    rc=$?
    set -e
    took=$(($(date +%s) - start))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1) || true
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1 | cut -d' ' -f2) || true
    nseeds=$(find "$seeds" "${extra[@]}" -type f | wc -l)
    found=$(find "$work/corpus" -type f | wc -l)
    printf 'fuzz %-20s %s: %9s execs in %3ss, coverage %s, %s seeds + %s new inputs\n' \
        "$t" "$([[ $rc == 0 ]] && echo ok || echo FAILED)" "${execs:-?}" "$took" "${cov:-?}" \
        "$nseeds" "$found"
    if [[ $rc != 0 ]]; then
        failed+=("$t")
        tail -n 60 "$log"
        ls "$repo/fuzz/artifacts/$t/" 2>/dev/null | sed "s|^|  artifact: fuzz/artifacts/$t/|"
    fi
    rm -rf "$work"
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, no failure"
