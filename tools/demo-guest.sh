#!/usr/bin/env bash
# Runs inside the test VM (see tools/demo.sh): two pools on file vdevs, a zrepl config with a push
# job and a sink job over the local transport, and the zrepl daemon replicating between them.
# Everything printed here is what zrepl and zfs really did.
set -euo pipefail
say() { printf '\n\033[1m### %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

wait_idle() { # wait until the push job finished its run; fail loudly if it did not succeed
    for _ in $(seq 1 600); do
        st=$(zrepl --config /etc/zrepl/zrepl.yml status --mode raw)
        state=$(printf '%s' "$st" | grep -o '"state":"[a-z_-]*"' | head -1 || true)
        if printf '%s' "$st" | grep -q '"prod_to_backup":{[^}]*"state":"idle"' && \
           printf '%s' "$st" | grep -q '"replication":{"state":"\(done\|failed\|cancelled\)"'; then
            break
        fi
        sleep 0.5
    done
    zrepl --config /etc/zrepl/zrepl.yml status --mode dump --job prod_to_backup
    printf '%s' "$st" | grep -q '"replication":{"state":"done"' || { echo "replication did not succeed" >&2; exit 1; }
}

say "Two pools on file vdevs: prod (the source) and backup"
truncate -s 512M /tmp/prod.img /tmp/backup.img
zpool create -f -O mountpoint=/tmp/mnt/prod prod /tmp/prod.img
zpool create -f -O mountpoint=/tmp/mnt/backup backup /tmp/backup.img
zfs create prod/home
zfs create prod/home/alice
zfs create prod/tmp
zfs create -p backup/zrepl/sink
dd if=/dev/urandom of=/tmp/mnt/prod/home/alice/data bs=1M count=24 status=none
zfs snapshot -r prod@zrepl_20261124_120000_000
run zfs list -r -t all -o name,guid,used prod

say "A zrepl 0.7 config: push job + sink job over the local transport"
mkdir -p /etc/zrepl
cat > /etc/zrepl/zrepl.yml <<'YML'
global:
  logging:
    - type: stdout
      level: info
      format: human
jobs:
- type: sink
  name: backup_sink
  root_fs: backup/zrepl/sink
  serve: {type: local, listener_name: backup_sink}
  recv:
    placeholder: {encryption: inherit}
- type: push
  name: prod_to_backup
  connect: {type: local, listener_name: backup_sink, client_identity: myhost}
  filesystems: {
    "prod<": true,
    "prod/tmp": false,
  }
  snapshotting: {type: manual}
  pruning:
    keep_sender: [{type: not_replicated}, {type: last_n, count: 10}]
    keep_receiver:
    - type: grid
      grid: 1x1h(keep=all) | 24x1h | 35x1d
      regex: "^zrepl_"
YML
cat /etc/zrepl/zrepl.yml
run zrepl configcheck
run zrepl test filesystems --job prod_to_backup --all

say "Start the daemon and wake the push job: initial replication"
zrepl daemon > /tmp/zrepl-daemon.log 2>&1 &
daemon=$!
trap 'kill $daemon 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [ -S /var/run/zrepl/control ] && break; sleep 0.1; done
run zrepl signal wakeup prod_to_backup
wait_idle
run zfs list -r -t all -o name,guid backup
say "Placeholders zrepl created for the missing parents (source local; children inherit the value)"
run zfs get -r -t filesystem -o name,value,source zrepl:placeholder backup/zrepl/sink
say "zrepl's holds: the last-received hold on the receiver"
run zfs holds -r backup/zrepl/sink/myhost/prod@zrepl_20261124_120000_000

say "New data, a new snapshot, and an incremental round"
dd if=/dev/urandom of=/tmp/mnt/prod/home/alice/more bs=1M count=8 status=none
zfs snapshot -r prod@zrepl_20261124_130000_000
run zrepl signal wakeup prod_to_backup
wait_idle
say "Sender: snapshots and zrepl's replication cursor bookmarks"
run zfs list -r -t snapshot,bookmark -o name,guid prod/home
say "Receiver: the same guids"
run zfs list -r -t snapshot -o name,guid backup/zrepl/sink/myhost/prod/home
say "Pruning dry run: what the keep rules would destroy now, and why the rest stays"
run zrepl prune --dry-run --job prod_to_backup
say "Daemon log"
cat /tmp/zrepl-daemon.log
