"""End-to-end full upgrades of the simulated Summit, every gate answered as an operator would."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prefect import tags

from blocks.site import State
from blocks.upgrade_site import UpgradeSite
from deployments.operator import GateAnswer, SimulatedOperator
from sim.site import SimOptions, SimulatedSite, load_base_site
from sim.writelog import WriteRecord

pytestmark = pytest.mark.usefixtures("prefect_server")

FAST = SimOptions(
    heartbeat_interval_s=0.5,
    image_pull_s=0.2,
    argocd_sync_s=0.05,
    broker_shutdown_s=0.2,
    time_scale=0.01,
)


@pytest.fixture
async def summit(tmp_path: Path) -> AsyncIterator[SimulatedSite]:
    async with SimulatedSite(load_base_site("summit"), workdir=tmp_path, options=FAST) as site:
        yield site


async def save_site(site: SimulatedSite, name: str) -> None:
    from prefect_slack import SlackCredentials

    secrets = site.credentials()
    assert secrets.slack_token is not None
    await UpgradeSite(
        site=site.site_config(name),
        argocd_password=secrets.argocd_password,
        love_password=secrets.love_password,
        slack=SlackCredentials(token=secrets.slack_token),
    ).asave(name, overwrite=True)


def operator_for(
    site: SimulatedSite, tag: str, name: str, **answers: GateAnswer
) -> SimulatedOperator:
    async def merge_phalanx() -> None:
        site.model.publish_upgrade(revision="5f3e2a1", image_tag=FAST.upgrade_image_tag)

    async def start_bare_metal() -> None:
        site.start_bare_metal()

    defaults = {
        "phalanx-merged": GateAnswer(
            extra={"phalanx_pr_url": "https://github.com/lsst-sqre/phalanx/pull/4242"},
            action=merge_phalanx,
        ),
        "bare-metal-startup": GateAnswer(action=start_bare_metal),
    }
    return SimulatedOperator(tag=tag, confirm_site=name, answers={**defaults, **answers})


async def run_with_operator(
    operator: SimulatedOperator, flow_call: Callable[[], Awaitable[Any]]
) -> Any:
    stop = asyncio.Event()
    answering = asyncio.create_task(operator.run(stop))
    try:
        with tags(operator.tag):
            return await flow_call()
    finally:
        stop.set()
        await answering


def sal_commands(records: list[WriteRecord], command: str) -> list[str]:
    return [r.target for r in records if r.service == "sal" and r.method == command]


async def test_full_upgrade_of_the_summit(summit: SimulatedSite) -> None:
    from flows.full_upgrade import full_upgrade

    name = f"sim-{uuid.uuid4().hex[:6]}"
    await save_site(summit, name)
    operator = operator_for(summit, name, name)
    result = await run_with_operator(
        operator,
        lambda: full_upgrade(site=name, upgrade_id="c0045", breaks_schema_compatibility=True),
    )
    assert result["message"] == "Upgrade deployed: every CSC is in its expected state.", result
    records = summit.write_log.records

    # The Watcher came down first, the ScriptQueues last, MTQueue (running the script) last of all.
    offline = sal_commands(records, "exitControl")
    assert offline[0] == "Watcher:0"
    queues = [t for t in offline if t.startswith("ScriptQueue")]
    assert queues == ["ScriptQueue:3", "ScriptQueue:2", "ScriptQueue:1"]
    first_delete = next(
        i for i, r in enumerate(records) if r.service == "kubernetes" and r.method == "DELETE"
    )
    shutdown = [
        r.target for r in records[:first_delete] if r.service == "sal" and r.method == "exitControl"
    ]
    assert shutdown[-1] == "ScriptQueue:1"
    assert "MTM1M3:0" not in shutdown
    assert "MTM1M3TS:0" not in shutdown

    # Argo CD: science-platform, then nublado, then the telescope apps in the site's order.
    synced = [r.target for r in records if r.service == "argocd" and r.method == "sync"]
    config = summit.site_config(name)
    telescope = [app for app in synced if app in config.argocd.telescope_apps]
    assert synced[:2] == ["science-platform", "nublado"]
    assert telescope == config.argocd.sync_order

    # The registry went to NONE for the bring-up and back to what it was.
    compat = [
        r.body.get("compatibility")
        for r in records
        if r.service == "schema-registry" and r.target == "/config"
    ]
    assert compat == ["NONE", "FORWARD"]

    # Every CSC is back, in its expected state, on the new image.
    assert summit.fleet is not None
    for entry in config.cscs:
        assert summit.fleet.state_of(entry.name) is entry.expected_state, entry.name
    assert all(job.image.endswith(":c0045") for job in summit.model.jobs.values())
    telegraf = [
        d for d in summit.model.deployments.values() if d.name.startswith("sasquatch-telegraf-")
    ]
    assert len(telegraf) == 27
    assert all(d.replicas == 1 for d in telegraf)

    # People were told.
    texts = [m.text for m in summit.slack_messages]
    assert any("Stage 1" in text for text in texts)
    assert any("Stage 2" in text for text in texts)
    assert any("Nublado can be used again" in text for text in texts)
    gates = [gate for gate, _ in operator.answered]
    assert gates[:2] == ["m2-closed-loop", "hardware-experts"]
    assert "phalanx-merged" in gates
    assert "bare-metal-startup" in gates
    assert State.ENABLED is config.csc("ScriptQueue:1").expected_state
