"""A full upgrade killed (SIGKILL) at step boundaries and re-run with the same upgrade id.

Each attempt of ``full-upgrade`` runs in a Python process of its own (`tests.resume_child`),
against the small simulated stand of `tests.test_faults` and the session's Prefect server; the
stand and a simulated operator (who answers the gates and does the people's work) run here.
An attempt is killed — its whole process group, SIGKILL — exactly as a given step starts, then
the next attempt is started with the same upgrade id, as an operator would after a crash; the
chain goes on until an attempt finishes. Then the site's write log must show every destructive
action once across all attempts, every sign-off answered once, and the stand upgraded.

The child freezes itself inside the logging call of the step's start, and is killed frozen:
the kill lands on the boundary itself, never some milliseconds into the step after it, so any
repeated action is the flow's fault, not the kill's timing.

A killed run is marked Crashed, as the Prefect worker that started its process would mark it;
the next run then releases the site's lock at once instead of waiting for the killed run's
lease to lapse (a slow test covers a kill no worker saw: the re-run waits for the lease).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prefect import flow, get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.settings import PREFECT_API_URL
from prefect.states import Crashed

from blocks.site import SiteConfig
from deployments.operator import SimulatedOperator
from flows.common import LOCK_LEASE_S, SiteBusyError, site_lock
from sim.site import SimulatedSite
from tests.sitekit import operator_for, sal_commands
from tests.test_faults import open_stand, save, stand_config

pytestmark = pytest.mark.usefixtures("prefect_server")

REPO = Path(__file__).resolve().parents[1]
UPGRADE_ID = "c0045"
#: One attempt never takes this long (a whole upgrade of the stand takes well under a
#: minute): it hung.
ATTEMPT_LIMIT_S = 180.0
_STAND = stand_config()

#: Where the CI chain kills: in the shutdown (the system-wide script done, the queues not yet
#: OFFLINE), right after the clean-up scaled telegraf to 0 (no restore runs in a killed process:
#: telegraf stays at 0 until the deploy brings it back), and in the deploy between two syncs
#: (the registry at NONE, one telescope app synced and its CSCs up again, the next not).
CI_KILLS = (
    "shut down: ScriptQueues OFFLINE, running one last",
    "update configurations: Phalanx PR merged; configuration branches pushed",
    f"deploy: Argo CD sync {_STAND.argocd.sync_order[1]}",
)

Stop = dict[str, list[str]]


@dataclass
class Attempt:
    """One process's run: the steps it started, where it was killed, or how it ended."""

    tag: str
    pid: int = 0
    steps: list[str] = field(default_factory=list)
    killed_at: str | None = None
    result: dict[str, Any] | None = None


@contextlib.asynccontextmanager
async def answering(operator: SimulatedOperator) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(operator.run(stop))
    try:
        yield
    finally:
        stop.set()
        await task


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


async def run_attempt(name: str, stop: Stop, workdir: Path, *, seen: bool = True) -> Attempt:
    """Start a full upgrade of ``name`` in a child process; SIGKILL its process group where it
    stops (see `tests.resume_child`), or let it finish. A kill is ``seen``: the run is marked
    Crashed, as its worker would; unseen, the run stays Running, as with no worker."""
    attempt = Attempt(tag=f"attempt-{uuid.uuid4().hex[:8]}")
    env = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PYTHONPATH": str(REPO),
        "RESUME_STOP": json.dumps(stop),
    }
    with (workdir / f"{attempt.tag}.stderr").open("wb") as errors:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.resume_child",
            name,
            UPGRADE_ID,
            name,
            attempt.tag,
            cwd=REPO,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=errors,
            start_new_session=True,  # its own process group: the kill takes all it started
        )
        attempt.pid = process.pid
        try:
            async with asyncio.timeout(ATTEMPT_LIMIT_S):
                assert process.stdout is not None
                async for raw in process.stdout:
                    kind, _, text = raw.decode().rstrip("\n").partition(" ")
                    if kind == "STEP":
                        attempt.steps.append(text)
                    elif kind == "STOPPED":
                        _kill_group(process.pid)
                        attempt.killed_at = text
                        break
                    elif kind == "RESULT":
                        attempt.result = json.loads(text)
                await process.wait()
        finally:
            if process.returncode is None:
                _kill_group(process.pid)
                await process.wait()
    if attempt.killed_at is not None:
        assert process.returncode == -signal.SIGKILL, process.returncode
        if seen:
            await mark_crashed(attempt.tag)
    return attempt


async def mark_crashed(tag: str) -> None:
    """What the worker does when its flow run's process dies: the run (and its subflows, which
    carry its tags) is Crashed."""
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag]))
        )
        for run in runs:
            if run.state is None or not run.state.is_final():
                await client.set_flow_run_state(
                    run.id, Crashed(message="the flow run's process was killed"), force=True
                )


