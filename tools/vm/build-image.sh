#!/usr/bin/env bash
# Build (or reuse) the Debian guest image with OpenZFS used by run-in-vm.sh.
# ZREPL_VM_ZFS selects the OpenZFS series (see vm_zfs_version in lib.sh):
#   2.3 (default)  bookworm + bookworm-backports: kernel 6.12, OpenZFS 2.3
#   2.1            bookworm + contrib only: kernel 6.1, Debian 12's OpenZFS 2.1.11
#   2.4            trixie + trixie-backports: trixie's kernel 6.12 (pinned: the
#                  backports kernel is newer than OpenZFS supports), OpenZFS 2.4
#
# Cache: ${ZREPL_VM_CACHE:-/var/cache/zrepl-vm}/<hash>/ where <hash> covers the
# recipe files (this script, lib.sh, guest-packages.txt, guest-init.sh) and, for
# any series but 2.3, the series. A recipe hash listed in cache-keys.txt uses the
# cache key given there instead (keeps the 2.3 image built before ZREPL_VM_ZFS
# existed valid: same commands, same image). The
# directory holds root.img (ext4, 4 GiB sparse), vmlinuz, initrd.img, info,
# packages.txt and `ready`. It is built in a temporary directory next to it and
# renamed into place only when complete, so an interrupted build is redone.
#
# Output: progress on stderr; the cache directory is the last line on stdout.
# After a new build, image directories beyond the ZREPL_VM_CACHE_KEEP (default 3)
# most recently used ones are deleted (run-in-vm.sh touches <hash>/last-used).
#
# Env: ZREPL_VM_ZFS (2.1, 2.3 or 2.4; default 2.3), ZREPL_VM_CACHE (cache root), ZREPL_VM_CACHE_KEEP (images kept, default 3),
# ZREPL_VM_KEEP_BUILD=1 (keep the temporary build directory after a failure,
# for debugging). Must run as root.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

zfs_version=$(vm_zfs_version) || exit 2
# Per series: the debootstrap suite, the apt suites, apt's target release (-t) and
# the release the kernel image/headers are pinned to (empty: as the target release).
extra_packages=()
case $zfs_version in
2.1)
    suite=bookworm
    apt_suites="bookworm bookworm-updates"
    target_release=""
    kernel_release=""
    ;;
2.3)
    suite=bookworm
    apt_suites="bookworm bookworm-updates bookworm-backports"
    target_release=bookworm-backports
    kernel_release=""
    ;;
2.4)
    suite=trixie
    apt_suites="trixie trixie-updates trixie-backports"
    target_release=trixie-backports
    # trixie-backports carries kernels far newer than OpenZFS 2.4 builds against.
    kernel_release=trixie
    # linux-image's initramfs generator, named explicitly in case a dependency
    # alternative would satisfy it without building an initrd.
    extra_packages=(initramfs-tools)
    ;;
esac

recipe_files=(build-image.sh lib.sh guest-packages.txt guest-init.sh)
# Packages needed only to build zfs.ko; removed again once it is built.
build_only_packages=(linux-headers-amd64 zfs-dkms)
image_size=4G

cache_root=${ZREPL_VM_CACHE:-/var/cache/zrepl-vm}

recipe_hash() {
    local f
    for f in "${recipe_files[@]}"; do
        [[ -f $here/$f ]] || vm_die "recipe file $here/$f is missing"
        printf '%s\0' "$f"
        sha256sum <"$here/$f"
    done
    # The default series adds nothing, so its hash is computed as before ZREPL_VM_ZFS.
    [[ $zfs_version == 2.3 ]] || printf 'zfs=%s\0' "$zfs_version"
}
recipe=$(recipe_hash | sha256sum | cut -c1-16)
hash=$recipe
# Cache-key aliases: "<recipe hash> <cache key>" lines (see the header).
if [[ -f $here/cache-keys.txt ]]; then
    alias_key=$(awk -v h="$recipe" '$1 == h && $2 ~ /^[0-9a-f]+$/ { print $2; exit }' "$here/cache-keys.txt")
    [[ -n $alias_key ]] && hash=$alias_key
