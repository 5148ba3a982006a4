#!/usr/bin/env bash
# Install the host tools needed to build and boot the OpenZFS test VM:
# debootstrap, qemu-system-x86 (from bookworm-backports), qemu-img, mke2fs; and g++ for the
# fuzz targets' libFuzzer.
#
# Idempotent: when every needed binary is already present it does nothing (no
# apt-get at all). Otherwise it adds bookworm-backports/main to the apt sources
# (reusing the host's Debian mirror) if no source lists it yet, runs
# `apt-get update` and installs the missing packages. Must run as root.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

# binary -> package providing it
declare -A need=(
    [debootstrap]=debootstrap
    [qemu-system-x86_64]=qemu-system-x86
    [qemu-img]=qemu-utils
    [mke2fs]=e2fsprogs
    [flock]=util-linux
    [findmnt]=util-linux
    [sha256sum]=coreutils
    [timeout]=coreutils
    [awk]=mawk
    # libFuzzer (tools/fuzz.sh, run by tools/test.sh) is C++.
    [g++]=g++
)

missing=()
for bin in "${!need[@]}"; do
    command -v "$bin" >/dev/null 2>&1 || missing+=("${need[$bin]}")
done
[[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] || missing+=(debian-archive-keyring)

check_qemu() {
    # 9p (virtfs) support is needed to share the host directory with the guest.
    if ! qemu-system-x86_64 -device help 2>/dev/null | grep -q '"virtio-9p-pci"'; then
        vm_die "qemu-system-x86_64 at $(command -v qemu-system-x86_64) has no virtio-9p-pci device (virtfs); install Debian's qemu-system-x86 from bookworm-backports"
    fi
}

if [[ ${#missing[@]} -eq 0 ]]; then
    check_qemu
    vm_log "host tools already installed"
    exit 0
fi

vm_require_root
command -v apt-get >/dev/null || vm_die "apt-get not found: this script supports Debian bookworm hosts only"
. /etc/os-release
[[ ${VERSION_CODENAME:-} == bookworm ]] ||
    vm_log "warning: host is '${VERSION_CODENAME:-unknown}', not Debian bookworm; trying anyway"

# Deduplicate package names.
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
vm_log "installing host packages: ${missing[*]}"

if [[ -z $(vm_find_mirror bookworm-backports "") ]]; then
    mirror=$(vm_debian_mirror)
    src=/etc/apt/sources.list.d/zrepl-vm-bookworm-backports.sources
    vm_log "adding bookworm-backports/main ($mirror) to $src"
    cat >"$src.tmp" <<SRC
# Added by zrepl tools/vm/setup-host.sh (qemu-system-x86 matching the backports qemu-utils)
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    mv "$src.tmp" "$src"
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q >&2 || vm_die "apt-get update failed"

# qemu packages come from bookworm-backports: the plain bookworm qemu-system-x86
# (7.2) conflicts with the backports qemu-utils that some hosts already carry.
# The remaining packages are taken from bookworm (-t only raises the priority
# of backports for the packages it has).
apt-get install -y -q --no-install-recommends -t bookworm-backports \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}" >&2 || vm_die "apt-get install ${missing[*]} failed"

for bin in "${!need[@]}"; do
    command -v "$bin" >/dev/null 2>&1 || vm_die "'$bin' still missing after installing packages"
done
check_qemu
vm_log "host tools installed: $(qemu-system-x86_64 --version | head -n1)"
