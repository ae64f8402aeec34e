#!/usr/bin/env bash
# Install the project and its tools into .venv. Needs only Python >= 3.11 with venv and pip.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# A venv made by uv has no pip: give it one before asking pip for uv.
.venv/bin/python -m pip --version >/dev/null 2>&1 || .venv/bin/python -m ensurepip >/dev/null
.venv/bin/python -m pip install -q --disable-pip-version-check "uv==0.13.9"
# The versions in uv.lock, so every machine and CI run gets the same ones (`--locked` stops with
# "The lockfile needs to be updated" when pyproject.toml changed: run `.venv/bin/python -m uv lock`
# and commit uv.lock; `uv lock --upgrade` moves to newer releases). `--inexact` keeps the venv's
# pip and uv.
UV_PROJECT_ENVIRONMENT=.venv .venv/bin/python -m uv sync -q --locked --inexact --extra dev
# tests/test_ui.py (slow) drives the Prefect UI in Debian's chromium (Playwright's own browser
# downloads are never used); scripts/test.sh asks for it (WITH_BROWSER=1) when slow tests run.
# Installing it needs root and Debian's archive; without them warn and go on: that test then
# fails saying how to install it.
if [ "${WITH_BROWSER:-0}" = 1 ] && [ ! -x /usr/bin/chromium ]; then
    echo "installing Debian's chromium for tests/test_ui.py (about a minute)"
    if command -v apt-get >/dev/null 2>&1 \
        && apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; then
        echo "installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
    else
        echo "WARNING: could not install Debian's chromium (/usr/bin/chromium is absent):" \
            "tests/test_ui.py will fail. Install it as root with:" \
            "apt-get update && apt-get install --no-install-recommends chromium" >&2
    fi
fi
