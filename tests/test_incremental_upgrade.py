"""Incremental upgrades of the simulated Summit: only the named CSCs and the ScriptQueues move.

The simulated site is the Summit's inventory cut down to the obssys namespace (the ScriptQueues,
the schedulers, the Watcher and GIS) and a CSC in each of a few other namespaces, plus a cRIO:
enough to see that nothing else is touched, at a fraction of the full Summit's start-up cost.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort

from blocks.site import CscName, SiteConfig, State
from deployments.operator import GateAnswer, SimulatedOperator
from flows.affected import (
    AffectedError,
    cycle_path,
    expected_subjects,
    job_deletions,
    resolve_affected,
    telescopes_affected,
)
from flows.run import artifact_key
from sim.csc import CscBehaviour
from sim.sal_schemas import component_schemas
from sim.site import SimulatedSite, load_base_site
from sim.writelog import WriteRecord
from tests.sitekit import FAST, operator_for, run_with_operator, save_site

# The obssys namespace whole, one CSC in each of three other namespaces, and a cRIO.
_KEPT = {
    "GIS:0",
    "Scheduler:1",
    "Scheduler:2",
    "Scheduler:3",
    "ScriptQueue:1",
    "ScriptQueue:2",
    "ScriptQueue:3",
    "Watcher:0",
    "ATDome:0",
    "ESS:104",
    "Test:42",
    "MTM1M3:0",
}
_NEW_TOPIC = "logevent_incrementalCheck"
_TRANSITIONS = {"start", "enable", "disable", "standby", "exitControl", "enterControl"}


@pytest.fixture(scope="module")
def summit_config() -> SiteConfig:
    return load_base_site("summit")


@pytest.fixture
async def small_summit(summit_config: SiteConfig, tmp_path: Path) -> AsyncIterator[SimulatedSite]:
    cscs = [entry for entry in summit_config.cscs if str(entry.name) in _KEPT]
    base = summit_config.model_copy(update={"cscs": cscs})
    async with SimulatedSite(base, workdir=tmp_path, options=FAST) as site:
        yield site


def _new_scheduler_topic(site: SimulatedSite) -> None:
    """The scheduler's next image adds a topic, as a new XML version would."""
    assert site.fleet is not None
    schema = copy.deepcopy(component_schemas("Scheduler", indexed=True)["logevent_heartbeat"])
    schema["name"] = _NEW_TOPIC
    image = f"ts-dockerhub.lsst.org/scheduler:{FAST.upgrade_image_tag}"
    site.fleet.image_schemas[image] = {"Scheduler": {_NEW_TOPIC: schema}}


def _operator(site: SimulatedSite, name: str) -> SimulatedOperator:
    async def merge_phalanx() -> None:
        # The PR bumps the schedulers' version: only obssys goes out of sync.
        site.model.publish_upgrade(
            revision="9c1d2e3", image_tag=FAST.upgrade_image_tag, apps=["obssys"]
        )

    return operator_for(site, name, name, **{"phalanx-merged": GateAnswer(action=merge_phalanx)})


def _since(site: SimulatedSite, start: int) -> list[WriteRecord]:
    return site.write_log.records[start:]


def _deleted_jobs(records: list[WriteRecord]) -> list[tuple[str, list[str]]]:
    return [
        (r.target.split("labelSelector=")[-1], sorted(r.body.get("deleted", [])))
        for r in records
        if r.service == "kubernetes" and r.method == "DELETE"
    ]


def _commanded(records: list[WriteRecord]) -> set[str]:
    return {r.target for r in records if r.service == "sal"}


def _transitions(records: list[WriteRecord], csc: str) -> list[str]:
    return [r.method for r in records if r.service == "sal" and r.target == csc]


async def _reports(name: str) -> list[str]:
    """The runs' report artifacts at site ``name``, newest first."""
    key = artifact_key("incremental-upgrade", name, "report")
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
        )
    return [str(artifact.data) for artifact in artifacts]


