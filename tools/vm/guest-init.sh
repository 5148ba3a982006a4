#!/bin/bash
# PID 1 of the zrepl OpenZFS test VM (installed as /sbin/zrepl-vm-init by
# build-image.sh; the kernel runs it via init=). No systemd: mount the basics,
# share the host directory over 9p at /mnt/host, load zfs, run the command that
# run-in-vm.sh wrote to /mnt/host/.vm-cmd.sh, record its exit code in
# /mnt/host/.vm-exit-code and power off.
#
# Markers written to /mnt/host for run-in-vm.sh:
#   .vm-booted      9p share mounted (the VM booted)
#   .vm-zfs-failed  `modprobe zfs` failed (command not run)
#   .vm-exit-code   exit code of the command (written last)

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 TERM=dumb

say() { echo "[zrepl-vm guest] $*"; }

halt_vm() {
    sync
    # poweroff -f needs systemd-sysv or sysvinit; the sysrq trigger always works.
    if command -v poweroff >/dev/null 2>&1; then poweroff -f; fi
    echo o >/proc/sysrq-trigger
    sleep 30
    exit 1 # init exiting panics the kernel; panic=-1 + qemu -no-reboot end the VM
}

fatal() {
    say "FATAL: $*"
    halt_vm
}

mnt() { # mnt TYPE TARGET [OPTIONS]: mount unless something already is (initramfs moves some)
    mkdir -p "$2"
    mountpoint -q "$2" || mount -t "$1" ${3:+-o "$3"} "$1" "$2" || fatal "cannot mount $1 on $2"
}

mnt proc /proc
mnt sysfs /sys
mnt devtmpfs /dev
mnt devpts /dev/pts gid=5,mode=620,ptmxmode=666
mnt tmpfs /dev/shm mode=1777
mnt tmpfs /run mode=0755
mnt tmpfs /tmp mode=1777,size=50%
mkdir -p /run/lock /run/sshd /var/tmp

# Plain \n on the serial console instead of \r\n (the host log stays clean).
stty -onlcr </dev/console 2>/dev/null || true

echo zrepl-vm >/proc/sys/kernel/hostname
ip link set lo up || fatal "cannot bring up lo"

modprobe 9pnet_virtio || fatal "modprobe 9pnet_virtio failed"
mkdir -p /mnt/host
mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576 host0 /mnt/host ||
    fatal "cannot mount the host directory (9p tag host0) on /mnt/host"
: >/mnt/host/.vm-booted

# Keep the ARC at a quarter of the RAM: /tmp (tmpfs) holds the file vdevs and
# there is no swap, so a large ARC caching the same data again can OOM the VM.
mem_kb=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
if ! modprobe zfs zfs_arc_max=$((mem_kb * 1024 / 4)); then
    : >/mnt/host/.vm-zfs-failed
    fatal "modprobe zfs failed"
fi
[[ -c /dev/zfs ]] || { : >/mnt/host/.vm-zfs-failed; fatal "/dev/zfs missing after modprobe zfs"; }

# udevd creates the /dev/zvol/... links for zvols (rules from zfsutils-linux).
if [[ -x /lib/systemd/systemd-udevd ]]; then
    /lib/systemd/systemd-udevd --daemon >/dev/null 2>&1 || say "warning: systemd-udevd did not start"
fi

say "booted $(uname -r), $(cat /sys/module/zfs/version 2>/dev/null | sed 's/^/zfs-kmod /'), $(( $(awk '/^MemTotal:/ { print $2 }' /proc/meminfo) / 1024 )) MiB RAM, $(nproc) CPUs, uptime $(cut -d' ' -f1 /proc/uptime)s"

cd /mnt/host || fatal "cannot cd to /mnt/host"
if [[ -f /mnt/host/.vm-cmd.sh ]]; then
    bash /mnt/host/.vm-cmd.sh </dev/null
    rc=$?
else
    say "no /mnt/host/.vm-cmd.sh: nothing to run"
    rc=127
fi
say "command exited with code $rc (uptime $(cut -d' ' -f1 /proc/uptime)s)"
echo "$rc" >/mnt/host/.vm-exit-code.tmp && mv /mnt/host/.vm-exit-code.tmp /mnt/host/.vm-exit-code
cd /
halt_vm
