"""Fault injection against a small simulated test stand: every fault ends in a stated outcome.

Each test injects one fault of ``docs/faults.md`` into the simulated site and runs the flow code
that meets it — a whole ``full-upgrade`` when the preflight is what stops it, otherwise the
section's own steps inside a small probe flow (`run_steps`) — and asserts what the operator
sees: the run's final state and message, its report, Slack, and the write log. Every run is
bounded by a timeout, so a fault that made the tool hang fails the test instead.

The stand is the BTS cut down to a dozen CSCs (its rules kept): the faults do not depend on the
size of the inventory, and it starts in well under a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prefect import flow, get_client, tags
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.objects import State as PrefectState
from prefect.states import Cancelled

from blocks.site import CscName, SiteConfig, State, parse_csc_name
from blocks.upgrade_site import save_site_block
from clients.lag import ConsumerLagClient
from clients.sal.enums import SalRetCode
from deployments.operator import SimulatedOperator
from flows.common import upgrade_run
from flows.run import UpgradeRun
from flows.sections import (
    shut_down_control_system,
    sync_app,
    telegraf_to_zero,
    wait_for_bring_up,
    wait_for_lag_drained,
)
from flows.signoff import UpgradeAborted
from sim.csc import CscBehaviour
from sim.site import SimulatedSite, load_base_site
from tests.sitekit import FAST, run_with_operator, sal_commands

pytestmark = pytest.mark.usefixtures("prefect_server")

#: The stand's inventory: the queues and Watcher the procedure needs, a few CSCs of each kind
#: (Kubernetes Jobs in several namespaces, a bare-metal camera, one expected ENABLED).
STAND_CSCS = frozenset(
    {
        "ScriptQueue:1",
        "ScriptQueue:2",
        "ScriptQueue:3",
        "Watcher:0",
        "ATDome:0",
        "ATMCS:0",
        "ATCamera:0",
        "MTVMS:1",
        "WeatherForecast:0",
        "Test:42",
        "OCPS:1",
        "ESS:104",
    }
)
ATDOME = CscName(name="ATDome", index=0)
ATMCS = CscName(name="ATMCS", index=0)
MTVMS = CscName(name="MTVMS", index=1)
#: No run here takes more than seconds: a run still going after this has hung.
LIMIT_S = 90.0

Steps = Callable[[UpgradeRun], Awaitable[None]]


def stand_config(
    *, keep: frozenset[str] = STAND_CSCS, quiet: frozenset[str] = frozenset()
) -> SiteConfig:
    """The BTS with only the CSCs in ``keep``; those in ``quiet`` never report OFFLINE."""
    data = load_base_site("bts").model_dump(mode="json")
    entries = []
    for entry in data["cscs"]:
        name = f"{entry['name']['name']}:{entry['name']['index']}"
        if name in keep:
            entries.append({**entry, "never_reports_offline": name in quiet})
    data["cscs"] = entries
    return SiteConfig.model_validate(data)


@contextlib.asynccontextmanager
async def open_stand(
    workdir: Path, config: SiteConfig | None = None
) -> AsyncIterator[SimulatedSite]:
    async with SimulatedSite(config or stand_config(), workdir=workdir, options=FAST) as site:
        yield site


@pytest.fixture
async def stand(tmp_path: Path) -> AsyncIterator[SimulatedSite]:
    async with open_stand(tmp_path) as site:
        yield site


@pytest.fixture(scope="module")
async def calm_stand(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SimulatedSite]:
    """One stand for the faults the preflight stops: they change nothing at the site."""
    async with open_stand(tmp_path_factory.mktemp("calm")) as site:
        yield site


async def save(
    site: SimulatedSite,
    config: SiteConfig | None = None,
    *,
    lag_tolerance: int | None = None,
    **timeouts: float,
) -> str:
    """Save ``site`` (or ``config``, its site file changed) under a name of its own."""
    name = f"faults-{uuid.uuid4().hex[:6]}"
    config = config or site.site_config(name)
    if lag_tolerance is not None:
        config = config.model_copy(update={"lag_tolerance": lag_tolerance})
    if timeouts:
        config = config.model_copy(update={"timeouts": config.timeouts.model_copy(update=timeouts)})
    await save_site_block(config, site.credentials(), name)
    return name


async def run_steps(
    name: str, steps: Steps, operator: SimulatedOperator | None = None
) -> PrefectState[Any]:
    """Run ``steps`` inside an upgrade run of the site ``name``, as a section would."""

    @flow(name="fault-probe")
    async def fault_probe() -> dict[str, Any] | PrefectState[Any]:
        try:
            async with upgrade_run(
                "fault-probe", name, "fault", dry_run=False, planned_steps=1
            ) as run:
                # Saved before the steps: steps acting in parallel as the first changes of an
                # upgrade id race to create its memory block (the loser's error has no text).
                await run.remember_fact("fault probe", name)
                await steps(run)
        except UpgradeAborted as exc:
            return Cancelled(name="Aborted", message=str(exc))
        return run.summary()

    async with asyncio.timeout(LIMIT_S):
        if operator is not None:
            state: PrefectState[Any] = await run_with_operator(
                operator, lambda: fault_probe(return_state=True)
            )
            return state
        with tags(name):
            return await fault_probe(return_state=True)


async def full_upgrade_of(name: str) -> PrefectState[Any]:
    from flows.full_upgrade import full_upgrade

    async with asyncio.timeout(LIMIT_S):
        with tags(name):
            state: PrefectState[Any] = await full_upgrade(
                site=name, upgrade_id="c0045", return_state=True
            )
            return state


async def report_of(state: PrefectState[Any]) -> str:
    """The run's report artifact (every run publishes one, however it ends)."""
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    reports = [a.data for a in artifacts if a.key and a.key.endswith("-report")]
    assert len(reports) == 1, [a.key for a in artifacts]
    assert isinstance(reports[0], str)
    return reports[0]


