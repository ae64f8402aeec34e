"""Running SAL scripts on a ScriptQueue and following them to their end.

A script is added with the queue's ``add`` command (location LAST); the ack's ``result`` is the
new script's SAL index. From then on only the queue's ``logevent_script`` says what happens to
it: it is loaded, configured (or CONFIGURE_FAILED: a config the script's schema rejects), run
when its turn comes, and ends DONE, FAILED, STOPPED or TERMINATED (rubin-systems.md §3). A
successful ``add`` only means the script was launched.

The queue's ``logevent_script``, ``logevent_queue`` and ``logevent_summaryState`` are read from
their ends *before* a command is sent, so nothing the queue says in answer is missed. Timestamps
in ``logevent_script`` are TAI; the results give UTC.

Nothing here imports Prefect.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import math
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import yaml
from aiokafka import ConsumerRecord, TopicPartition
from pydantic import BaseModel, ConfigDict

from blocks.site import CscName, State
from clients.sal.codec import TAI_MINUS_UTC_S
from clients.sal.enums import ScriptProcessState, ScriptState
from clients.sal.errors import (
    CommandFailed,
    NoAckError,
    SalDecodeError,
    SalError,
    SalSchemaError,
    SalTopicError,
)
from clients.sal.kafka import END, PartitionFeed

if TYPE_CHECKING:
    from clients.sal.client import SalClient

__all__ = [
    "DEFAULT_ADD_TIMEOUT_S",
    "SCRIPT_QUEUE",
    "QueueStatus",
    "ScriptAddFailed",
    "ScriptConfig",
    "ScriptInfo",
    "ScriptLocation",
    "ScriptNotFound",
    "ScriptOutcome",
    "ScriptQueueError",
    "ScriptQueueExited",
    "ScriptQueueNotEnabled",
    "ScriptResult",
    "ScriptTimeout",
    "config_text",
    "pause_queue",
    "queue_status",
    "resume_queue",
    "run_script",
    "stop_scripts",
    "wait_for_script",
]

SCRIPT_QUEUE = "ScriptQueue"
#: ``add`` waits for the script's process to start (the queue's own limit is 60 s).
DEFAULT_ADD_TIMEOUT_S = 60.0
#: ScriptQueue's array fields (``salIndices`` of ``stopScripts`` and ``queue``) hold 400 values.
_MAX_INDICES = 400
_FINAL_PROCESS_STATES = frozenset(
    {
        ScriptProcessState.DONE,
        ScriptProcessState.LOADFAILED,
        ScriptProcessState.CONFIGURE_FAILED,
        ScriptProcessState.TERMINATED,
    }
)

_E = TypeVar("_E", bound=enum.IntEnum)

#: A script's configuration: a mapping (sent as YAML), YAML text, or None for none.
ScriptConfig = Mapping[str, Any] | str | None


class ScriptLocation(enum.IntEnum):
    """Where ``add`` puts a script in the queue (ScriptQueue's ``Location``; 0 is invalid)."""

    FIRST = 1
    LAST = 2
    BEFORE = 3
    AFTER = 4


class ScriptOutcome(enum.StrEnum):
    """How a script ended, from its final process state and script state."""

    DONE = "DONE"
    FAILED = "FAILED"
    CONFIGURE_FAILED = "CONFIGURE_FAILED"
    STOPPED = "STOPPED"
    TERMINATED = "TERMINATED"
    LOAD_FAILED = "LOAD_FAILED"


_PROCESS_OUTCOMES = {
    ScriptProcessState.LOADFAILED: ScriptOutcome.LOAD_FAILED,
    ScriptProcessState.CONFIGURE_FAILED: ScriptOutcome.CONFIGURE_FAILED,
    ScriptProcessState.TERMINATED: ScriptOutcome.TERMINATED,
}
_SCRIPT_OUTCOMES = {
    ScriptState.DONE: ScriptOutcome.DONE,
    ScriptState.STOPPED: ScriptOutcome.STOPPED,
}


# --- Results -----------------------------------------------------------------------------------


def _utc(tai: float) -> datetime | None:
    return None if tai <= 0 else datetime.fromtimestamp(tai - TAI_MINUS_UTC_S, UTC)


class ScriptInfo(BaseModel):
    """One ``logevent_script`` sample: where a script is now."""

    model_config = ConfigDict(frozen=True)

    queue: CscName
    script_index: int
    path: str
    is_standard: bool
    cmd_id: int
    process_state: ScriptProcessState
    script_state: ScriptState
    process_started_at: datetime | None
    configure_started_at: datetime | None
    configure_ended_at: datetime | None
    run_started_at: datetime | None
    process_ended_at: datetime | None

    @classmethod
    def from_event(cls, queue: CscName, data: Mapping[str, Any]) -> ScriptInfo:
        return cls(
            queue=queue,
            script_index=int(data.get("scriptSalIndex", 0)),
            path=str(data.get("path", "")),
            is_standard=bool(data.get("isStandard", True)),
            cmd_id=int(data.get("cmdId", 0)),
            process_state=_enum(ScriptProcessState, data.get("processState")),
            script_state=_enum(ScriptState, data.get("scriptState")),
            process_started_at=_utc(float(data.get("timestampProcessStart", 0.0))),
            configure_started_at=_utc(float(data.get("timestampConfigureStart", 0.0))),
            configure_ended_at=_utc(float(data.get("timestampConfigureEnd", 0.0))),
            run_started_at=_utc(float(data.get("timestampRunStart", 0.0))),
            process_ended_at=_utc(float(data.get("timestampProcessEnd", 0.0))),
        )

    @property
    def is_final(self) -> bool:
        """The script's process has ended: nothing more will happen to it."""
        return self.process_state in _FINAL_PROCESS_STATES

    @property
    def outcome(self) -> ScriptOutcome | None:
        """How it ended; None while it has not."""
        if not self.is_final:
            return None
        if self.script_state is ScriptState.CONFIGURE_FAILED:
            return ScriptOutcome.CONFIGURE_FAILED
        by_process = _PROCESS_OUTCOMES.get(self.process_state)
        if by_process is not None:
            return by_process
        # The process ended by itself: the script's own state says how.
        return _SCRIPT_OUTCOMES.get(self.script_state, ScriptOutcome.FAILED)

    def describe(self) -> str:
        return f"processState={self.process_state.name}, scriptState={self.script_state.name}"


class ScriptResult(BaseModel):
    """How a script that was run ended, with its timings.

    ``queued_at`` is when the queue acknowledged ``add``; ``started_at``/``ended_at`` are the
    queue's run-start and process-end times; ``duration_s`` is the run time (None if it never
    ran) and ``waited_s`` the whole time from ``add`` to the final state.
    """

    model_config = ConfigDict(frozen=True)

    queue: CscName
    script_index: int
    path: str
    is_standard: bool
    outcome: ScriptOutcome
    process_state: ScriptProcessState
    script_state: ScriptState
    queued_at: datetime
    configured_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    duration_s: float | None
    waited_s: float

    @property
    def ok(self) -> bool:
        return self.outcome is ScriptOutcome.DONE


class QueueStatus(BaseModel):
    """One ``logevent_queue`` sample: whether the queue runs scripts, and which."""

    model_config = ConfigDict(frozen=True)

    queue: CscName
    enabled: bool
    running: bool
    current_index: int
    queued: list[int]
    past: list[int]

    @classmethod
    def from_event(cls, queue: CscName, data: Mapping[str, Any]) -> QueueStatus:
        length = int(data.get("length", 0))
        past_length = int(data.get("pastLength", 0))
        return cls(
            queue=queue,
            enabled=bool(data.get("enabled", False)),
            running=bool(data.get("running", False)),
            current_index=int(data.get("currentSalIndex", 0)),
            queued=[int(i) for i in list(data.get("salIndices", []))[:length]],
            past=[int(i) for i in list(data.get("pastSalIndices", []))[:past_length]],
        )

    @property
    def paused(self) -> bool:
        """Not running: a failed script paused it, or someone did (``pause``)."""
        return not self.running


# --- Errors ------------------------------------------------------------------------------------


class ScriptQueueError(SalError):
    """Base of the errors of running scripts on a ScriptQueue."""


class ScriptQueueNotEnabled(ScriptQueueError):  # noqa: N818 (named after the condition)
    """The queue is not ENABLED (or not running at all), so it refuses scripts."""

    def __init__(
        self, queue: CscName, state: State | None, *, alive: bool, detail: str = ""
    ) -> None:
        where = "no summary state" if state is None else state.name
        beat = "" if alive else ", no heartbeat (not running)"
        more = f": {detail}" if detail else ""
        super().__init__(f"{queue} is not ENABLED ({where}{beat}){more}")
        self.queue = queue
        self.state = state
        self.alive = alive


class ScriptAddFailed(ScriptQueueError):  # noqa: N818 (named after the condition)
    """The queue refused ``add`` (unknown script path, bad location, ...); ``reason`` says why."""

    def __init__(self, queue: CscName, path: str, reason: str) -> None:
        super().__init__(f"{queue} could not add {path}: {reason}")
        self.queue = queue
        self.path = path
        self.reason = reason


class ScriptNotFound(ScriptQueueError):  # noqa: N818 (named after the condition)
    """The queue knows no script with this index."""


class ScriptTimeout(ScriptQueueError, TimeoutError):  # noqa: N818 (a kind of TimeoutError)
    """The script did not reach a final state in time; ``last`` is the last state seen.

    The script may still be running: stop it (`stop_scripts`) or wait again
    (`wait_for_script`).
    """

    def __init__(
        self, queue: CscName, index: int, path: str, timeout_s: float, last: ScriptInfo | None
    ) -> None:
        seen = "no script event seen" if last is None else f"last {last.describe()}"
        super().__init__(
            f"{queue} script {index} ({path}) did not finish within {timeout_s:.1f} s: {seen}"
        )
        self.queue = queue
        self.index = index
        self.path = path
        self.timeout_s = timeout_s
        self.last = last


class ScriptQueueExited(ScriptQueueError):  # noqa: N818 (named after the condition)
    """The queue went OFFLINE before the script reported a final state (``last``).

    Expected when the script itself sent its own queue OFFLINE and the queue did not report the
    script's end before leaving.
    """

    def __init__(self, queue: CscName, index: int, path: str, last: ScriptInfo | None) -> None:
        seen = "no script event seen" if last is None else f"last {last.describe()}"
        super().__init__(f"{queue} went OFFLINE while script {index} ({path}) ran: {seen}")
        self.queue = queue
        self.index = index
        self.path = path
        self.last = last


# --- Reading what the queue says ---------------------------------------------------------------


class _QueueWatch:
    """The queue's ``script``, ``queue`` and ``summaryState`` events from the moment it starts."""

    def __init__(self, sal: SalClient, queue: CscName) -> None:
        self._sal = sal
        self.queue = queue
        self._topics = {
            sal.topic(SCRIPT_QUEUE, name): name
            for name in ("logevent_script", "logevent_queue", "logevent_summaryState")
        }
        self._feed = PartitionFeed(sal.kafka, self._on_record, name=f"script-watch-{queue}")
        self.scripts: dict[int, ScriptInfo] = {}
        self.queue_events: list[QueueStatus] = []
        self.states: list[State] = []
        self._changed = asyncio.Event()

    async def __aenter__(self) -> Self:
        await self._feed.start()
        try:
            _require(set(self._topics) - await self._feed.existing_topics(self._topics))
            await self._feed.add({TopicPartition(topic, 0): END for topic in self._topics})
        except BaseException:
            await self._feed.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._feed.stop()

    async def _on_record(self, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            data = await self._sal.codec.decode(record.value or b"")
        except (SalDecodeError, SalSchemaError):
            return
        if int(data.get("salIndex", 0)) != self.queue.index:
            return
        kind = self._topics.get(record.topic)
        if kind == "logevent_script":
            info = ScriptInfo.from_event(self.queue, data)
            self.scripts[info.script_index] = info
        elif kind == "logevent_queue":
            self.queue_events.append(QueueStatus.from_event(self.queue, data))
        elif kind == "logevent_summaryState":
            self.states.append(_enum(State, data.get("summaryState"), State.FAULT))
        self._changed.set()

    @property
    def went_offline(self) -> bool:
        return State.OFFLINE in self.states

    async def wait_changed(self, timeout_s: float) -> None:
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), max(timeout_s, 0.0))

    async def follow(
        self, index: int, path: str, *, timeout_s: float, exit_grace_s: float
    ) -> ScriptInfo:
        """Wait for script ``index`` to end; its final `ScriptInfo`.

        Raises
        ------
        ScriptTimeout, ScriptQueueExited
        """
        deadline = time.monotonic() + timeout_s
        exit_deadline = math.inf
        while True:
            info = self.scripts.get(index)
            if info is not None and info.is_final:
                return info
            now = time.monotonic()
            if self.went_offline and exit_deadline == math.inf:
                # The queue reports its script's end after its own OFFLINE, if at all.
                exit_deadline = now + exit_grace_s
            if now >= exit_deadline:
                raise ScriptQueueExited(self.queue, index, path, info)
            if now >= deadline:
                raise ScriptTimeout(self.queue, index, path, timeout_s, info)
            await self.wait_changed(min(deadline, exit_deadline) - now)

    async def next_queue_status(self, timeout_s: float) -> QueueStatus:
        deadline = time.monotonic() + timeout_s
        while not self.queue_events:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ScriptQueueError(f"{self.queue} published no queue event in {timeout_s} s")
            await self.wait_changed(left)
        return self.queue_events[-1]


