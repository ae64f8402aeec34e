"""Figure 3: the flow's own cost: a full upgrade of the simulated Summit with no simulated delays.

Set-up: a local Prefect server (`LocalPrefectServer`, as ``rubin-upgrade demo`` runs) and, in
this process, the simulated site with every delay it simulates at zero (image pulls, Argo CD
syncs, the broker's shutdown, the scripts' and hardware's durations; heartbeats stay at
salobj's 1 s, for liveness needs them) and a simulated operator answering every sign-off at
once. The flow runs in a worker process of its own (`bench.flowrun`), as a deployment's
flow-run process would, sampled as it runs. The CPU time of the Prefect server and of this
process (the simulated site and operator) over the run is given beside it: on a small machine
the simulated site's own work can outweigh the flow's.

- ``flow-summit-122``: the wall time of the whole upgrade (target: under 60 s), against a
  baseline of the same run without Prefect's machinery: its wall time less the CPU time Prefect
  took (sampled on the main thread, plus Prefect's own threads). The ratio is the share of the
  run that was not Prefect's. The detail gives the task runs and flow runs made, the CPU split,
  and the flow process's peak memory.
- ``flow-1000`` (full runs only): the same upgrade of the Summit with 878 more ESS CSCs
  (1,000 in all), against a baseline of the 122-CSC run scaled linearly to 1,000 CSCs: a ratio
  of 1 or more means the cost grew no faster than the inventory.
- ``memory-flow-<n>``: the growth of the flow process's peak RSS over the run, against the
  peak RSS of the interpreter with Prefect and the flows imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import TaskRun
from prefect.settings import PREFECT_API_URL, temporary_settings

from bench.harness import Figure, Options, Target, Worker, at_least, at_most, tree_cpu_s
from blocks.site import CscEntry, CscName, KubernetesPlacement, SiteConfig
from deployments.operator import SimulatedOperator
from deployments.rehearsal import Rehearsal, save_site_block, short_of_expected
from deployments.server import LocalPrefectServer
from sim.site import SimOptions, SimulatedSite, load_base_site

__all__ = ["figures", "scaled_summit"]

#: Every delay the simulation adds at zero; heartbeats stay at salobj's 1 s (liveness needs them).
ZERO = SimOptions(
    heartbeat_interval_s=1.0,
    image_pull_s=0.0,
    argocd_sync_s=0.0,
    broker_shutdown_s=0.0,
    time_scale=0.0,
    command_fetch_wait_ms=50,
    consumer_poll_s=2.0,
)
TARGET_S = 60.0
_TIMEOUT_S = {122: 600.0, 1000: 1800.0}


def scaled_summit(total: int) -> SiteConfig:
    """The Summit with ESS CSCs added (in envsys, as its own) until it has ``total`` CSCs."""
    summit = load_base_site("summit")
    extra = total - len(summit.cscs)
    if extra <= 0:
        return summit
    taken = {entry.name.index for entry in summit.cscs if entry.name.name == "ESS"}
    indices = [i for i in range(1000, 1000 + extra + len(taken)) if i not in taken][:extra]
    added = [
        CscEntry(
            name=CscName(name="ESS", index=index),
            kubernetes=KubernetesPlacement(
                namespace="envsys", csc=f"bench-ess{index}", csc_class="ess"
            ),
        )
        for index in indices
    ]
    return summit.model_copy(update={"cscs": [*summit.cscs, *added]})


async def figures(options: Options) -> AsyncIterator[Figure]:
    if options.quick:
        print(
            "# flow: not in --quick (the Summit's upgrade alone takes over a minute); "
            "--only flow --summit-only runs it"
        )
        return
    sizes = [122] if options.summit_only else [122, 1000]
    with tempfile.TemporaryDirectory(prefix="bench-flow-") as workdir:
        async with _prefect(Path(workdir) / "prefect") as server:
            measured: dict[int, dict[str, Any]] = {}
            for size in sizes:
                options.note(f"flow: full upgrade of {size} CSCs")
                measured[size] = await _upgrade(scaled_summit(size), Path(workdir), server)
                for line in _timeline(measured[size].get("steps", [])):
                    options.note(f"flow: {line}")
                for line in _task_lines(
                    measured[size].get("steps", []), measured[size].get("slow_task_runs", [])
                ):
                    options.note(f"flow: {line}")
                for figure in _figures(size, measured):
                    yield figure


@contextlib.asynccontextmanager
async def _prefect(home: Path) -> AsyncIterator[LocalPrefectServer]:
    """A local Prefect server; this process and the workers it starts use it."""
    async with LocalPrefectServer(home) as server:
        saved = dict(os.environ)
        os.environ.update(server.environment())
        try:
            with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
                yield server
        finally:
            os.environ.clear()
            os.environ.update(saved)


async def _upgrade(config: SiteConfig, workdir: Path, server: LocalPrefectServer) -> dict[str, Any]:
    name = f"bench-{len(config.cscs)}-{uuid.uuid4().hex[:6]}"
    async with (
        SimulatedSite(config, workdir=workdir / name, options=ZERO) as site,
        Worker("flow-upgrade") as worker,
    ):
        await save_site_block(site, name)
        operator = SimulatedOperator(tag=name, confirm_site=name, answers=Rehearsal(site).answers())
        stop = asyncio.Event()
        answering = asyncio.create_task(operator.run(stop))
        server_cpu = tree_cpu_s(server.pid or 0)
        broker_cpu = tree_cpu_s(site.broker.pid or 0)
        site_cpu = time.process_time()
        try:
            answer = await worker.run(
                {"site": name, "tag": name, "upgrade_id": "c0045"},
                timeout_s=_TIMEOUT_S.get(len(config.cscs), 1800.0),
            )
        finally:
            stop.set()
            await answering
        answer["server_cpu_s"] = tree_cpu_s(server.pid or 0) - server_cpu
        answer["site_cpu_s"] = time.process_time() - site_cpu
        answer["broker_cpu_s"] = tree_cpu_s(site.broker.pid or 0) - broker_cpu
        answer["short_at_site"] = short_of_expected(site)
    async with get_client() as client:
        # The run and its sections carry the tag; their task runs do not (`flows.tagging`).
        flow_runs = FlowRunFilter(tags=FlowRunFilterTags(all_=[name]))
        runs: list[TaskRun] = []
        while page := await client.read_task_runs(
            flow_run_filter=flow_runs, offset=len(runs), limit=200
        ):
            runs += page
        answer["task_runs"] = len(runs)
        answer["slow_task_runs"] = _slow_task_runs(runs)
        answer["flow_runs"] = await client.count_flow_runs(flow_run_filter=flow_runs)
    return answer


def _timeline(steps: list[dict[str, Any]]) -> list[str]:
    """Each step's start after the first step's, its duration, and the time since the step
    before it ended (the flow's own time between steps: Prefect's task runs, sign-offs)."""
    lines: list[str] = []
    first: datetime | None = None
    previous_end: datetime | None = None
    for step in steps:
        started = datetime.fromisoformat(step["started_at"])
        first = first or started
        gap = (started - previous_end).total_seconds() if previous_end else 0.0
        duration = float(step["duration_s"])
        lines.append(
            f"+{(started - first).total_seconds():6.1f} s  {duration:5.1f} s  (after {gap:4.1f} s)"
            f"  {step['step']} {step['outcome']}"
        )
        previous_end = started + timedelta(seconds=duration)
    return lines


#: Task runs at least this long are listed by ``--verbose``.
_SLOW_TASK_S = 0.3


def _slow_task_runs(runs: list[TaskRun]) -> list[tuple[str, float, str]]:
    """(start, seconds, name) of each task run of at least `_SLOW_TASK_S`: where a step's time
    went."""
    slow = []
    for run in runs:
        if run.start_time is None or run.end_time is None:
            continue
        took = (run.end_time - run.start_time).total_seconds()
        if took >= _SLOW_TASK_S:
            slow.append((run.start_time.isoformat(), took, run.name))
    return sorted(slow)


def _task_lines(steps: list[dict[str, Any]], slow: list[list[Any]]) -> list[str]:
    """The slow task runs, timed as `_timeline` times the steps."""
    if not steps:
        return []
    first = datetime.fromisoformat(steps[0]["started_at"])
    return [
        f"+{(datetime.fromisoformat(at) - first).total_seconds():6.1f} s  {took:5.1f} s  "
        f"task run {name}"
        for at, took, name in slow
    ]


def _prefect_cpu_s(answer: dict[str, Any]) -> float:
    """Prefect's share of the main thread's CPU (by samples) plus its own threads' CPU."""
    samples: dict[str, int] = answer["samples"]
    busy = sum(n for owner, n in samples.items() if owner != "idle")
    main_share = samples.get("prefect", 0) / busy if busy else 0.0
    threads_s = max(0.0, answer["cpu_s"] - answer["main_cpu_s"])
    return float(answer["main_cpu_s"] * main_share + threads_s)


