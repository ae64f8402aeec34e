"""``rubin-upgrade demo``: an upgrade of a simulated site, run as operators run it at the Summit.

A local Prefect server (UI on 127.0.0.1), the simulated site saved as the ``sim`` block, every
``<flow>/sim`` deployment served, then the equivalent of ``prefect deployment run
full-upgrade/sim``. Sign-offs wait for a person in the UI unless ``--auto-approve`` answers them
as the simulated operator (the report's sign-off log says so). The people's work that some
gates stand for (the Phalanx PR merged, the bare-metal services started) is done by the
rehearsal when the run reaches the gate. Prints the run's UI address and, at the end, its
report; exits 0 only when the run completed and, for a flow that brings the site back, every
CSC is in its expected state.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun

    from deployments.rehearsal import Rehearsal
    from sim.site import SimulatedSite

__all__ = ["add_parser", "run_on_site"]

# Flows after which every CSC must be back in its expected state.
_BRINGS_SITE_BACK = {"full-upgrade", "incremental-upgrade", "os-k8s-recovery", "minimal-testing"}


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run an upgrade flow against a simulated site, with a local Prefect server and UI",
        description="Start a local Prefect server, a simulated site and the <flow>/sim "
        "deployments, run one flow as `prefect deployment run <flow>/sim` would, print its UI "
        "address and, at the end, its report. Exits 0 only when the run completed and every CSC "
        "is in its expected state.",
    )
    parser.add_argument("--flow", default="full-upgrade", help="the flow to run")
    parser.add_argument("--site", choices=("summit", "tts", "bts"), default="summit")
    parser.add_argument(
        "--auto-approve",
        action="store_true",
        help="answer every sign-off as the simulated operator (otherwise a person answers "
        "each in the UI)",
    )
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help='a flow parameter; VALUE is read as JSON when it parses (true, 3, ["a"]), '
        "else as text",
    )
    parser.add_argument(
        "--write-log", type=Path, help="append every state-changing request here (JSON lines)"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(".sim"),
        help="where the Prefect server's database and the simulated site's files go",
    )
    parser.set_defaults(handler=run)


async def run(args: argparse.Namespace) -> int:
    from deployments.catalog import FLOWS, ParameterError, flow_named, parse_parameters

    if args.flow not in FLOWS:
        print(
            f"rubin-upgrade demo: --flow {args.flow}: choose one of {', '.join(sorted(FLOWS))}",
            file=sys.stderr,
        )
        return 2
    schema = flow_named(args.flow).parameters
    try:
        parameters = parse_parameters(
            args.param, schema.properties, fixed={"site": "the sim deployments act on the sim site"}
        )
    except ParameterError as exc:
        print(f"rubin-upgrade demo: {exc}", file=sys.stderr)
        return 2
    if "upgrade_id" in schema.properties and "upgrade_id" not in parameters:
        parameters["upgrade_id"] = "c0045"  # the image tag the simulated Phalanx PR brings
    # SIGTERM stops the demo as Ctrl-C does: everything it started is stopped on the way out.
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await _demo(args, parameters)
    except asyncio.CancelledError:
        say("stopped; the Prefect server, the runner and the simulated site are down")
        return 130


async def _demo(args: argparse.Namespace, parameters: dict[str, Any]) -> int:
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    from deployments.server import LocalPrefectServer
    from sim.site import SimOptions, SimulatedSite, load_base_site
    from sim.writelog import WriteLog

    workdir: Path = args.workdir
    say(f"starting a Prefect server (database in {workdir / 'prefect'})")
    async with LocalPrefectServer(workdir / "prefect") as server:
        os.environ.update(server.environment())  # for the flow-run processes the runner starts
        with temporary_settings(
            updates={PREFECT_API_URL: server.api_url, PREFECT_UI_URL: server.url}
        ):
            say(f"Prefect UI: {server.url}")
            options = SimOptions(heartbeat_interval_s=1.0, image_pull_s=1.0, time_scale=0.05)
            base = load_base_site(args.site)
            say(f"starting the simulated {base.title} ({len(base.cscs)} CSCs)")
            async with SimulatedSite(
                base,
                workdir=workdir / f"{args.site}.d",
                write_log=WriteLog(args.write_log),
                options=options,
            ) as site:
                return await run_on_site(
                    site, args.flow, parameters, auto_approve=args.auto_approve
                )


async def run_on_site(
    site: SimulatedSite, flow: str, parameters: dict[str, Any], *, auto_approve: bool
) -> int:
    """Serve the sim deployments, run ``<flow>/sim`` to its end, print its report.

    Returns the exit status: 0 when the run completed and (for a flow that brings the site
    back) every CSC is in its expected state, else 1.
    """
    from prefect import get_client
    from prefect.deployments.flow_runs import arun_deployment
    from prefect.runner import Runner

    from deployments.catalog import sim_deployments
    from deployments.rehearsal import Rehearsal, save_site_block, short_of_expected

    await save_site_block(site, "sim")
    runner = Runner(name="rubin-upgrade-demo", query_seconds=1, pause_on_shutdown=False)
    for deployment in await sim_deployments():
        await runner.aadd_deployment(deployment)
    serving = asyncio.create_task(runner.start(), name="serve sim deployments")
    tag = f"demo-{uuid.uuid4().hex[:8]}"
    rehearsal = Rehearsal(site)
    try:
        flow_run: FlowRun = await arun_deployment(
            f"{flow}/sim", parameters=parameters, tags=[tag], timeout=0
        )
        say(f"running {flow}/sim: {_run_url(flow_run)}")
        if not auto_approve:
            say("sign-offs wait for you in the UI (or `rubin-upgrade sign-off`)")
        async with get_client() as client:
            final = await _watch(client, flow_run, rehearsal, tag, auto_approve=auto_approve)
            report = await _report(client, flow_run)
    finally:
        # Told to stop, the runner leaves its polling loop and closes its clients itself.
        with contextlib.suppress(Exception):
            await runner.astop()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(serving, 30)
    print(report or "(no report artifact was published)")
    state = final.state
    completed = state is not None and state.is_completed()
    say(f"{flow}/sim ended {state.name if state else 'unknown'}: {_run_url(final)}")
    short = short_of_expected(site) if flow in _BRINGS_SITE_BACK else []
    for line in short:
        say(f"  short of its expected state: {line}")
    return 0 if completed and not short else 1


async def _watch(
    client: PrefectClient, flow_run: FlowRun, rehearsal: Rehearsal, tag: str, *, auto_approve: bool
) -> FlowRun:
    """Follow the run to its end, doing the people's work at gates (and answering them)."""
    from deployments.operator import SimulatedOperator, paused_gate, paused_runs

    stop = asyncio.Event()
    operator = SimulatedOperator(tag=tag, confirm_site="sim", answers=rehearsal.answers())
    answering = asyncio.create_task(operator.run(stop)) if auto_approve else None
    announced: set[str] = set()
    try:
        while True:
            current = await client.read_flow_run(flow_run.id)
            state = current.state
            if state is not None and state.is_final():
                return current
            for paused in [] if auto_approve else await paused_runs(client, tag):
                gate = paused_gate(paused)
                key = f"{paused.id}/{paused.state.state_details.pause_key if paused.state else ''}"
                if gate is None or key in announced:
                    continue
                announced.add(key)
                done = await rehearsal.at_gate(gate)
                if done:
                    say(f"simulated site: {done}")
                say(f"sign-off needed: {gate} — answer in the UI: {_run_url(paused)}")
            await asyncio.sleep(1.0)
    finally:
        stop.set()
        if answering is not None:
            await answering


async def _report(client: PrefectClient, flow_run: FlowRun) -> str | None:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    artifacts = await client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id]))
    )
    for artifact in artifacts:
        if artifact.key and artifact.key.endswith("-report") and isinstance(artifact.data, str):
            return artifact.data
    return None


def _run_url(flow_run: FlowRun) -> str:
    from prefect.settings import PREFECT_UI_URL

    return f"{PREFECT_UI_URL.value()}/runs/flow-run/{flow_run.id}"


def say(text: str) -> None:
    print(f"demo: {text}", file=sys.stderr, flush=True)