# --- Operations --------------------------------------------------------------------------------


def config_text(config: ScriptConfig) -> str:
    """The ``config`` field of ``add``: YAML text (a mapping is dumped in its own order)."""
    if config is None:
        return ""
    if isinstance(config, str):
        return config
    return yaml.safe_dump(dict(config), sort_keys=False)


async def run_script(
    sal: SalClient,
    queue_index: int,
    path: str,
    config: ScriptConfig = None,
    *,
    timeout_s: float,
    is_standard: bool = True,
    descr: str = "",
    log_level: int = 0,
    pause_checkpoint: str = "",
    stop_checkpoint: str = "",
    add_timeout_s: float = DEFAULT_ADD_TIMEOUT_S,
    heartbeat_window_s: float = 5.0,
    exit_grace_s: float = 5.0,
) -> ScriptResult:
    """Add a script at the end of ScriptQueue ``queue_index`` and wait until it ends.

    The queue's summary state is checked first. The result tells every way a script can end
    (DONE, FAILED, CONFIGURE_FAILED, STOPPED, TERMINATED): only a queue, Kafka or time problem
    raises.

    Parameters
    ----------
    sal
        The SAL client whose identity the ``add`` command carries.
    queue_index
        1 MainTel (MTQueue), 2 AuxTel (ATQueue), 3 OCS.
    path
        Relative to the standard or external scripts root, e.g. ``set_summary_state.py``.
    config
        The script's configuration: a mapping (sent as YAML) or YAML text.
    timeout_s
        Limit from the queue's ack of ``add`` to the script's final state (it may wait its turn).
    add_timeout_s
        Limit for the ``add`` ack itself.
    heartbeat_window_s
        The queue counts as running if it sent a heartbeat within this window.
    exit_grace_s
        How long to wait for the script's final state once the queue reported OFFLINE.

    Raises
    ------
    ScriptQueueNotEnabled
        The queue is not ENABLED or not running (checked first; also when ``add`` says so).
    ScriptAddFailed
        The queue refused or did not answer ``add`` (e.g. there is no script at ``path``).
    ScriptTimeout
        No final state within ``timeout_s``; names the script's index and last state.
    ScriptQueueExited
        The queue went OFFLINE and did not report the script's end.
    SalTopicError
        No ScriptQueue ever ran on this Kafka.
    SalKafkaError, SalSchemaError
        Kafka or the schema registry failed.
    """
    queue = CscName(name=SCRIPT_QUEUE, index=queue_index)
    await _check_enabled(sal, queue, heartbeat_window_s)
    params = {
        "isStandard": is_standard,
        "path": path,
        "config": config_text(config),
        "descr": descr,
        "location": int(ScriptLocation.LAST),
        "locationSalIndex": 0,
        "logLevel": log_level,
        "pauseCheckpoint": pause_checkpoint,
        "stopCheckpoint": stop_checkpoint,
    }
    async with _QueueWatch(sal, queue) as watch:
        started = time.monotonic()
        index = await _add(
            sal, queue, path, params, timeout_s=add_timeout_s, window_s=heartbeat_window_s
        )
        queued_at = datetime.now(UTC)
        info = await watch.follow(index, path, timeout_s=timeout_s, exit_grace_s=exit_grace_s)
        return _result(info, queued_at, time.monotonic() - started)


