#!/usr/bin/env bash
# Scale benchmark (runs inside the test VM; see tools/bench-scale.sh).
#
# A tree of N filesystems with S snapshots each (one recursive `zfs snapshot` per snapshot),
# replicated inside one pool (what is measured is the tools' cost, not a network's) by:
#   zrepl   a push job to a sink in the same daemon (`local` transport), concurrency.steps 4;
#   loop    the minimal shell loop: `zfs send [-i] | zfs recv` per filesystem;
#   bzfs    bzfs (PyPI) with --recursive --cache-snapshots, its defaults otherwise.
# Three rounds each: the initial replication (the most recent snapshot only), a round with
# nothing new, and a round with one new snapshot on every filesystem. Prints the times, the
# ratios and the daemon's peak RSS. zrepl's run prunes after it replicates (keep-all rules
# here: it lists both sides and destroys nothing); the loop and bzfs do not prune, so the
# replication alone (until its end as the daemon reports it) is printed too.
# Targets (issue 22): no-op round <= 2x one `zfs list -t filesystem` of the tree; incremental
# round <= 1.3x the loop; zrepl faster than bzfs in all three.
set -euo pipefail
N=${ZREPL_BENCH_FILESYSTEMS:-1000}
S=${ZREPL_BENCH_SNAPSHOTS:-100}
here=$PWD
py() {
    LD_LIBRARY_PATH=$here/py/usr/lib/x86_64-linux-gnu:$here/py/lib/x86_64-linux-gnu \
        PYTHONHOME=$here/py/usr PYTHONPATH=$here/bzfs "$here/py/usr/bin/python3.11" "$@"
}
bzfs() { py -c "from bzfs_main.bzfs import main; main()" "$@"; }
mkdir -p /tmp/bench-bin
cp "$(command -v zrepl)" /tmp/bench-bin/zrepl
export PATH=/tmp/bench-bin:$PATH
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b - a}'; }

truncate -s 8G /tmp/bench.img
zpool create -f -O mountpoint=none bench /tmp/bench.img
for d in src zrepl loop bzfs bzfs/src; do zfs create "bench/$d"; done
t0=$(now)
for i in $(seq -w 1 "$N"); do zfs create "bench/src/fs$i"; done
for s in $(seq -w 1 "$S"); do zfs snapshot -r "bench/src@s$s"; done
echo "setup: $N filesystems x $S snapshots in $(secs "$t0" "$(now)") s" >&2
last=s$(seq -w 1 "$S" | tail -n 1)
sleep 3 # snapshots_changed has one-second resolution

t0=$(now)
zfs list -H -o name -t filesystem -r bench/src >/dev/null
fslist=$(secs "$t0" "$(now)")

mkdir -p /etc/zrepl
cat > /etc/zrepl/zrepl.yml <<YML
jobs:
- type: sink
  name: sink
  root_fs: bench/zrepl
  recv: {placeholder: {encryption: inherit}}
  serve: {type: local, listener_name: bench}
- type: push
  name: push
  connect: {type: local, listener_name: bench, client_identity: c}
  filesystems: {"bench/src<": true, "bench/src": false}
  snapshotting: {type: manual}
  replication: {concurrency: {steps: 4}}
  pruning: {keep_sender: [{type: regex, regex: ".*"}], keep_receiver: [{type: regex, regex: ".*"}]}
YML
if [ -n "${ZREPL_BENCH_DEBUG:-}" ]; then # a debug log with times, copied next to the script
    printf 'global:\n  logging: [{type: stdout, level: debug, format: logfmt, time: true}]\n' >> /etc/zrepl/zrepl.yml
fi
status() { zrepl status --mode raw; }
round() { # wakes the push job, waits until its run (replication and pruning) is over; prints
    # "<seconds of the whole run> <seconds until the replication's end as the daemon reports it>"
    local start end fin
    start=$(now)
    if ! zrepl signal wakeup push --wait >/tmp/round.log 2>&1; then
        cat /tmp/round.log >&2; zrepl status --mode dump >&2; return 1
    fi
    end=$(now)
    fin=$(status | grep -o '"replication":{"state":"done","started_at":"[^"]*","finished_at":"[^"]*"' | head -n 1 | sed 's/.*"finished_at":"\([^"]*\)"/\1/')
    [ -n "$fin" ] || { echo "no finished replication in zrepl status" >&2; status >&2; return 1; }
    echo "$(secs "$start" "$end") $(secs "$start" "$(date -d "$fin" +%s.%N)")"
}
lists() { status | grep -o '"zfs list":[0-9]*' | head -n 1 | cut -d: -f2; }
zrepl daemon > /tmp/daemon.log 2>&1 &
daemon=$!
trap 'kill $daemon 2>/dev/null || true; [ -z "${ZREPL_BENCH_DEBUG:-}" ] || cp /tmp/daemon.log "$here/daemon.log"' EXIT
for _ in $(seq 1 100); do status >/dev/null 2>&1 && break; sleep 0.1; done
BZFS=(--recursive --skip-parent --cache-snapshots --include-snapshot-times-and-ranks notime 'latest 1'
    --log-dir /tmp/bzfs-logs)

