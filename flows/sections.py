"""The sections of the procedure, as Prefect subflows that every upgrade flow is built from.

Each section is named as the procedure names it, so the run graph reads like
``deploying-the-upgrade.txt``: preconditions, shut down the control system, clean up, update
configurations, deploy. A section reaches its run through `flows.run.current_run`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any, Literal

import anyio
from prefect.logging import get_run_logger

from blocks.site import CscEntry, CscName, State
from clients.kubernetes import KubernetesError
from clients.lag import LagReport
from clients.polling import poll_delays
from clients.registry import CompatibilityLevel
from clients.sal import CscStatus, StateWaitTimeout, gone
from clients.sal.scripts import ScriptOutcome, ScriptQueueExited
from clients.slack import Audience
from flows.affected import JobDeletion
from flows.journal import StepHandle
from flows.preflight import preflight
from flows.run import Restore, UpgradeRun, current_run
from flows.signoff import SignOff
from flows.tagging import section
from flows.tasks import (
    consumer_lags,
    csc_statuses,
    delete_class_jobs,
    failed_csc_jobs,
    get_compatibility,
    k8s_cleanup_all,
    k8s_cleanup_nublado,
    out_of_sync_report,
    resume_queue,
    run_script,
    scale_deployments,
    set_compatibility,
    set_csc_state,
    state_rows,
    sync_application,
)

__all__ = [
    "PhalanxSignOff",
    "clean_up",
    "deploy",
    "preconditions",
    "shut_down_control_system",
    "telegraf_to_zero",
    "update_configurations",
    "wait_for_lag_drained",
]

SyncSasquatch = Literal["auto", "yes", "no"]


class PhalanxSignOff(SignOff):
    """The Phalanx gate also asks for the merged pull request."""

    phalanx_pr_url: str = ""


def _expected(run: UpgradeRun) -> dict[CscName, State]:
    return {entry.name: entry.expected_state for entry in run.site.cscs}


async def record_states(run: UpgradeRun, name: str) -> None:
    """A table of every CSC's state and heartbeat, for the report and the UI."""
    names = [entry.name for entry in run.site.cscs]
    statuses = await csc_statuses(names, run.site.timeouts.heartbeat_window_s)
    await run.table(name, state_rows(statuses, _expected(run)), f"CSC states: {name}")


# --- preconditions -------------------------------------------------------------------------------


@section("preconditions")
async def preconditions() -> None:
    """Everything checked before the first change; Summit-only sign-offs."""
    run = current_run()
    async with run.step("preconditions", "preflight", "Services answer; right cluster") as step:
        problems = await preflight(run, stops_consumers=True)
        step.note("all services answer" if not problems else "; ".join(problems))
    if run.site.is_summit:
        async with run.step("preconditions", "m2-closed-loop", "M2 in closed loop"):
            await run.gate(
                "m2-closed-loop",
                "M2 switched to closed-loop control from its EUI",
                "Ask in #summit-simonyitel or #summit-control-room for M2 to be switched to "
                "closed-loop control from the EUI. **Next:** the Watcher goes OFFLINE and "
                "`system_wide_shutdown.py` runs.",
            )
        async with run.step("preconditions", "hardware-experts", "Hardware experts consulted"):
            await run.gate(
                "hardware-experts",
                "Camera, cold, cryo and vacuum experts consulted",
                "Upgrading systems that control hardware — the camera CCD, cold, cryo and vacuum "
                "systems — must be coordinated with their experts. Proceed once they agree.",
            )


# --- shut down -----------------------------------------------------------------------------------


def _ignored(run: UpgradeRun, entry: CscEntry) -> bool:
    return entry.name.name in run.site.shutdown.ignore


def _shutdown_targets(run: UpgradeRun) -> list[CscName]:
    """The CSCs the shutdown commands: not the ignored ones, nor components without a state
    machine (their Jobs are deleted in the clean-up)."""
    return [
        entry.name for entry in run.site.cscs if not _ignored(run, entry) and entry.summary_state
    ]