def changes(site: SimulatedSite, since: int = 0) -> list[str]:
    """Every change made at the site since record ``since`` but Slack posts, as ``service
    method target`` (the CSCs' own schema registrations at start-up come before)."""
    return [
        f"{r.service} {r.method} {r.target}"
        for r in site.write_log.records[since:]
        if r.service != "slack"
    ]


def preflight_problems(state: PrefectState[Any], site: SimulatedSite, since: int) -> list[str]:
    """The problems listed by a run the preflight stopped, once checked that it says nothing
    was changed, and that nothing was since write-log record ``since``."""
    assert state.is_failed(), state
    message = state.message or ""
    assert "preflight failed" in message
    assert "nothing was changed" in message
    assert changes(site, since) == []
    return [line.removeprefix("  - ") for line in message.splitlines() if line.startswith("  - ")]


async def telegraf_stuck(site: SimulatedSite) -> None:
    """Stall the telegraf connectors once they have committed, and wait for a backlog."""
    consumers = site.consumers
    assert consumers is not None
    prefix = site.base.telegraf.group_prefix
    async with ConsumerLagClient(bootstrap_servers=site.broker.bootstrap_servers) as lag:
        while not (await lag.consumer_lag(prefix)).groups:  # noqa: ASYNC110 (Kafka is polled)
            await asyncio.sleep(0.2)
        consumers.stalled.add(prefix)
        while (await lag.consumer_lag(prefix)).total_lag == 0:  # noqa: ASYNC110 (as above)
            await asyncio.sleep(0.2)


def syncs(site: SimulatedSite) -> list[str]:
    return [
        r.target for r in site.write_log.records if r.service == "argocd" and r.method == "sync"
    ]


def telegraf_replicas(site: SimulatedSite) -> set[int]:
    namespace = site.base.telegraf.namespace
    return {
        d.replicas
        for (ns, name), d in site.model.deployments.items()
        if ns == namespace and name in site.base.telegraf.deployments
    }


def in_step(section: str, key: str, body: Callable[[UpgradeRun, Any], Awaitable[None]]) -> Steps:
    """``body(run, step)`` as the step ``key`` of ``section``."""

    async def steps(run: UpgradeRun) -> None:
        async with run.step(section, key, key) as step:
            await body(run, step)

    return steps


# --- CSCs ----------------------------------------------------------------------------------------


