#!/usr/bin/env bash
# Install the project and its tools into .venv. Needs only Python >= 3.11 with venv and pip.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# A venv made by uv has no pip: give it one before asking pip for uv.
.venv/bin/python -m pip --version >/dev/null 2>&1 || .venv/bin/python -m ensurepip >/dev/null
.venv/bin/python -m pip install -q --disable-pip-version-check "uv>=0.5"
.venv/bin/python -m uv pip install -q -p .venv/bin/python -e '.[dev]'