@section("shut down the control system")
async def shut_down_control_system(reason: str) -> None:
    """Watcher first, system_wide_shutdown.py, the ScriptQueues last, stragglers, confirmed."""
    run = current_run()
    section = "shut down"
    await record_states(run, "before shutdown")
    async with run.step(section, "watcher-offline", "Watcher OFFLINE first") as step:
        await _watcher_offline(run, step)
    async with run.step(section, "system-wide-shutdown", "system_wide_shutdown.py") as step:
        await _system_wide_shutdown(run, step, reason)
    async with run.step(
        section, "queues-offline", "ScriptQueues OFFLINE, running one last"
    ) as step:
        await _queues_offline(run, step)
    async with run.step(section, "stragglers", "Stragglers OFFLINE in parallel") as step:
        if not _confirmed_earlier(run, step):
            await _stragglers_offline(run, step)
    async with run.step(section, "confirm-shutdown", "Confirmed by heartbeats") as step:
        if not _confirmed_earlier(run, step):
            await _confirm_shutdown(run, step)
    await record_states(run, "after shutdown")


#: Remembered once a run has confirmed the shutdown. A re-run of the upgrade id (after a crash
#: in the deploy, say) must not look for CSCs still running: those running now were brought
#: back by the deploy, and sending them OFFLINE would undo it.
SHUTDOWN_CONFIRMED = "shutdown confirmed"


def _confirmed_earlier(run: UpgradeRun, step: StepHandle) -> bool:
    if run.dry_run or SHUTDOWN_CONFIRMED not in run.memory.facts:
        return False
    step.skip(
        f"confirmed by an earlier run of {run.upgrade_id}: CSCs running now were brought back "
        "by its deploy"
    )
    return True


async def _watcher_offline(run: UpgradeRun, step: StepHandle) -> None:
    site = run.site
    watcher = CscName(name="Watcher", index=0)
    if watcher not in {entry.name for entry in site.cscs}:
        step.skip("the site has no Watcher")
        return
    window = site.timeouts.heartbeat_window_s
    statuses = await csc_statuses([watcher], window)
    if not statuses[watcher].alive(window):
        step.skip("the Watcher is not running")
        return
    await run.act(
        "watcher-offline",
        "Send the Watcher OFFLINE (before anything else, to avoid a flurry of alarms)",
        lambda: set_csc_state(watcher, State.OFFLINE, site.timeouts.transition_s),
    )


async def _system_wide_shutdown(run: UpgradeRun, step: StepHandle, reason: str) -> None:
    site, shutdown = run.site, run.site.shutdown
    config: dict[str, Any] = {
        "user": run.operator_name(),
        "reason": reason,
        "start_with": shutdown.start_with,
        "ignore": shutdown.ignore,
    }
    if shutdown.end_with:
        config["end_with"] = shutdown.end_with
    result = await run.act(
        "system-wide-shutdown",
        f"Run system_wide_shutdown.py on ScriptQueue:{shutdown.queue} with {config}",
        lambda: run_script(
            shutdown.queue, "system_wide_shutdown.py", config, site.timeouts.shutdown_script_s
        ),
    )
    if result is None:
        return
    step.note(f"script {result.script_index} {result.outcome.value}")
    if result.outcome is ScriptOutcome.CONFIGURE_FAILED:
        raise RuntimeError(
            "system_wide_shutdown.py refused its configuration: check the site file's "
            f"shutdown section ({config})"
        )
    if not result.ok:
        # A failed script pauses its queue; the stragglers step deals with what is left.
        await resume_queue(shutdown.queue)
        step.note("queue resumed; stragglers are sent OFFLINE next")


async def _queues_offline(run: UpgradeRun, step: StepHandle) -> None:
    site, shutdown = run.site, run.site.shutdown
    config = {
        "data": [[f"ScriptQueue:{q}", "OFFLINE"] for q in shutdown.queue_offline_order()],
        # The Watcher is gone: muting alarms would block for an hour per CSC.
        "mute_alarms": False,
    }
    try:
        result = await run.act(
            "queues-offline",
            f"Run set_summary_state.py on ScriptQueue:{shutdown.queue} with {config}",
            lambda: run_script(
                shutdown.queue, "set_summary_state.py", config, site.timeouts.shutdown_script_s
            ),
        )
    except ScriptQueueExited:
        # The queue that ran the script went OFFLINE with it: the heartbeats say the rest.
        step.note("the queue running the script exited with it")
        return
    if result is not None:
        step.note(f"script {result.script_index} {result.outcome.value}")