async def wait_for_script(
    sal: SalClient,
    queue_index: int,
    script_index: int,
    *,
    timeout_s: float,
    command_timeout_s: float = 10.0,
    exit_grace_s: float = 5.0,
) -> ScriptResult:
    """Follow a script already on the queue (e.g. after a `ScriptTimeout`) until it ends.

    The queue is asked for the script's current state (``showScript``), so a script that has
    already ended is reported at once. ``queued_at`` in the result is when this wait began.

    Raises
    ------
    ScriptNotFound
        The queue does not know the script.
    ScriptQueueNotEnabled
        The queue is not ENABLED (it answers ``showScript`` only then).
    ScriptTimeout, ScriptQueueExited
        As `run_script`.
    SalTopicError, SalKafkaError, SalSchemaError
        As `run_script`.
    """
    queue = CscName(name=SCRIPT_QUEUE, index=queue_index)
    async with _QueueWatch(sal, queue) as watch:
        started = time.monotonic()
        queued_at = datetime.now(UTC)
        try:
            await sal.command(
                queue, "showScript", {"scriptSalIndex": script_index}, timeout_s=command_timeout_s
            )
        except CommandFailed as exc:
            if _not_allowed(exc):
                raise ScriptQueueNotEnabled(queue, None, alive=True, detail=exc.reason) from exc
            raise ScriptNotFound(f"{queue}: {exc.reason}") from exc
        path = ""
        known = watch.scripts.get(script_index)
        if known is not None:
            path = known.path
        info = await watch.follow(
            script_index, path, timeout_s=timeout_s, exit_grace_s=exit_grace_s
        )
        return _result(info, queued_at, time.monotonic() - started)