def _figures(size: int, measured: dict[int, dict[str, Any]]) -> list[Figure]:
    answer = measured[size]
    error = ""
    if answer.get("error"):
        error = str(answer["error"])
    elif answer["state"] != "Completed" or answer["short"] or answer["short_at_site"]:
        error = f"the upgrade ended {answer['state']}: {answer['message']} {answer['short']}"
    wall = math.nan if error else float(answer.get("wall_s", math.nan))
    prefect_s = _prefect_cpu_s(answer) if "samples" in answer else math.nan
    samples: dict[str, int] = answer.get("samples", {})
    total = sum(samples.values()) or 1
    split = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in sorted(samples.items()))
    detail = (
        f"{answer.get('task_runs', '?')} task runs, {answer.get('flow_runs', '?')} flow runs; "
        f"CPU {answer.get('cpu_s', math.nan):.1f} s of which Prefect {prefect_s:.1f} s "
        f"({100 * prefect_s / wall:.0f}% of the wall time); main thread: {split}; "
        f"Prefect server CPU {answer.get('server_cpu_s', math.nan):.1f} s, simulated site "
        f"and operator CPU {answer.get('site_cpu_s', math.nan):.1f} s, broker (tansu) CPU "
        f"{answer.get('broker_cpu_s', math.nan):.1f} s"
    )
    steps = sorted(answer.get("steps", []), key=lambda s: -float(s["duration_s"]))
    if steps:
        detail += "; slowest steps: " + ", ".join(
            f"{s['step']} {s['duration_s']:.1f} s" for s in steps[:6]
        )
    targets: list[Target] = []
    if size == 122:
        name, baseline = "flow-summit-122", wall - prefect_s
        targets.append(at_most(f"< {TARGET_S:g} s", wall, TARGET_S))
    else:
        base = measured[122]
        name, baseline = f"flow-{size}", float(base["wall_s"]) * size / 122
        detail += f"; baseline: the 122-CSC run's {base['wall_s']:.1f} s x {size}/122"
        targets.append(at_least("no worse than linear", baseline / wall, 1.0))
    peak_mib = answer.get("peak_kib", 0) / 1024
    growth_mib = answer.get("rss_kib", 0) / 1024
    return [
        Figure(name, wall, "s", baseline, targets=targets, detail=detail, error=error),
        Figure(
            f"memory-flow-{size}",
            growth_mib,
            "MiB",
            peak_mib - growth_mib,
            detail=f"growth of the flow process's peak RSS over the run (peak {peak_mib:.0f} "
            "MiB); baseline: its peak with Prefect and the flows imported",
        ),
    ]