# --- end to end ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.slow
async def test_upgrading_the_schedulers_touches_only_them_and_the_queues(
    small_summit: SimulatedSite,
) -> None:
    from flows.incremental_upgrade import incremental_upgrade

    site = small_summit
    assert site.fleet is not None
    name = f"sim-{uuid.uuid4().hex[:6]}"
    await save_site(site, name)
    _new_scheduler_topic(site)
    start = len(site.write_log)
    operator = _operator(site, name)
    missing = "Scheduler.logevent_neverRegistered"

    # The operator expects a topic the new version does not have: the run stops, naming it,
    # once the schedulers are up and before they are cycled.
    with pytest.raises(RuntimeError, match="expected new topics missing") as caught:
        await run_with_operator(
            operator,
            lambda: incremental_upgrade(
                site=name,
                upgrade_id="scheduler-1.2",
                cscs=["scheduler"],
                expected_new_topics=[f"Scheduler.{_NEW_TOPIC}", missing],
            ),
        )
    assert missing in str(caught.value)
    assert _NEW_TOPIC not in str(caught.value)
    assert "enable" not in _transitions(_since(site, start), "Scheduler:1")

    def again() -> Awaitable[Any]:
        return incremental_upgrade(
            site=name,
            upgrade_id="scheduler-1.2",
            cscs=["scheduler"],
            expected_new_topics=[f"Scheduler.{_NEW_TOPIC}"],
        )

    # Run again with the same upgrade id: it carries on from there, repeating nothing. The new
    # ATScheduler goes to FAULT when enabled: the cycle stops, naming it.
    atscheduler = CscName(name="Scheduler", index=2)
    site.fleet.set_behaviour(atscheduler, CscBehaviour(fault_on=frozenset({"enable"})))
    with pytest.raises(RuntimeError, match="Scheduler:2: went to FAULT on the way to ENABLED"):
        await run_with_operator(operator, again)

    # Fixed, a third run cycles what is left.
    site.fleet.set_behaviour(atscheduler, CscBehaviour())
    result = await run_with_operator(operator, again)

    assert result["message"].startswith("Incremental upgrade deployed"), result
    assert [gate for gate, _ in operator.answered] == ["phalanx-merged"]
    records = _since(site, start)
    # Only the schedulers' Jobs, the ScriptQueues' and the Watcher's (it exited when sent
    # OFFLINE: only a new Job brings it back) were deleted, by csc-class, in obssys alone, once.
    assert _deleted_jobs(records) == [
        ("csc-class=scheduler", ["atscheduler-job", "mtscheduler-job", "ocsscheduler-job"]),
        ("csc-class=scriptqueue", ["atqueue-job", "mtqueue-job", "ocsqueue-job"]),
        ("csc-class=watcher", ["watcher-job"]),
    ]
    assert all(
        r.target.startswith("batch/v1/namespaces/obssys/jobs?")
        for r in records
        if r.service == "kubernetes"
    )
    assert [r.target for r in records if r.service == "argocd"] == ["obssys"]
    schedulers = {"Scheduler:1", "Scheduler:2", "Scheduler:3"}
    queues = {"ScriptQueue:1", "ScriptQueue:2", "ScriptQueue:3"}
    assert _commanded(records) == schedulers | queues | {"Watcher:0"}

    # The Watcher first; the queue running set_summary_state.py last.
    offline = [r.target for r in records if r.service == "sal" and r.method == "exitControl"]
    assert offline[0] == "Watcher:0"
    assert offline[-3:] == ["ScriptQueue:3", "ScriptQueue:2", "ScriptQueue:1"]
    assert sorted(offline) == sorted(schedulers | queues | {"Watcher:0"})
    by_script = {
        r.target
        for r in records
        if r.method == "exitControl" and str(r.body.get("identity")).startswith("Script:")
    }
    assert by_script == schedulers | queues
    script = next(r for r in records if r.service == "sal" and r.method == "add")
    assert script.target == "ScriptQueue:1"
    assert "mute_alarms: false" in str(script.body)

    # Each new scheduler went through every state and back, once; nothing else was cycled.
    cycle = ["start", "enable", "disable", "standby"]
    for csc in ["Scheduler:1", "Scheduler:3"]:
        transitions = [t for t in _transitions(records, csc) if t in _TRANSITIONS]
        assert transitions == ["exitControl", *cycle], csc
    transitions = [t for t in _transitions(records, "Scheduler:2") if t in _TRANSITIONS]
    assert transitions == ["exitControl", "start", "enable", "standby", *cycle]
    for csc in [*queues, "Watcher:0"]:
        assert "enable" not in _transitions(records, csc)

    # Everything redeployed is in its expected state on the new image; the rest never moved.
    config = site.site_config(name)
    for entry in config.cscs:
        if entry.bare_metal is not None:
            continue
        assert site.fleet.state_of(entry.name) is entry.expected_state, entry.name
        job = site.model.job_for(entry.name)
        assert job is not None, entry.name
        new = str(entry.name) in schedulers | queues | {"Watcher:0"}
        tag = FAST.upgrade_image_tag if new else FAST.start_image_tag
        assert job.image.endswith(f":{tag}"), (entry.name, job.image)
    assert site.model.applications["auxtel"].sync_status == "Synced"

    # The operator reads what happened.
    report, faulted, stopped = await _reports(name)
    assert "Scheduler:2: went to FAULT" in faulted
    assert (
        f"Stopped: RuntimeError: expected new topics missing from the schema registry: {missing}"
        in stopped
    )
    assert "Incremental upgrade deployed" in report
    assert f"lsst.sal.Scheduler.{_NEW_TOPIC}-value" in report
    assert "STANDBY → DISABLED → ENABLED → DISABLED → STANDBY" in report
    texts = [m.text for m in site.slack_messages]
    assert sum("scheduler-1.2" in t and "starts" in t for t in texts) == 1
    assert any("scheduler-1.2" in t and "deployed" in t for t in texts)