async def _confirm_shutdown(run: UpgradeRun, step: StepHandle) -> None:
    site = run.site
    if run.dry_run:
        run.journal.planned("Confirm by heartbeats that every CSC but the ignored ones is gone")
        return
    targets = _shutdown_targets(run)
    window = site.timeouts.heartbeat_window_s
    board = await run.board()
    try:
        await board.wait_for(gone(window), targets, deadline_s=window * 3)
    except StateWaitTimeout as exc:
        raise RuntimeError(f"still heartbeating after the shutdown: {exc}") from None
    kept = [str(e.name) for e in site.cscs if _ignored(run, e)]
    step.note(
        f"{len(targets)} CSCs silent" + (f"; kept running: {', '.join(kept)}" if kept else "")
    )
    await run.remember_fact(SHUTDOWN_CONFIRMED, f"{len(targets)} CSCs silent")


#: Beyond a heartbeat window, before a silent CSC's heartbeats count as stopped: the age read
#: and the sleep are not to the millisecond.
_QUIET_MARGIN_S = 0.5


async def _still_running(run: UpgradeRun, targets: list[CscName]) -> list[CscName]:
    """The CSCs among ``targets`` still running: beating, and not saying OFFLINE.

    A CSC that just went OFFLINE has beaten within the window moments ago: its summaryState
    says it is gone. The site's CSCs that never report OFFLINE (the VMSs) count as running only
    if they still beat once a whole window has passed since the last heartbeat seen.
    """
    window = run.site.timeouts.heartbeat_window_s

    def running(status: CscStatus) -> bool:
        return status.alive(window) and status.state is not State.OFFLINE

    statuses = await csc_statuses(targets, window)
    candidates = [csc for csc, status in statuses.items() if running(status)]
    quiet = {entry.name for entry in run.site.cscs if entry.never_reports_offline}
    silent = [csc for csc in candidates if csc in quiet]
    if silent and not run.dry_run:
        # Until the newest of their heartbeats is a window old, and a little more.
        newest = min(statuses[csc].heartbeat_age_s or 0.0 for csc in silent)
        await asyncio.sleep(max(0.0, window - newest) + _QUIET_MARGIN_S)
        again = await csc_statuses(silent, window)
        candidates = [csc for csc in candidates if csc not in quiet or running(again[csc])]
    return candidates


async def _stragglers_offline(run: UpgradeRun, step: StepHandle) -> None:
    site = run.site
    alive = await _still_running(run, _shutdown_targets(run))
    if not alive:
        step.note("none")
        return
    if run.dry_run:
        # Nothing was shut down: which CSCs will still run after the scripts is not known yet.
        run.journal.planned(
            f"Send every CSC still running after the scripts OFFLINE, {site.csc_parallelism} at "
            f"a time (the scripts should leave none; {len(alive)} of them run now)"
        )
        return
    await send_offline(run, step, alive)


async def send_offline(run: UpgradeRun, step: StepHandle, cscs: list[CscName]) -> None:
    """Send ``cscs`` OFFLINE in parallel, ``csc_parallelism`` at a time, each once per upgrade.

    Raises
    ------
    RuntimeError
        Any failed; every one is tried first, and all are named.
    """
    site = run.site
    await run.services.sal.prepare_commands({csc.name for csc in cscs})
    limiter = anyio.CapacityLimiter(site.csc_parallelism)
    failures: dict[CscName, str] = {}

    async def offline(csc: CscName) -> None:
        async with limiter:
            try:
                await run.act(
                    f"offline-{csc}",
                    f"Send {csc} OFFLINE",
                    lambda: set_csc_state(csc, State.OFFLINE, site.timeouts.transition_s),
                )
            except Exception as exc:  # noqa: BLE001 - every straggler is tried; all are reported
                failures[csc] = f"{csc}: {exc}"

    await asyncio.gather(*(offline(csc) for csc in cscs))
    sent = [csc for csc in cscs if csc not in failures]
    step.note(f"{len(sent)} sent OFFLINE: {', '.join(map(str, sent))}" if sent else "none sent")
    if failures:
        raise RuntimeError("could not send OFFLINE: " + "; ".join(failures.values()))


# --- clean up ------------------------------------------------------------------------------------


