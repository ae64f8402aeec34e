"""What every figure shares: results and their lines, helper processes, worker runs, memory."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import resource
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Self

__all__ = [
    "ROOT",
    "Figure",
    "FigureModule",
    "Options",
    "Target",
    "Worker",
    "WorkerError",
    "at_least",
    "at_most",
    "median",
    "peak_rss_kib",
    "service",
    "tree_cpu_s",
    "until_stopped",
]

ROOT = Path(__file__).resolve().parent.parent
_READY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Options:
    """How big a run: ``quick`` trades rounds and layouts for a run under a minute;
    ``summit_only`` leaves out the flow's 1,000-CSC upgrade (up to 30 minutes);
    ``verbose`` tells on stderr how long each step took."""

    quick: bool = False
    verbose: bool = False
    summit_only: bool = False
    started: float = field(default_factory=time.monotonic)

    def note(self, text: str) -> None:
        if self.verbose:
            print(
                f"# {time.monotonic() - self.started:6.1f} s  {text}", file=sys.stderr, flush=True
            )


@dataclass(frozen=True)
class Target:
    """One target of a figure, and whether this run met it."""

    label: str
    met: bool

    def __str__(self) -> str:
        return f"{self.label} {'PASS' if self.met else 'FAIL'}"


def at_most(label: str, value: float, limit: float) -> Target:
    return Target(label, value < limit)


def at_least(label: str, value: float, limit: float) -> Target:
    return Target(label, value >= limit)


@dataclass(frozen=True)
class Figure:
    """One measured figure against its baseline; ``ratio`` is baseline / value."""

    name: str
    value: float
    unit: str
    baseline: float
    targets: Sequence[Target] = ()
    detail: str = ""
    #: Why our side could not be measured (its value is then NaN and its targets fail).
    error: str = ""

    @property
    def ratio(self) -> float:
        return self.baseline / self.value if self.value > 0 else math.inf

    def line(self) -> str:
        value = "failed" if self.error else f"{_number(self.value)} {self.unit}"
        ratio = "-" if self.error else f"{self.ratio:.1f}x"
        text = f"{self.name} {value} baseline {_number(self.baseline)} {self.unit} ratio {ratio}"
        if self.targets:
            text += "  targets: " + ", ".join(str(t) for t in self.targets)
        if self.detail or self.error:
            text += f"  ({'; '.join(filter(None, (self.error, self.detail)))})"
        return text


def _number(value: float) -> str:
    return f"{value:.3f}" if value < 100 else f"{value:.1f}"


class FigureModule(Protocol):
    """A module listed in `bench.__main__.FIGURES`: yields its figures as it measures them."""

    def figures(self, options: Options) -> AsyncIterator[Figure]: ...


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def peak_rss_kib() -> int:
    """This process's peak resident set so far (``ru_maxrss``: KiB on Linux)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and its descendants
    (Linux ``/proc``; 0 for processes that have gone)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        parents[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    tree = {pid}
    grew = True
    while grew:
        grew = False
        for child, parent in parents.items():
            if parent in tree and child not in tree:
                tree.add(child)
                grew = True
    return sum(ticks.get(p, 0) for p in tree) / tick


class WorkerError(RuntimeError):
    """A helper or worker process failed; the message carries the end of its stderr."""


def _python_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@dataclass
class _Service:
    process: asyncio.subprocess.Process
    stderr: list[bytes] = field(default_factory=list)


async def until_stopped() -> None:
    """Wait for SIGTERM or SIGINT (what a `service` process does once it serves)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


@contextlib.asynccontextmanager
async def service(module: str, *args: str) -> AsyncIterator[str]:
    """Run ``python -m MODULE ARGS`` until the block ends; yield what it says is ready.

    The helper prints ``ready <text>`` once it serves; it is stopped with SIGTERM (SIGKILL after
    10 s) when the block ends, whatever happens in it.
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        cwd=ROOT,
        env=_python_env(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    helper = _Service(process)
    drain = asyncio.create_task(_collect(process, helper.stderr))
    try:
        ready = await asyncio.wait_for(_ready_line(process), _READY_TIMEOUT_S)
        if ready is None:
            await process.wait()
            await drain
            raise WorkerError(
                f"{module} {' '.join(args)} exited with {process.returncode}: "
                + b"".join(helper.stderr).decode(errors="replace")[-2000:]
            )
        yield ready
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 10.0)
            except TimeoutError:
                process.kill()
                await process.wait()
        drain.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drain


async def _ready_line(process: asyncio.subprocess.Process) -> str | None:
    assert process.stdout is not None
    while line := await process.stdout.readline():
        text = line.decode().strip()
        if text.startswith("ready"):
            return text.removeprefix("ready").strip()
    return None


async def _collect(process: asyncio.subprocess.Process, into: list[bytes]) -> None:
    assert process.stderr is not None
    while chunk := await process.stderr.read(65536):
        into.append(chunk)
        # Keep the tail only: a chatty helper must not grow the driver.
        while sum(map(len, into)) > 65536 and len(into) > 1:
            into.pop(0)


class Worker:
    """A measured task in a process of its own (`bench.worker`): ``async with Worker(task)``.

    The process starts (and imports) on entering, so that its start-up overlaps the set-up;
    `run` hands it the parameters and returns its JSON answer. It is killed on leaving if it
    is still running.
    """

    def __init__(self, task: str) -> None:
        self.task = task
        self._process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Self:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.worker",
            self.task,
            cwd=ROOT,
            env=_python_env(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()

    async def run(self, params: dict[str, Any], *, timeout_s: float) -> dict[str, Any]:
        """Run the task once with ``params`` (JSON) and return its answer.

        Raises
        ------
        WorkerError
            The worker failed, or did not finish within ``timeout_s`` (it is then asked for
            its stack, which the message carries, and killed).
        """
        process = self._process
        if process is None or process.returncode is not None:
            raise WorkerError(f"the {self.task} worker is not running")
        try:
            out, err = await asyncio.wait_for(
                process.communicate(json.dumps(params).encode()), timeout_s
            )
        except TimeoutError:
            # The worker prints its threads' stacks on SIGUSR2, its asyncio tasks' on SIGUSR1
            # (ending with where how many wait, which the message's tail keeps).
            process.send_signal(signal.SIGUSR2)
            await asyncio.sleep(0.5)
            process.send_signal(signal.SIGUSR1)
            await asyncio.sleep(0.5)
            process.kill()
            assert process.stderr is not None
            text = (await process.stderr.read()).decode(errors="replace")
            waiting = [line for line in text.splitlines() if "task(s) waiting at" in line]
            raise WorkerError(
                f"bench.worker {self.task} did not finish within {timeout_s:g} s; "
                + "; ".join(waiting[:8])
                + "; the end of its stacks: "
                + text[-3000:]
            ) from None
        code = await process.wait()
        if code != 0:
            raise WorkerError(
                f"bench.worker {self.task} exited with {code}: "
                + err.decode(errors="replace")[-3000:]
            )
        answer: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        return answer
