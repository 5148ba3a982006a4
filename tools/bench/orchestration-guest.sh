#!/usr/bin/env bash
# Orchestration benchmark (runs inside the test VM; see tools/bench-orchestration.sh).
#
# 40 filesystems, each with one new snapshot holding 64 KiB of new data. One incremental round
# by zrepl (push -> sink over the local transport, full safety: step holds, cursors,
# last-received holds) against the minimal shell loop `zfs send -i @a fs@b | zfs recv` per
# filesystem, measured in the same VM run. Prints wall times, the ratio and zfs command counts.
set -euo pipefail
OLDPWD_BENCH=$PWD
N=${ZREPL_BENCH_FILESYSTEMS:-40}
# Run zrepl from the guest's tmpfs, as an installed binary would run from a local disk: run
# from the 9p share, every start of `zrepl status` (polled below) reads the binary over 9p,
# which costs the measured round more CPU than the zfs commands.
mkdir -p /tmp/bench-bin
cp "$(command -v zrepl)" /tmp/bench-bin/zrepl
export PATH=/tmp/bench-bin:$PATH
truncate -s 1G /tmp/bench.img
zpool create -f -O mountpoint=/tmp/bench bench /tmp/bench.img
zfs create bench/src
zfs create bench/loop
zfs create bench/sink
for i in $(seq -w 1 "$N"); do zfs create "bench/src/fs$i"; done
zfs snapshot -r bench/src@a
for i in $(seq -w 1 "$N"); do
    zfs send "bench/src/fs$i@a" | zfs recv "bench/loop/fs$i"
done
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
  filesystems: {"bench/src<": true, "bench/src": false}
  snapshotting: {type: manual}
  replication: {concurrency: {steps: ${ZREPL_BENCH_STEPS:-4}}}
  pruning: {keep_sender: [{type: regex, regex: ".*"}], keep_receiver: [{type: regex, regex: ".*"}]}
YML
if [ -n "${ZREPL_BENCH_DEBUG:-}" ]; then
    printf 'global:\n  logging: [{type: stdout, level: debug, format: logfmt, time: true}]\n' >> /etc/zrepl/zrepl.yml
fi
zrepl daemon > /tmp/daemon.log 2>&1 &
daemon_pid=$!
trap 'kill %1 2>/dev/null || true' EXIT
# CPU seconds (user + system) the daemon process has used so far.
daemon_cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$daemon_pid/stat"; }
for _ in $(seq 1 100); do zrepl status --mode raw >/dev/null 2>&1 && break; sleep 0.1; done

status() { zrepl status --mode raw; }
# zfs/zpool processes and libzfs_core calls (one ioctl each) by verb.
verbs() { status | tr ',{' '\n\n' | grep -o '"\(zfs\|zpool\|libzfs_core\) [a-z]*":[0-9]*' | tr -d '"' | sort; }
count() { verbs | awk -F: '{s+=$2} END {print s+0}'; }
round() { # wake the push job and wait until its run is done
    zrepl signal wakeup push
    for _ in $(seq 1 6000); do
        st=$(status)
        if [ -n "${ZREPL_BENCH_DEBUG:-}" ]; then
            echo "$(date +%s.%N) $(printf '%s' "$st" | grep -o '"push":{[^}]*"state":"[a-z-]*"' | grep -o '"state":"[a-z-]*"' | tr '\n' ' ')" >> /tmp/bench-trace || true
        fi
        if printf '%s' "$st" | grep -q '"push":{[^}]*"state":"idle"' && printf '%s' "$st" | grep -q '"replication":{"state":"done"'; then
            return 0
        fi
        if printf '%s' "$st" | grep -q '"replication":{"state":"failed"'; then
            zrepl status --mode dump; return 1
        fi
        sleep 0.5
    done
    return 1
}
round # initial replication, not measured
for i in $(seq -w 1 "$N"); do
    dd if=/dev/urandom of="/tmp/bench/src/fs$i/new" bs=64k count=1 status=none
done
sync
zfs snapshot -r bench/src@b

t0=$(date +%s.%N)
: > /tmp/bench-trace
for i in $(seq -w 1 "$N"); do
    zfs send -i @a "bench/src/fs$i@b" | zfs recv "bench/loop/fs$i"
done
t1=$(date +%s.%N)
loop_cmds=$((N * 2))

verbs > /tmp/verbs0
c0=$(count)
cpu0=$(daemon_cpu)
t2=$(date +%s.%N)
round
t3=$(date +%s.%N)
cpu1=$(daemon_cpu)
# When the replication itself finished (the daemon's report; the job then prunes both sides).
fin=$(status | grep -o '"replication":{"state":"done","started_at":"[^"]*","finished_at":"[^"]*"' | head -n 1 | sed 's/.*"finished_at":"\([^"]*\)"/\1/' || true)
if [ -n "$fin" ]; then t_repl=$(date -d "$fin" +%s.%N); else echo "no finished_at in the status" >&2; exit 1; fi
c1=$(count)
zrepl_cmds=$((c1 - c0))
verbs > /tmp/verbs1