@section("clean up")
async def clean_up() -> None:
    """Camera bridges, bare metal, lag drained, CSC Jobs and Nublado deleted, telegraf to 0."""
    run = current_run()
    site = run.site
    section = "clean up"
    async with run.step(section, "camera-bridges", "Camera bridges stopped"):
        await run.gate(
            "camera-bridges",
            "Camera bridges stopped on the mcm machines",
            "Log into the mcm machines and stop the bridges with `sudo systemctl stop`. "
            "**Next:** the camera upgrade team is told the system is ready for Stage 1.",
        )
    async with run.step(section, "camera-stage-1", "Camera team told: Stage 1"):
        await run.notify(
            f"{site.title}: the control system is down — ready for camera upgrade Stage 1.",
            audience=Audience.CAMERA,
            once="camera-stage-1",
        )
    if site.is_summit:
        async with run.step(section, "bare-metal-shutdown", "Bare-metal deployments shut down"):
            await run.gate(
                "bare-metal-shutdown",
                "Bare-metal deployments shut down and cleaned up",
                "Shut down and clean up the bare-metal deployments. **Next:** the flow waits "
                "for telegraf and the LOVE producers to finish consuming.",
            )
    async with run.step(section, "lag-drained", "telegraf and LOVE producers drained") as step:
        if run.already_done("cleanup-all"):
            # A re-run: the drain was confirmed before the cleanup, and the consumers may be
            # gone (LOVE's producers) or back with new traffic (the deploy had begun).
            step.skip(f"drained before cleanup_all, in an earlier run of {run.upgrade_id}")
        else:
            await _wait_for_lag_drained(run, step, "lag before cleanup")
    async with run.step(section, "cleanup-all", "CSC Jobs deleted (cleanup_all)") as step:
        report = await run.act(
            "cleanup-all",
            "Delete the CSC Jobs as cleanup_all does: "
            + ", ".join(site.cleanup.job_namespaces)
            + f"; OCPS jobs in {site.cleanup.uws_namespace}; LOVE's deployments, jobs and HPAs",
            k8s_cleanup_all,
        )
        if report is not None:
            step.note(f"{report.jobs_deleted} jobs deleted")
    async with run.step(section, "cleanup-nublado", "Nublado user namespaces deleted") as step:
        deleted = await run.act(
            "cleanup-nublado",
            f"Delete the namespaces labelled {site.cleanup.nublado_selector}",
            k8s_cleanup_nublado,
        )
        if deleted is not None:
            step.note(f"{len(deleted.deleted)} namespaces")
    async with run.step(section, "telegraf-down", "telegraf scaled to 0") as step:
        await _telegraf_to_zero(run, step)


def backlog_left(start: LagReport, now: LagReport) -> int:
    """Messages that were waiting when ``start`` was measured and are still not consumed.

    New messages (the heartbeats of the CSCs kept running) do not count: draining means the
    consumers got through what was in the topics, not that nothing new arrives.
    """
    target = {
        (group.group, row.topic, row.partition): row.end
        for group in start.groups
        for row in group.partitions
    }
    left = 0
    for group in now.groups:
        if group.stale:
            continue  # nobody consumes for it: waiting would never end (kt counts it anyway)
        for row in group.partitions:
            end = target.get((group.group, row.topic, row.partition))
            if end is not None:
                left += max(0, end - row.committed)
    return left


async def _wait_for_lag_drained(run: UpgradeRun, step: StepHandle, table: str) -> None:
    site = run.site
    prefixes = (site.telegraf.group_prefix, site.love_producers.group_prefix)
    if run.dry_run:
        # Nothing was stopped: the lag now is what the plan can show, once.
        reports = await consumer_lags(prefixes)
        run.journal.planned(
            "Wait until "
            + " and ".join(f"{p}*" for p in prefixes)
            + f" have read what the topics hold (up to {site.timeouts.lag_drain_s:.0f} s, "
            "then ask the operator)"
        )
        await run.table(table, _lag_rows(reports))
        step.note(
            ", ".join(f"{p}* lag now {r.total_lag}" for p, r in zip(prefixes, reports, strict=True))
        )
        return
    deadline = anyio.current_time() + site.timeouts.lag_drain_s
    start = await consumer_lags(prefixes)
    delays = poll_delays(site.timeouts.poll_s)
    while True:
        reports = await consumer_lags(prefixes)
        remaining = {
            now.prefix: backlog_left(first, now) for first, now in zip(start, reports, strict=True)
        }
        if all(left <= site.lag_tolerance for left in remaining.values()):
            break
        if anyio.current_time() >= deadline:
            await run.table(table, _lag_rows(reports))
            await run.gate(
                "lag-not-drained",
                "Consumer lag has not drained",
                f"After {site.timeouts.lag_drain_s:.0f} s the consumers still have to read: "
                + ", ".join(f"{p}*: {left} messages" for p, left in remaining.items())
                + ". Old messages left in a topic can keep the LOVE producers and telegraf "
                "from starting after a schema change. Proceed anyway, or abort.",
            )
            break
        await asyncio.sleep(next(delays))
    await run.table(table, _lag_rows(reports))
    step.note(", ".join(f"{p}* lag {r.total_lag}" for p, r in zip(prefixes, reports, strict=True)))


