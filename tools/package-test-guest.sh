#!/usr/bin/env bash
# Runs inside the test VM booted with systemd (see tools/package-test.sh): the Debian package's
# life as an administrator lives it, on one host that plays both `prod` and `backups` of
# docs/quickstart/continuous-backup.md. Every check prints `ok: ...`; the first failure prints
# the unit's journal and exits 1. The last line is `package-test: N passed, 0 failed`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
here=$PWD
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8
passed=0
t0=$(date +%s)

step() { printf '\n=== [%3ss] %s\n' "$(($(date +%s) - t0))" "$*"; }
diag() {
    echo "--- systemctl status zrepl"
    systemctl status --no-pager zrepl 2>&1 | head -n 30 || true
    echo "--- journalctl -u zrepl (last 80 lines)"
    journalctl --no-pager -u zrepl 2>&1 | tail -n 80 || true
}
fail() {
    echo "FAIL: $*"
    diag
    echo "package-test: $passed passed, 1 failed"
    exit 1
}
ok() { echo "ok: $*"; passed=$((passed + 1)); }
check() { # check DESCRIPTION COMMAND...: the command must succeed
    local d=$1
    shift
    if "$@"; then ok "$d"; else fail "$d (command: $*)"; fi
}
equals() { # equals DESCRIPTION EXPECTED ACTUAL
    if [[ $2 == "$3" ]]; then ok "$1 ($3)"; else fail "$1: expected '$2', got '$3'"; fi
}
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...: poll every second until it succeeds
    local secs=$1 d=$2 i
    shift 2
    for ((i = 0; i < secs; i++)); do
        if "$@" >/dev/null 2>&1; then
            ok "$d (after ${i}s)"
            return 0
        fi
        sleep 1
    done
    fail "$d: not within ${secs}s (command: $*)"
}
prop() { zfs get -H -p -o value "$1" "$2"; }
unit() { systemctl show -p "$1" --value zrepl; }

step "the guest runs systemd"
equals "PID 1" systemd "$(cat /proc/1/comm)"
# The image was built in a chroot with a policy-rc.d that forbids starting services; a real
# installation has none, so that the package's postinst starts the service.
rm -f /usr/sbin/policy-rc.d

step "apt install the package (default config, no jobs)"
apt-get install -y -q ./zrepl-old.deb
equals "installed version" "1:0.1.0-1" "$(dpkg-query -W -f='${Version}' zrepl)"
equals "unit enabled by the package" enabled "$(systemctl is-enabled zrepl)"
wait_for 60 "service active with the default config" systemctl is-active --quiet zrepl
check "the default /etc/zrepl/zrepl.yml passes configcheck" zrepl configcheck
equals "/etc/zrepl is private" 700 "$(stat -c %a /etc/zrepl)"
equals "/etc/zrepl/zrepl.yml mode" 600 "$(stat -c %a /etc/zrepl/zrepl.yml)"
check "conffile registered" grep -qx ' */etc/zrepl/zrepl.yml [0-9a-f]*' <(dpkg-query -W -f='${Conffiles}\n' zrepl)
check "control socket at zrepl's default path" test -S /var/run/zrepl/control
equals "runtime directory mode" 700 "$(stat -L -c %a /run/zrepl)"
check "stdinserver socket directory" test -d /run/zrepl/stdinserver
check "zrepl status talks to the daemon" zrepl status --mode raw
check "man page installed" test -s /usr/share/man/man1/zrepl.1.gz
check "man page is zrepl's" bash -c 'zcat /usr/share/man/man1/zrepl.1.gz | grep -q "^\.TH zrepl"'
check "bash completion loads" bash -c '. /usr/share/bash-completion/completions/zrepl && complete -p zrepl'
check "zsh completion installed" grep -q '#compdef zrepl' /usr/share/zsh/vendor-completions/_zrepl
check "fish completion installed" grep -q 'complete -c zrepl' /usr/share/fish/vendor_completions.d/zrepl.fish
check "examples installed" test -s /usr/share/doc/zrepl/examples/continuous-backup-prod.yml
pid=$(unit MainPID)
equals "the daemon shares the host's mount namespace (mounts it makes are everyone's)" \
    "$(readlink /proc/1/ns/mnt)" "$(readlink "/proc/$pid/ns/mnt")"
