"""The whole Summit inventory as simulated CSCs: one sweep reads all 122 states and heartbeats."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from blocks.site import SiteConfig, load_site_file
from clients.registry import SchemaRegistryClient
from clients.sal import SalClient, alive
from sim.broker import TansuBroker
from sim.csc import CscFleet
from sim.sal_schemas import indexed_components
from tests.conftest import SITES, RegistryServer

#: The brief's budget for one cold sweep of the Summit (measured ~0.3-0.6 s here).


@pytest.fixture(scope="module")
def summit() -> SiteConfig:
    return load_site_file(SITES / "summit.yaml")


@pytest.fixture(scope="module")
async def summit_fleet(
    summit: SiteConfig, tansu_broker: TansuBroker, schema_registry: RegistryServer
) -> AsyncIterator[CscFleet]:
    async with CscFleet(
        bootstrap_servers=tansu_broker.bootstrap_servers,
        registry_url=schema_registry.url,
        registry_transport=httpx.ASGITransport(app=schema_registry.app),
        indexed=indexed_components(entry.name for entry in summit.cscs),
    ) as fleet:
        started = await fleet.start_many(summit.cscs, image="c0044")
        assert fleet.failures == {}
        assert all(started.values())
        yield fleet


async def test_sweep_of_the_summit_from_a_cold_client(
    summit: SiteConfig,
    summit_fleet: CscFleet,
    tansu_broker: TansuBroker,
    schema_registry: RegistryServer,
) -> None:
    names = [entry.name for entry in summit.cscs]
    assert len(names) == 122
    # The time a sweep takes is a benchmark figure (bench/), not something to assert here.
    async with (
        SchemaRegistryClient(schema_registry.url) as registry,
        SalClient(bootstrap_servers=tansu_broker.bootstrap_servers, registry=registry) as sal,
    ):
        states = await sal.summary_states(names)
        ages = await sal.heartbeats(names, 5.0)
    assert states == {entry.name: entry.expected_state for entry in summit.cscs}
    assert all(age is not None and age < 5.0 for age in ages.values())


async def test_site_file_quirks_reach_the_simulated_cscs(
    summit: SiteConfig, summit_fleet: CscFleet, sal_client: SalClient
) -> None:
    quirky = {entry.name for entry in summit.cscs if entry.never_reports_offline}
    indexed = indexed_components(entry.name for entry in summit.cscs)
    assert {str(name) for name in quirky} == {"MTVMS:1", "MTVMS:2", "MTVMS:3"}
    for name, csc in summit_fleet.running.items():
        assert csc.behaviour.never_reports_offline == (name in quirky)
        assert csc.indexed == (name.name in indexed)
    async with sal_client.state_board([entry.name for entry in summit.cscs]) as board:
        await board.wait_for(alive(3.0), [entry.name for entry in summit.cscs], deadline_s=3.0)