async def queue_status(sal: SalClient, queue_index: int, *, timeout_s: float = 10.0) -> QueueStatus:
    """What the queue holds now and whether it runs (``showQueue``, then its ``queue`` event).

    Raises
    ------
    ScriptQueueNotEnabled
        The queue is not ENABLED (it answers ``showQueue`` only then).
    ScriptQueueError
        No ``queue`` event followed.
    NoAckError, SalTopicError, SalKafkaError, SalSchemaError
        As `SalClient.command`.
    """
    queue = CscName(name=SCRIPT_QUEUE, index=queue_index)
    async with _QueueWatch(sal, queue) as watch:
        try:
            await sal.command(queue, "showQueue", timeout_s=timeout_s)
        except CommandFailed as exc:
            raise ScriptQueueNotEnabled(queue, None, alive=True, detail=exc.reason) from exc
        return await watch.next_queue_status(timeout_s)


async def pause_queue(sal: SalClient, queue_index: int, *, timeout_s: float = 10.0) -> None:
    """Pause the queue: the current script goes on, no new one starts (allowed in any state).

    Raises
    ------
    CommandError, NoAckError, SalTopicError, SalKafkaError, SalSchemaError
        As `SalClient.command`.
    """
    await sal.command(CscName(name=SCRIPT_QUEUE, index=queue_index), "pause", timeout_s=timeout_s)


