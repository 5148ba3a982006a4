#!/usr/bin/env bash
# Build the Debian package of zrepl: the one command (README "Install", packaging/README.md).
#
#   bash packaging/build-deb.sh [--deb-revision N] [--out DIR]
#
# 1. installs cargo-deb (pinned, `cargo install --locked`) and dpkg-dev/binutils if missing;
# 2. `cargo build --release -p zrepl --bin zrepl` (the binary the platform tests use too);
# 3. generates the man page and the bash/zsh/fish completions with that binary
#    (`zrepl genman`, `zrepl gencompletion`) into packaging/build/ (ignored by git);
# 4. checks packaging/zrepl.yml (installed as /etc/zrepl/zrepl.yml) and every
#    docs/examples/*.yml with `zrepl configcheck`: a config the package ships must be valid;
# 5. `cargo deb --no-build`: the package metadata is [package.metadata.deb] in
#    crates/zrepl/Cargo.toml, the unit and maintainer scripts are in packaging/debian/.
#
# Prints the path of the .deb as the last line of stdout (progress goes to stderr).
# --deb-revision N: Debian revision (default 1), e.g. to build an upgrade of the same version.
# --out DIR: where the .deb goes (default target/debian/). CARGO_TARGET_DIR is honoured.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
log() { printf '[build-deb] %s\n' "$*" >&2; }
die() { printf '[build-deb] ERROR: %s\n' "$*" >&2; exit 1; }

# Pinned: the generated maintainer scripts and the package layout are part of what the VM
# scenario (tools/package-test.sh) verifies.
CARGO_DEB_VERSION=3.8.0

revision=1
out=""
while [[ $# -gt 0 ]]; do
    case $1 in
    --deb-revision) revision=${2:?--deb-revision needs a value}; shift 2 ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    *) die "unknown argument '$1' (usage: $0 [--deb-revision N] [--out DIR])" ;;
    esac
done
[[ $revision =~ ^[0-9]+$ ]] || die "--deb-revision must be a number, got '$revision'"

command -v cargo >/dev/null || die "cargo not found in PATH"

missing=()
command -v dpkg-shlibdeps >/dev/null || missing+=(dpkg-dev)
command -v strip >/dev/null || missing+=(binutils)
if [[ ${#missing[@]} -gt 0 ]]; then
    [[ $(id -u) -eq 0 ]] || die "missing ${missing[*]}: run as root or install them (apt-get install ${missing[*]})"
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
        { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; } ||
        die "apt-get install ${missing[*]} failed"
fi

have_cargo_deb=$(cargo deb --version 2>/dev/null || true)
if [[ $have_cargo_deb != *"$CARGO_DEB_VERSION"* ]]; then
    log "cargo install --locked cargo-deb --version $CARGO_DEB_VERSION (once; about 1-2 minutes)"
    cargo install --locked cargo-deb --version "$CARGO_DEB_VERSION" >&2
fi

log "cargo build --release -p zrepl --bin zrepl"
cargo build --release -p zrepl --bin zrepl >&2
target=${CARGO_TARGET_DIR:-$repo/target}
[[ $target == /* ]] || target=$repo/$target
zrepl=$target/release/zrepl
[[ -x $zrepl ]] || die "$zrepl was not built"

# Generated files the package ships; the asset list in crates/zrepl/Cargo.toml names them
# relative to the repository (cargo-deb reserves paths with target/ for what cargo builds).
gen=$repo/packaging/build
rm -rf "$gen"
mkdir -p "$gen/completions"
"$zrepl" genman "$gen/zrepl.1"
"$zrepl" gencompletion bash "$gen/completions/zrepl.bash"
"$zrepl" gencompletion zsh "$gen/completions/_zrepl"
"$zrepl" gencompletion fish "$gen/completions/zrepl.fish"
for f in "$gen/zrepl.1" "$gen"/completions/*; do
    [[ -s $f ]] || die "generated $f is empty"
done
grep -q '^\.TH zrepl' "$gen/zrepl.1" || die "$gen/zrepl.1 is not a man page"

log "zrepl configcheck: packaging/zrepl.yml and docs/examples/*.yml"
for cfg in packaging/zrepl.yml docs/examples/*.yml; do
    [[ -f $cfg ]] || die "no config at $cfg"
    # TLS examples name certificate files that exist only on the reader's hosts: checked
    # without them (as the daemon would refuse to start until they exist); any other problem
    # fails the build.
    if ! msg=$("$zrepl" --config "$cfg" configcheck --skip-cert-check 2>&1); then
        printf '%s\n' "$msg" >&2
        die "$cfg does not pass zrepl configcheck"
    fi
done

out=${out:-$target/debian}
mkdir -p "$out"
# Epoch 1: zrepl's own packages are named `zrepl` too, with versions 0.7.x; the epoch makes this
# package an upgrade of theirs (same unit, same conffile), and apt never "upgrades" it back.
crate_version=$(sed -n 's/^version = "\([^"]*\)"$/\1/p' crates/zrepl/Cargo.toml | head -n 1)
[[ $crate_version =~ ^[0-9][0-9a-z.+~-]*$ ]] || die "cannot read the version from crates/zrepl/Cargo.toml"
version="1:$crate_version-$revision"
log "cargo deb -p zrepl --no-build --deb-version $version"
deb=$(cargo deb -p zrepl --no-build --deb-version "$version" --output "$out" | tail -n 1)
[[ -f $deb ]] || die "cargo deb did not report a package file (got '$deb')"
# Debian's file name leaves the epoch out: zrepl_<version>-<revision>_<arch>.deb.
named=$out/zrepl_$crate_version-${revision}_$(dpkg-deb -f "$deb" Architecture).deb
[[ $deb == "$named" ]] || mv -f "$deb" "$named"
deb=$named
log "built $deb ($(du -h "$deb" | cut -f1))"
dpkg-deb --info "$deb" >&2
printf '%s\n' "$deb"