equals "NoNewPrivileges" yes "$(unit NoNewPrivileges)"

step "pools: zroot (prod) and storage (backups) on file vdevs"
truncate -s 384M /tmp/zroot.img /tmp/storage.img
zpool create -f zroot /tmp/zroot.img
zpool create -f -O mountpoint=none storage /tmp/storage.img
zfs create zroot/home
zfs create zroot/home/alice
zfs create zroot/home/paranoid
zfs create -p zroot/var/tmp
dd if=/dev/urandom of=/zroot/home/alice/data bs=1M count=8 status=none
echo "hello from prod" >/zroot/home/hello.txt
# As the quickstart says: a dataset for zrepl, not mounted.
zfs create -p -o mountpoint=none storage/zrepl/sink
zfs create -o mountpoint=none storage/view

step "certificates, made with the quickstart's commands as written"
mkdir -p /root/certs
awk '/<!-- certificates:begin -->/ { on = 1; next } /<!-- certificates:end -->/ { on = 0 }
     on && !/^```/ { print }' "$here/continuous-backup.md" >/root/certs/make-certs.sh
check "certificate commands found in the quickstart" grep -q 'openssl x509 -req' /root/certs/make-certs.sh
(cd /root/certs && bash -e make-certs.sh) 2>&1 | sed 's/^/    /'
cp /root/certs/{ca.crt,prod.crt,prod.key,backups.crt,backups.key} /etc/zrepl/
echo "127.0.0.1 backups.example.com" >>/etc/hosts

step "the configuration: the quickstart's two example files, and a mounted view of zroot/home"
cat >/etc/zrepl/zrepl.yml <<'YML'
global:
  logging:
    - type: syslog
      format: human
      level: info

# prod's push job and backups' sink job, as shipped (docs/quickstart/continuous-backup.md).
include:
  - /usr/share/doc/zrepl/examples/continuous-backup-prod.yml
  - /usr/share/doc/zrepl/examples/continuous-backup-backups.yml

jobs:
  # A browsable copy of zroot/home: received with a mountpoint, so the sink creates and
  # mounts datasets (what ProtectSystem= in zrepl's unit broke, zrepl#898).
  - name: home_to_view
    type: push
    connect: {type: local, listener_name: view_sink, client_identity: prod}
    filesystems: {"zroot/home": true}
    snapshotting: {type: manual}
    pruning:
      keep_sender: [{type: regex, regex: ".*"}]
      keep_receiver: [{type: regex, regex: ".*"}]
  - name: view_sink
    type: sink
    root_fs: storage/view
    serve: {type: local, listener_name: view_sink}
    recv:
      placeholder: {encryption: inherit}
      properties:
        override: {mountpoint: /srv/zrepl-view/home}
YML
check "configcheck of the push -> sink config" zrepl configcheck
systemctl restart zrepl
wait_for 30 "service active with the push -> sink config" systemctl is-active --quiet zrepl
alice=storage/zrepl/sink/prod/zroot/home/alice
wait_for 300 "prod_to_backups replicated zroot/home/alice over TLS (periodic snapshot at start)" \
    bash -c "zfs list -H -t snapshot -o name -r $alice | grep -q @zrepl_"
snap=$(zfs list -H -t snapshot -o name -s createtxg -r zroot/home/alice | grep @zrepl_ | tail -n 1)
snap=${snap#*@}
wait_for 60 "received $snap has the sender's GUID" \
    bash -c "[[ \$(zfs get -H -p -o value guid $alice@$snap) == \$(zfs get -H -p -o value guid zroot/home/alice@$snap) ]]"
check "zroot/var/tmp is excluded" bash -c '! zfs list storage/zrepl/sink/prod/zroot/var/tmp 2>/dev/null'
check "zroot/home/paranoid is excluded" bash -c '! zfs list storage/zrepl/sink/prod/zroot/home/paranoid 2>/dev/null'
# The cursor and the last-received hold move when the round's steps are all done (a round
# completes its steps together), which can be well after this filesystem's data arrived.
wait_for 120 "replication cursor on the sender" bash -c 'zfs list -H -t bookmark -o name zroot/home/alice | grep -q "#zrepl_CURSOR_G_[0-9a-f]*_J_prod_to_backups$"'
wait_for 120 "last-received hold on the receiver" bash -c "zfs holds -H $alice@$snap | grep -q zrepl_last_received_J_sink"

check "zrepl signal wakeup home_to_view" zrepl signal wakeup home_to_view
view=storage/view/prod/zroot/home
wait_for 120 "the view sink received zroot/home and mounted it" \
    bash -c "[[ \$(zfs get -H -o value mounted $view 2>/dev/null) == yes ]]"
equals "the mount is visible outside the service" "$view" "$(findmnt -n -o SOURCE /srv/zrepl-view/home)"
check "the received data reads back" cmp /zroot/home/hello.txt /srv/zrepl-view/home/hello.txt

step "upgrade to revision 2: config kept, service restarted"
sum_before=$(sha256sum /etc/zrepl/zrepl.yml)
pid_before=$(unit MainPID)
apt-get install -y -q ./zrepl-new.deb
equals "upgraded version" "1:0.1.0-2" "$(dpkg-query -W -f='${Version}' zrepl)"
equals "the administrator's config is untouched" "$sum_before" "$(sha256sum /etc/zrepl/zrepl.yml)"
wait_for 30 "service active after the upgrade" systemctl is-active --quiet zrepl
pid_after=$(unit MainPID)
check "the upgrade restarted the daemon (pid $pid_before -> $pid_after)" test "$pid_before" != "$pid_after"
equals "no crash restarts" 0 "$(unit NRestarts)"
dd if=/dev/urandom of=/zroot/home/alice/more bs=1M count=2 status=none
snap2=zrepl_$(date -u +%Y%m%d_%H%M%S)_000
zfs snapshot -r "zroot@$snap2"
check "zrepl signal wakeup prod_to_backups" zrepl signal wakeup prod_to_backups
wait_for 300 "incremental round after the upgrade replicated @$snap2" zfs list "$alice@$snap2"

step "systemctl stop: clean"
stop_start=$(date +%s)
systemctl stop zrepl
equals "stopped within" 1 "$(( $(date +%s) - stop_start < 30 ))"
equals "ActiveState" inactive "$(unit ActiveState)"
equals "Result" success "$(unit Result)"
equals "daemon exit status" 0 "$(unit ExecMainStatus)"
check "runtime directory removed" test ! -e /run/zrepl
check "no zrepl process left" bash -c '! pgrep -x zrepl'
check "the daemon logged its shutdown to the journal" bash -c 'journalctl --no-pager -u zrepl | grep -q "received termination signal"'

step "apt remove: binary gone, config kept"
apt-get remove -y -q zrepl
check "binary removed" test ! -e /usr/bin/zrepl
equals "state" "deinstall ok config-files" "$(dpkg-query -W -f='${Status}' zrepl)"
equals "config kept" "$sum_before" "$(sha256sum /etc/zrepl/zrepl.yml)"

step "apt purge: config and unit state gone, the administrator's other files kept"
apt-get purge -y -q zrepl
check "package gone" bash -c '! dpkg-query -W zrepl 2>/dev/null'
check "conffile removed" test ! -e /etc/zrepl/zrepl.yml
check "unit file removed" test ! -e /usr/lib/systemd/system/zrepl.service
check "enablement removed" test ! -e /etc/systemd/system/multi-user.target.wants/zrepl.service
check "certificates (not the package's) kept" test -f /etc/zrepl/prod.key
check "replicated data untouched" zfs list "$alice@$snap2"

echo
echo "package scenario finished in $(($(date +%s) - t0)) s"
echo "package-test: $passed passed, 0 failed"
