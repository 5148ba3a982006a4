#!/usr/bin/env bash
# The Debian package, tested as a user would use it (issue 21): builds the package (and an
# upgrade of it: the same version with Debian revision 2), boots the OpenZFS test VM with
# systemd as PID 1 (tools/vm/run-in-vm.sh, ZREPL_VM_SYSTEMD=1) and runs
# tools/package-test-guest.sh there: `apt install` the package, the service starts with the
# default config, a push -> sink configuration from the quickstart (TLS, certificates made with
# the quickstart's commands) replicates, the upgrade keeps the config and restarts the service,
# `systemctl stop` stops it cleanly, `apt remove` keeps the config and `apt purge` removes all.
#
#   bash tools/package-test.sh
#
# Never skips: a missing tool, VM or package is a failure. Run by tools/test.sh. Exit status:
# the guest scenario's (0 = passed), 124 VM timeout, 125 VM/harness failure.
# Env: ZREPL_VM_TIMEOUT (default here 900 s) and the other ZREPL_VM_* of tools/vm/run-in-vm.sh.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
log() { printf '[package-test] %s\n' "$*" >&2; }
start=$SECONDS

bash tools/vm/setup-host.sh
bash tools/vm/build-image.sh >/dev/null

stage=$repo/.vm-package
rm -rf --one-file-system "$stage"
mkdir -p "$stage"
log "building the package (revision 1) and its upgrade (revision 2)"
deb1=$(bash packaging/build-deb.sh --deb-revision 1 --out "$stage/debs")
deb2=$(bash packaging/build-deb.sh --deb-revision 2 --out "$stage/debs")
cp "$deb1" "$stage/zrepl-old.deb"
cp "$deb2" "$stage/zrepl-new.deb"
rm -rf "$stage/debs"
log "package contents ($(basename "$deb1")):"
dpkg-deb --contents "$stage/zrepl-old.deb" | awk '{ print "    " $1, $3, $6 }' >&2
# What users install carries no debug info and no symbol table.
dpkg-deb --fsys-tarfile "$stage/zrepl-old.deb" | tar -xO ./usr/bin/zrepl >"$stage/zrepl.bin"
if readelf -S "$stage/zrepl.bin" | grep -qE '\.debug_|\.symtab'; then
    log "FAILED: /usr/bin/zrepl in the package has debug sections or a symbol table"
    exit 1
fi
log "packaged /usr/bin/zrepl: $(stat -c %s "$stage/zrepl.bin") bytes, stripped"
rm -f "$stage/zrepl.bin"
cp tools/package-test-guest.sh "$stage/"
# The quickstart the guest follows: its certificate commands are run as written there.
cp docs/quickstart/continuous-backup.md "$stage/"
log "package build took $((SECONDS - start)) s; booting the VM with systemd"

set +e
ZREPL_VM_SYSTEMD=1 ZREPL_VM_TIMEOUT=${ZREPL_VM_TIMEOUT:-900} \
    bash tools/vm/run-in-vm.sh "$stage" ./package-test-guest.sh
rc=$?
set -e
if [[ $rc -eq 0 ]]; then
    log "PASSED in $((SECONDS - start)) s"
else
    log "FAILED (exit code $rc) after $((SECONDS - start)) s"
fi
exit "$rc"