async def resume_queue(sal: SalClient, queue_index: int, *, timeout_s: float = 10.0) -> None:
    """Resume a paused queue; a failed current script then moves to the history.

    Raises
    ------
    ScriptQueueNotEnabled
        The queue is not ENABLED.
    CommandError, NoAckError, SalTopicError, SalKafkaError, SalSchemaError
        As `SalClient.command`.
    """
    queue = CscName(name=SCRIPT_QUEUE, index=queue_index)
    try:
        await sal.command(queue, "resume", timeout_s=timeout_s)
    except CommandFailed as exc:
        if _not_allowed(exc):
            raise ScriptQueueNotEnabled(queue, None, alive=True, detail=exc.reason) from exc
        raise


async def stop_scripts(
    sal: SalClient,
    queue_index: int,
    script_indices: Sequence[int],
    *,
    terminate: bool = False,
    timeout_s: float = 30.0,
) -> None:
    """Stop queued scripts and/or the running one (``terminate`` kills without cleanup).

    Unknown or finished scripts are ignored by the queue.

    Raises
    ------
    ValueError
        No index, or more than the queue's 400.
    ScriptQueueNotEnabled
        The queue is not ENABLED.
    CommandError, NoAckError, SalTopicError, SalKafkaError, SalSchemaError
        As `SalClient.command`.
    """
    indices = list(script_indices)
    if not 0 < len(indices) <= _MAX_INDICES:
        raise ValueError(f"give 1 to {_MAX_INDICES} script indices, not {len(indices)}")
    queue = CscName(name=SCRIPT_QUEUE, index=queue_index)
    params = {
        "length": len(indices),
        "salIndices": indices + [0] * (_MAX_INDICES - len(indices)),
        "terminate": terminate,
    }
    try:
        await sal.command(queue, "stopScripts", params, timeout_s=timeout_s)
    except CommandFailed as exc:
        if _not_allowed(exc):
            raise ScriptQueueNotEnabled(queue, None, alive=True, detail=exc.reason) from exc
        raise


