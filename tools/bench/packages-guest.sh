#!/usr/bin/env bash
# Packages benchmark (runs inside the test VM; see tools/bench-packages.sh).
#
# 1. N filesystems x S snapshots, `initial_replication: all`, by zrepl (push -> sink, local
#    transport, packages on, full safety) against the loop `zfs send fs@1 | zfs recv` then
#    `zfs send -I @1 fs@S | zfs recv` per filesystem;
# 2. a catch-up of S new snapshots on each filesystem: zrepl against one `-I` per filesystem;
# 3. one filesystem with a backlog of B snapshots: zrepl against one `zfs send -I | zfs recv`.
# Prints each time and the ratio zrepl / loop (target <= 1.2).
set -euo pipefail
N=${ZREPL_BENCH_FILESYSTEMS:-40}
S=${ZREPL_BENCH_SNAPSHOTS:-6}
B=${ZREPL_BENCH_BACKLOG:-300}
mkdir -p /tmp/bench-bin
cp "$(command -v zrepl)" /tmp/bench-bin/zrepl
export PATH=/tmp/bench-bin:$PATH
truncate -s 2G /tmp/bench.img
zpool create -f -O mountpoint=/tmp/bench bench /tmp/bench.img
for d in src loop sink big bigloop; do zfs create "bench/$d"; done
for i in $(seq -w 1 "$N"); do zfs create "bench/src/fs$i"; done
zfs create bench/big/fs
snap_round() { # S snapshots of every filesystem, 16 KiB of new data each
    local tag=$1 k
    for k in $(seq 1 "$S"); do
        for i in $(seq -w 1 "$N"); do
            dd if=/dev/urandom of="/tmp/bench/src/fs$i/$tag$k" bs=16k count=1 status=none
        done
        zfs snapshot -r "bench/src@$tag$k"
    done
}
snap_round a
mkdir -p /etc/zrepl
cat > /etc/zrepl/zrepl.yml <<YML
jobs:
- type: sink
  name: sink
  root_fs: bench/sink
  serve: {type: local, listener_name: l}
  recv: {placeholder: {encryption: inherit}}
- type: push
  name: push
  connect: {type: local, listener_name: l, client_identity: c}
  filesystems: {"bench/src<": true, "bench/src": false, "bench/big<": true, "bench/big": false}
  snapshotting: {type: manual}
  conflict_resolution: {initial_replication: all}
  replication: {packages: true, concurrency: {steps: 4}}
  pruning: {keep_sender: [{type: regex, regex: ".*"}], keep_receiver: [{type: regex, regex: ".*"}]}
YML
if [ -n "${ZREPL_BENCH_DEBUG:-}" ]; then # a debug log with times, copied next to the script
    printf 'global:\n  logging: [{type: stdout, level: debug, format: logfmt, time: true}]\n' >> /etc/zrepl/zrepl.yml
fi
here=$(cd "$(dirname "$0")" && pwd)
status() { zrepl status --mode raw; }
round() { # wake the push job, wait until its run is done; prints the replication's seconds
    local fin start
    start=$(date +%s.%N)
    # Waits without polling (the run's pruning is waited for, not timed).
    if ! zrepl signal wakeup push --wait >/tmp/round.log 2>&1; then
        cat /tmp/round.log >&2; zrepl status --mode dump >&2; return 1
    fi
    fin=$(status | grep -o '"replication":{"state":"done","started_at":"[^"]*","finished_at":"[^"]*"' | head -n 1 | sed 's/.*"finished_at":"\([^"]*\)"/\1/')
    [ -n "$fin" ] || { echo "no finished replication in zrepl status" >&2; status >&2; return 1; }
    awk -v a="$start" -v b="$(date -d "$fin" +%s.%N)" 'BEGIN {printf "%.2f", b - a}'
}
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b - a}'; }

# 1. Initial replication of everything (the big filesystem has one snapshot so far).
zfs snapshot bench/big/fs@b0
t0=$(date +%s.%N)
zfs send bench/big/fs@b0 | zfs recv bench/bigloop/fs
for i in $(seq -w 1 "$N"); do
    zfs send "bench/src/fs$i@a1" | zfs recv "bench/loop/fs$i"
    zfs send -I @a1 "bench/src/fs$i@a$S" | zfs recv "bench/loop/fs$i"
done
loop1=$(secs "$t0" "$(date +%s.%N)")
zrepl daemon > /tmp/daemon.log 2>&1 &
daemon=$!
cpu() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$daemon/stat"; } # the daemon's CPU seconds (USER_HZ 100)
trap 'kill %1 2>/dev/null || true; [ -z "${ZREPL_BENCH_DEBUG:-}" ] || cp /tmp/daemon.log "$here/daemon.log"' EXIT
for _ in $(seq 1 100); do status >/dev/null 2>&1 && break; sleep 0.1; done
c0=$(cpu)
z1=$(round)
c1=$(cpu)

# 2. Catch-up of S new snapshots each.
snap_round c
t0=$(date +%s.%N)
for i in $(seq -w 1 "$N"); do
    zfs send -I "@a$S" "bench/src/fs$i@c$S" | zfs recv "bench/loop/fs$i"
done
loop2=$(secs "$t0" "$(date +%s.%N)")
z2=$(round)
c2=$(cpu)

# 3. A backlog of B snapshots on one filesystem.
for k in $(seq 1 "$B"); do
    echo "$k" > /tmp/bench/big/fs/f
    zfs snapshot "bench/big/fs@b$k"
done
t0=$(date +%s.%N)
zfs send -I @b0 "bench/big/fs@b$B" | zfs recv bench/bigloop/fs
loop3=$(secs "$t0" "$(date +%s.%N)")
z3=$(round)
c3=$(cpu)

for i in $(seq -w 1 "$N"); do
    a=$(zfs get -Hp -o value guid "bench/src/fs$i@c$S")
    b=$(zfs get -Hp -o value guid "bench/sink/c/bench/src/fs$i@c$S")
    [ "$a" = "$b" ] || { echo "guid mismatch on fs$i" >&2; exit 1; }
done
[ "$(zfs get -Hp -o value guid "bench/big/fs@b$B")" = "$(zfs get -Hp -o value guid "bench/sink/c/bench/big/fs@b$B")" ] || { echo "guid mismatch on big" >&2; exit 1; }
awk -v c0="$c0" -v c1="$c1" -v c2="$c2" -v c3="$c3" -v n="$N" -v s="$S" -v b="$B" -v l1="$loop1" -v z1="$z1" -v l2="$loop2" -v z2="$z2" -v l3="$loop3" -v z3="$z3" 'BEGIN {
    printf "packages benchmark (replication.packages: true; loop = minimal zfs send [-I] | zfs recv)\n"
    printf "  %d filesystems x %d snapshots, initial (all):  zrepl %6.2f s, loop %6.2f s, ratio %.2f\n", n, s, z1, l1, z1 / l1
    printf "  catch-up of %d snapshots each:                 zrepl %6.2f s, loop %6.2f s, ratio %.2f\n", s, z2, l2, z2 / l2
    printf "  one filesystem, backlog of %d snapshots:     zrepl %6.2f s, loop %6.2f s, ratio %.2f\n", b, z3, l3, z3 / l3
    printf "  target: each ratio <= 1.2\n"
    printf "  the daemon'"'"'s own CPU time in the three runs (pruning included): %.2f s, %.2f s, %.2f s\n", c1 - c0, c2 - c1, c3 - c2
}'