async def test_fault_csc_in_fault_during_bring_up_is_reported_short(
    stand: SimulatedSite,
) -> None:
    name = await save(stand, bring_up_s=1.5)
    assert stand.fleet is not None
    await stand.fleet.fault(ATDOME, "Simulated fault: the dome drive tripped")

    async def bring_up(run: UpgradeRun) -> None:
        await wait_for_bring_up(run, "deploy")

    state = await run_steps(name, bring_up)

    # The procedure: report the stragglers, then carry on (the run completes).
    assert state.is_completed(), state
    result = await state.aresult()
    assert len(result["short"]) == 1, result
    assert result["short"][0].startswith("ATDome:0 (FAULT"), result
    warnings = [m.text for m in stand.slack_messages if ":warning:" in m.text]
    assert len(warnings) == 1, warnings
    assert "1 CSC(s) are not in their expected state: ATDome:0 (FAULT" in warnings[0]
    assert "ATDome:0 (FAULT" in await report_of(state)


async def test_fault_csc_that_never_heartbeats_is_reported_short(stand: SimulatedSite) -> None:
    name = await save(stand, bring_up_s=1.0)
    assert stand.fleet is not None
    # A hung process: its summaryState still says STANDBY, but it sends no heartbeat.
    stand.fleet.set_behaviour(ATMCS, CscBehaviour(heartbeat_interval_s=math.inf))
    await asyncio.sleep(stand.heartbeat_window_s + 0.1)  # its last heartbeat is now too old

    async def bring_up(run: UpgradeRun) -> None:
        await wait_for_bring_up(run, "deploy")

    state = await run_steps(name, bring_up)

    assert state.is_completed(), state
    result = await state.aresult()
    assert [s.split(" (")[0] for s in result["short"]] == ["ATMCS:0"], result
    assert "STANDBY, heartbeat" in result["short"][0]
    assert any("ATMCS:0 (STANDBY" in m.text for m in stand.slack_messages)
    assert "ATMCS:0 (STANDBY" in await report_of(state)


# --- Shutting down -------------------------------------------------------------------------------


async def shutdown(run: UpgradeRun) -> None:
    """The full upgrade's shutdown section, as `full_upgrade` calls it."""
    await shut_down_control_system(reason=f"{run.upgrade_id} upgrade")


def step_detail(report: str, title: str) -> str:
    """The detail column of the report's row for the step titled ``title``."""
    rows = [line for line in report.splitlines() if line.startswith(f"| shut down | {title} |")]
    assert len(rows) == 1, rows
    return rows[0].split(" | ")[-1].removesuffix(" |")


def exit_controls(site: SimulatedSite, since: int, csc: CscName) -> list[str]:
    """Who sent ``csc`` each of its ``exitControl`` since record ``since`` (SAL identities)."""
    return [
        str(r.body.get("identity", ""))
        for r in site.write_log.records[since:]
        if r.service == "sal" and r.method == "exitControl" and r.target == str(csc)
    ]


async def test_fault_csc_that_never_reports_offline_is_confirmed_by_silence(
    tmp_path: Path,
) -> None:
    async with open_stand(tmp_path, stand_config(quiet=frozenset({str(MTVMS)}))) as stand:
        name = await save(stand, transition_s=5.0)
        since = len(stand.write_log.records)

        state = await run_steps(name, shutdown)

        # The VMS acked exitControl and fell silent without ever saying OFFLINE: that is gone.
        assert state.is_completed(), state
        assert sal_commands(stand.write_log.records[since:], "exitControl").count("MTVMS:1") == 1
        assert exit_controls(stand, since, MTVMS)[0].startswith("Script:")
        assert stand.fleet is not None
        assert stand.fleet.state_of(MTVMS) is None
        report = await report_of(state)
        targets = len(STAND_CSCS)
        assert step_detail(report, "Confirmed by heartbeats") == f"{targets} CSCs silent"
        assert "MTVMS:1" not in step_detail(report, "Stragglers OFFLINE in parallel")


