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
# mypy (strict) takes about 45 s from a cold cache: it runs beside the tests, whose flows spend
# most of their time waiting on the simulated site. Its report follows theirs, and either
# failing fails the run.
typing_log=$(mktemp)
trap 'rm -f "$typing_log"' EXIT
.venv/bin/mypy >"$typing_log" 2>&1 &
typing_pid=$!
# Two workers, a test file each at a time (module fixtures stay in one process): most of a
# flow test is waiting on the simulated site, so two of them share the 2 cores well.
# The slow end-to-end runs (marked `slow`) do not fit CI's 10 minutes on 2 cores: run them with
# `bash scripts/test.sh -m slow` (a later -m wins).
tests=0
.venv/bin/pytest -n 2 --dist loadfile --durations=15 -m "not slow" "$@" || tests=$?
typing=0
wait "$typing_pid" || typing=$?
echo "mypy:"
cat "$typing_log"
if [ "$typing" -ne 0 ] || [ "$tests" -ne 0 ]; then
    echo "failed: pytest exit $tests, mypy exit $typing" >&2
    exit 1
fi
