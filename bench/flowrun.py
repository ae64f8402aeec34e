"""The measured side of figure 3: one full upgrade in the worker process, sampled as it runs.

`flow_upgrade` (worker task ``flow-upgrade``) runs `flows.full_upgrade.full_upgrade` in the
worker's own event loop against a simulated site in another process, under the Prefect server
given by ``PREFECT_API_URL``, while a `Sampler` thread looks at the main thread's stack every
``interval_s``. A sample is *idle* when the loop waits in ``select`` (for the site, the broker
or the Prefect API), else it is charged to the innermost frame that is Prefect's (its engine,
client, logging, events, results) or ours (``flows``, ``clients``, ``blocks``), else to *other*
(asyncio's own loop, or a library called from neither). Prefect's background threads (event
and log workers, its API clients' threads) are Prefect's machinery too: the process's CPU time
beyond the main thread's (and the sampler's own) is counted as Prefect's.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

from prefect import tags

from flows.full_upgrade import full_upgrade

__all__ = ["Sampler", "flow_upgrade"]

_ROOT = Path(__file__).resolve().parent.parent
_OURS = tuple(str(_ROOT / part) + "/" for part in ("flows", "clients", "blocks", "deployments"))
_PREFECT = "/site-packages/prefect/"
_IDLE = ("selectors.py", "select")


class Sampler:
    """Counts where the main thread is, every ``interval_s``, from a thread of its own."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self.counts: Counter[str] = Counter()
        self.cpu_s = 0.0
        self._target = threading.main_thread().ident
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        started = time.thread_time()
        while not self._stop.wait(self.interval_s):
            frame = sys._current_frames().get(self._target or 0)  # noqa: SLF001 (the sampler's way in)
            if frame is not None:
                self.counts[_owner(frame)] += 1
        self.cpu_s = time.thread_time() - started


def _owner(frame: FrameType) -> str:
    code = frame.f_code
    if code.co_filename.endswith(_IDLE[0]) and code.co_name == _IDLE[1]:
        return "idle"
    current: FrameType | None = frame
    while current is not None:
        filename = current.f_code.co_filename
        if _PREFECT in filename:
            return "prefect"
        if filename.startswith(_OURS):
            return "ours"
        current = current.f_back
    return "other"


async def flow_upgrade(params: dict[str, Any], answer: dict[str, Any]) -> None:
    """Run one full upgrade of site block ``site`` tagged ``tag``; answer what it cost."""
    sampler = Sampler()
    sampler.start()
    wall = time.perf_counter()
    cpu = time.process_time()
    main_cpu = time.thread_time()
    try:
        with tags(params["tag"]):
            state = await full_upgrade(
                site=params["site"],
                upgrade_id=params["upgrade_id"],
                breaks_schema_compatibility=True,
                return_state=True,
            )
    finally:
        wall = time.perf_counter() - wall
        main_cpu = time.thread_time() - main_cpu
        sampler.stop()
        cpu = time.process_time() - cpu
    result = await state.aresult(raise_on_failure=False) if state.is_completed() else None
    answer.update(
        state=state.name,
        message=result.get("message", "") if isinstance(result, dict) else str(state.message),
        short=result.get("short", []) if isinstance(result, dict) else [],
        steps=result.get("steps", []) if isinstance(result, dict) else [],
        wall_s=wall,
        cpu_s=cpu - sampler.cpu_s,
        main_cpu_s=main_cpu,
        samples=dict(sampler.counts),
    )