async def test_fault_csc_that_never_reports_offline_and_keeps_beating_stops_the_run(
    tmp_path: Path,
) -> None:
    async with open_stand(tmp_path, stand_config(quiet=frozenset({str(MTVMS)}))) as stand:
        name = await save(stand, transition_s=2.0)
        assert stand.fleet is not None
        # It acks exitControl and carries on as if nothing had been asked: never OFFLINE, and
        # its heartbeats go on.
        stand.fleet.set_behaviour(
            MTVMS,
            CscBehaviour(
                never_reports_offline=True,
                forced_acks={"exitControl": (SalRetCode.CMD_COMPLETE, "Done")},
            ),
        )
        since = len(stand.write_log.records)

        state = await run_steps(name, shutdown)

        # Given its window to fall silent, it is a straggler: sent OFFLINE once by the flow,
        # it still beats, and the run stops naming it.
        assert state.is_failed(), state
        message = state.message or ""
        assert "could not send OFFLINE: MTVMS:1:" in message, message
        senders = exit_controls(stand, since, MTVMS)
        assert len(senders) == 2, senders
        assert senders[0].startswith("Script:")
        assert not senders[1].startswith("Script:")
        assert stand.fleet.state_of(MTVMS) is State.STANDBY
        report = await report_of(state)
        assert "Stopped: RuntimeError: could not send OFFLINE: MTVMS:1:" in report
        # It is the one straggler, and it is not counted as sent.
        detail = step_detail(report, "Stragglers OFFLINE in parallel")
        assert detail.startswith("none sent; could not send OFFLINE: MTVMS:1"), detail
        # The other CSCs were shut down all the same.
        others = STAND_CSCS - {str(MTVMS)}
        assert all(stand.fleet.state_of(parse_csc_name(c)) is None for c in others)


async def test_fault_shutdown_script_failed_the_flow_resumes_the_queue_and_sends_the_rest_offline(
    stand: SimulatedSite,
) -> None:
    name = await save(stand, transition_s=5.0)
    config = stand.site_config(name)
    queue = f"ScriptQueue:{config.shutdown.queue}"
    # It crashes before sending anything OFFLINE: every CSC but the Watcher is still running.
    stand.script_queues.fail_next_run("system_wide_shutdown.py", "Simulated crash")
    since = len(stand.write_log.records)

    state = await run_steps(name, shutdown)

    assert state.is_completed(), state
    records = stand.write_log.records[since:]
    flow = exit_controls(stand, since, CscName(name="Watcher", index=0))[0]  # the flow's own
    assert not flow.startswith("Script:")
    # The paused queue was resumed first (its next script sends the queues OFFLINE), then the
    # flow sent every CSC the script left OFFLINE itself, each once.
    resumed = [i for i, r in enumerate(records) if r.method == "resume" and r.target == queue]
    assert len(resumed) == 1, resumed
    by_flow = [
        (i, r.target)
        for i, r in enumerate(records)
        if r.service == "sal"
        and r.method == "exitControl"
        and r.body.get("identity") == flow
        and r.target != "Watcher:0"
    ]
    left = {
        str(e.name)
        for e in config.cscs
        if e.summary_state and e.name.name not in {"Watcher", "ScriptQueue"}
    }
    assert sorted(t for _, t in by_flow) == sorted(left)
    assert min(i for i, _ in by_flow) > resumed[0]
    assert sal_commands(records, "exitControl").count("ATDome:0") == 1
    assert stand.fleet is not None
    assert all(stand.fleet.state_of(e.name) is None for e in config.cscs if e.summary_state)
    report = await report_of(state)
    detail = step_detail(report, "system_wide_shutdown.py")
    assert "FAILED" in detail
    assert "queue resumed" in detail
    assert f"{len(left)} sent OFFLINE" in step_detail(report, "Stragglers OFFLINE in parallel")


async def test_fault_shutdown_script_that_does_not_end_in_time_stops_the_run_naming_it(
    stand: SimulatedSite,
) -> None:
    name = await save(stand, transition_s=3.0, shutdown_script_s=2.0)
    assert stand.fleet is not None
    stand.fleet.set_behaviour(ATDOME, CscBehaviour(answer_delay_s=5.0))  # the script waits on it

    state = await run_steps(name, shutdown)

    # The script's time limit, named as such (a TimeoutError, not the site's lock being busy).
    assert state.is_failed(), state
    message = state.message or ""
    assert "(system_wide_shutdown.py) did not finish within 2.0 s" in message, message
    assert "busy" not in message
    assert "Stopped: ScriptTimeout: ScriptQueue:1 script" in await report_of(state)