@pytest.mark.usefixtures("prefect_server")
async def test_bad_names_are_refused_and_a_dry_run_changes_nothing(
    small_summit: SimulatedSite,
) -> None:
    from flows.incremental_upgrade import incremental_upgrade

    name = f"sim-{uuid.uuid4().hex[:6]}"
    await save_site(small_summit, name)
    start = len(small_summit.write_log)

    with pytest.raises(AffectedError) as caught:
        await incremental_upgrade(
            site=name, upgrade_id="bad-1", cscs=["schedular", "NoSuchCsc:1", "MTM1M3"]
        )

    message = str(caught.value)
    assert "'schedular' is not a csc-class" in message
    assert "did you mean scheduler" in message
    assert "'NoSuchCsc:1' is not in the" in message
    assert "MTM1M3:0 runs on" in message
    assert "Valid csc-classes at" in message
    assert "scriptqueue" in message
    assert _since(small_summit, start) == []

    # A dry run of a good request plans every change and makes none.
    plan = await incremental_upgrade(
        site=name, upgrade_id="plan-1", cscs=["scheduler"], dry_run=True
    )

    assert isinstance(plan, dict)
    assert plan["message"] == "Plan complete: nothing was changed."
    planned = "\n".join(plan["plan"])
    assert "set_summary_state.py" in planned
    assert "Delete the Jobs in obssys labelled csc-class=scheduler" in planned
    assert "Sync obssys in Argo CD" in planned
    assert "Cycle Scheduler:2 STANDBY → DISABLED → ENABLED → DISABLED → STANDBY" in planned
    assert _since(small_summit, start) == []


# --- what the flow decides, from the site file ---------------------------------------------------


