#!/usr/bin/env bash
# Runs inside the test VM (see tools/demo.sh): two pools on file vdevs, a zrepl config, and zrepl
# working on them. Everything printed here is what zrepl and zfs really did.
set -euo pipefail
say() { printf '\n\033[1m### %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

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

say "A zrepl 0.7 config (push over the local transport into a sink)"
cat > /tmp/zrepl.yml <<'YML'
jobs:
- type: sink
  name: backup_sink
  root_fs: backup/zrepl/sink
  serve: {type: local, listener_name: backup_sink}
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
run zrepl --config /tmp/zrepl.yml configcheck
run zrepl --config /tmp/zrepl.yml configcheck --format yaml --what jobs

say "Which datasets does the push job replicate? (zfs list through zrepl's zfs layer)"
run zrepl --config /tmp/zrepl.yml test filesystems --job prod_to_backup --all

say "An interrupted resumable receive, decoded by zrepl without spawning zfs"
set +o pipefail
zfs send prod/home/alice@zrepl_20261124_120000_000 | head -c 4000000 | zfs recv -s backup/zrepl/sink/alice 2>/dev/null
set -o pipefail
token=$(zfs get -H -o value receive_resume_token backup/zrepl/sink/alice)
printf 'receive_resume_token = %.60s...\n' "$token"
run zrepl test decoderesumetoken --token "$token"
run zfs list -H -o guid prod/home/alice@zrepl_20261124_120000_000

say "Resuming from the token completes the transfer"
zfs send -t "$token" | zfs recv -s backup/zrepl/sink/alice
run zfs list -t snapshot -o name,guid -r backup prod/home/alice