# --- Helpers -----------------------------------------------------------------------------------


async def _check_enabled(sal: SalClient, queue: CscName, window_s: float) -> None:
    status = (await sal.statuses([queue], window_s))[queue]
    alive = status.alive(window_s)
    if status.state is not State.ENABLED or not alive:
        raise ScriptQueueNotEnabled(queue, status.state, alive=alive)


async def _add(
    sal: SalClient,
    queue: CscName,
    path: str,
    params: dict[str, Any],
    *,
    timeout_s: float,
    window_s: float,
) -> int:
    try:
        ack = await sal.command(queue, "add", params, timeout_s=timeout_s)
    except CommandFailed as exc:
        if _not_allowed(exc):
            state = (await sal.summary_states([queue]))[queue]
            raise ScriptQueueNotEnabled(queue, state, alive=True, detail=exc.reason) from exc
        raise ScriptAddFailed(queue, path, exc.reason) from exc
    except NoAckError as exc:
        alive = (await sal.alive([queue], window_s))[queue]
        if not alive:
            raise ScriptQueueNotEnabled(queue, None, alive=False, detail=str(exc)) from exc
        raise ScriptAddFailed(queue, path, str(exc)) from exc
    try:
        return int(ack.result)
    except ValueError:
        raise ScriptAddFailed(
            queue, path, f"the ack's result {ack.result!r} is not a script index"
        ) from None


def _result(info: ScriptInfo, queued_at: datetime, waited_s: float) -> ScriptResult:
    outcome = info.outcome
    if outcome is None:  # follow() returns final infos only
        raise ScriptQueueError(f"script {info.script_index} has not ended")
    started, ended = info.run_started_at, info.process_ended_at
    return ScriptResult(
        queue=info.queue,
        script_index=info.script_index,
        path=info.path,
        is_standard=info.is_standard,
        outcome=outcome,
        process_state=info.process_state,
        script_state=info.script_state,
        queued_at=queued_at,
        configured_at=info.configure_ended_at,
        started_at=started,
        ended_at=ended,
        duration_s=(ended - started).total_seconds() if started and ended else None,
        waited_s=waited_s,
    )


def _require(missing: set[str]) -> None:
    if missing:
        raise SalTopicError(
            f"{', '.join(sorted(missing))} does not exist: no ScriptQueue has run here"
        )


def _not_allowed(exc: CommandFailed) -> bool:
    # salobj's assert_enabled: "<cmd> not allowed in state=<State.DISABLED: 1>".
    return "not allowed" in exc.reason


def _enum(kind: type[_E], value: Any, default: _E | None = None) -> _E:
    try:
        return kind(int(value))
    except (TypeError, ValueError):
        if default is not None:
            return default
        return kind(0)
