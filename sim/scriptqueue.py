"""Simulated ScriptQueues (1 MainTel, 2 AuxTel, 3 OCS) on a `CscFleet`, run like ts_scriptqueue.

The queues are ordinary simulated CSCs of the fleet (their summary states, heartbeats and
``exitControl`` are the fleet's); `ScriptQueueSim` serves their own commands and runs their
scripts. What it reproduces of the real queue (lsst-ts/ts_scriptqueue):

- ``add`` needs the queue ENABLED (salobj's ``add not allowed in state=<State.STANDBY: 5>``),
  a known script path (``Cannot find script ...``) and a location FIRST=1, LAST=2, BEFORE=3 or
  AFTER=4; it acks once the script's process started, with the script's SAL index as
  ``result`` (queue index times 100000 upward, as the real queue numbers its scripts).
- Each script loads, is configured at once (CONFIGURE_FAILED if its schema rejects the config)
  and runs when it reaches the top of a running, enabled queue; ``logevent_script`` reports
  every step with the real processState/scriptState pairs and TAI timestamps, and
  ``logevent_queue`` the queue's content after every change.
- A script that fails stays the current script and pauses the queue until ``resume``.
- ``stopScripts`` stops the running script gently (STOPPED) or terminates it (TERMINATED);
  queued scripts are terminated. ``pause`` works in any state.
- When a queue goes OFFLINE its queued scripts are terminated, and its running script gets a
  short grace to finish: a set_summary_state that sends its own queue OFFLINE last gets its
  last ack and ends DONE, then the queue is gone.

Each script is also a SAL component ``Script:<index>`` of the fleet (heartbeats every 5 s, log
messages), talks to the CSCs as that identity, and is described in `sim.scripts`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import itertools
import logging
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import httpx

from blocks.site import CscName, State
from clients.registry import SchemaRegistryClient
from clients.sal.client import SalClient
from clients.sal.codec import TAI_MINUS_UTC_S
from clients.sal.enums import SalRetCode, ScriptProcessState, ScriptState
from sim.csc import AckReply, CommandHandler, CscBehaviour, CscFleet, SimulatedCsc
from sim.scripts import (
    SCRIPTS,
    ConfigureError,
    ScriptContext,
    ScriptTiming,
    SimScript,
    configure_script,
    script_schema_yaml,
)

__all__ = [
    "SCRIPT_INDEX_MULT",
    "Location",
    "ScriptLogRecord",
    "ScriptQueueSim",
]

_logger = logging.getLogger(__name__)

#: A queue's scripts are numbered from queue index times this (ts_scriptqueue's SCRIPT_INDEX_MULT).
SCRIPT_INDEX_MULT = 100_000
_MAX_INDICES = 400
_MAX_HISTORY = 400
#: How long ``add`` waits for the script's process to start (the real queue's STD_TIMEOUT).
_LOAD_LIMIT_S = 60.0
_FINAL = frozenset(
    {
        ScriptProcessState.DONE,
        ScriptProcessState.LOADFAILED,
        ScriptProcessState.CONFIGURE_FAILED,
        ScriptProcessState.TERMINATED,
    }
)


class Location(enum.IntEnum):
    """Where ``add``, ``move`` and ``requeue`` put a script (ScriptQueue's ``Location``)."""

    FIRST = 1
    LAST = 2
    BEFORE = 3
    AFTER = 4


@dataclass(frozen=True)
class ScriptLogRecord:
    """One log message of a script (also published as its ``logevent_logMessage``)."""

    queue: int
    index: int
    level: int
    message: str


def _tai() -> float:
    return time.time() + TAI_MINUS_UTC_S


@dataclass(eq=False)
class _Script:
    index: int
    cmd_id: int
    path: str
    is_standard: bool
    config: str
    descr: str
    kind: type[SimScript]
    process_state: ScriptProcessState = ScriptProcessState.LOADING
    script_state: ScriptState = ScriptState.UNKNOWN
    process_start: float = 0.0
    configure_start: float = 0.0
    configure_end: float = 0.0
    run_start: float = 0.0
    process_end: float = 0.0
    failed: bool = False
    terminating: bool = False
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    run_requested: asyncio.Event = field(default_factory=asyncio.Event)
    process: asyncio.Task[None] | None = None
    run_task: asyncio.Task[None] | None = None
    component: SimulatedCsc | None = None

    @property
    def done(self) -> bool:
        return self.process_state in _FINAL

    @property
    def runnable(self) -> bool:
        return self.script_state is ScriptState.CONFIGURED and self.run_start == 0.0


@dataclass(eq=False)
class _Queue:
    index: int
    csc: SimulatedCsc
    indices: itertools.count[int]
    queue: collections.deque[_Script] = field(default_factory=collections.deque)
    history: collections.deque[_Script] = field(
        default_factory=lambda: collections.deque(maxlen=_MAX_HISTORY)
    )
    current: _Script | None = None
    running: bool = True
    exiting: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def enabled(self) -> bool:
        return self.csc.state is State.ENABLED and not self.exiting

    def find(self, index: int, *, history: bool = False) -> _Script | None:
        pool = [*self.queue, *([self.current] if self.current else [])]
        if history:
            pool.extend(self.history)
        return next((s for s in pool if s.index == index), None)

    def position(self, index: int) -> int:
        for position, script in enumerate(self.queue):
            if script.index == index:
                return position
        raise ValueError(f"Script {index} is not on the queue")


class ScriptQueueSim:
    """Serves the ScriptQueue CSCs of ``fleet``: ``async with ScriptQueueSim(fleet, ...)``.

    Create it before the fleet starts its queues: it follows their summary states from the
    first one.

    Parameters
    ----------
    fleet
        The fleet that runs the ScriptQueue CSCs (and the scripts' ``Script`` components).
    registry_url, registry_transport
        The schema registry the scripts' SAL clients use (give the transport when the
        registry's app runs in this process, as for the fleet).
    timing
        The scripts' time limits and durations.
    scripts
        The scripts the queues know, by path (`sim.scripts.SCRIPTS`).
    script_components
        Run each script as a ``Script:<index>`` CSC of the fleet (heartbeats, log messages).
    exit_grace_s
        How long a queue going OFFLINE lets its running script finish before terminating it.
    """

    def __init__(
        self,
        fleet: CscFleet,
        *,
        registry_url: str,
        registry_transport: httpx.AsyncBaseTransport | None = None,
        timing: ScriptTiming | None = None,
        scripts: Mapping[str, type[SimScript]] | None = None,
        script_components: bool = True,
        exit_grace_s: float = 2.0,
        standard_root: str = "/opt/lsst/ts_standardscripts/python/lsst/ts/standardscripts/"
        "data/scripts",
        external_root: str = "/opt/lsst/ts_externalscripts/python/lsst/ts/externalscripts/"
        "data/scripts",
    ) -> None:
        self.fleet = fleet
        self.timing = timing or ScriptTiming()
        self.scripts = dict(SCRIPTS if scripts is None else scripts)
        self.script_components = script_components
        self.exit_grace_s = exit_grace_s
        self.standard_root = standard_root
        self.external_root = external_root
        #: The queues by index, while their CSC runs (a restarted queue starts afresh).
        self.queues: dict[int, _Queue] = {}
        #: Every script's log messages, in order.
        self.logs: list[ScriptLogRecord] = []
        self._registry_url = registry_url
        self._registry_transport = registry_transport
        self._http: httpx.AsyncClient | None = None
        self._registry: SchemaRegistryClient | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._run_failures: dict[str, str] = {}
        handlers: dict[str, CommandHandler] = {
            "add": self._do_add,
            "pause": self._do_pause,
            "resume": self._do_resume,
            "stopScripts": self._do_stop_scripts,
            "showQueue": self._do_show_queue,
            "showScript": self._do_show_script,
            "showAvailableScripts": self._do_show_available_scripts,
            "showSchema": self._do_show_schema,
            "move": self._do_move,
            "requeue": self._do_requeue,
        }
        for command, handler in handlers.items():
            fleet.register_command("ScriptQueue", command, handler)
        fleet.add_state_listener("ScriptQueue", self._on_state)

    async def open(self) -> None:
        self._http = httpx.AsyncClient(timeout=10.0, transport=self._registry_transport)
        self._registry = SchemaRegistryClient(self._registry_url, http_client=self._http)

    async def aclose(self) -> None:
        """Terminate every script (silently) and close the registry client."""
        scripts = [s for q in self.queues.values() for s in (*q.queue, q.current) if s]
        for script in scripts:
            script.terminating = True
            if script.process is not None:
                script.process.cancel()
        for task in [*(s.process for s in scripts if s.process), *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.queues.clear()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def fail_next_run(self, path: str, message: str) -> None:
        """Make the next script of ``path`` to run fail at once with ``message`` (a fault).

        It loads and is configured as usual, then raises before doing any of its work: it ends
        FAILED and pauses its queue, as a script that crashes does.
        """
        self._run_failures[path] = message

    def log_lines(self, index: int) -> list[str]:
        """The messages script ``index`` logged."""
        return [r.message for r in self.logs if r.index == index]

    # --- The queue CSC's life ----------------------------------------------------------------

    def _queue(self, csc: SimulatedCsc) -> _Queue:
        queue = self.queues.get(csc.name.index)
        if queue is None or queue.csc is not csc:
            # A new process: the real queue starts empty and numbers its scripts afresh.
            queue = _Queue(
                index=csc.name.index,
                csc=csc,
                indices=itertools.count(csc.name.index * SCRIPT_INDEX_MULT),
            )
            self.queues[csc.name.index] = queue
        return queue

    async def _on_state(self, csc: SimulatedCsc, state: State) -> None:
        queue = self._queue(csc)
        if state is State.OFFLINE:
            queue.exiting = True
            await self._publish_queue(queue)
            self._spawn(self._exit(queue))
            return
        self._spawn(self._update(queue))

    async def _exit(self, queue: _Queue) -> None:
        for script in list(queue.queue):
            await self._terminate(script)
        current = queue.current
        if current is not None and current.process is not None and not current.done:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(current.process), self.exit_grace_s)
            await self._terminate(current)
        if self.queues.get(queue.index) is queue:
            del self.queues[queue.index]

    def _alive(self, queue: _Queue) -> bool:
        """The queue's process still runs (or is closing after OFFLINE) and can publish."""
        return queue.exiting or self.fleet.running.get(queue.csc.name) is queue.csc

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- Events --------------------------------------------------------------------------------

    async def _publish_queue(self, queue: _Queue) -> None:
        if not self._alive(queue):
            return
        indices = [s.index for s in queue.queue][:_MAX_INDICES]
        past = [s.index for s in queue.history][:_MAX_INDICES]
        await queue.csc.write(
            "logevent_queue",
            enabled=queue.enabled,
            running=queue.running,
            currentSalIndex=queue.current.index if queue.current else 0,
            length=len(indices),
            salIndices=indices + [0] * (_MAX_INDICES - len(indices)),
            pastLength=len(past),
            pastSalIndices=past + [0] * (_MAX_INDICES - len(past)),
        )

    async def _publish_script(self, queue: _Queue, script: _Script) -> None:
        if not self._alive(queue):
            return
        await queue.csc.write(
            "logevent_script",
            cmdId=script.cmd_id,
            scriptSalIndex=script.index,
            isStandard=script.is_standard,
            path=script.path,
            timestampProcessStart=script.process_start,
            timestampConfigureStart=script.configure_start,
            timestampConfigureEnd=script.configure_end,
            timestampRunStart=script.run_start,
            timestampProcessEnd=script.process_end,
            processState=int(script.process_state),
            scriptState=int(script.script_state),
        )

    async def _set(
        self,
        queue: _Queue,
        script: _Script,
        *,
        process: ScriptProcessState | None = None,
        state: ScriptState | None = None,
    ) -> None:
        if process is not None:
            script.process_state = process
        if state is not None:
            script.script_state = state
        await self._publish_script(queue, script)

    # --- Running the queue ---------------------------------------------------------------------

    async def _update(self, queue: _Queue, *, pause_on_failure: bool = True) -> None:
        """ts_scriptqueue's ``_update_queue``: retire the current script, start the next one."""
        async with queue.lock:
            current = queue.current
            if current is not None and current.done:
                if current.failed and (pause_on_failure or not queue.running):
                    queue.running = False
                else:
                    queue.history.appendleft(current)
                    queue.current = None
            if queue.enabled and queue.running:
                while queue.queue:
                    top = queue.queue[0]
                    if top.done:
                        queue.history.appendleft(queue.queue.popleft())
                        continue
                    if queue.current is None and top.runnable:
                        queue.current = queue.queue.popleft()
                        top.run_requested.set()
                    break
            await self._publish_queue(queue)

    def _log(self, queue: _Queue, script: _Script, level: int, message: str) -> None:
        self.logs.append(ScriptLogRecord(queue.index, script.index, level, message))
        _logger.log(level, "Script:%d (%s): %s", script.index, script.path, message)
        component = script.component
        if component is not None and component.running:
            self._spawn(
                component.write(
                    "logevent_logMessage",
                    name=f"Script:{script.index}",
                    level=level,
                    message=message,
                    traceback="",
                    filePath=script.path,
                    functionName="run",
                    lineNumber=0,
                    process=component.origin,
                    timestamp=_tai(),
                )
            )

    async def _process(self, queue: _Queue, script: _Script) -> None:
        """The script's process: load, configure, wait for its turn, run, end."""
        sim: SimScript | None = None
        ctx: ScriptContext | None = None
        sal: SalClient | None = None
        try:
            if self.script_components:
                script.component = await self._launch_component(script.index)
            script.process_start = _tai()
            await self._set(queue, script, process=ScriptProcessState.LOADING)
            script.loaded.set()
            sal = SalClient(
                bootstrap_servers=self.fleet.kafka.bootstrap_servers,
                registry=self._registry_client(),
                sal_subname=self.fleet.sal_subname,
                identity=f"Script:{script.index}",
                origin=script.component.origin if script.component else None,
            )
            ctx = ScriptContext(
                index=script.index,
                queue=queue.csc.name,
                sal=sal,
                timing=self.timing,
                log=lambda level, message: self._log(queue, script, level, message),
            )
            await asyncio.sleep(self.timing.scaled(self.timing.load_s))
            script.configure_start = _tai()
            await self._set(queue, script, state=ScriptState.UNCONFIGURED)
            sim = script.kind(ctx)
            try:
                await configure_script(sim, script.config)
            except ConfigureError as exc:
                self._log(queue, script, logging.ERROR, str(exc))
                script.configure_end = script.process_end = _tai()
                await self._set(
                    queue,
                    script,
                    process=ScriptProcessState.CONFIGURE_FAILED,
                    state=ScriptState.CONFIGURE_FAILED,
                )
                return
            script.configure_end = _tai()
            await self._set(
                queue, script, process=ScriptProcessState.CONFIGURED, state=ScriptState.CONFIGURED
            )
            await self._update(queue)
            await script.run_requested.wait()
            await self._run(queue, script, sim, ctx)
        except asyncio.CancelledError:
            script.process_end = _tai()
            with contextlib.suppress(Exception):
                await self._set(queue, script, process=ScriptProcessState.TERMINATED)
        except Exception as exc:
            _logger.exception("Script:%d crashed", script.index)
            script.failed = True
            script.process_end = _tai()
            self._log(queue, script, logging.ERROR, f"failed in _exit: {exc}")
            await self._set(
                queue, script, process=ScriptProcessState.DONE, state=ScriptState.FAILED
            )
        finally:
            script.loaded.set()
            await self._close_process(script, sim, ctx, sal)
            self._spawn(self._update(queue))

    def _registry_client(self) -> SchemaRegistryClient:
        if self._registry is None:
            raise RuntimeError("the ScriptQueue simulation is not open")
        return self._registry

    async def _launch_component(self, index: int) -> SimulatedCsc | None:
        try:
            return await self.fleet.launch(
                CscName(name="Script", index=index),
                behaviour=CscBehaviour(
                    heartbeat_interval_s=self.timing.script_heartbeat_interval_s
                ),
            )
        except ValueError as exc:
            _logger.warning("Script:%d runs without its SAL component: %s", index, exc)
            return None

    async def _run(
        self, queue: _Queue, script: _Script, sim: SimScript, ctx: ScriptContext
    ) -> None:
        ctx.group_id = datetime.now(UTC).isoformat(timespec="milliseconds")
        script.run_start = _tai()
        await self._set(
            queue, script, process=ScriptProcessState.RUNNING, state=ScriptState.RUNNING
        )
        failure = self._run_failures.pop(script.path, None)
        work = sim.run() if failure is None else _crash(failure)
        script.run_task = asyncio.create_task(work, name=f"script-{script.index}-run")
        try:
            await script.run_task
        except asyncio.CancelledError:
            # Only the run was cancelled (``stopScripts`` without terminate): a gentle stop.
            task = asyncio.current_task()
            if script.terminating or (task is not None and task.cancelling()):
                raise
            await self._set(queue, script, state=ScriptState.STOPPING)
            final = ScriptState.STOPPED
        except Exception as exc:  # noqa: BLE001 (a failing script reports, then exits)
            self._log(queue, script, logging.ERROR, f"Error in run: {exc}")
            self._log(queue, script, logging.DEBUG, traceback.format_exc())
            await self._set(queue, script, state=ScriptState.FAILING)
            final = ScriptState.FAILED
            script.failed = True
        else:
            await self._set(queue, script, state=ScriptState.ENDING)
            final = ScriptState.DONE
        script.process_end = _tai()
        await self._set(queue, script, process=ScriptProcessState.DONE, state=final)

    async def _close_process(
        self,
        script: _Script,
        sim: SimScript | None,
        ctx: ScriptContext | None,
        sal: SalClient | None,
    ) -> None:
        for close in (
            sim.cleanup if sim is not None else None,
            ctx.aclose if ctx is not None else None,
            sal.aclose if sal is not None else None,
        ):
            if close is not None:
                try:
                    await close()
                except Exception:
                    _logger.exception("Script:%d: cleaning up failed", script.index)
        if script.component is not None:
            await self.fleet.stop(script.component.name)

    async def _terminate(self, script: _Script) -> None:
        """Kill a script's process (no cleanup by the script) and wait until it is gone."""
        if script.done or script.process is None:
            return
        script.terminating = True
        script.process.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await script.process

    async def _stop(self, script: _Script) -> None:
        """Stop a running script gently: its run is cancelled and it ends STOPPED."""
        if script.run_task is None or script.run_task.done():
            await self._terminate(script)
            return
        script.run_task.cancel()
        if script.process is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await script.process

    # --- Commands ------------------------------------------------------------------------------

    def _enabled_queue(self, csc: SimulatedCsc, action: str) -> _Queue:
        """salobj's ``assert_enabled``; the queue's model."""
        if csc.state is not State.ENABLED:
            raise RuntimeError(f"{action} not allowed in state={csc.state!r}")
        return self._queue(csc)

    def _script_kind(self, is_standard: bool, path: str) -> type[SimScript]:
        root = self.standard_root if is_standard else self.external_root
        kind = self.scripts.get(path) if is_standard else None
        if kind is None:
            raise ValueError(f"Cannot find script {root}/{path}.")
        return kind

    def _insert(self, queue: _Queue, script: _Script, location: int, location_index: int) -> None:
        if location == Location.FIRST:
            queue.queue.appendleft(script)
        elif location == Location.LAST:
            queue.queue.append(script)
        elif location in (Location.BEFORE, Location.AFTER):
            position = queue.position(location_index)
            if location == Location.AFTER:
                position += 1
            queue.queue.insert(position, script)
        else:
            raise ValueError(f"Unknown location {location}")

    async def _add(
        self,
        queue: _Queue,
        data: Mapping[str, Any],
        *,
        kind: type[SimScript],
        path: str,
        is_standard: bool,
        config: str,
        descr: str,
    ) -> _Script:
        script = _Script(
            index=next(queue.indices),
            cmd_id=int(data.get("private_seqNum", 0)),
            path=path,
            is_standard=is_standard,
            config=config,
            descr=descr,
            kind=kind,
        )
        self._insert(
            queue, script, int(data.get("location", 0)), int(data.get("locationSalIndex", 0))
        )
        script.process = asyncio.create_task(
            self._process(queue, script), name=f"script-{script.index}"
        )
        try:
            await asyncio.wait_for(script.loaded.wait(), _LOAD_LIMIT_S)
        except TimeoutError:
            await self._terminate(script)
            raise RuntimeError(
                f"script {script.index} did not start in {_LOAD_LIMIT_S} s"
            ) from None
        await self._update(queue)
        return script

    async def _do_add(self, csc: SimulatedCsc, data: dict[str, Any]) -> AckReply | None:
        queue = self._enabled_queue(csc, "add")
        path = str(data.get("path", ""))
        is_standard = bool(data.get("isStandard", True))
        script = await self._add(
            queue,
            data,
            kind=self._script_kind(is_standard, path),
            path=path,
            is_standard=is_standard,
            config=str(data.get("config", "")),
            descr=str(data.get("descr", "")),
        )
        return AckReply(result=str(script.index))

    async def _do_requeue(self, csc: SimulatedCsc, data: dict[str, Any]) -> AckReply | None:
        queue = self._enabled_queue(csc, "requeue")
        old = queue.find(int(data.get("scriptSalIndex", 0)), history=True)
        if old is None:
            raise ValueError(f"Unknown script {data.get('scriptSalIndex')}")
        script = await self._add(
            queue,
            data,
            kind=old.kind,
            path=old.path,
            is_standard=old.is_standard,
            config=old.config,
            descr=old.descr,
        )
        return AckReply(result=str(script.index))

    async def _do_move(self, csc: SimulatedCsc, data: dict[str, Any]) -> AckReply | None:
        queue = self._enabled_queue(csc, "move")
        index = int(data.get("scriptSalIndex", 0))
        script = queue.queue[queue.position(index)]
        old = list(queue.queue)
        queue.queue.remove(script)
        try:
            self._insert(
                queue, script, int(data.get("location", 0)), int(data.get("locationSalIndex", 0))
            )
        except ValueError:
            queue.queue = collections.deque(old)
            raise
        await self._update(queue)
        return None

    async def _do_pause(self, csc: SimulatedCsc, data: dict[str, Any]) -> AckReply | None:
        del data  # allowed in any state, unlike the other commands
        queue = self._queue(csc)
        if queue.running:
            queue.running = False
            await self._update(queue)
        return None

    async def _do_resume(self, csc: SimulatedCsc, data: dict[str, Any]) -> AckReply | None:
        del data
        queue = self._enabled_queue(csc, "resume")
        if not queue.running:
            queue.running = True
            await self._update(queue, pause_on_failure=False)
        return None

    async def _do_stop_scripts(self, csc: SimulatedCsc, data: dict[str, Any]) -> AckReply | None:
        queue = self._enabled_queue(csc, "stopScripts")
        length = int(data.get("length", 0))
        if length <= 0:
            raise ValueError(f"length={length} must be positive")
        timeout_s = 10.0 + length
        await csc.ack(
            "stopScripts",
            data,
            SalRetCode.CMD_INPROGRESS,
            result="Stopping scripts.",
            timeout_s=timeout_s + 1,
        )
        terminate = bool(data.get("terminate", False))
        for index in list(data.get("salIndices", []))[:length]:
            script = queue.find(int(index))
            if script is None or script.done:
                continue
            running = script.run_task is not None and not script.run_task.done()
            work = self._terminate(script) if terminate or not running else self._stop(script)
            await asyncio.wait_for(work, timeout_s)
        await self._update(queue)
        return None

    async def _do_show_queue(self, csc: SimulatedCsc, data: dict[str, Any]) -> AckReply | None:
        del data
        await self._publish_queue(self._enabled_queue(csc, "showQueue"))
        return None

    async def _do_show_script(self, csc: SimulatedCsc, data: dict[str, Any]) -> AckReply | None:
        queue = self._enabled_queue(csc, "showScript")
        index = int(data.get("scriptSalIndex", 0))
        script = queue.find(index, history=True)
        if script is None:
            raise ValueError(f"Unknown script {index}")
        await self._publish_script(queue, script)
        return None

    async def _do_show_available_scripts(
        self, csc: SimulatedCsc, data: dict[str, Any]
    ) -> AckReply | None:
        del data
        self._enabled_queue(csc, "showAvailableScripts")
        await csc.write(
            "logevent_availableScripts", standard=":".join(sorted(self.scripts)), external=""
        )
        return None

    async def _do_show_schema(self, csc: SimulatedCsc, data: dict[str, Any]) -> AckReply | None:
        self._enabled_queue(csc, "showSchema")
        path = str(data.get("path", ""))
        is_standard = bool(data.get("isStandard", True))
        kind = self._script_kind(is_standard, path)
        await csc.write(
            "logevent_configSchema",
            isStandard=is_standard,
            path=path,
            configSchema=script_schema_yaml(kind),
        )
        return None


async def _crash(message: str) -> None:
    """A script's run that fails on its first line (`ScriptQueueSim.fail_next_run`)."""
    raise RuntimeError(message)