# --- Argo CD -------------------------------------------------------------------------------------


def _sync(site: SimulatedSite, app: str) -> Steps:
    async def sync(run: UpgradeRun) -> None:
        site.model.publish_upgrade(
            revision="5f3e2a1", image_tag=site.options.upgrade_image_tag, apps=[app]
        )
        await sync_app(run, "deploy", app)

    return sync


async def test_fault_argocd_first_sync_fails_spuriously_is_retried(
    calm_stand: SimulatedSite,
) -> None:
    stand = calm_stand
    name = await save(stand)
    stand.argocd_app.state.argocd.fail_first_sync("auxtel")

    state = await run_steps(name, _sync(stand, "auxtel"))

    assert state.is_completed(), state
    assert syncs(stand).count("auxtel") == 2
    assert stand.model.applications["auxtel"].sync_status == "Synced"
    assert "auxtel @ 5f3e2a1" in await report_of(state)


async def test_fault_argocd_sync_failing_for_good_stops_the_run_with_argos_message(
    calm_stand: SimulatedSite,
) -> None:
    stand = calm_stand
    name = await save(stand)
    message = 'Job.batch "cbp-job" is invalid: spec.template: field is immutable'
    argocd = stand.argocd_app.state.argocd
    argocd.fail_every_sync("calsys", message)
    try:
        state = await run_steps(name, _sync(stand, "calsys"))
    finally:
        argocd.clear_faults()

    assert state.is_failed(), state
    assert message in (state.message or "")
    assert syncs(stand).count("calsys") == 2  # the spurious-failure retry, and no more
    assert stand.model.applications["calsys"].sync_status != "Synced"
    report = await report_of(state)
    assert "Stopped: ArgoCdSyncFailedError" in report
    assert message in report


# --- Kubernetes ----------------------------------------------------------------------------------


async def test_fault_kubernetes_5xx_is_retried(stand: SimulatedSite) -> None:
    name = await save(stand)
    api = stand.kubernetes_app.state.kubernetes
    api.fail_next(2, 503)
    api.fail_next(1, 500)

    state = await run_steps(name, in_step("clean up", "telegraf-down", telegraf_to_zero))

    assert state.is_completed(), state
    assert telegraf_replicas(stand) == {0}
    statuses = [r.target for r in stand.write_log.records if r.service == "kubernetes"]
    assert len(statuses) == len(stand.base.telegraf.deployments)  # each scaled once


async def test_fault_kubernetes_409_stops_the_step_and_puts_telegraf_back(
    stand: SimulatedSite,
) -> None:
    name = await save(stand)
    stand.kubernetes_app.state.kubernetes.conflict_next_writes(1)

    state = await run_steps(name, in_step("clean up", "telegraf-down", telegraf_to_zero))

    # A conflict is an answer, not a glitch: not retried; the run stops and says why.
    assert state.is_failed(), state
    assert "409" in (state.message or "")
    assert telegraf_replicas(stand) == {1}
    report = await report_of(state)
    assert "Stopped: KubernetesConflictError" in report
    assert "restored: telegraf connectors back to 1 replica(s)" in report


async def test_fault_wrong_cluster_context_stops_before_any_change(
    calm_stand: SimulatedSite,
) -> None:
    name = f"faults-{uuid.uuid4().hex[:6]}"
    config = calm_stand.site_config(name)
    # The kubeconfig's context points at the simulation; the site file names the BTS's server.
    kubernetes = config.kubernetes.model_copy(
        update={"cluster_server": "https://base-lsp.lsst.codes:6443"}
    )
    name = await save(calm_stand, config.model_copy(update={"kubernetes": kubernetes}))
    requests = len(calm_stand.kubernetes_app.state.kubernetes.requests)
    since = len(calm_stand.write_log.records)

    state = await full_upgrade_of(name)

    problems = preflight_problems(state, calm_stand, since)
    # Reported once, by the Kubernetes check (which also lists telegraf's Deployments).
    assert [p.partition(":")[0] for p in problems] == ["Kubernetes"], problems
    assert "https://base-lsp.lsst.codes:6443" in problems[0]
    assert len(calm_stand.kubernetes_app.state.kubernetes.requests) == requests