def _lag_rows(reports: Iterable[LagReport]) -> list[dict[str, Any]]:
    return [
        {
            "group": group.group,
            "lag": group.lag,
            "unknown partitions": len(group.unknown_partitions),
            "stale": group.stale,
        }
        for report in reports
        for group in report.groups
    ]


async def wait_for_lag_drained(run: UpgradeRun, step: StepHandle, table: str) -> None:
    """Wait until telegraf and the LOVE producers have read what was in the topics (a gate if
    they do not within the site's budget); the lag goes into the report as ``table``."""
    await _wait_for_lag_drained(run, step, table)


async def telegraf_to_zero(
    run: UpgradeRun, step: StepHandle, *, restore_on_failure: bool = True
) -> None:
    """Scale the telegraf connectors to 0, recording their replicas first (as the fact
    ``telegraf replicas before``, which `telegraf_back` reads). ``restore_on_failure=False``
    leaves putting them back to a later run (the OS/K8s recovery) instead of the failed one."""
    await _telegraf_to_zero(run, step, restore_on_failure=restore_on_failure)


async def _telegraf_to_zero(
    run: UpgradeRun, step: StepHandle, *, restore_on_failure: bool = True
) -> None:
    site = run.site
    telegraf = site.telegraf
    if not run.dry_run:
        deployments = await run.services.kubernetes.list_deployments(
            telegraf.namespace, selector=telegraf.selector
        )
        before = {d.name: d.replicas for d in deployments}
        before = await run.remember_fact("telegraf replicas before", before)
        replicas = max(before.values(), default=1) or 1
        if restore_on_failure:
            run.on_failure_restore(
                Restore(
                    key="telegraf",
                    description=f"telegraf connectors back to {replicas} replica(s)",
                    manual=f"kubectl scale deploy -n {telegraf.namespace} --selector "
                    f"{telegraf.selector} --replicas={replicas}",
                    action=lambda: scale_deployments(
                        telegraf.namespace, telegraf.selector, replicas
                    ),
                    undoes=("telegraf-to-0",),
                )
            )
    changes = await run.act(
        "telegraf-to-0",
        f"Scale the telegraf connectors ({telegraf.selector}) in {telegraf.namespace} to 0",
        lambda: scale_deployments(telegraf.namespace, telegraf.selector, 0),
    )
    if changes is not None:
        step.note(f"{sum(c.changed for c in changes)} connectors scaled to 0")


# --- update configurations -----------------------------------------------------------------------


@section("update configurations")
async def update_configurations(breaks_schema_compatibility: bool) -> None:
    """Phalanx merged, bare-metal configuration, camera Stage 2, registry compatibility NONE."""
    run = current_run()
    site = run.site
    section = "update configurations"
    async with run.step(
        section, "phalanx", "Phalanx PR merged; configuration branches pushed"
    ) as step:
        answer = await run.gate(
            "phalanx-merged",
            "Phalanx PR merged and configuration branches pushed",
            "Make sure the Phalanx branch (lsst-sqre/phalanx) has every update, create its PR "
            "and merge it; every other configuration repository must have its commits on "
            "branches pushed to GitHub. Give the PR's URL. **Next:** "
            + (
                "the registry's compatibility is set to NONE, then "
                if breaks_schema_compatibility
                else ""
            )
            + "Argo CD syncs the applications.",
            input_model=PhalanxSignOff,
        )
        if answer.inputs.get("phalanx_pr_url"):
            step.note(answer.inputs["phalanx_pr_url"])
            run.journal.facts["Phalanx PR"] = answer.inputs["phalanx_pr_url"]
    if site.is_summit:
        async with run.step(
            section, "bare-metal-configuration", "Bare-metal configurations updated"
        ):
            await run.gate(
                "bare-metal-configuration",
                "Configuration repositories updated on the bare-metal machines",
                "Update the T&S configuration repositories on the bare-metal deployments (DM "
                "and Camera are handled by their system principals).",
            )
    async with run.step(section, "camera-stage-2", "Camera team told: Stage 2"):
        await run.notify(
            f"{site.title}: configurations are updated; the camera upgrade can go on to Stage 2.",
            audience=Audience.CAMERA,
            once="camera-stage-2",
        )
    if breaks_schema_compatibility:
        async with run.step(section, "registry-none", "Schema registry compatibility NONE") as step:
            await _registry_to_none(run, step)