async def kill_chain(
    site: SimulatedSite,
    name: str,
    workdir: Path,
    next_stop: Callable[[list[str]], Stop | None],
    operator: SimulatedOperator,
    *,
    max_attempts: int,
) -> list[Attempt]:
    """Attempts with the same upgrade id until one finishes; ``next_stop`` gets the boundaries
    killed at so far and says where the next attempt stops (None: nowhere)."""
    attempts: list[Attempt] = []
    async with answering(operator):
        for _ in range(max_attempts):
            killed = [a.killed_at for a in attempts if a.killed_at is not None]
            attempt = await run_attempt(name, next_stop(killed) or {}, workdir)
            attempts.append(attempt)
            if attempt.killed_at is None:
                break
    for attempt in attempts:  # nothing any attempt started is left running
        with pytest.raises(ProcessLookupError):
            os.killpg(attempt.pid, 0)
    assert attempts[-1].killed_at is None, f"still killed after {max_attempts} attempts"
    assert site.fleet is not None
    return attempts


def _per_target(records: list[Any], service: str, method: str) -> collections.Counter[str]:
    return collections.Counter(
        r.target for r in records if r.service == service and r.method == method
    )


def assert_upgraded_once(
    site: SimulatedSite,
    config: SiteConfig,
    start: int,
    operator: SimulatedOperator,
    attempts: list[Attempt],
) -> None:
    """Every destructive action once across the attempts, every sign-off once, the stand up."""
    last = attempts[-1]
    assert last.result is not None, last
    assert last.result == {
        "state": "Completed",
        "message": "Upgrade deployed: every CSC is in its expected state.",
    }, last.result
    records = site.write_log.records[start:]
    # Each CSC sent OFFLINE once (by the scripts or as a straggler), and no state command twice.
    for command in ("exitControl", "standby", "disable"):
        counts = collections.Counter(sal_commands(records, command))
        assert all(n == 1 for n in counts.values()), (command, counts)
    offline = collections.Counter(sal_commands(records, "exitControl"))
    assert {str(e.name) for e in config.cscs if e.summary_state} <= set(offline), offline
    # Each Job, namespace and LOVE deployment deleted once.
    deleted = _per_target(records, "kubernetes", "DELETE")
    assert deleted
    assert all(n == 1 for n in deleted.values()), deleted
    # Each application synced once, in the site's order.
    synced = [r.target for r in records if r.service == "argocd" and r.method == "sync"]
    assert len(synced) == len(set(synced)), synced
    assert [a for a in synced if a in config.argocd.sync_order] == config.argocd.sync_order
    assert [a for a in synced if a in config.argocd.platform_apps] == config.argocd.platform_apps
    # The registry to NONE once and back to FORWARD once.
    compat = [
        r.body.get("compatibility")
        for r in records
        if r.service == "schema-registry" and r.target == "/config"
    ]
    assert compat == ["NONE", "FORWARD"], compat
    registry = site.registry_app.state.registry
    assert registry.compatibility().value == "FORWARD"
    # Every telegraf connector scaled to 0 once; back at 1 (Argo CD's sync of sasquatch puts
    # its chart's replicas back; the flow's own scale-up then finds nothing to change).
    scaled: dict[str, list[int]] = collections.defaultdict(list)
    for r in records:
        telegraf = r.service == "kubernetes" and "/deployments/sasquatch-telegraf-" in r.target
        if telegraf and "replicas" in r.body:
            scaled[r.target.split("/deployments/", 1)[1].split("/")[0]].append(r.body["replicas"])
    assert set(scaled) == set(config.telegraf.deployments), scaled
    assert all(seq in ([0], [0, 1]) for seq in scaled.values()), dict(scaled)
    assert {
        d.replicas
        for d in site.model.deployments.values()
        if d.name.startswith("sasquatch-telegraf-")
    } == {1}
    # Nobody told anything twice: each gate's request, each camera stage, the end.
    posts = [r.body.get("text", "") for r in records if r.service == "slack"]
    assert len(posts) == len(set(posts)), posts
    assert sum("Stage 1" in text for text in posts) == 1, posts
    assert sum("Stage 2" in text for text in posts) == 1, posts
    # Each sign-off answered once, across every attempt.
    gates = collections.Counter(gate for gate, _ in operator.answered)
    assert gates == {"camera-bridges": 1, "phalanx-merged": 1}, operator.answered
    assert site.fleet is not None
    for entry in config.cscs:
        assert site.fleet.state_of(entry.name) is entry.expected_state, entry.name
    assert all(job.image.endswith(f":{UPGRADE_ID}") for job in site.model.jobs.values())


@pytest.mark.parametrize(
    "kills",
    [
        # The deploy's boundary, where a re-run must neither shut down what the deploy brought
        # back nor tell the camera team again.
        # Slow too: with the Summit's end-to-end run beside it, CI overran its 10 minutes.
        pytest.param(CI_KILLS[2:], id="in-the-deploy", marks=pytest.mark.slow),
        pytest.param(CI_KILLS, id="three", marks=pytest.mark.slow),
    ],
)
async def test_killed_at_boundaries_the_same_upgrade_id_finishes_without_repeating(
    tmp_path: Path, kills: tuple[str, ...]
) -> None:
    async with open_stand(tmp_path) as site:
        name = await save(site)
        config = site.site_config(name)
        start = len(site.write_log.records)
        operator = operator_for(site, name, name)

        def next_stop(killed: list[str]) -> Stop | None:
            return {"at": [kills[len(killed)]]} if len(killed) < len(kills) else None

        attempts = await kill_chain(
            site, name, tmp_path, next_stop, operator, max_attempts=len(kills) + 1
        )
        assert [a.killed_at for a in attempts] == [*kills, None]
        # Each re-run found the site held by the killed run, and released it at once.
        for attempt in attempts[1:]:
            log = (tmp_path / f"{attempt.tag}.stderr").read_text()
            assert "which ended Crashed without releasing it" in log, log[-3000:]
        assert_upgraded_once(site, config, start, operator, attempts)
        # A resumed run goes through every step again (the done ones skip their changes).
        assert attempts[-1].steps[0] == "preconditions: Services answer; right cluster"