fi
final=$cache_root/$hash

if [[ -f $final/ready ]]; then
    vm_log "using cached image $final"
    printf '%s\n' "$final"
    exit 0
fi

vm_require_root
"$here/setup-host.sh"

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
if ! flock -n 9; then
    vm_log "waiting for another image build holding $cache_root/.lock ..."
    flock 9
fi
if [[ -f $final/ready ]]; then # built by whoever held the lock
    vm_log "using cached image $final"
    printf '%s\n' "$final"
    exit 0
fi

# Unmount everything below $1 (deepest first), then delete it without ever
# crossing into another file system.
safe_remove() {
    local dir=$1 mp
    [[ -e $dir ]] || return 0
    dir=$(realpath "$dir")
    while read -r mp; do
        umount "$mp" 2>/dev/null || umount -l "$mp" || true
    done < <(findmnt -rn -o TARGET | awk -v d="$dir" 'index($0, d "/") == 1 || $0 == d' | sort -r)
    if findmnt -rn -o TARGET | awk -v d="$dir" 'index($0, d "/") == 1 { found = 1 } END { exit !found }'; then
        vm_log "refusing to delete $dir: something is still mounted below it"
        return 1
    fi
    rm -rf --one-file-system "$dir"
}

# Leftovers of interrupted builds (only ever touched while holding the lock).
for old in "$cache_root"/.build-*; do
    [[ -e $old ]] || continue
    vm_log "removing leftover build directory $old"
    safe_remove "$old" || vm_die "cannot remove $old"
done
if [[ -e $final ]]; then
    vm_log "removing incomplete image directory $final (no ready marker)"
    safe_remove "$final" || vm_die "cannot remove $final"
fi

build=$(mktemp -d "$cache_root/.build-$hash.XXXXXX")
root=$build/root
out=$build/out
mkdir -p "$root" "$out"