async def _registry_to_none(run: UpgradeRun, step: StepHandle) -> None:
    if run.dry_run:
        run.journal.planned("Record the schema registry's compatibility, then set it to NONE")
        return
    level = CompatibilityLevel(
        await run.remember_fact("registry compatibility before", (await get_compatibility()).value)
    )
    run.on_failure_restore(
        Restore(
            key="registry",
            description=f"schema registry compatibility back to {level.value}",
            manual="rubin-upgrade registry --site-file <site file> compatibility --set "
            + level.value,
            action=lambda: set_compatibility(level),
            undoes=("registry-none",),
        )
    )
    await run.act(
        "registry-none",
        f"Set the schema registry's compatibility from {level.value} to NONE",
        lambda: set_compatibility(CompatibilityLevel.NONE),
    )
    step.note(f"{level.value} -> NONE")


# --- deploy --------------------------------------------------------------------------------------


@section("deploy")
async def deploy(sync_sasquatch: SyncSasquatch, nublado_available_after: bool) -> None:
    """Argo CD syncs in the site's order, CSCs back, telegraf back, registry restored."""
    run = current_run()
    site = run.site
    section = "deploy"
    if site.is_summit:
        async with run.step(section, "ess-controllers", "ESS controllers updated"):
            await run.gate(
                "ess-controllers", "ESS controllers updated", "Update the ESS controllers."
            )
        async with run.step(section, "crios", "cRIOs updated"):
            await run.gate(
                "crios",
                "cRIOs updated",
                "Update the cRIOs (MTM1M3, MTM1M3TS, MTVMS:1..3) if not done already. **Next:** "
                "Argo CD syncs science-platform, nublado, sasquatch and the telescope apps.",
            )
    for app in site.argocd.platform_apps:
        await sync_app(run, section, app)
    await _sync_sasquatch(run, section, sync_sasquatch)
    for app in site.argocd.sync_order:
        await sync_app(run, section, app)
    if site.is_summit:
        async with run.step(section, "bare-metal-startup", "Bare-metal services started"):
            await run.gate(
                "bare-metal-startup",
                "Services on the bare-metal deployments started",
                "Start the services on the bare-metal deployments. **Next:** the flow waits "
                f"up to {site.timeouts.bring_up_s / 60:.0f} min for every CSC to reach its state.",
            )
    await wait_for_bring_up(run, section)
    async with run.step(section, "telegraf-up", "telegraf back and consuming") as step:
        await telegraf_back(run, step)
    if "registry" in run.restores or "registry compatibility before" in run.memory.facts:
        async with run.step(
            section, "registry-restore", "Schema registry compatibility restored"
        ) as step:
            await restore_registry(run, step)
    await record_states(run, "after bring-up")
    if nublado_available_after:
        async with run.step(section, "nublado-available", "Folks told Nublado is available"):
            await run.notify(f"{site.title}: the upgrade is deployed — Nublado can be used again.")


async def sync_app(run: UpgradeRun, section: str, app: str) -> None:
    async with run.step(section, f"sync-{app}", f"Argo CD sync {app}") as step:
        if not run.dry_run and run.already_done(f"sync-{app}"):
            await _retry_failed_jobs(run, step, app)
            return
        revision = await run.act(
            f"sync-{app}", f"Sync {app} in Argo CD", lambda: sync_application(app)
        )
        if revision is not None:
            step.note(f"revision {revision}" if revision else "synced")
            _note_synced(run, app, revision)


def _note_synced(run: UpgradeRun, app: str, revision: str) -> None:
    run.journal.facts.setdefault("applications synced", [])
    run.journal.facts["applications synced"].append(f"{app} @ {revision or '?'}")