@pytest.mark.slow
async def test_killed_at_every_step_boundary_the_same_upgrade_id_finishes_without_repeating(
    tmp_path: Path,
) -> None:
    async with open_stand(tmp_path) as site:
        name = await save(site)
        config = site.site_config(name)
        start = len(site.write_log.records)
        operator = operator_for(site, name, name)

        def next_stop(killed: list[str]) -> Stop:
            # The first step this attempt reaches that no attempt was killed at yet.
            return {"except": killed}

        attempts = await kill_chain(site, name, tmp_path, next_stop, operator, max_attempts=60)
        killed = [a.killed_at for a in attempts[:-1]]
        # Killed once at each step the finishing run went through, in the procedure's order.
        assert killed == attempts[-1].steps, (killed, attempts[-1].steps)
        assert len(killed) >= 25
        assert_upgraded_once(site, config, start, operator, attempts)


async def nothing() -> None:
    pass


async def enter_site(
    site: str, who: str, wait_s: float, inside: Callable[[], Awaitable[object]]
) -> str:
    """In a flow run of its own, as an upgrade flow does: take ``site``'s lock as ``who`` and
    await ``inside()`` holding it; return ``entered`` or why the site was refused."""

    @flow(name="site-lock-probe")
    async def probe() -> str:
        try:
            async with site_lock(site, {"flow run": who, "upgrade": UPGRADE_ID}, wait_s=wait_s):
                await inside()
        except SiteBusyError as exc:
            return str(exc)
        return "entered"

    return await probe()


async def test_a_second_live_run_is_refused_naming_the_holder() -> None:
    site = f"busy-{uuid.uuid4().hex[:6]}"
    holding, done = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        holding.set()
        await done.wait()

    first = asyncio.create_task(enter_site(site, "calm-otter", 10.0, hold))
    try:
        await asyncio.wait_for(holding.wait(), 60)
        refused = await enter_site(site, "second", 1.0, nothing)
    finally:
        done.set()
        assert await first == "entered"
    assert refused.startswith(
        f"{site} is busy: flow run calm-otter, upgrade {UPGRADE_ID} is acting on it"
    ), refused
    # Released when the first run ended: free again.
    assert await enter_site(site, "third", 10.0, nothing) == "entered"


@pytest.mark.slow
async def test_a_live_run_keeps_the_site_past_its_lease() -> None:
    """Prefect renews the hold while the run lives, however long it runs."""
    site = f"busy-{uuid.uuid4().hex[:6]}"
    refused: list[str] = []

    async def long_step() -> None:
        await asyncio.sleep(LOCK_LEASE_S + 20)  # past the lease, and the repossessor's round
        refused.append(await enter_site(site, "second", 1.0, nothing))

    assert await enter_site(site, "long-run", 10.0, long_step) == "entered"
    assert refused[0].startswith(f"{site} is busy: flow run long-run"), refused


@pytest.mark.slow
async def test_killed_unseen_the_rerun_waits_names_the_holder_then_resumes_once_it_is_crashed(
    tmp_path: Path,
) -> None:
    """No worker saw the kill: the killed run still says Running. The re-run says whom it waits
    for, waits `LOCK_WAIT_S` for the killed run's lease to lapse — which only a server running
    its repossessor frees (the test server runs none) — and is refused naming the killed run.
    Once that run is marked Crashed (or cancelled), the next re-run releases it and finishes."""
    async with open_stand(tmp_path) as site:
        name = await save(site)
        config = site.site_config(name)
        start = len(site.write_log.records)
        operator = operator_for(site, name, name)
        async with answering(operator):
            killed = await run_attempt(name, {"at": [CI_KILLS[1]]}, tmp_path, seen=False)
            assert killed.killed_at == CI_KILLS[1]
            refused = await run_attempt(name, {}, tmp_path)
            log = (tmp_path / f"{refused.tag}.stderr").read_text()
            assert f"{name} is held by flow run " in log, log[-3000:]
            assert "waiting up to 90 s for it to be released" in log
            assert refused.result is not None
            assert refused.result["state"] == "Failed", refused.result
            assert f"{name} is busy: flow run " in refused.result["message"]
            assert refused.steps == []  # refused before anything
            await mark_crashed(killed.tag)
            last = await run_attempt(name, {}, tmp_path)
        assert_upgraded_once(site, config, start, operator, [killed, refused, last])