# 1. Initial replication, the most recent snapshot of each filesystem.
read -r zi zir < <(round)
[ -n "$zir" ] || { echo "round failed" >&2; exit 1; }
t0=$(now)
for i in $(seq -w 1 "$N"); do zfs send "bench/src/fs$i@$last" | zfs recv -u "bench/loop/fs$i"; done
li=$(secs "$t0" "$(now)")
t0=$(now)
bzfs "${BZFS[@]}" bench/src bench/bzfs/src >/tmp/bzfs-initial.log 2>&1
bi=$(secs "$t0" "$(now)")
sleep 3

# 2. Nothing new. The first round after the initial one lists what changed there; the one
# after it is the steady state that is timed.
round >/dev/null
sleep 3
l0=$(lists)
read -r zn znr < <(round)
[ -n "$znr" ] || { echo "round failed" >&2; exit 1; }
zn_lists=$(( $(lists) - l0 ))
t0=$(now)
zfs list -H -o name,guid -t snapshot -r bench/src >/dev/null
zfs list -H -o name,guid -t snapshot -r bench/loop >/dev/null
ln=$(secs "$t0" "$(now)")
bzfs "${BZFS[@]}" bench/src bench/bzfs/src >/tmp/bzfs-noop0.log 2>&1
t0=$(now)
bzfs "${BZFS[@]}" bench/src bench/bzfs/src >/tmp/bzfs-noop.log 2>&1
bn=$(secs "$t0" "$(now)")

# 3. One new snapshot on every filesystem.
zfs snapshot -r bench/src@new
sleep 3
read -r zu zur < <(round)
[ -n "$zur" ] || { echo "round failed" >&2; exit 1; }
t0=$(now)
for i in $(seq -w 1 "$N"); do zfs send -i "@$last" "bench/src/fs$i@new" | zfs recv -u "bench/loop/fs$i"; done
lu=$(secs "$t0" "$(now)")
t0=$(now)
bzfs "${BZFS[@]}" bench/src bench/bzfs/src >/tmp/bzfs-incr.log 2>&1
bu=$(secs "$t0" "$(now)")
rss=$(awk '/VmHWM/ {print $2}' "/proc/$daemon/status")

for i in $(seq -w 1 "$N"); do
    a=$(zfs get -Hp -o value guid "bench/src/fs$i@new")
    for dst in "bench/zrepl/c/bench/src/fs$i" "bench/loop/fs$i" "bench/bzfs/src/fs$i"; do
        b=$(zfs get -Hp -o value guid "$dst@new")
        [ "$a" = "$b" ] || { echo "guid mismatch on $dst" >&2; exit 1; }
    done
done
awk -v n="$N" -v s="$S" -v f="$fslist" -v zi="$zi" -v li="$li" -v bi="$bi" -v zn="$zn" \
    -v zl="$zn_lists" -v ln="$ln" -v bn="$bn" -v zu="$zu" -v lu="$lu" -v bu="$bu" -v rss="$rss" \
    -v zir="$zir" -v znr="$znr" -v zur="$zur" 'BEGIN {
    printf "scale benchmark: %d filesystems x %d snapshots, one pool (OpenZFS in the test VM)\n", n, s
    printf "  zfs list -t filesystem -r   %8.2f s\n", f
    printf "  initial (most recent)  zrepl %8.2f s  loop %8.2f s  bzfs %8.2f s   zrepl/loop %.2f  zrepl/bzfs %.2f\n", zi, li, bi, zi / li, zi / bi
    printf "  no-op round            zrepl %8.2f s  loop %8.2f s  bzfs %8.2f s   zrepl/fs-list %.2f (target <= 2)  zrepl/bzfs %.2f\n", zn, ln, bn, zn / f, zn / bn
    printf "                         (zrepl: %d zfs list processes in the no-op run)\n", zl
    printf "  one new snapshot each  zrepl %8.2f s  loop %8.2f s  bzfs %8.2f s   zrepl/loop %.2f (target <= 1.3)  zrepl/bzfs %.2f\n", zu, lu, bu, zu / lu, zu / bu
    printf "  replication alone (the run minus its pruning, which the loop and bzfs do not do):\n"
    printf "    initial %.2f s (zrepl/loop %.2f), no-op %.2f s, one new snapshot each %.2f s (zrepl/loop %.2f)\n", zir, zir / li, znr, zur, zur / lu
    printf "  daemon peak RSS %.1f MiB\n", rss / 1024
}'
