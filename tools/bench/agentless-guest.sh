#!/usr/bin/env bash
# Agentless benchmark (runs inside the test VM; see tools/bench-agentless.sh).
#
# N filesystems replicated to an agentless remote over a real sshd on loopback (the remote is
# the same pool: what is measured is the protocol's cost, not the network's). After the
# initial replication, each filesystem gets one new snapshot; one incremental round is timed
# for zrepl (`connect: {type: ssh+zfs}`), syncoid 2.1 (Debian's, `--recursive
# --no-sync-snap`) and the minimal loop `zfs send -i | ssh host zfs recv` over one shared ssh
# connection. Prints the times and the ratios (target: zrepl faster than syncoid).
set -euo pipefail
N=${ZREPL_BENCH_FILESYSTEMS:-40}
here=$PWD
export PERL5LIB=$here/perl/usr/share/perl5:$here/perl/usr/share/perl/5.36
syncoid() { perl "$here/perl/usr/sbin/syncoid" "$@"; }
mkdir -p /tmp/bench-bin
cp "$(command -v zrepl)" /tmp/bench-bin/zrepl
export PATH=/tmp/bench-bin:$PATH
truncate -s 2G /tmp/bench.img
zpool create -f -O mountpoint=/tmp/bench bench /tmp/bench.img
for d in src remote synco loop; do zfs create "bench/$d"; done
for i in $(seq -w 1 "$N"); do
    zfs create "bench/src/fs$i"
    dd if=/dev/urandom of="/tmp/bench/src/fs$i/a" bs=64k count=1 status=none
done
zfs snapshot -r bench/src@a1

# sshd on 127.0.0.1:2230, root by key.
ssh-keygen -A >/dev/null
mkdir -p /run/sshd /tmp/bssh
ssh-keygen -q -t ed25519 -N "" -f /tmp/bssh/id
cp /tmp/bssh/id.pub /tmp/bssh/authorized_keys
/usr/sbin/sshd -p 2230 -o ListenAddress=127.0.0.1 -o AuthorizedKeysFile=/tmp/bssh/authorized_keys \
    -o StrictModes=no -o PermitRootLogin=prohibit-password -o PasswordAuthentication=no
echo "[127.0.0.1]:2230 $(cat /etc/ssh/ssh_host_ed25519_key.pub)" > /tmp/bssh/known_hosts
SSH=(ssh -p 2230 -i /tmp/bssh/id -o UserKnownHostsFile=/tmp/bssh/known_hosts -o BatchMode=yes
    -o ControlMaster=auto -o ControlPath=/tmp/bssh/loop-ctl -o ControlPersist=60)
for _ in $(seq 1 100); do "${SSH[@]}" root@127.0.0.1 true 2>/dev/null && break; sleep 0.1; done

mkdir -p /etc/zrepl
cat > /etc/zrepl/zrepl.yml <<YML
global:
  serve: {stdinserver: {sockdir: /tmp/bssh/zrepl}}
jobs:
- type: push
  name: push
  connect: {type: ssh+zfs, host: 127.0.0.1, port: 2230, user: root, identity_file: /tmp/bssh/id, known_hosts: /tmp/bssh/known_hosts, root_fs: bench/remote, recv: {placeholder: {encryption: inherit}}}
  filesystems: {"bench/src<": true, "bench/src": false}
  snapshotting: {type: manual}
  replication: {concurrency: {steps: 4}}
  pruning: {keep_sender: [{type: regex, regex: ".*"}], keep_receiver: [{type: regex, regex: ".*"}]}
YML
status() { zrepl status --mode raw; }
round() { # wake the push job, wait until its run is done; prints the replication's seconds
    local st fin start
    start=$(date +%s.%N)
    zrepl signal wakeup push
    for _ in $(seq 1 20000); do
        st=$(status)
        if printf '%s' "$st" | grep -q '"push":{[^}]*"state":"idle"' && printf '%s' "$st" | grep -q '"replication":{"state":"done"'; then
            fin=$(printf '%s' "$st" | grep -o '"replication":{"state":"done","started_at":"[^"]*","finished_at":"[^"]*"' | head -n 1 | sed 's/.*"finished_at":"\([^"]*\)"/\1/')
            awk -v a="$start" -v b="$(date -d "$fin" +%s.%N)" 'BEGIN {printf "%.2f", b - a}'
            return 0
        fi
        if printf '%s' "$st" | grep -q '"replication":{"state":"failed"'; then
            zrepl status --mode dump >&2; return 1
        fi
        sleep 0.2
    done
    return 1
}
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b - a}'; }
SYNCOID_ARGS=(--recursive --no-sync-snap --compress=none --quiet --sshport=2230 --sshkey=/tmp/bssh/id
    --sshoption=UserKnownHostsFile=/tmp/bssh/known_hosts --sshoption=BatchMode=yes)

# Initial replication by each (not timed).
zrepl daemon > /tmp/daemon.log 2>&1 &
trap 'kill %1 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do status >/dev/null 2>&1 && break; sleep 0.1; done
round >/dev/null
syncoid "${SYNCOID_ARGS[@]}" bench/src root@127.0.0.1:bench/synco/src
for i in $(seq -w 1 "$N"); do
    zfs send "bench/src/fs$i@a1" | "${SSH[@]}" root@127.0.0.1 zfs recv "bench/loop/fs$i"
done

# One new snapshot on every filesystem; one incremental round each.
for i in $(seq -w 1 "$N"); do
    dd if=/dev/urandom of="/tmp/bench/src/fs$i/b" bs=16k count=1 status=none
done
zfs snapshot -r bench/src@a2
z=$(round)
t0=$(date +%s.%N)
syncoid "${SYNCOID_ARGS[@]}" bench/src root@127.0.0.1:bench/synco/src
s=$(secs "$t0" "$(date +%s.%N)")
t0=$(date +%s.%N)
for i in $(seq -w 1 "$N"); do
    zfs send -i @a1 "bench/src/fs$i@a2" | "${SSH[@]}" root@127.0.0.1 zfs recv "bench/loop/fs$i"
done
l=$(secs "$t0" "$(date +%s.%N)")

for i in $(seq -w 1 "$N"); do
    a=$(zfs get -Hp -o value guid "bench/src/fs$i@a2")
    for dst in "bench/remote/bench/src/fs$i" "bench/synco/src/fs$i" "bench/loop/fs$i"; do
        b=$(zfs get -Hp -o value guid "$dst@a2")
        [ "$a" = "$b" ] || { echo "guid mismatch on $dst" >&2; exit 1; }
    done
done
awk -v n="$N" -v z="$z" -v s="$s" -v l="$l" 'BEGIN {
    printf "agentless benchmark: one incremental round of %d filesystems to a remote over sshd (loopback)\n", n
    printf "  zrepl (ssh+zfs)        %6.2f s\n", z
    printf "  syncoid --recursive    %6.2f s   zrepl / syncoid = %.2f (target < 1)\n", s, z / s
    printf "  loop send -i | ssh recv %5.2f s   zrepl / loop    = %.2f\n", l, z / l
}'