async def test_fault_expired_kubernetes_token_stops_with_a_clear_message(
    calm_stand: SimulatedSite,
) -> None:
    stand = calm_stand
    name = await save(stand)
    api = stand.kubernetes_app.state.kubernetes
    token, api.token = api.token, "rotated-" + uuid.uuid4().hex  # the flow's token expired
    since = len(stand.write_log.records)
    try:
        state = await run_steps(name, in_step("clean up", "telegraf-down", telegraf_to_zero))
    finally:
        api.token = token

    assert state.is_failed(), state
    message = state.message or ""
    assert "HTTP 401" in message
    assert "expired token" in message
    assert telegraf_replicas(stand) == {1}
    assert changes(stand, since) == []


# --- Kafka, the schema registry, LOVE, Slack -----------------------------------------------------


async def test_fault_schema_registry_down_stops_before_any_change(
    calm_stand: SimulatedSite,
) -> None:
    name = await save(calm_stand)
    registry = calm_stand.registry_app.state.registry
    registry.down = True
    since = len(calm_stand.write_log.records)
    try:
        state = await full_upgrade_of(name)
    finally:
        registry.down = False

    problems = preflight_problems(state, calm_stand, since)
    # The ScriptQueues' check, which decodes SAL with the registry's schemas, says so too.
    assert any(p.startswith("schema registry: ") and "503" in p for p in problems), problems
    assert "Stopped: PreflightError" in await report_of(state)


async def test_fault_love_504_stops_before_any_change(calm_stand: SimulatedSite) -> None:
    name = await save(calm_stand)
    calm_stand.love_app.state.love.fail_next(1, 504)
    since = len(calm_stand.write_log.records)

    state = await full_upgrade_of(name)

    problems = preflight_problems(state, calm_stand, since)
    assert [p.partition(":")[0] for p in problems] == ["LOVE"], problems
    assert "504" in problems[0]


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        (
            "group_prefix",
            "telegraf-consumer",
            "'telegraf-consumer' (site file: telegraf.group_prefix)",
        ),
        (
            "selector",
            "app=telegraf",
            "labelled app=telegraf in namespace sasquatch (site file: telegraf.selector",
        ),
    ],
)
async def test_fault_misspelt_telegraf_selection_stops_before_any_change(
    calm_stand: SimulatedSite, field: str, value: str, named: str
) -> None:
    name = f"faults-{uuid.uuid4().hex[:6]}"
    config = calm_stand.site_config(name)
    # A misspelt group prefix or label selector: it selects nothing at the site.
    telegraf = config.telegraf.model_copy(update={field: value})
    name = await save(calm_stand, config.model_copy(update={"telegraf": telegraf}))
    since = len(calm_stand.write_log.records)

    state = await full_upgrade_of(name)

    # One problem: the other field and the LOVE producers' prefix are right.
    problems = preflight_problems(state, calm_stand, since)
    assert len(problems) == 1, problems
    assert named in problems[0]


async def test_fault_kubernetes_refusing_the_preflight_is_reported_once(
    calm_stand: SimulatedSite,
) -> None:
    name = await save(calm_stand)
    api = calm_stand.kubernetes_app.state.kubernetes
    token, api.token = api.token, "rotated-" + uuid.uuid4().hex
    since = len(calm_stand.write_log.records)
    try:
        state = await full_upgrade_of(name)
    finally:
        api.token = token

    # One problem, though the Kubernetes check also lists telegraf's Deployments here.
    problems = preflight_problems(state, calm_stand, since)
    assert [p.partition(":")[0] for p in problems] == ["Kubernetes"], problems
    assert "HTTP 401" in problems[0]


async def gate_notice_and_change(run: UpgradeRun) -> None:
    """The cleanup's first steps: a sign-off (posted to Slack), a notice, then a change."""
    await run.gate("camera-bridges", "Camera bridges stopped", "Stop the camera bridges.")
    await run.notify("The control system is down: ready for Stage 1.")
    async with run.step("clean up", "telegraf-down", "telegraf scaled to 0") as step:
        await telegraf_to_zero(run, step)


