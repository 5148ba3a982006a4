#!/usr/bin/env bash
# The long kill-anywhere campaign (issue: a round that recovers from any crash): runs the
# platform test `crash_kill_anywhere_campaign` in the OpenZFS VM with many kills and prints
# its closing line `campaign: kills=N rounds=N killed_mid_run=N packaged=N violations=N`.
#
#   bash tools/kill-campaign.sh [KILLS] [SEED]     # default 100 kills, a time-based seed
#
# CI runs the same test with 6 kills (the platform suite). A failure prints the invariant that
# was violated and the daemon log; rerun with the printed ZREPL_CAMPAIGN_SEED to reproduce.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export ZREPL_CAMPAIGN_KILLS=${1:-100}
[[ -n ${2:-} ]] && export ZREPL_CAMPAIGN_SEED=$2
export ZREPL_VM_PASS_ENV="ZREPL_CAMPAIGN_KILLS ${ZREPL_CAMPAIGN_SEED:+ZREPL_CAMPAIGN_SEED} ${ZREPL_VM_PASS_ENV:-}"
# About 10 s per kill under TCG, plus the VM's boot.
export ZREPL_VM_TIMEOUT=${ZREPL_VM_TIMEOUT:-$((600 + 15 * ZREPL_CAMPAIGN_KILLS))}
exec bash "$repo/tools/platform-test.sh" --exact crash_kill_anywhere_campaign --nocapture
