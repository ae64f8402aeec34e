#!/usr/bin/env bash
# The project's checks: install, then ruff, mypy (strict) and the test suite against the
# simulated site. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian's chromium only when the slow tests (the UI test among them) are asked for.
case " $* " in *slow*) export WITH_BROWSER=1 ;; esac
bash scripts/install.sh
export DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# Two workers, a test file each at a time (module fixtures stay in one process): most of a
# flow test is waiting on the simulated site, so two of them share the 2 cores well.
# The slow end-to-end runs (marked `slow`) do not fit CI's 10 minutes on 2 cores: run them with
# `bash scripts/test.sh -m slow` (a later -m wins).
.venv/bin/pytest -n 2 --dist loadfile --durations=15 -m "not slow" "$@"