if [ -n "${ZREPL_BENCH_DEBUG:-}" ]; then
    # State transitions while the measured round ran.
    awk '{k = $2 " " $3} k != last {print; last = k}' /tmp/bench-trace | tail -n 20 || true
    tail -n 40 /tmp/daemon.log || true
    cp /tmp/daemon.log /tmp/bench-trace "$OLDPWD_BENCH/" 2>/dev/null || true
fi
for i in $(seq -w 1 "$N"); do
    a=$(zfs get -Hp -o value guid "bench/src/fs$i@b")
    b=$(zfs get -Hp -o value guid "bench/sink/c/bench/src/fs$i@b")
    [ "$a" = "$b" ] || { echo "guid mismatch on fs$i" >&2; exit 1; }
done
awk -v t0="$t0" -v t1="$t1" -v t2="$t2" -v t3="$t3" -v tr="$t_repl" -v cpu="$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN {print b - a}')" -v lc="$loop_cmds" -v zc="$zrepl_cmds" -v n="$N" 'BEGIN {
    l = t1 - t0; z = t3 - t2; r = tr - t2
    printf "orchestration benchmark: %d filesystems, one new 64 KiB snapshot each\n", n
    printf "  shell loop (zfs send -i | zfs recv): %.2f s, %d zfs commands\n", l, lc
    printf "  zrepl incremental round (holds, cursors): %.2f s from wake-up to replication done\n", r
    printf "    whole job run, then pruning both sides too: %.2f s (ratio %.2f; status polled every 0.5 s)\n", z, z / l
    printf "    CPU time of the zrepl daemon process itself during the run: %.2f s\n", cpu
    printf "    %d zfs commands and libzfs_core calls (%.1f per filesystem; status polling excluded):\n", zc, zc / n
    while ((getline line < "/tmp/verbs1") > 0) { split(line, a, ":"); after[a[1]] = a[2] }
    while ((getline line < "/tmp/verbs0") > 0) { split(line, a, ":"); before[a[1]] = a[2] }
    for (v in after) if (after[v] - before[v] > 0) printf "    %s: %d\n", v, after[v] - before[v]
    printf "  ratio zrepl round / loop: %.2f (target <= 1.5)\n", r / l
}'
if [ -n "${ZREPL_BENCH_EXPERIMENTS:-}" ]; then
    kill %1 2>/dev/null || true
    sleep 1
    t() { local s e; s=$(date +%s%N); "$@" > /dev/null; e=$(date +%s%N); echo "$(( (e - s) / 1000000 )) ms: $*"; }
    zfs get -H -o name,value mounted,canmount,mountpoint bench/sink/c/bench/src/fs01 bench/loop/fs01 bench/src/fs01
    t zfs list -H -p -o name,guid,createtxg,creation,userrefs -r -t filesystem,volume,snapshot,bookmark -s createtxg bench/src
    t zfs list -H -p -o name,guid,createtxg,creation,userrefs -r -t filesystem,volume,snapshot,bookmark -s createtxg bench/sink/c/bench/src
    t zfs list -H -p -o name,guid,createtxg,creation,userrefs -r -t filesystem,volume,snapshot,bookmark -s createtxg bench/loop
    t zfs list -H -p -o name -r -t filesystem,volume bench/src
    t zfs list -H -p -o name -r -t filesystem,volume bench/sink
    t zfs list -H -p -o name -r -t filesystem,volume bench/loop
    t zfs list -H -p -o name -r -t snapshot bench/sink
    t zfs list -H -p -o name -r -t snapshot bench/loop
    t zfs get -Hp -o name,property,value,source -r -t filesystem,volume zrepl:placeholder,receive_resume_token bench/sink/c
    t zfs get -Hp -o name,property,value,source -r -t filesystem,volume zrepl:placeholder bench/src
    t zfs list -H -p -o name,zrepl:placeholder,receive_resume_token -r -t filesystem,volume bench/sink/c
    t zfs list -H -p -o name,zrepl:placeholder -r -t filesystem,volume bench/src
    snaps=$(for i in $(seq -w 1 "$N"); do echo "bench/src/fs$i@b"; done)
    t zfs hold exp1 $snaps
    t zfs release exp1 $snaps
    par() { # run "$@" SNAP... in 8 parallel chunks
        local cmd=$1 tag=$2; shift 2
        printf '%s\n' "$@" | xargs -n $(( ($# + 7) / 8 )) -P 8 zfs "$cmd" "$tag"
    }
    t par hold exp2 $snaps
    t par release exp2 $snaps
    t zfs program -j bench /dev/stdin < /dev/null
    echo 'return 0' > /tmp/p.lua
    t zfs program -j bench /tmp/p.lua
    t zfs list -H -o name bench
    t zfs get -H -o value guid bench
fi
