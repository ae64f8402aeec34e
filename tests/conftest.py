"""Shared fixtures: the simulated site's pieces and a Prefect test server, each started once."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Before anything imports Prefect: no telemetry, and a Prefect home of this run's own.
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="rubin-upgrade-prefect-"))
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")

import pytest

REPO = Path(__file__).resolve().parents[1]
SITES = REPO / "deployments" / "sites"
# CI lays shared/ beside the checkout; tests that need its reference files skip without it.
SHARED = REPO.parent / "shared"
REFERENCE = SHARED / "reference"


def needs_reference() -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not REFERENCE.is_dir(),
        reason=f"{REFERENCE} is absent (CI lays ../shared beside the checkout)",
    )


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """A Prefect server for the whole session; started only by the tests that need one."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield
