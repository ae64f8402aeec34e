#!/usr/bin/env bash
# The main job: a full upgrade of a simulated Summit, end to end, as operators run it — a local
# Prefect server (UI on 127.0.0.1), the simulated site, the <flow>/sim deployments served, then
# `full-upgrade/sim` run with every sign-off answered by the simulated operator. Prints the run's
# UI address and its report; exits 0 only when every CSC is back in its expected state.
# Extra arguments go to `rubin-upgrade demo` (e.g. --site tts, -p dry_run=true, --flow NAME;
# leave out --auto-approve by setting INTERACTIVE=1 to answer the sign-offs yourself in the UI).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
mkdir -p .sim
approve=(--auto-approve)
if [[ "${INTERACTIVE:-0}" == 1 ]]; then approve=(); fi
exec .venv/bin/rubin-upgrade demo "${approve[@]}" --workdir .sim --write-log .sim/writes.jsonl "$@"
