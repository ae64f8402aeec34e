"""``incremental-upgrade``: redeploy a few CSCs and the ScriptQueues ("Deploying an Incremental
Upgrade" in the procedure).

Run as ``prefect deployment run incremental-upgrade/<site>`` with the CSCs the upgrade changes,
as ``Name[:index]`` or ``csc-class`` names. They are checked against the site's inventory before
anything changes. Then: the Watcher OFFLINE first; the affected CSCs and the ScriptQueues OFFLINE
with ``set_summary_state.py``; only their Jobs deleted, by ``csc-class``; a sign-off that the
configurations are updated; the ScriptQueues' app and the affected apps synced; their states
awaited; the new topics' schema subjects reported (and the expected ones required); each
affected CSC cycled through its states; and, at a test stand, minimal testing of the telescopes
whose components changed.

The Watcher's Job is deleted too when this run sent it OFFLINE: its process exited with
``exitControl`` and only a new Job brings it back (Argo CD leaves a completed Job alone), so it
comes back with the sync of its app and is returned to the state it was in before.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from prefect import flow, task
from prefect.client.schemas.objects import State as PrefectState
from prefect.states import Cancelled

from blocks.site import CscEntry, CscName, State
from clients.kubernetes import NamespaceCleanup
from clients.sal import StateWaitTimeout, gone
from clients.sal import offline as offline_or_gone
from clients.sal.scripts import ScriptQueueExited
from flows.affected import (
    JobDeletion,
    Telescope,
    cycle_path,
    expected_subjects,
    job_deletions,
    resolve_affected,
    telescopes_affected,
)
from flows.common import upgrade_run
from flows.journal import StepHandle
from flows.minimal_testing import planned_steps, run_minimal_testing
from flows.preflight import preflight
from flows.run import UpgradeRun, current_run
from flows.sections import (
    PhalanxSignOff,
    _watcher_offline,
    send_offline,
    sync_app,
    wait_for_bring_up,
)
from flows.signoff import UpgradeAborted
from flows.tagging import section
from flows.tasks import (
    TRANSIENT,
    csc_statuses,
    delete_class_jobs,
    run_script,
    set_csc_state,
    state_rows,
)

__all__ = ["incremental_upgrade"]

FLOW = "incremental-upgrade"
WATCHER = CscName(name="Watcher", index=0)
# Steps an incremental upgrade records, for the progress bar (two apps synced).
_PLANNED_STEPS = 16
_WATCHER_BEFORE = "Watcher state before"
_SUBJECTS_BEFORE = "registry subjects before"
_BROUGHT_UP = "redeployed CSCs came up"


@flow(name=FLOW, log_prints=True)
async def incremental_upgrade(
    site: str,
    upgrade_id: str,
    cscs: list[str],
    *,
    expected_new_topics: list[str] | None = None,
    minimal_testing: bool = False,
    dry_run: bool = False,
) -> dict[str, Any] | PrefectState[Any]:
    """Redeploy the CSCs an incremental upgrade changes, and the ScriptQueues.

    Parameters
    ----------
    site
        The name of the site's `Rubin Upgrade Site` block (summit, tts, bts, sim).
    upgrade_id
        The upgrade this run carries out; re-running with the same id resumes: changes already
        made and sign-offs already given are not repeated.
    cscs
        The CSCs the upgrade changes: ``Name[:index]`` (``Scheduler:1``; ``Scheduler`` for every
        instance) or ``csc-class`` names (``scheduler``). Checked against the site's inventory
        before anything changes.
    expected_new_topics
        Topics the new versions add (``Scheduler.logevent_newEvent``): the run fails if the
        schema registry does not have them once the CSCs are up.
    minimal_testing
        Test the telescopes whose components changed (the test stands' minimal testing).
    dry_run
        Read everything, change nothing, and produce the plan.

    Raises
    ------
    AffectedError
        ``cscs`` or ``expected_new_topics`` name something the site does not have; nothing
        was changed.
    """
    try:
        async with upgrade_run(
            FLOW, site, upgrade_id, dry_run=dry_run, planned_steps=_PLANNED_STEPS
        ) as run:
            await _incremental_upgrade(
                run,
                cscs,
                expected_new_topics=expected_new_topics or [],
                minimal_testing=minimal_testing,
            )
    except UpgradeAborted as exc:
        return Cancelled(name="Aborted", message=str(exc))
    return run.summary()


async def _incremental_upgrade(
    run: UpgradeRun, requested: list[str], *, expected_new_topics: list[str], minimal_testing: bool
) -> None:
    affected = await check_affected(requested, expected_new_topics)
    try:
        await shut_down_affected(affected)
        await clean_up_affected(affected)
        await update_configurations_incremental(affected)
        await deploy_affected(affected)
        await check_upgraded(affected, expected_new_topics, minimal_testing=minimal_testing)
    except BaseException:
        await _note_watcher_left_down(run)
        raise
    names = ", ".join(affected)
    if run.dry_run:
        run.journal.final_message = "Plan complete: nothing was changed."
    else:
        run.journal.final_message = (
            f"Incremental upgrade deployed: {names} redeployed and cycled through their states; "
            "the ScriptQueues are back."
        )


# --- helpers -------------------------------------------------------------------------------------


async def _note_watcher_left_down(run: UpgradeRun) -> None:
    """After a stop: say so when the Watcher this run sent OFFLINE is still gone."""
    if run.dry_run or not _watcher_down(run):
        return
    window = run.site.timeouts.heartbeat_window_s
    with contextlib.suppress(Exception):
        status = (await run.services.sal.statuses([WATCHER], window))[WATCHER]
        if status.alive(window):
            return
    run.journal.left_to_restore.append(
        "The Watcher was sent OFFLINE by this run and is not back, so no alarms are raised: "
        "re-run with the same upgrade id, or delete its Job (label csc-class=watcher) and sync "
        "its Argo CD app."
    )


def _entries(run: UpgradeRun, names: list[str]) -> list[CscEntry]:
    return [run.site.csc(name) for name in names]


def _queues(run: UpgradeRun) -> list[CscEntry]:
    return [run.site.csc(CscName(name="ScriptQueue", index=q)) for q in run.site.shutdown.queues]


def _watcher_down(run: UpgradeRun) -> bool:
    """This run found the Watcher running and sends (or sent) it OFFLINE."""
    return run.memory.facts.get(_WATCHER_BEFORE) is not None


def _redeployed(run: UpgradeRun, names: list[str]) -> list[CscEntry]:
    """The affected CSCs, the ScriptQueues and the Watcher when this run took it down."""
    wanted = {entry.name for entry in _entries(run, names)}
    wanted |= {entry.name for entry in _queues(run)}
    if _watcher_down(run):
        wanted.add(WATCHER)
    return [entry for entry in run.site.cscs if entry.name in wanted]


def _components(run: UpgradeRun, names: list[str]) -> set[str]:
    """The components whose new versions this run starts (their schemas get registered)."""
    found = {entry.name.name for entry in _entries(run, names)} | {"ScriptQueue"}
    if any(entry.name == WATCHER for entry in run.site.cscs):
        found.add(WATCHER.name)
    return found


def _script_name(csc: CscName) -> str:
    """How set_summary_state.py names a CSC: ``Name`` or ``Name:index``."""
    return csc.name if csc.index == 0 else f"{csc.name}:{csc.index}"


async def _record(run: UpgradeRun, table: str, entries: list[CscEntry]) -> None:
    statuses = await csc_statuses([e.name for e in entries], run.site.timeouts.heartbeat_window_s)
    expected = {entry.name: entry.expected_state for entry in entries}
    await run.table(table, state_rows(statuses, expected), f"CSC states: {table}")


# --- preconditions -------------------------------------------------------------------------------


@section("incremental upgrade preconditions")
async def check_affected(requested: list[str], expected_new_topics: list[str]) -> list[str]:
    """The CSCs named, checked against the inventory; services answer; the registry's subjects
    of the components to be redeployed recorded. Nothing is changed here."""
    run = current_run()
    section = "preconditions"
    async with run.step(section, "affected", "Affected CSCs found in the inventory") as step:
        entries = resolve_affected(run.site, requested)
        names = [str(entry.name) for entry in entries]
        expected_subjects(run.site, expected_new_topics, _components(run, names))
        await run.table("affected CSCs", [_affected_row(entry) for entry in entries])
        run.journal.facts["affected CSCs"] = names
        step.note(", ".join(names))
    async with run.step(section, "preflight", "Services answer; right cluster") as step:
        problems = await preflight(run)
        step.note("all services answer" if not problems else "; ".join(problems))
    async with run.step(section, "subjects-before", "Registry subjects recorded") as step:
        subjects = await _subjects_of(run, _components(run, names))
        before = await run.remember_fact(_SUBJECTS_BEFORE, sorted(subjects))
        run.journal.facts.pop(_SUBJECTS_BEFORE, None)  # hundreds of names: not for the report
        step.note(f"{len(before)} subjects of {', '.join(sorted(_components(run, names)))}")
    return names


def _affected_row(entry: CscEntry) -> dict[str, Any]:
    placement = entry.kubernetes
    assert placement is not None  # resolve_affected refuses bare-metal CSCs
    return {
        "csc": str(entry.name),
        "namespace": placement.namespace,
        "csc-class": placement.csc_class,
        "job (csc label)": placement.csc,
        "expected state": entry.expected_state.name,
    }


@task(
    name="list registry subjects",
    **TRANSIENT,
)
async def list_subjects() -> list[str]:
    return await current_run().services.registry.list_subjects()


async def _subjects_of(run: UpgradeRun, components: set[str]) -> set[str]:
    subname = run.site.kafka.sal_subname
    prefixes = tuple(f"lsst.{subname}.{component}." for component in components)
    return {subject for subject in await list_subjects() if subject.startswith(prefixes)}


# --- shut down -----------------------------------------------------------------------------------


@section("shut down the affected CSCs")
async def shut_down_affected(names: list[str]) -> None:
    """The Watcher first; the affected CSCs and the ScriptQueues with set_summary_state.py (the
    queue running it last); stragglers directly; confirmed by heartbeats."""
    run = current_run()
    section = "shut down"
    # A re-run after the Jobs were deleted finds the new CSCs running: they stay up.
    redeploying = any(
        run.already_done(d.key) for d in job_deletions(run.site, _redeployed(run, names))
    )
    if not redeploying:
        await run.notify(
            f"{run.site.title}: incremental upgrade {run.upgrade_id} of {', '.join(names)} "
            "starts: the Watcher and the ScriptQueues go OFFLINE until it is done."
        )
        await _remember_watcher(run)
        await _record(run, "before the upgrade", _redeployed(run, names))
    async with run.step(section, "watcher-offline", "Watcher OFFLINE first") as step:
        if redeploying:
            step.skip("done in an earlier run of this upgrade")
        else:
            await _watcher_offline(run, step)
    targets = [e.name for e in _redeployed(run, names) if e.name != WATCHER]
    async with run.step(
        section, "affected-offline", "Affected CSCs and ScriptQueues OFFLINE"
    ) as step:
        await _affected_offline(run, step, names)
    async with run.step(section, "stragglers", "Stragglers OFFLINE in parallel") as step:
        if redeploying:
            step.skip("done in an earlier run of this upgrade")
        else:
            await _stragglers(run, step, targets)
    async with run.step(section, "confirm-offline", "Confirmed by heartbeats") as step:
        if redeploying:
            step.skip("done in an earlier run of this upgrade")
        else:
            await _confirm_offline(run, step, targets)


async def _remember_watcher(run: UpgradeRun) -> None:
    """The Watcher's state now, to put it back in afterwards (None: not running)."""
    if WATCHER not in {entry.name for entry in run.site.cscs}:
        return
    window = run.site.timeouts.heartbeat_window_s
    status = (await csc_statuses([WATCHER], window))[WATCHER]
    if status.alive(window) and status.state is not None and status.state is not State.OFFLINE:
        await run.remember_fact(_WATCHER_BEFORE, status.state.name)


async def _affected_offline(run: UpgradeRun, step: StepHandle, names: list[str]) -> None:
    site, shutdown = run.site, run.site.shutdown
    window = site.timeouts.heartbeat_window_s
    queues = [CscName(name="ScriptQueue", index=q) for q in shutdown.queue_offline_order()]
    others = [
        entry.name
        for entry in _entries(run, names)
        if entry.name not in queues and entry.name != WATCHER
    ]
    statuses = await csc_statuses(others, window)
    # An absent CSC would make the script wait, fail and pause the queue: leave it out.
    running = [csc for csc in others if statuses[csc].alive(window)]
    config = {
        "data": [[_script_name(csc), "OFFLINE"] for csc in [*running, *queues]],
        # The Watcher is gone: muting alarms would block for an hour per CSC.
        "mute_alarms": False,
    }
    try:
        result = await run.act(
            "affected-offline",
            f"Run set_summary_state.py on ScriptQueue:{shutdown.queue} with {config}",
            lambda: run_script(
                shutdown.queue, "set_summary_state.py", config, site.timeouts.shutdown_script_s
            ),
        )
    except ScriptQueueExited:
        # The queue that ran the script went OFFLINE with it, as it must: it is listed last.
        step.note("the queue running the script exited with it, as planned")
        return
    if result is not None:
        step.note(f"script {result.script_index} {result.outcome.value}")
    skipped = sorted(set(others) - set(running), key=str)
    if skipped:
        step.note("not running, left out: " + ", ".join(map(str, skipped)))


async def _stragglers(run: UpgradeRun, step: StepHandle, targets: list[CscName]) -> None:
    if run.dry_run:
        run.journal.planned("Send whatever of them still runs OFFLINE directly, in parallel")
        return
    site = run.site
    window = site.timeouts.heartbeat_window_s
    board = await run.board()
    try:
        # The script's last CSCs may still beat for a moment after reporting OFFLINE.
        await board.wait_for(offline_or_gone(window), targets, deadline_s=window)
    except StateWaitTimeout as exc:
        alive = [csc for csc in targets if csc in exc.short]
    else:
        step.note("none")
        return
    await send_offline(run, step, alive)


async def _confirm_offline(run: UpgradeRun, step: StepHandle, targets: list[CscName]) -> None:
    if run.dry_run:
        run.journal.planned(f"Confirm by heartbeats that {len(targets)} CSCs are gone")
        return
    window = run.site.timeouts.heartbeat_window_s
    board = await run.board()
    try:
        await board.wait_for(gone(window), targets, deadline_s=window * 3)
    except StateWaitTimeout as exc:
        raise RuntimeError(
            f"still heartbeating, so their Jobs must not be deleted yet: {exc}"
        ) from None
    step.note(f"{len(targets)} CSCs silent")


# --- clean up ------------------------------------------------------------------------------------


@section("clean up the affected Jobs")
async def clean_up_affected(names: list[str]) -> None:
    """Only the Jobs of the CSCs sent OFFLINE are deleted, by csc-class, and checked gone."""
    run = current_run()
    async with run.step("clean up", "delete-jobs", "Affected Jobs deleted by csc-class") as step:
        deletions = job_deletions(run.site, _redeployed(run, names))
        rows: list[dict[str, Any]] = []
        for deletion in deletions:
            entry = await run.act(
                deletion.key,
                f"Delete the Jobs in {deletion.namespace} labelled {deletion.selector}",
                _deleter(deletion),
            )
            if entry is not None:
                rows += [
                    {"namespace": deletion.namespace, "selector": deletion.selector, "job": job}
                    for job in entry.jobs_deleted
                ]
        if rows:
            await run.table("jobs deleted", rows)
            run.journal.facts["Jobs deleted"] = [f"{r['namespace']}/{r['job']}" for r in rows]
        step.note(
            f"{len(rows)} Jobs deleted: " + "; ".join(d.selector for d in deletions)
            if not run.dry_run
            else f"{len(deletions)} deletions planned"
        )


def _deleter(deletion: JobDeletion) -> Callable[[], Awaitable[NamespaceCleanup]]:
    return lambda: delete_class_jobs(deletion)


# --- update configurations -----------------------------------------------------------------------


@section("update configurations")
async def update_configurations_incremental(names: list[str]) -> None:
    """The operator signs off that the configurations of the affected CSCs are updated."""
    run = current_run()
    apps = _apps(run, names)
    async with run.step(
        "update configurations", "phalanx", "Configurations updated; Phalanx PR merged"
    ) as step:
        answer = await run.gate(
            "phalanx-merged",
            "Configurations updated for the incremental upgrade",
            f"Update the configurations of {', '.join(names)}: merge the Phalanx PR (the new "
            "versions in csc-versions and the apps' values) and push the configuration "
            f"repositories' branches. Give the PR's URL. **Next:** Argo CD syncs {', '.join(apps)}"
            " and the flow waits for the CSCs to come back.",
            input_model=PhalanxSignOff,
        )
        if answer.inputs.get("phalanx_pr_url"):
            step.note(answer.inputs["phalanx_pr_url"])
            run.journal.facts["Phalanx PR"] = answer.inputs["phalanx_pr_url"]


def _apps(run: UpgradeRun, names: list[str]) -> list[str]:
    """The ScriptQueues' app and the affected CSCs' apps (namespace = app), in sync order."""
    wanted = {e.kubernetes.namespace for e in _redeployed(run, names) if e.kubernetes is not None}
    wanted.add(run.site.argocd.queue_app)
    return [app for app in run.site.argocd.sync_order if app in wanted]


# --- deploy --------------------------------------------------------------------------------------


@section("deploy the affected CSCs")
async def deploy_affected(names: list[str]) -> None:
    """Argo CD syncs the apps (which recreate the deleted Jobs); the CSCs reach their states."""
    run = current_run()
    section = "deploy"
    for app in _apps(run, names):
        await sync_app(run, section, app)
    redeployed = _redeployed(run, names)
    if run.memory.facts.get(_BROUGHT_UP):
        # An earlier run saw them up; since then the cycle may have left one in FAULT, which
        # the cycle itself deals with.
        async with run.step(section, "bring-up", "CSCs in their expected states") as step:
            step.skip("confirmed in an earlier run of this upgrade")
        return
    short = await wait_for_bring_up(run, section, redeployed)
    if short:
        raise RuntimeError(
            f"{len(short)} redeployed CSC(s) are not in their expected state: "
            + ", ".join(short)
            + ". Check their Jobs' logs (a refused schema registration stops a CSC at start)."
        )
    if not run.dry_run:
        await run.remember_fact(_BROUGHT_UP, value=True)
    await _record(run, "after the upgrade", redeployed)


# --- test ----------------------------------------------------------------------------------------


@section("test the affected CSCs")
async def check_upgraded(
    names: list[str], expected_new_topics: list[str], *, minimal_testing: bool
) -> None:
    """New topics reported (expected ones required); each affected CSC cycled through its
    states; the Watcher put back; minimal testing of the telescopes whose components changed."""
    run = current_run()
    section = "test"
    async with run.step(section, "new-topics", "New topics in the schema registry") as step:
        await _new_topics(run, step, names, expected_new_topics)
    async with run.step(section, "cycle", "Affected CSCs cycled through their states") as step:
        await _cycle_all(run, step, _entries(run, names))
    async with run.step(section, "watcher-back", "Watcher back in its state") as step:
        await _watcher_back(run, step)
    async with run.step(section, "minimal-testing", "Minimal testing") as step:
        telescopes = telescopes_affected(_entries(run, names))
        if not minimal_testing:
            step.skip("not asked for")
        elif not telescopes:
            step.skip("no telescope's components changed")
        else:
            step.note(", ".join(telescopes))
            await _minimal_testing(run, telescopes)
    await run.notify(
        f"{run.site.title}: incremental upgrade {run.upgrade_id} is deployed: "
        f"{', '.join(names)} and the ScriptQueues are back."
    )


async def _new_topics(
    run: UpgradeRun, step: StepHandle, names: list[str], expected: list[str]
) -> None:
    components = _components(run, names)
    subjects = expected_subjects(run.site, expected, components)
    if run.dry_run:
        run.journal.planned(
            "Report the schema subjects that appeared for "
            + ", ".join(sorted(components))
            + (f"; require {', '.join(expected)}" if expected else "")
        )
        return
    before = set(run.memory.facts.get(_SUBJECTS_BEFORE, []))
    now = await _subjects_of(run, components)
    new = sorted(now - before)
    run.journal.facts["new topics"] = new
    await run.table(
        "new topics",
        [{"subject": subject} for subject in new] or [{"subject": "(none)"}],
        "Schema subjects registered by the redeployed CSCs that were not there before",
    )
    step.note(f"{len(new)} new: {', '.join(new)}" if new else "no new topics")
    missing = [text for text, subject in subjects.items() if subject not in now]
    if missing:
        raise RuntimeError(
            f"expected new topics missing from the schema registry: {', '.join(missing)}. "
            "The new versions did not register them: check the image tags in csc-versions and "
            "the schema-registry pod's logs in sasquatch."
        )


async def _cycle_all(run: UpgradeRun, step: StepHandle, entries: list[CscEntry]) -> None:
    site = run.site
    limiter = anyio.CapacityLimiter(site.csc_parallelism)
    failures: list[str] = []
    rows: list[dict[str, Any]] = []

    async def cycle(entry: CscEntry) -> None:
        path = cycle_path(entry.expected_state)
        if not path:
            rows.append({"csc": str(entry.name), "states": "-", "outcome": "nothing to cycle"})
            return
        shown = " → ".join(s.name for s in (entry.expected_state, *path))
        async with limiter:
            try:
                done = await run.act(
                    f"cycle-{entry.name}",
                    f"Cycle {entry.name} {shown}",
                    lambda: cycle_csc(entry.name, path),
                )
            except Exception as exc:  # noqa: BLE001 - every CSC is cycled; all are reported
                failures.append(f"{entry.name}: {exc}")
                rows.append({"csc": str(entry.name), "states": shown, "outcome": str(exc)})
            else:
                outcome = "ok" if done is not None else "planned or done before"
                rows.append({"csc": str(entry.name), "states": shown, "outcome": outcome})

    if not run.dry_run:
        await run.board()  # started once here, not by each parallel cycle
        await run.services.sal.prepare_commands({entry.name.name for entry in entries})
    await asyncio.gather(*(cycle(entry) for entry in entries))
    await run.table("state cycle", sorted(rows, key=lambda row: row["csc"]))
    if failures:
        raise RuntimeError("state cycle failed: " + "; ".join(failures))
    step.note(f"{len(entries)} CSCs cycled")


class CycleFaultError(RuntimeError):
    """A CSC went to FAULT, or did not report a state it was commanded to, while cycled."""


@task(name="cycle CSC states", task_run_name="cycle {csc}")
async def cycle_csc(csc: CscName, path: tuple[State, ...]) -> list[State]:
    """Command ``csc`` through ``path`` one state at a time; each state must be the one its
    summaryState topic reports afterwards, and FAULT stops it at once.

    Never retried: a refused command is an answer.

    Raises
    ------
    CycleFaultError
        The CSC went to FAULT, or reported another state than the one commanded.
    CommandError, NoAckError, StateWaitTimeout
        A transition failed or was not confirmed in the site's ``transition_s``.
    """
    run = current_run()
    board = await run.board()
    timeouts = run.site.timeouts
    reached: list[State] = []
    for state in path:
        try:
            await run.services.sal.set_summary_state(
                csc,
                state,
                board=board,
                timeout_s=timeouts.transition_s,
                heartbeat_window_s=timeouts.heartbeat_window_s,
            )
        except Exception as exc:
            # The CSC reports FAULT before it acks the failure, but on another topic: give the
            # board a moment to read it.
            with contextlib.suppress(StateWaitTimeout):
                await board.wait_for(State.FAULT, [csc], deadline_s=timeouts.heartbeat_window_s)
            if board.state(csc) is State.FAULT:
                raise CycleFaultError(f"went to FAULT on the way to {state.name}: {exc}") from exc
            raise
        seen = board.state(csc)
        if seen is not state:
            shown = seen.name if seen is not None else "nothing"
            raise CycleFaultError(f"commanded to {state.name}, its summaryState says {shown}")
        reached.append(state)
    return reached


async def _watcher_back(run: UpgradeRun, step: StepHandle) -> None:
    before = run.memory.facts.get(_WATCHER_BEFORE)
    if before is None:
        step.skip("this run did not send the Watcher OFFLINE")
        return
    target = State[before]
    expected = run.site.csc(WATCHER).expected_state
    if target is expected or target is State.FAULT:
        step.note(f"back in {expected.name}")
        return
    await run.act(
        "watcher-back",
        f"Send the Watcher back to {target.name}, as it was before",
        lambda: set_csc_state(WATCHER, target, run.site.timeouts.transition_s),
    )
    step.note(f"{expected.name} -> {target.name}")


async def _minimal_testing(run: UpgradeRun, telescopes: list[Telescope]) -> None:
    """Minimal testing of the telescopes whose components changed, among those the site tests
    (procedure: "Minimal Testing"); a telescope the site does not test is noted, not tested."""
    offered = run.site.minimal_testing.telescopes
    chosen = [t for t in offered if t in {name.lower() for name in telescopes}]
    untested = [t for t in telescopes if t.lower() not in offered]
    if untested:
        run.journal.facts["not tested (the site does not test them)"] = untested
    if not chosen:
        return
    run.journal.planned_steps += planned_steps(run.site, chosen)
    await run_minimal_testing(run, chosen)
