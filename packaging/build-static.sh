#!/usr/bin/env bash
# Build a static zrepl binary for distributions without the Debian package (musl libc).
#
#   bash packaging/build-static.sh [--out DIR]
#
# Installs musl-tools (musl-gcc, for the C parts of ring and zstd) and the Rust target
# x86_64-unknown-linux-musl (rustup) if missing, builds `zrepl` for it in release mode, strips it,
# checks that it is statically linked and runs, and reports its size and start-up time (the
# median wall time of 50 runs of `zrepl version` and of `zrepl configcheck` on an example).
# Result: DIR/zrepl-<version>-x86_64-linux-musl (default DIR: target/static/).
#
# What differs from the glibc build: a static musl binary cannot load shared libraries, so
# libzfs_core is never used and holds, releases and bookmark destroys go through the `zfs`
# command line (as with ZREPL_LIBZFS_CORE=off); host names resolve through /etc/hosts and DNS
# only (no NSS modules). See docs/install.md.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
log() { printf '[build-static] %s\n' "$*" >&2; }
die() { printf '[build-static] ERROR: %s\n' "$*" >&2; exit 1; }

triple=x86_64-unknown-linux-musl
out=""
while [[ $# -gt 0 ]]; do
    case $1 in
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    *) die "unknown argument '$1' (usage: $0 [--out DIR])" ;;
    esac
done

if ! command -v musl-gcc >/dev/null; then
    [[ $(id -u) -eq 0 ]] || die "musl-gcc missing: apt-get install musl-tools (as root)"
    log "installing musl-tools"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends musl-tools >&2 ||
        { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends musl-tools >&2; } ||
        die "apt-get install musl-tools failed"
fi
if ! rustup target list --installed 2>/dev/null | grep -qx "$triple"; then
    log "rustup target add $triple"
    rustup target add "$triple" >&2 ||
        die "rustup could not add $triple (it downloads the target's standard library from the Rust distribution server)"
fi

log "cargo build --release --target $triple -p zrepl --bin zrepl"
CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release --target "$triple" -p zrepl --bin zrepl >&2
target=${CARGO_TARGET_DIR:-$repo/target}
[[ $target == /* ]] || target=$repo/$target
built=$target/$triple/release/zrepl
[[ -x $built ]] || die "$built was not built"

version=$("$built" version 2>/dev/null | sed -n 's/.*version=\([^ ]*\).*/\1/p' | head -n 1)
[[ -n $version ]] || version=$(sed -n 's/^version = "\(.*\)"/\1/p' crates/zrepl/Cargo.toml | head -n 1)
out=${out:-$target/static}
mkdir -p "$out"
bin=$out/zrepl-$version-x86_64-linux-musl
cp "$built" "$bin"
strip "$bin"

desc=$(file -b "$bin" 2>/dev/null || true)
if command -v file >/dev/null; then
    [[ $desc == *"static"* ]] || die "$bin is not statically linked: $desc"
fi
if ldd "$bin" >/dev/null 2>&1 && ! ldd "$bin" 2>&1 | grep -q 'not a dynamic executable\|statically linked'; then
    die "$bin has dynamic dependencies: $(ldd "$bin" 2>&1 | tr '\n' ' ')"
fi
"$bin" version >/dev/null 2>&1 || die "$bin does not run"

# Median wall time in milliseconds of 50 runs of the given command.
median_ms() {
    local i s e
    for ((i = 0; i < 50; i++)); do
        s=$(date +%s%N)
        "$@" >/dev/null 2>&1 || true
        e=$(date +%s%N)
        echo $(((e - s) / 1000))
    done | sort -n | sed -n '25p' | awk '{ printf "%.1f", $1 / 1000 }'
}
size=$(stat -c %s "$bin")
t_version=$(median_ms "$bin" version)
t_check=$(median_ms "$bin" --config docs/examples/continuous-backup-prod.yml configcheck --skip-cert-check)
log "built $bin"
log "  ${desc:-statically linked}"
log "  size: $size bytes ($(numfmt --to=iec-i --suffix=B "$size"))"
log "  start-up (median of 50): zrepl version ${t_version} ms; zrepl configcheck (example config) ${t_check} ms"
printf '%s\n' "$bin"
