"""Shared fixtures: the simulated site's pieces and a Prefect test server, each started once."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Before anything imports Prefect: no telemetry, and a Prefect home of this run's own.
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
if "PREFECT_HOME" not in os.environ:
    _PREFECT_HOME = tempfile.mkdtemp(prefix="rubin-upgrade-prefect-")
    os.environ["PREFECT_HOME"] = _PREFECT_HOME
    atexit.register(shutil.rmtree, _PREFECT_HOME, ignore_errors=True)
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")

import pytest

if TYPE_CHECKING:
    from clients.registry import SchemaRegistryClient
    from clients.sal import SalClient
    from sim.broker import TansuBroker
    from sim.csc import CscFleet
    from sim.registry import SchemaRegistryState
    from sim.writelog import WriteLog
    from tests.prefect_server import SessionPrefectServer

REPO = Path(__file__).resolve().parents[1]
SITES = REPO / "deployments" / "sites"
# CI lays shared/ beside the checkout; tests that need its reference files skip without it.
SHARED = REPO.parent / "shared"
REFERENCE = SHARED / "reference"


_SERVER_KEY = pytest.StashKey["SessionPrefectServer"]()


def needs_reference() -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not REFERENCE.is_dir(),
        reason=f"{REFERENCE} is absent (CI lays ../shared beside the checkout)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """With xdist, the controlling process starts the session's Prefect server at once, for
    every worker (`tests.prefect_server`); the workers inherit its URL."""
    from tests.prefect_server import SHARED_API_ENV, SessionPrefectServer

    if os.environ.get("PYTEST_XDIST_WORKER") or SHARED_API_ENV in os.environ:
        return
    if not getattr(config.option, "numprocesses", None):
        return  # one process: the fixture starts a server when a test first needs one
    server = SessionPrefectServer()
    server.launch()
    os.environ[SHARED_API_ENV] = server.api_url
    config.stash[_SERVER_KEY] = server


#: The longest test files (each minutes, mostly whole flow runs), first: xdist hands out whole
#: files in collection order, so a long one started last leaves the other worker idle at the end.
_LONGEST_FIRST = (
    "test_full_upgrade.py",
    "test_faults.py",
    "test_scriptqueue.py",
    "test_deployments.py",
    "test_breaking_schema.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first; within a file, and for the rest, the order is kept."""

    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return _LONGEST_FIRST.index(name) if name in _LONGEST_FIRST else len(_LONGEST_FIRST)

    items.sort(key=rank)  # stable


def pytest_unconfigure(config: pytest.Config) -> None:
    server = config.stash.get(_SERVER_KEY, None)
    if server is not None:
        server.stop()


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """The session's Prefect server (the one the xdist controller started, or one of this
    process's own), as the API of every flow run; started only by the tests that need one."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.prefect_server import SHARED_API_ENV, SessionPrefectServer, wait_for_api

    own: SessionPrefectServer | None = None
    api_url = os.environ.get(SHARED_API_ENV)
    if api_url is not None:
        wait_for_api(api_url)
    else:
        own = SessionPrefectServer()
        own.launch()
        api_url = own.api_url
    try:
        if own is not None:
            own.wait()
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            yield
    finally:
        if own is not None:
            own.stop()


@pytest.fixture(scope="session")
async def tansu_broker() -> AsyncIterator[TansuBroker]:
    """One tansu broker on 127.0.0.1 for the session (memory storage: topics pile up)."""
    from sim.broker import TansuBroker

    async with TansuBroker() as broker:
        yield broker


@dataclass(frozen=True)
class RegistryServer:
    """The simulated schema registry served for the session: its URL, state and ASGI app."""

    url: str
    state: SchemaRegistryState
    app: Any


@pytest.fixture(scope="session")
async def schema_registry() -> AsyncIterator[RegistryServer]:
    """The simulated Confluent registry (FORWARD, like the sites) on 127.0.0.1."""
    from sim.http import serve_app
    from sim.registry import create_registry_app

    app = create_registry_app()
    async with serve_app(app, name="schema-registry") as url:
        yield RegistryServer(url, app.state.registry, app)


@pytest.fixture
async def registry_client(schema_registry: RegistryServer) -> AsyncIterator[SchemaRegistryClient]:
    from clients.registry import SchemaRegistryClient

    async with SchemaRegistryClient(schema_registry.url) as client:
        yield client


@pytest.fixture
async def sal_client(
    tansu_broker: TansuBroker, registry_client: SchemaRegistryClient
) -> AsyncIterator[SalClient]:
    """A SAL user (``user@host``, this process's pid) on the session broker."""
    from clients.sal import SalClient

    async with SalClient(
        bootstrap_servers=tansu_broker.bootstrap_servers, registry=registry_client
    ) as client:
        yield client


@dataclass
class FleetUnderTest:
    """A module's simulated CSCs, their write log and the exits they reported."""

    fleet: CscFleet
    write_log: WriteLog
    exits: list[tuple[str, bool, str]]


@pytest.fixture(scope="module")
async def csc_fleet(
    tansu_broker: TansuBroker, schema_registry: RegistryServer
) -> AsyncIterator[FleetUnderTest]:
    """Simulated CSCs beating every 0.2 s. The broker and registry outlive the module, so tests
    should give their CSCs names of their own (old topics keep old states)."""
    import httpx

    from sim.csc import CscFleet
    from sim.writelog import WriteLog

    write_log = WriteLog()
    exits: list[tuple[str, bool, str]] = []

    def on_exit(name: Any, *, failed: bool = False, message: str = "") -> None:
        exits.append((str(name), failed, message))

    async with CscFleet(
        bootstrap_servers=tansu_broker.bootstrap_servers,
        registry_url=schema_registry.url,
        registry_transport=httpx.ASGITransport(app=schema_registry.app),
        write_log=write_log,
        heartbeat_interval_s=0.2,
        on_exit=on_exit,
        command_fetch_wait_ms=20,
    ) as fleet:
        yield FleetUnderTest(fleet, write_log, exits)
