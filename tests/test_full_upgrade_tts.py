"""A full upgrade of the simulated TTS, aborted at each of its gates and resumed after each abort.

Each abort must end the run as Aborted with what was changed put back (telegraf) or listed; the
next run with the same upgrade id must carry on without repeating a change already made or a
sign-off already given — and the last one must leave the test stand upgraded.
"""

from __future__ import annotations

import collections
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from deployments.operator import GateAnswer
from sim.site import SimulatedSite, load_base_site
from tests.sitekit import FAST, operator_for, run_with_operator, sal_commands, save_site

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


@pytest.fixture
async def tts(tmp_path: Path) -> AsyncIterator[SimulatedSite]:
    async with SimulatedSite(load_base_site("tts"), workdir=tmp_path, options=FAST) as site:
        yield site


def telegraf_replicas(site: SimulatedSite) -> set[int]:
    return {
        d.replicas
        for d in site.model.deployments.values()
        if d.name.startswith("sasquatch-telegraf-")
    }


async def report_of(state: Any) -> str:
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    reports = [a.data for a in artifacts if a.key and a.key.endswith("-report")]
    assert len(reports) == 1
    assert isinstance(reports[0], str)
    return reports[0]


async def test_aborts_at_each_gate_then_a_resumed_run_finishes_the_upgrade(
    tts: SimulatedSite,
) -> None:
    from flows.full_upgrade import full_upgrade

    name = f"tts-{uuid.uuid4().hex[:6]}"
    await save_site(tts, name)
    config = tts.site_config(name)
    start = len(tts.write_log.records)  # the CSCs registered their schemas on starting

    def upgrade(**answers: GateAnswer) -> Any:
        operator = operator_for(tts, name, name, **answers)
        call = full_upgrade(
            site=name, upgrade_id="c0045", breaks_schema_compatibility=True, return_state=True
        )
        return operator, run_with_operator(operator, lambda: call)

    # 1. Aborted at the camera bridges, after the shutdown: nothing to put back yet.
    operator, running = upgrade(**{"camera-bridges": GateAnswer(decision="abort")})
    state = await running
    assert state.name == "Aborted", state
    assert operator.answered == [("camera-bridges", "abort")]
    report = await report_of(state)
    assert "Aborted by simulated operator at 'Camera bridges stopped on the mcm machines'" in report
    assert "Run the flow again with upgrade_id 'c0045'" in report
    records = tts.write_log.records[start:]
    # No Job deleted, no app synced, the registry's compatibility untouched (the scripts'
    # own schemas are registered when they start, as salobj does).
    assert not [
        r
        for r in records
        if r.service in ("kubernetes", "argocd")
        or (r.service == "schema-registry" and r.target.startswith("/config"))
    ]
    assert tts.fleet is not None
    # The control system is down, and stays down; LOVE:0, with no state machine to command,
    # runs until its Job is deleted in the clean-up.
    assert [str(csc) for csc in tts.fleet.running] == ["LOVE:0"]

    # 2. Aborted at the Phalanx gate, after telegraf went to 0: telegraf is put back.
    operator, running = upgrade(**{"phalanx-merged": GateAnswer(decision="abort")})
    state = await running
    assert state.name == "Aborted", state
    assert operator.answered == [("camera-bridges", "proceed"), ("phalanx-merged", "abort")]
    assert telegraf_replicas(tts) == {1}
    report = await report_of(state)
    assert "telegraf connectors back to 1 replica(s)" in report

    # 3. Resumed to the end: no change made twice, no sign-off asked twice.
    operator, running = upgrade()
    state = await running
    assert state.is_completed(), state
    result = await state.aresult()
    assert result["message"] == "Upgrade deployed: every CSC is in its expected state.", result
    assert [gate for gate, _ in operator.answered] == ["phalanx-merged"]

    records = tts.write_log.records[start:]
    offline = collections.Counter(sal_commands(records, "exitControl"))
    assert offline["Watcher:0"] == 1
    assert all(count == 1 for count in offline.values()), offline
    deleted = [r.target for r in records if r.service == "kubernetes" and r.method == "DELETE"]
    assert deleted
    assert len(deleted) == len(set(deleted))
    synced = [r.target for r in records if r.service == "argocd" and r.method == "sync"]
    assert [app for app in synced if app in config.argocd.telescope_apps] == (
        config.argocd.sync_order
    )
    # telegraf went to 0 twice (the abort had put it back), and is back at 1.
    assert telegraf_replicas(tts) == {1}
    compat = [
        r.body.get("compatibility")
        for r in records
        if r.service == "schema-registry" and r.target == "/config"
    ]
    assert compat == ["NONE", "FORWARD"]
    for entry in config.cscs:
        assert tts.fleet.state_of(entry.name) is entry.expected_state, entry.name
    assert all(job.image.endswith(":c0045") for job in tts.model.jobs.values())
