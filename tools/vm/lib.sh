# shellcheck shell=bash
# Shared helpers for the zrepl OpenZFS test-VM scripts (sourced, not executed).

vm_log() { printf '[zrepl-vm] %s\n' "$*" >&2; }
vm_die() { printf '[zrepl-vm] ERROR: %s\n' "$*" >&2; exit "${VM_DIE_CODE:-1}"; }

vm_require_root() {
    [[ $(id -u) -eq 0 ]] || vm_die "$(basename "$0") must run as root (debootstrap, chroot and mke2fs -d need it)"
}

# All apt source files of the host, old (.list) and deb822 (.sources) style.
vm_apt_source_files() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] && printf '%s\n' "$f"
    done
    return 0
}

# vm_find_mirror SUITE DEFAULT: print the first URI the host's apt sources use for
# the given suite (e.g. bookworm, bookworm-security), or DEFAULT if none does.
vm_find_mirror() {
    local suite=$1 default=$2 f uri=""
    while IFS= read -r f; do
        case $f in
        *.sources)
            uri=$(awk -v suite="$suite" '
                function flush() {
                    if (isdeb && hassuite && uri != "" && !done) { print uri; done = 1 }
                    isdeb = 0; hassuite = 0; uri = ""
                }
                /^[[:space:]]*$/ { flush(); next }
                /^[[:space:]]*#/ { next }
                tolower($1) == "types:"  { for (i = 2; i <= NF; i++) if ($i == "deb") isdeb = 1 }
                tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) hassuite = 1 }
                tolower($1) == "uris:"   { uri = $2 }
                tolower($1) == "enabled:" && tolower($2) == "no" { isdeb = 0; uri = ""; hassuite = 0 }
                END { flush() }
            ' "$f") ;;
        *)
            uri=$(awk -v suite="$suite" '
                $1 == "deb" {
                    i = 2
                    if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                    if ($(i + 1) == suite) { print $i; exit }
                }' "$f") ;;
        esac
        if [[ -n $uri ]]; then
            printf '%s\n' "${uri%/}"
            return 0
        fi
    done < <(vm_apt_source_files)
    printf '%s\n' "$default"
}

vm_debian_mirror()   { vm_find_mirror bookworm http://deb.debian.org/debian; }
vm_security_mirror() { vm_find_mirror bookworm-security http://deb.debian.org/debian-security; }

# The OpenZFS series of the test VM image, from ZREPL_VM_ZFS (default 2.3):
#   2.1  Debian 12's own OpenZFS 2.1.11 (bookworm/contrib, bookworm kernel 6.1)
#   2.3  bookworm-backports OpenZFS 2.3 and kernel 6.12 (the default image)
#   2.4  a Debian 13 (trixie) guest with OpenZFS 2.4 from trixie-backports, trixie kernel 6.12
# Prints the series or dies (call as `v=$(vm_zfs_version) || exit N`).
vm_zfs_version() {
    local v=${ZREPL_VM_ZFS:-2.3}
    case $v in
    2.1 | 2.3 | 2.4) printf '%s\n' "$v" ;;
    *) vm_die "ZREPL_VM_ZFS='$v' is not supported (one of 2.1, 2.3, 2.4; default 2.3)" ;;
    esac
}