cleanup() {
    local rc=$?
    set +e
    for m in "$root/dev/pts" "$root/proc" "$root/sys"; do
        mountpoint -q "$m" && { umount "$m" || umount -l "$m"; }
    done
    if [[ $rc -ne 0 && ${ZREPL_VM_KEEP_BUILD:-0} == 1 ]]; then
        vm_log "build failed (exit $rc); keeping $build for inspection (ZREPL_VM_KEEP_BUILD=1)"
    elif [[ -d $build ]]; then
        safe_remove "$build"
    fi
    [[ $rc -eq 0 ]] || vm_log "image build FAILED (exit $rc)"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mirror=$(vm_debian_mirror)
security_mirror=$(vm_security_mirror)
mapfile -t packages < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$here/guest-packages.txt")
[[ ${#packages[@]} -gt 0 ]] || vm_die "no packages listed in guest-packages.txt"
packages+=("${extra_packages[@]}")
# What apt-get install is given: the packages, with the kernel pinned where the series says so.
install_args=()
[[ -n $target_release ]] && install_args+=(-t "$target_release")
for p in "${packages[@]}" "${build_only_packages[@]}"; do
    case $p in
    linux-image-amd64 | linux-headers-amd64) install_args+=("$p${kernel_release:+/$kernel_release}") ;;
    *) install_args+=("$p") ;;
    esac
done

start=$SECONDS
vm_log "building image $hash (OpenZFS $zfs_version, Debian $suite) in $build (mirror $mirror)"

# Run a command inside the guest root with a clean environment.
in_root() {
    env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        LANG=C.UTF-8 LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true \
        chroot "$root" "$@"
}

debootstrap_args=()
if [[ $suite != bookworm ]]; then
    # A newer release than the host's: its Release file must verify against the host's
    # keyring (debootstrap --keyring refuses an unsigned or unverifiable one).
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    command -v gpgv >/dev/null || vm_die "gpgv is needed to verify the $suite archive"
    curl_or_wget() {
        if command -v curl >/dev/null; then curl -fsS "$1"; else wget -qO- "$1"; fi
    }
    curl_or_wget "$mirror/dists/$suite/InRelease" >"$build/InRelease" ||
        vm_die "cannot download $mirror/dists/$suite/InRelease"
    gpgv --keyring "$keyring" "$build/InRelease" >/dev/null 2>&1 ||
        vm_die "the host's $keyring cannot verify $suite's InRelease: install a newer debian-archive-keyring (bookworm-updates ships the $suite keys)"
    vm_log "the host's debian-archive-keyring verifies $suite's InRelease"
    debootstrap_args+=(--keyring="$keyring")
fi

vm_log "[1/6] debootstrap --variant=minbase $suite"
debootstrap --variant=minbase --components=main "${debootstrap_args[@]}" "$suite" "$root" "$mirror" >&2 ||
    vm_die "debootstrap failed (see $root/debootstrap/debootstrap.log if kept)"

vm_log "[2/6] configuring apt sources (contrib${target_release:+, $target_release})"
rm -f "$root/etc/apt/sources.list"
cat >"$root/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: $mirror
Suites: $apt_suites
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security_mirror
Suites: $suite-security
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
cat >"$root/etc/apt/apt.conf.d/90zrepl-vm" <<'CONF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
// Snapshot-style mirrors serve Release files past their Valid-Until.
Acquire::Check-Valid-Until "false";
Dpkg::Options { "--force-unsafe-io"; "--force-confdef"; "--force-confold"; };
CONF
# No daemons may start inside the build chroot (openssh-server's postinst tries).
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
echo zrepl-vm >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tzrepl-vm\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
printf '# root is mounted by the kernel (root=/dev/vda rw); see /sbin/zrepl-vm-init\n' >"$root/etc/fstab"

mount -t proc proc "$root/proc"
mount -t sysfs -o ro sysfs "$root/sys"
# A private devpts instance (never the host's /dev) for apt's pty logging.
mkdir -p "$root/dev/pts"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$root/dev/pts"

vm_log "[3/6] apt-get install ${install_args[*]} (DKMS builds zfs.ko: several minutes)"
in_root apt-get update -q >&2 || vm_die "apt-get update in the guest root failed"
in_root apt-get install -y -q "${install_args[@]}" >&2 ||
    vm_die "apt-get install in the guest root failed"

kvers=()
for d in "$root"/lib/modules/*/; do
    [[ -d $d/kernel ]] && kvers+=("$(basename "$d")")
done
[[ ${#kvers[@]} -eq 1 ]] || vm_die "expected exactly one kernel in the guest, found: ${kvers[*]:-none}"
kver=${kvers[0]}
vm_log "guest kernel: $kver"

zfs_ko=$(find "$root/lib/modules/$kver" -name 'zfs.ko*' | head -n1)
[[ -n $zfs_ko ]] || vm_die "zfs.ko was NOT built for $kver (find $root/lib/modules -name 'zfs.ko*' found nothing); see the DKMS output above"
vm_log "zfs module: ${zfs_ko#"$root"}"

vm_log "[4/6] removing build-only packages (headers, compiler, dkms), keeping the built modules"
moddir=$(dirname "$zfs_ko")
rel_moddir=${moddir#"$root"}
saved=$build/saved-modules
mkdir -p "$saved"
cp -a "$moddir"/. "$saved"/
in_root apt-get purge -y -q "${build_only_packages[@]}" dkms 'linux-headers-*' >&2 ||
    vm_die "purging the build-only packages failed"
# apt Suggests dpkg-dev, which Recommends gcc: without these options the whole
# toolchain would be kept.
in_root apt-get autoremove --purge -y -q \
    -o APT::AutoRemove::SuggestsImportant=false -o APT::AutoRemove::RecommendsImportant=false >&2 ||
    vm_die "apt-get autoremove failed"
mkdir -p "$moddir"
cp -a "$saved"/. "$moddir"/
rm -rf "$saved"
in_root depmod -a "$kver" || vm_die "depmod failed"
for m in zfs spl; do
    [[ -n $(find "$root/lib/modules/$kver" -name "$m.ko*") ]] || vm_die "$m.ko missing after removing the build packages"
    in_root modinfo -k "$kver" "$m" >/dev/null || vm_die "modinfo $m fails for $kver (depmod did not index it)"
done
for p in "${packages[@]}"; do
    in_root dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' ||
        vm_die "package $p was removed while dropping the build-only packages"
done

vm_log "[5/6] slimming and installing the init"
in_root apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
    "$root"/var/lib/dkms "$root"/usr/src/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
    "$root"/usr/share/info/* "$root"/usr/share/locale/* "$root"/var/log/*.log "$root"/var/log/apt/* \
    "$root"/debootstrap "$root"/tmp/* "$root"/var/tmp/*
install -m 0755 "$here/guest-init.sh" "$root/sbin/zrepl-vm-init"

{
    echo "hash=$hash"
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "kernel=$kver"
    echo "zfs=$(in_root dpkg-query -W -f='${Version}' zfsutils-linux)"
    echo "zfs_module=${rel_moddir}"
    echo "mirror=$mirror"
} >"$out/info"
in_root dpkg-query -W -f='${Package} ${Version}\n' >"$out/packages.txt"

umount "$root/dev/pts"
umount "$root/sys"
umount "$root/proc"

vmlinuz=$root/boot/vmlinuz-$kver
initrd=$root/boot/initrd.img-$kver
[[ -f $vmlinuz ]] || vm_die "kernel $vmlinuz missing"
[[ -f $initrd ]] || vm_die "initrd $initrd missing"

# The bzImage header (offset 0x20e) points to the kernel version string.
vmlinuz_version() {
    local off
    off=$(od -An -tu2 -j 526 -N 2 "$1" | tr -d ' ')
    [[ -n $off && $off -gt 0 ]] || return 1
    dd if="$1" bs=1 skip=$((off + 512)) count=256 status=none | tr '\0' '\n' | head -n1 | cut -d' ' -f1
}
image_kver=$(vmlinuz_version "$vmlinuz") || vm_die "cannot read the version from $vmlinuz"
[[ $image_kver == "$kver" ]] || vm_die "vmlinuz is version '$image_kver' but the modules are for '$kver'"
cp "$vmlinuz" "$out/vmlinuz"
cp "$initrd" "$out/initrd.img"

vm_log "[6/6] packing root.img (mke2fs -d, $image_size sparse; root is $(du -sxh "$root" | cut -f1))"
mke2fs -q -t ext4 -L zrepl-vm-root -d "$root" "$out/root.img" "$image_size" >&2 ||
    vm_die "mke2fs -d failed"
safe_remove "$root"

echo "$hash" >"$out/ready"
touch "$out/last-used"
mv -T "$out" "$final"
safe_remove "$build"

# Prune old images (by last use), keeping the newest ZREPL_VM_CACHE_KEEP.
keep=${ZREPL_VM_CACHE_KEEP:-3}
[[ $keep =~ ^[0-9]+$ && $keep -ge 1 ]] || keep=3
n=0
while read -r dir; do
    n=$((n + 1))
    if [[ $n -gt $keep && $dir != "$final" ]]; then
        vm_log "pruning old image $dir (ZREPL_VM_CACHE_KEEP=$keep)"
        safe_remove "$dir" || true
    fi
done < <(for d in "$cache_root"/*/; do
    d=${d%/}
    [[ -f $d/ready ]] || continue
    stamp=$d/last-used
    [[ -f $stamp ]] || stamp=$d/ready
    printf '%s %s\n' "$(stat -c %Y "$stamp")" "$d"
done | sort -rn | cut -d' ' -f2-)
vm_log "image $hash ready in $((SECONDS - start)) s: $final (kernel $kver, $(du -sh "$final/root.img" | cut -f1) used)"
printf '%s\n' "$final"