async def test_fault_slack_down_the_run_goes_on(stand: SimulatedSite) -> None:
    name = await save(stand)
    slack = stand.slack_app.state.slack
    slack.down = True
    operator = SimulatedOperator(tag=name, confirm_site=name)

    state = await run_steps(name, gate_notice_and_change, operator)

    # Nobody could be told on Slack, yet the gate was answered and the change was made.
    assert state.is_completed(), state
    assert operator.answered == [("camera-bridges", "proceed")]
    assert len(slack.requests) >= 2  # the sign-off's notice and the run's were tried
    assert stand.slack_messages == []
    assert telegraf_replicas(stand) == {0}


async def test_fault_lag_that_never_drains_asks_the_operator(stand: SimulatedSite) -> None:
    name = await save(stand, lag_tolerance=0, lag_drain_s=1.0)
    await telegraf_stuck(stand)
    since = len(stand.write_log.records)
    operator = SimulatedOperator(tag=name, confirm_site=name)

    async def drain(run: UpgradeRun) -> None:
        async with run.step("clean up", "lag-drained", "drained") as step:
            await wait_for_lag_drained(run, step, "lag before cleanup")

    state = await run_steps(name, drain, operator)

    assert state.is_completed(), state
    assert operator.answered == [("lag-not-drained", "proceed")]
    assert any("Consumer lag has not drained" in m.text for m in stand.slack_messages)
    assert changes(stand, since) == []
    report = await report_of(state)
    assert "lag before cleanup" in report


async def test_fault_kafka_broker_restarted_mid_wait_is_retried_and_the_wait_ends(
    stand: SimulatedSite,
) -> None:
    """The broker stops and starts again while the flow waits for the lag to drain.

    The simulated broker keeps its topics in memory, so a restart loses them (and the groups'
    offsets), which the sites' Strimzi brokers do not. What this shows holds either way: the
    reads that met the stopped broker were retried and the wait kept its budget. That the
    wait then sees the same backlog drain, as it would on a broker that keeps its log, is not
    shown here.
    """
    name = await save(stand, lag_tolerance=0, lag_drain_s=3.0)
    consumers = stand.consumers
    assert consumers is not None
    # telegraf is stuck, so the lag wait is still waiting when the broker goes away.
    await telegraf_stuck(stand)
    since = len(stand.write_log.records)
    operator = SimulatedOperator(tag=name, confirm_site=name)

    async def restart_broker() -> None:
        await asyncio.sleep(0.5)
        # The broker crashes and is back 3 s later (tansu keeps topics in memory: they are
        # lost, as when the simulation restarts Kafka).
        await stand.broker.kill()
        # Away long enough for a lag read to meet it, and shorter than the task's retries.
        await asyncio.sleep(3.0)
        await stand.broker.start()
        assert stand.fleet is not None
        stand.fleet.forget_topics()
        consumers.stalled.clear()

    async def drain(run: UpgradeRun) -> None:
        async with run.step("clean up", "lag-drained", "drained") as step:
            restarting = asyncio.create_task(restart_broker())
            try:
                await wait_for_lag_drained(run, step, "lag before cleanup")
            finally:
                await restarting

    state = await run_steps(name, drain, operator)

    # The lag reads that met the stopped broker were retried; the wait then ended on its own
    # or at its budget with the operator's sign-off — it did not fail, and did not hang.
    assert state.is_completed(), state
    assert operator.answered in ([], [("lag-not-drained", "proceed")])
    async with get_client() as client:
        runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    retried = {run.name for run in runs if run.name.startswith("lag of") and run.run_count > 1}
    # Both families are read in one measurement, and the UI names them.
    assert retried == {"lag of telegraf-kafka-consumer* and saluser@love-producer*"}, [
        (run.name, run.run_count) for run in runs
    ]
    assert changes(stand, since) == []
    assert "lag before cleanup" in await report_of(state)


def test_every_fault_in_the_table_has_a_test_here() -> None:
    table = (Path(__file__).resolve().parents[1] / "docs" / "faults.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "::" in line]
    assert len(rows) >= 15
    for row in rows:
        for cell in row.split("|"):
            if "::" not in cell:
                continue
            for ref in cell.replace("`", "").replace("<br>", " ").split():
                if "::" not in ref:
                    continue
                path, test = ref.split("::")
                source = (Path(__file__).resolve().parents[1] / path).read_text()
                assert f"def {test}(" in source, ref
