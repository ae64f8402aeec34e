"""``python -m bench [--quick] [--only NAME ...]``: print one line per figure.

Each figure module (a `bench.harness.FigureModule`) measures its figures against baselines
measured in the same run and yields them as it goes; add a module to `FIGURES` to add figures.
Missed targets are reported in the lines; the exit status is 1 only when a module failed (for
example when the two sides of a figure disagree on what they measured).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import platform
import signal
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from bench.harness import FigureModule, Options

#: The figure modules, run in this order; ``--only`` names them by their last part.
FIGURES = ["bench.sweep", "bench.lag", "bench.flow"]


def _short(module: str) -> str:
    return module.rpartition(".")[2]


def _cpu_model() -> str:
    try:
        with Path("/proc/cpuinfo").open(encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _load() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def _cpu_ticks() -> tuple[int, int] | None:
    """All CPU time and the time stolen by the host (a VM's hypervisor), in ticks since boot
    (Linux ``/proc/stat``); None where it cannot be read."""
    try:
        with Path("/proc/stat").open(encoding="ascii") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 8:
        return None
    return sum(fields[:8]), fields[7]


def _stolen(since: tuple[int, int] | None) -> str:
    """The share of the machine's CPU time the host took since ``since``: on a shared VM
    it makes every wall time longer, the flow's most."""
    now = _cpu_ticks()
    if since is None or now is None or now[0] <= since[0]:
        return "unknown"
    return f"{100 * (now[1] - since[1]) / (now[0] - since[0]):.1f}%"


async def _run(names: list[str], options: Options) -> tuple[int, int]:
    """Run the modules in turn; the targets missed and the modules that failed."""
    missed = failed = 0
    for name in names:
        started = time.monotonic()
        try:
            # Imported when its turn comes, so that the first figure starts at once.
            module = cast("FigureModule", importlib.import_module(name))
            async for figure in module.figures(options):
                print(figure.line(), flush=True)
                missed += sum(1 for target in figure.targets if not target.met)
        except Exception as exc:  # noqa: BLE001 - reported, and the other figures still run
            failed += 1
            print(f"# {_short(name)} FAILED: {type(exc).__name__}: {exc}", flush=True)
            traceback.print_exc()
        print(f"# {_short(name)}: {time.monotonic() - started:.0f} s", flush=True)
    return missed, failed


async def _until_stopped(names: list[str], options: Options) -> tuple[int, int]:
    """`_run`, cancelled by SIGTERM or SIGHUP as by Ctrl-C: whatever the figures started (the
    broker, the registry, the Prefect server, the workers) is stopped on the way out."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, task.cancel)
    return await _run(names, options)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="fewer rounds and set-ups: under a minute"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=[_short(m) for m in FIGURES],
        help="run only this figure module (repeatable)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="say on stderr how long each step takes"
    )
    parser.add_argument(
        "--summit-only",
        action="store_true",
        help="flow: only the Summit's 122 CSCs (the 1,000-CSC upgrade takes up to 30 min more)",
    )
    args = parser.parse_args()
    chosen = [m for m in FIGURES if args.only is None or _short(m) in args.only]
    print(
        f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, {_cpu_model()}, "
        f"load {_load()}, Python {platform.python_version()}" + (", quick" if args.quick else ""),
        flush=True,
    )
    started = time.monotonic()
    ticks = _cpu_ticks()
    try:
        missed, failed = asyncio.run(
            _until_stopped(
                chosen,
                Options(quick=args.quick, verbose=args.verbose, summit_only=args.summit_only),
            )
        )
    except (asyncio.CancelledError, KeyboardInterrupt):
        print(
            f"# stopped after {time.monotonic() - started:.0f} s; everything the run had "
            "started is stopped",
            flush=True,
        )
        sys.exit(143)
    print(
        f"# {time.monotonic() - started:.0f} s, {missed} target(s) missed, "
        f"{failed} module(s) failed, load {_load()}, CPU stolen by the host {_stolen(ticks)}",
        flush=True,
    )
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
