#!/usr/bin/env bash
# The main job against the simulated site. Until the full-upgrade flow lands, this installs the
# project, starts a simulated Summit in the foreground and shows what is running; Ctrl-C stops it
# and everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
mkdir -p .sim
exec .venv/bin/rubin-upgrade sim --site "${SITE:-summit}" --site-out .sim/sim.yaml \
    --write-log .sim/writes.jsonl "$@"
