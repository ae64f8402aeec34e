"""End-to-end full upgrades of the simulated Summit, every gate answered as an operator would."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from prefect import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterTags,
    TaskRunFilter,
    TaskRunFilterTags,
)

from blocks.site import State
from deployments.operator import GateAnswer
from sim.site import SimulatedSite, load_base_site
from tests.sitekit import (
    FAST,
    break_heartbeat_schema,
    heartbeat_field_type,
    operator_for,
    run_with_operator,
    sal_commands,
    save_site,
)

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture(scope="module")
async def summit(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SimulatedSite]:
    """One simulated Summit for the module: the tests that change nothing run first."""
    workdir = tmp_path_factory.mktemp("summit")
    async with SimulatedSite(load_base_site("summit"), workdir=workdir, options=FAST) as site:
        yield site


async def test_a_dry_run_changes_nothing_and_plans_the_procedure_in_order(
    summit: SimulatedSite,
) -> None:
    from flows.full_upgrade import full_upgrade

    name = f"sim-{uuid.uuid4().hex[:6]}"
    await save_site(summit, name)
    start = len(summit.write_log.records)  # the CSCs registered their schemas on starting
    result = await full_upgrade(
        site=name, upgrade_id="c0045", breaks_schema_compatibility=True, dry_run=True
    )
    assert summit.write_log.records[start:] == []
    assert isinstance(result, dict)
    assert result["message"] == "Plan complete: nothing was changed."
    plan: list[str] = result["plan"]
    # The Watcher first; the shutdown ends with the ScriptQueues, the one running it last.
    changes = [p for p in plan if not p.startswith(("Sign-off: ", "Slack "))]
    assert changes[0].startswith("Send the Watcher OFFLINE")
    scripts = [p for p in plan if p.startswith("Run ")]
    assert scripts[0].startswith("Run system_wide_shutdown.py on ScriptQueue:1")
    assert "'ignore': ['MTM1M3', 'MTM1M3TS']" in scripts[0]
    assert scripts[1].startswith("Run set_summary_state.py on ScriptQueue:1")
    assert "[['ScriptQueue:3', 'OFFLINE'], ['ScriptQueue:2', 'OFFLINE'], " in scripts[1]
    assert "'mute_alarms': False" in scripts[1]
    # The lag is drained before the CSC Jobs go (waited for only in a real run).
    drain = next(i for i, p in enumerate(plan) if p.startswith("Wait until telegraf-kafka"))
    cleanup = next(i for i, p in enumerate(plan) if p.startswith("Delete the CSC Jobs"))
    assert drain < cleanup, plan
    # Every gate is in the plan, and the registry goes to NONE before the first sync.
    gates = [p for p in plan if p.startswith("Sign-off: ")]
    assert len(gates) == 9  # the Summit asks at nine; the test stands at two
    none_at = next(i for i, p in enumerate(plan) if "to NONE" in p)
    syncs = [(i, p.split()[1]) for i, p in enumerate(plan) if p.startswith("Sync ")]
    assert none_at < syncs[0][0]
    # LOVE where the site file puts it among the telescope apps.
    config = summit.site_config(name)
    telescope = [app for _, app in syncs if app in config.argocd.telescope_apps]
    assert telescope == config.argocd.sync_order
    assert telescope.index("love") == config.argocd.sync_order.index("love")


async def test_an_abort_at_the_first_gate_changes_nothing(summit: SimulatedSite) -> None:
    from flows.full_upgrade import full_upgrade

    name = f"sim-{uuid.uuid4().hex[:6]}"
    await save_site(summit, name)
    operator = operator_for(
        summit, name, name, **{"m2-closed-loop": GateAnswer(decision="abort", notes="M2 down")}
    )
    start = len(summit.write_log.records)
    state = await run_with_operator(
        operator, lambda: full_upgrade(site=name, upgrade_id="c0045-a", return_state=True)
    )
    assert state.is_cancelled()
    assert state.name == "Aborted"
    assert "M2 down" in (state.message or "")
    assert operator.answered == [("m2-closed-loop", "abort")]
    assert [r for r in summit.write_log.records[start:] if r.service != "slack"] == []


async def test_full_upgrade_of_the_summit(summit: SimulatedSite) -> None:
    from flows.full_upgrade import full_upgrade

    name = f"sim-{uuid.uuid4().hex[:6]}"
    await save_site(summit, name)
    # The upgrade breaks FORWARD compatibility for real: ATDome's new heartbeat.
    breaking = break_heartbeat_schema(summit, "ATDome", "atdome")
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
    # Each once: a CSC that has just gone OFFLINE (its heartbeats still recent) is no straggler.
    assert len(offline) == len(set(offline)), offline
    queues = [t for t in offline if t.startswith("ScriptQueue")]
    assert queues == ["ScriptQueue:3", "ScriptQueue:2", "ScriptQueue:1"]
    first_delete = next(
        i for i, r in enumerate(records) if r.service == "kubernetes" and r.method == "DELETE"
    )
    shutdown = [
        r.target for r in records[:first_delete] if r.service == "sal" and r.method == "exitControl"
    ]
    # Of what the scripts sent, the queue running them went last. (A CSC the script did not
    # find — its heartbeat late on a loaded machine — is sent OFFLINE after, as a straggler.)
    by_scripts = [
        r.target
        for r in records[:first_delete]
        if r.service == "sal"
        and r.method == "exitControl"
        and str(r.body.get("identity", "")).startswith("Script:")
    ]
    assert by_scripts[-1] == "ScriptQueue:1"
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
    assert heartbeat_field_type(summit, breaking) == "string"  # registered under NONE

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

    # The run and its sections carry the run's tag (the operator found their sign-offs by
    # it); the task runs do not, so none waited on a tag-limit check. (A section's tracking
    # task run in its parent, which nothing runs, is created with it.)
    async with get_client() as client:
        tagged = FlowRunFilter(tags=FlowRunFilterTags(all_=[name]))
        runs = await client.read_flow_runs(flow_run_filter=tagged)
        tasks = await client.read_task_runs(flow_run_filter=tagged, limit=200)
        tagged_tasks = await client.read_task_runs(
            task_run_filter=TaskRunFilter(tags=TaskRunFilterTags(all_=[name])), limit=200
        )
        names = {(await client.read_flow(flow_id)).name for flow_id in {r.flow_id for r in runs}}
    assert {"full-upgrade", "shut down the control system", "deploy"} <= names, names
    assert len(tasks) > 20
    trackers = {r.parent_task_run_id for r in runs}
    assert [t.name for t in tagged_tasks if t.id not in trackers] == []