def test_classes_and_names_resolve_to_inventory_entries(summit_config: SiteConfig) -> None:
    by_class = resolve_affected(summit_config, ["scheduler"])
    by_name = resolve_affected(summit_config, ["Scheduler", "Scheduler:2"])
    assert [str(e.name) for e in by_class] == ["Scheduler:1", "Scheduler:2", "Scheduler:3"]
    assert by_name == by_class
    assert [str(e.name) for e in resolve_affected(summit_config, ["ATDome", "ess"])][:2] == [
        "ATDome:0",
        "ESS:104",
    ]


def test_every_problem_is_listed_with_the_choices(summit_config: SiteConfig) -> None:
    with pytest.raises(AffectedError) as caught:
        resolve_affected(summit_config, ["scheduler", "atdom", "ATDome:3", "MTVMS:1", "a b"])
    problems = caught.value.problems
    assert len(problems) == 4
    assert "did you mean atdome" in problems[0]
    assert "'ATDome:3' is not in the summit inventory" in problems[1]
    assert "MTVMS:1 runs on" in problems[2]
    assert "not a CSC name" in problems[3]
    with pytest.raises(AffectedError, match="no CSCs given"):
        resolve_affected(summit_config, [" "])


def test_job_deletions_narrow_to_the_instances_named(summit_config: SiteConfig) -> None:
    queues = [summit_config.csc(f"ScriptQueue:{q}") for q in (1, 2, 3)]
    some = resolve_affected(summit_config, ["Scheduler:1", "Scheduler:3"])
    deletions = job_deletions(summit_config, [*some, *queues])
    assert [(d.key, d.selector) for d in deletions] == [
        ("delete-jobs-obssys-scheduler", "csc-class=scheduler,csc in (mtscheduler,ocsscheduler)"),
        ("delete-jobs-obssys-scriptqueue", "csc-class=scriptqueue"),
    ]


def test_each_csc_cycles_through_every_state_back_to_its_own() -> None:
    assert cycle_path(State.STANDBY) == (
        State.DISABLED,
        State.ENABLED,
        State.DISABLED,
        State.STANDBY,
    )
    for state in (State.STANDBY, State.DISABLED, State.ENABLED):
        path = cycle_path(state)
        assert path[-1] is state
        assert {state, *path} == {State.STANDBY, State.DISABLED, State.ENABLED}
    assert cycle_path(State.OFFLINE) == ()


@pytest.mark.parametrize(
    ("cscs", "telescopes"),
    [
        (["scheduler"], ["AuxTel", "MainTel"]),
        (["Scheduler:3", "ScriptQueue:3", "Watcher", "ess", "GIS"], []),
        (["ATDome", "ATMonochromator"], ["AuxTel"]),
        (["MTM2", "CCOODS"], ["MainTel"]),
        (["ESS:404"], []),  # mtdome-ess404: an environment sensor, not the telescope
        (["OCPS:1"], ["AuxTel"]),
        (["OCPS:3", "ScriptQueue:1"], ["MainTel"]),
    ],
)
def test_telescopes_to_test_follow_the_components_changed(
    summit_config: SiteConfig, cscs: list[str], telescopes: list[str]
) -> None:
    assert telescopes_affected(resolve_affected(summit_config, cscs)) == telescopes


def test_expected_topics_become_registry_subjects(summit_config: SiteConfig) -> None:
    subjects = expected_subjects(
        summit_config,
        ["Scheduler.logevent_a", "lsst.sal.ScriptQueue.command_b", "lsst.sal.Scheduler.c-value"],
        {"Scheduler", "ScriptQueue"},
    )
    assert list(subjects.values()) == [
        "lsst.sal.Scheduler.logevent_a-value",
        "lsst.sal.ScriptQueue.command_b-value",
        "lsst.sal.Scheduler.c-value",
    ]
    with pytest.raises(AffectedError) as caught:
        expected_subjects(
            summit_config,
            ["ATDome.logevent_a", "logevent_b", "lsst.other.Scheduler.x"],
            {"Scheduler"},
        )
    assert len(caught.value.problems) == 3
    assert "ATDome is not redeployed" in caught.value.problems[0]
    assert CscName(name="Scheduler", index=1) in {e.name for e in summit_config.cscs}