async def _retry_failed_jobs(run: UpgradeRun, step: StepHandle, app: str) -> None:
    """``app`` was synced by an earlier run of this upgrade id. A CSC Job of it that has failed
    since (its CSC refused to start: a schema the registry refused, a bad configuration) does
    not start again by itself, and running the upgrade again once the cause is fixed is how
    an operator retries it: the failed Jobs are deleted and the app synced again, which
    recreates them with the app's images."""
    failed = await failed_csc_jobs(app)
    if not failed:
        step.note("synced by an earlier run")
        return
    by_class: dict[str, list[str]] = {}
    for job in failed:
        csc_class, csc = job.labels.get("csc-class"), job.labels.get("csc")
        if csc_class and csc:
            by_class.setdefault(csc_class, []).append(csc)
    names = ", ".join(sorted(job.name for job in failed))
    if not by_class:
        step.note(f"synced by an earlier run; failed Job(s) without csc-class labels: {names}")
        return
    deletions = [
        JobDeletion(namespace=app, csc_class=csc_class, cscs=tuple(sorted(cscs)))
        for csc_class, cscs in sorted(by_class.items())
    ]

    async def recreate() -> str:
        for deletion in deletions:
            await delete_class_jobs(deletion)
        return await sync_application(app)

    # Each re-run may retry again: the key counts the earlier retries of this upgrade id.
    attempt = 1 + sum(1 for key in run.memory.actions if key.startswith(f"resync-{app}-"))
    revision = await run.act(
        f"resync-{app}-{attempt}",
        f"Delete the failed Job(s) {names} and sync {app} again",
        recreate,
    )
    if revision is not None:
        step.note(f"failed Job(s) {names} deleted and {app} synced again")
        _note_synced(run, app, revision)


async def _sync_sasquatch(run: UpgradeRun, section: str, mode: SyncSasquatch) -> None:
    app = run.site.argocd.sasquatch_app
    if mode == "no":
        async with run.step(section, f"sync-{app}", f"Argo CD sync {app}") as step:
            step.skip("not asked for")
        return
    if mode == "auto":
        async with run.step(section, f"diff-{app}", f"What syncing {app} would change") as step:
            report = await out_of_sync_report(app)
            rows = [
                {"resource": str(r.resource), "change": "; ".join(r.changes) or "differs"}
                for r in report.resources
            ]
            await run.table(f"{app} out of sync", rows or [{"resource": "-", "change": "in sync"}])
            step.note(report.render().splitlines()[0])
        if report.in_sync:
            async with run.step(section, f"sync-{app}", f"Argo CD sync {app}") as step:
                step.skip("already in sync")
            return
    await sync_app(run, section, app)


async def wait_for_bring_up(
    run: UpgradeRun, section: str, cscs: Iterable[CscEntry] | None = None
) -> list[str]:
    """Wait up to the site's budget for the CSCs to reach their expected states; report the
    stragglers on Slack rather than fail (the procedure: report, then carry on).

    A CSC whose Kubernetes Job has failed will not come up by itself (its process refused to
    start: a schema the registry refused, a bad configuration): the wait does not spend the
    rest of the budget on it, and the report gives the Job's failure message.
    """
    site = run.site
    entries = list(cscs if cscs is not None else site.cscs)
    async with run.step(section, "bring-up", "CSCs in their expected states") as step:
        if run.dry_run:
            run.journal.planned(
                f"Wait up to {site.timeouts.bring_up_s:.0f} s for {len(entries)} CSCs to reach "
                "their expected states"
            )
            return []
        by_state: dict[State | None, list[CscName]] = {}
        for entry in entries:
            state = entry.expected_state if entry.summary_state else None
            by_state.setdefault(state, []).append(entry.name)
        deadline = anyio.current_time() + site.timeouts.bring_up_s
        short: list[str] = []
        board = await run.board()
        window = site.timeouts.heartbeat_window_s
        failed: dict[CscName, str] = {}
        async with anyio.create_task_group() as watching:
            watching.start_soon(_watch_failed_jobs, run, entries, failed)
            for state, names in by_state.items():
                remaining = max(0.0, deadline - anyio.current_time())
                # Alive too: a CSC that never reports OFFLINE still shows its last state when
                # gone.
                up = _state_and_alive(state, window)
                try:
                    statuses = await board.wait_for(
                        _up_or_failed(up, failed), names, deadline_s=remaining
                    )
                except StateWaitTimeout as exc:
                    short += [_short(csc, status, failed) for csc, status in exc.short.items()]
                else:
                    short += [
                        _short(csc, s.describe(), failed)
                        for csc, s in statuses.items()
                        if not up(s)
                    ]
            watching.cancel_scope.cancel()
        if short:
            step.note(f"{len(short)} short: " + ", ".join(short))
            run.journal.facts["CSCs short of their expected state"] = short
            await run.notify(
                f":warning: {site.title}: after {site.timeouts.bring_up_s / 60:.0f} min, "
                f"{len(short)} CSC(s) are not in their expected state: " + ", ".join(short)
            )
        else:
            step.note(f"all {len(entries)} CSCs in their expected states")
        return short


def _up_or_failed(
    up: Callable[[CscStatus], bool], failed: dict[CscName, str]
) -> Callable[[CscStatus], bool]:
    """Settled: up, or its Job failed (``failed`` grows as the Jobs are read)."""

    def test(status: CscStatus) -> bool:
        return up(status) or status.csc in failed

    return test


#: A Job's failure message can carry a whole schema: the report and Slack get its start.
_JOB_MESSAGE_CHARS = 400


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(csc: CscName, status: str, failed: dict[CscName, str]) -> str:
    reason = failed.get(csc)
    return f"{csc} ({status})" if reason is None else f"{csc} ({status}; {reason})"


async def _watch_failed_jobs(
    run: UpgradeRun, entries: list[CscEntry], failed: dict[CscName, str]
) -> None:
    """Fill ``failed`` with the CSCs of ``entries`` whose Job has failed, and why.

    A Kubernetes error here is logged, not raised: the wait for the CSCs goes on without it.
    """
    jobs_of = {(e.kubernetes.namespace, e.kubernetes.csc): e.name for e in entries if e.kubernetes}
    if not jobs_of:
        return
    every_s = max(4 * run.site.timeouts.poll_s, 1.0)
    warned = False
    while True:
        try:
            jobs = await run.services.kubernetes.list_jobs(selector="csc")
        except KubernetesError as exc:
            if not warned:
                get_run_logger().warning(
                    "cannot read the CSCs' Jobs (%s); waiting on SAL alone", exc
                )
                warned = True
        else:
            for job in jobs:
                csc = jobs_of.get((job.namespace, job.csc or ""))
                if csc is not None and job.phase == "Failed":
                    message = _clip(job.failure_message or "no message", _JOB_MESSAGE_CHARS)
                    failed[csc] = f"Job {job.namespace}/{job.name} failed: {message}"
        await anyio.sleep(every_s)


def _state_and_alive(state: State | None, window_s: float) -> Callable[[CscStatus], bool]:
    """``state`` None: a component without a state machine is up when it beats."""

    def test(status: CscStatus) -> bool:
        return (state is None or status.state is state) and status.alive(window_s)

    return test


async def telegraf_back(run: UpgradeRun, step: StepHandle) -> None:
    site = run.site
    telegraf = site.telegraf
    before = run.memory.facts.get("telegraf replicas before") or {}
    replicas = max(before.values(), default=1) or 1
    changes = await run.act(
        "telegraf-back",
        f"Scale the telegraf connectors back to {replicas}",
        lambda: scale_deployments(telegraf.namespace, telegraf.selector, replicas),
    )
    run.restored("telegraf")
    if changes is None:
        return
    # Consuming again means getting through what piled up while it was scaled to 0.
    deadline = anyio.current_time() + site.timeouts.lag_drain_s
    (start,) = await consumer_lags((telegraf.group_prefix,))
    delays = poll_delays(site.timeouts.poll_s)
    while True:
        (report,) = await consumer_lags((telegraf.group_prefix,))
        if report.groups and backlog_left(start, report) <= site.lag_tolerance:
            break
        if anyio.current_time() >= deadline:
            await run.notify(
                f":warning: {site.title}: telegraf is back but has not caught up "
                f"({backlog_left(start, report)} messages) within the drain budget: check "
                "Chronograf."
            )
            break
        await asyncio.sleep(next(delays))
    await run.table("lag after bring-up", _lag_rows([report]))
    step.note(f"{len(changes)} connectors at {replicas}; telegraf lag {report.total_lag}")


async def restore_registry(run: UpgradeRun, step: StepHandle) -> None:
    recorded = run.memory.facts.get("registry compatibility before")
    if recorded is None:
        step.skip("the compatibility was not changed")
        return
    level = CompatibilityLevel(recorded)
    await run.act(
        "registry-restore",
        f"Set the schema registry's compatibility back to {level.value}",
        lambda: set_compatibility(level),
    )
    run.restored("registry")
    run.journal.facts["registry compatibility after"] = (await get_compatibility()).value
    step.note(f"NONE -> {level.value}")
