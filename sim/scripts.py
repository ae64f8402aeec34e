"""The standard SAL scripts the upgrade procedure runs, for the simulated ScriptQueue.

Each script has its real configuration schema (ts_standardscripts, ts_auxtel_standardscripts,
ts_maintel_standardscripts: same properties, types, defaults, ``required`` and
``additionalProperties``), so a configuration the real script rejects ends CONFIGURE_FAILED
here too. Configuration follows salobj's ``BaseScript``: YAML text, a ``metadata`` key dropped,
schema defaults filled in, no configuration at all for a script without a schema.

Scripts act only through SAL: each running script is the SAL user ``Script:<index>`` with a
`SalClient` of its own, sends real commands to the simulated CSCs (which answer and are
recorded in the write log) and reads their events from Kafka. ``set_summary_state`` follows
salobj's ``set_summary_state``: it reads the CSC's last summaryState and sends the commands of
the path, trusting their acks (a CSC that never reports OFFLINE still counts as done).

`ScriptTiming` holds the time limits the real scripts use (30 s per shutdown transition, 60 s
per set_summary_state transition, salobj's 3600 s for an unanswered command such as muting an
absent Watcher) so that tests can shrink them, and ``time_scale`` shrinks physical durations
(``track_for``, loading a script).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self

import jsonschema
import yaml
from aiokafka import ConsumerRecord, TopicPartition

from blocks.site import CscName, State
from clients.sal.board import StateBoard
from clients.sal.client import SalClient, transition_step
from clients.sal.errors import SalError, SalSchemaError, SalTopicError
from clients.sal.history import read_latest
from clients.sal.kafka import END, PartitionFeed, start_consumer
from clients.sal.results import AckResult

__all__ = [
    "SCRIPTS",
    "ConfigureError",
    "EventStream",
    "ScriptContext",
    "ScriptLogger",
    "ScriptTiming",
    "SimScript",
    "configure_script",
    "script_schema_yaml",
]

_logger = logging.getLogger(__name__)

#: Components that are never sent OFFLINE by system_wide_shutdown nor found by it.
_NOT_DISCOVERED = frozenset({"Script", "ScriptQueue"})
#: Watcher ``AlarmSeverity.CRITICAL``.
_CRITICAL = 4
_LOG_INFO, _LOG_WARNING, _LOG_ERROR = 20, 30, 40


@dataclass(frozen=True, kw_only=True)
class ScriptTiming:
    """Time limits and durations of the simulated scripts, in seconds.

    Attributes
    ----------
    time_scale
        Multiplies physical durations: loading a script, ``track_for``, sleeps.
    load_s
        How long a script's process takes to start (before ``time_scale``).
    discovery_window_s
        A CSC counts as running if it sent a heartbeat within this window (system_wide_shutdown,
        ``Name:*``); salobj CSCs beat every second.
    shutdown_transition_timeout_s
        system_wide_shutdown's limit per command (salobj's default, 30 s).
    set_summary_state_timeout_s
        set_summary_state's limit per command (60 s).
    group_timeout_s
        Limit per command of the group scripts (enable_atcs, ...).
    command_timeout_s
        Limit of other commands the scripts send.
    mute_timeout_s
        salobj's default limit for a command (3600 s): how long muting alarms waits for an
        absent Watcher.
    m1m3_raise_timeout_s
        How long raise_m1m3 waits for M1M3 to be ACTIVE (MTCS: 600 s).
    script_heartbeat_interval_s
        A script's heartbeat interval (5 s).
    """

    time_scale: float = 1.0
    load_s: float = 2.0
    discovery_window_s: float = 5.0
    shutdown_transition_timeout_s: float = 30.0
    set_summary_state_timeout_s: float = 60.0
    group_timeout_s: float = 60.0
    command_timeout_s: float = 30.0
    mute_timeout_s: float = 3600.0
    m1m3_raise_timeout_s: float = 600.0
    script_heartbeat_interval_s: float = 5.0

    def scaled(self, seconds: float) -> float:
        return max(seconds * self.time_scale, 0.0)


class ScriptLogger(Protocol):
    """Where a script's log messages go (the queue publishes them as the script's logMessage)."""

    def __call__(self, level: int, message: str) -> None: ...


class ConfigureError(Exception):
    """The configuration was rejected: the script ends CONFIGURE_FAILED with this reason."""


class EventStream:
    """One CSC's events of one topic, from the moment the stream is entered."""

    def __init__(self, sal: SalClient, csc: CscName, sal_name: str) -> None:
        self._sal = sal
        self._csc = csc
        self._topic = sal.topic(csc.name, sal_name)
        self._feed = PartitionFeed(sal.kafka, self._on_record, name=f"script-{sal_name}")
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def __aenter__(self) -> Self:
        await self._feed.start()
        try:
            _require_topic(self._topic, await self._feed.existing_topics([self._topic]))
            await self._feed.add({TopicPartition(self._topic, 0): END})
        except BaseException:
            await self._feed.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._feed.stop()

    async def _on_record(self, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            data = await self._sal.codec.decode(record.value or b"")
        except SalError:
            return
        if self._csc.index and int(data.get("salIndex", 0)) != self._csc.index:
            return
        self._queue.put_nowait(data)

    async def next(self, timeout_s: float) -> dict[str, Any]:
        """The next sample; `TimeoutError` if none comes in time."""
        return await asyncio.wait_for(self._queue.get(), timeout_s)


def _require_topic(topic: str, existing: set[str]) -> None:
    if topic not in existing:
        raise SalTopicError(f"{topic} does not exist")


class ScriptContext:
    """What a running script uses: its SAL client (``Script:<index>``), its log, its limits."""

    def __init__(
        self,
        *,
        index: int,
        queue: CscName,
        sal: SalClient,
        timing: ScriptTiming,
        log: ScriptLogger,
    ) -> None:
        self.index = index
        self.queue = queue
        self.sal = sal
        self.timing = timing
        self._log = log
        self.group_id = ""
        self._board: StateBoard | None = None
        self._board_lock = asyncio.Lock()

    async def aclose(self) -> None:
        if self._board is not None:
            await self._board.stop()
            self._board = None

    def info(self, message: str) -> None:
        self._log(_LOG_INFO, message)

    def warning(self, message: str) -> None:
        self._log(_LOG_WARNING, message)

    def error(self, message: str) -> None:
        self._log(_LOG_ERROR, message)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(self.timing.scaled(seconds))

    async def board(self) -> StateBoard:
        """The script's one state board (concurrent transitions share it)."""
        async with self._board_lock:
            if self._board is None:
                board = self.sal.state_board()
                await board.start()
                self._board = board
            return self._board

    async def command(
        self,
        csc: CscName,
        name: str,
        params: Mapping[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> AckResult:
        return await self.sal.command(
            csc, name, params, timeout_s=timeout_s or self.timing.command_timeout_s
        )

    async def summary_state(self, csc: CscName, timeout_s: float) -> State:
        """The CSC's last reported summary state, as salobj's ``evt_summaryState.aget``."""
        board = await self.board()
        try:
            statuses = await board.wait_for(
                lambda status: status.state is not None, [csc], deadline_s=timeout_s
            )
        except SalError:
            raise RuntimeError(f"Cannot get summaryState from {csc.name}:{csc.index}") from None
        state = statuses[csc].state
        if state is None:
            raise RuntimeError(f"Cannot get summaryState from {csc.name}:{csc.index}")
        return state

    async def set_summary_state(
        self, csc: CscName, state: State, *, override: str = "", timeout_s: float
    ) -> list[State]:
        """salobj's ``set_summary_state``: the path's commands from the last reported state.

        Raises
        ------
        RuntimeError
            The state cannot be read, or a command failed or timed out.
        """
        if state is State.FAULT:
            raise ValueError("Cannot go into FAULT state using state transition commands")
        current = await self.summary_state(csc, timeout_s)
        states = [current]
        while current is not state:
            command, current = transition_step(current, state)
            params = {"configurationOverride": override} if command == "start" else None
            try:
                await self.sal.command(csc, command, params, timeout_s=timeout_s)
            except SalError as exc:
                raise RuntimeError(
                    f"Error on cmd=cmd_{command}, initial_state={states[0]!r}: {exc}"
                ) from exc
            states.append(current)
        return states

    async def assert_enabled(self, cscs: Iterable[CscName], message: str) -> None:
        """Fail with ``message`` unless every CSC reports ENABLED (``assert_all_enabled``)."""
        board = await self.board()
        names = list(cscs)
        await board.watch(names)
        short = [
            f"{csc.name}:{csc.index} is {'unknown' if s is None else s.name}"
            for csc in names
            if (s := board.state(csc)) is not State.ENABLED
        ]
        if short:
            raise RuntimeError(f"{message} {', '.join(short)}")

    async def heartbeat_components(self) -> list[str]:
        """Components with a heartbeat topic on this Kafka: the simulation's "IDL directory"."""
        consumer = self.sal.kafka.consumer()
        await start_consumer(consumer)
        try:
            topics = await consumer.topics()
        finally:
            await consumer.stop()
        pattern = re.compile(
            rf"^lsst\.{re.escape(self.sal.sal_subname)}\.([^.]+)\.logevent_heartbeat$"
        )
        found = {m.group(1) for t in topics if (m := pattern.match(t))}
        return sorted(found - _NOT_DISCOVERED)

    async def running_instances(self, components: Iterable[str]) -> dict[str, list[int]]:
        """The indices of each component that sent a heartbeat within the discovery window."""
        board = await self.board()
        names = sorted(set(components))
        await board.watch(CscName(name=name, index=0) for name in names)
        window = self.timing.discovery_window_s
        running: dict[str, list[int]] = {}
        for csc in sorted(board.known, key=lambda c: (c.name, c.index)):
            age = board.heartbeat_age(csc)
            if csc.name in names and age is not None and age <= window:
                running.setdefault(csc.name, []).append(csc.index)
        return running

    async def latest_event(
        self, csc: CscName, sal_name: str, timeout_s: float
    ) -> dict[str, Any] | None:
        """The last sample of a CSC's event (``aget``); None if it never published one."""
        topic = self.sal.topic(csc.name, sal_name)
        consumer = self.sal.kafka.consumer()
        await start_consumer(consumer)
        try:
            latest = await read_latest(
                consumer, {topic: frozenset({csc.index})}, timeout_s=timeout_s
            )
        finally:
            await consumer.stop()
        record = latest.get(topic, {}).get(csc.index)
        return None if record is None else await self.sal.codec.decode(record.value or b"")

    def events(self, csc: CscName, sal_name: str) -> EventStream:
        return EventStream(self.sal, csc, sal_name)


class SimScript:
    """One standard script: its path, its configuration schema (YAML) and what it does."""

    path: ClassVar[str]
    descr: ClassVar[str] = ""
    schema_yaml: ClassVar[str | None] = None

    def __init__(self, ctx: ScriptContext) -> None:
        self.ctx = ctx
        self.config: dict[str, Any] = {}

    @classmethod
    def schema(cls) -> dict[str, Any] | None:
        return None if cls.schema_yaml is None else yaml.safe_load(cls.schema_yaml)

    async def configure(self, config: dict[str, Any]) -> None:
        """Check and keep the (validated, defaulted) configuration; raise to reject it."""
        self.config = config

    async def run(self) -> None:
        """Do the script's work; raise to fail."""

    async def cleanup(self) -> None:
        """Release what `configure` or `run` opened (always called at the end)."""


async def configure_script(script: SimScript, config_text: str) -> dict[str, Any]:
    """Configure ``script`` from YAML text as salobj's ``BaseScript.do_configure`` does.

    Raises
    ------
    ConfigureError
        ``config(<text>) failed: <reason>``: the script ends CONFIGURE_FAILED.
    """
    try:
        config = _validated(script.schema(), config_text)
        await script.configure(config)
    except jsonschema.ValidationError as exc:
        raise ConfigureError(f"config({config_text}) failed: {exc.message}") from exc
    except Exception as exc:
        raise ConfigureError(f"config({config_text}) failed: {exc}") from exc
    return config


def _validated(schema: dict[str, Any] | None, config_text: str) -> dict[str, Any]:
    if schema is None:
        if config_text.strip():
            raise RuntimeError(
                f"This script has no configuration so config={config_text} must be empty."
            )
        return {}
    loaded = yaml.safe_load(config_text) if config_text.strip() else {}
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise TypeError(f"config must be a mapping, not {type(loaded).__name__}")
    loaded.pop("metadata", None)
    config = _with_defaults(schema, loaded)
    jsonschema.Draft7Validator(schema).validate(config)
    return config


def script_schema_yaml(script: type[SimScript]) -> str:
    """What ``showSchema`` publishes: the schema as YAML ("" for a script without one)."""
    return "" if script.schema_yaml is None else script.schema_yaml


def _with_defaults(schema: Mapping[str, Any], instance: dict[str, Any]) -> dict[str, Any]:
    """Fill in the schema's defaults, in present sub-objects too (salobj's DefaultingValidator)."""
    filled = dict(instance)
    for name, sub in (schema.get("properties") or {}).items():
        if not isinstance(sub, Mapping):
            continue  # a boolean schema, such as csc_end_of_night's stray additionalProperties
        if name not in filled and "default" in sub:
            filled[name] = copy.deepcopy(sub["default"])
        elif isinstance(filled.get(name), dict) and sub.get("type") == "object":
            filled[name] = _with_defaults(sub, filled[name])
    return filled


def _csc(text: str) -> tuple[str, int | None]:
    """``Name``, ``Name:index`` or ``Name:*`` (index None); `ValueError` otherwise."""
    match = re.match(r"^(?P<name>[a-zA-Z][a-zA-Z0-9_-]*)(:(?P<index>\d+|\*))?$", text)
    if match is None:
        raise ValueError(f"{text!r} is not of the form CSC_name:index")
    index = match["index"]
    if index == "*":
        return match["name"], None
    return match["name"], int(index) if index else 0


# --- system_wide_shutdown.py, set_summary_state.py, run_command.py -----------------------------


class SystemWideShutdown(SimScript):
    """Send every running CSC OFFLINE, one at a time (ts_standardscripts SystemWideShutdown).

    Running CSCs are found by their heartbeats; Script and ScriptQueue are never touched. The
    order is ``start_with``, then the rest, then ``end_with``; ``ignore`` is left alone. Every
    failure is kept and reported at the end.
    """

    path = "system_wide_shutdown.py"
    descr = "Send all CSCs to OFFLINE."
    schema_yaml = """
$schema: http://json-schema.org/draft-07/schema#
$id: https://github.com/lsst-ts/ts_standardscripts/python/lsst/ts/standardscripts/system_wide_shutdown.py
title: SystemWideShutdown v1
description: Configuration for SystemWideShutdown script.
type: object
properties:
    user:
        description: Name of the user that is executing the script.
        type: string
    reason:
        description: Reason for running the system wide shutdown.
        type: string
    ignore:
        description: CSCs to ignore.
        type: array
        items:
            type: string
        default: []
    start_with:
        description: CSCs to start with.
        type: array
        items:
            type: string
        default: []
    end_with:
        description: CSCs to end with.
        type: array
        items:
            type: string
        default: []
required: [user, reason]
additionalProperties: false
"""

    def __init__(self, ctx: ScriptContext) -> None:
        super().__init__(ctx)
        self.failed: dict[str, str] = {}

    async def run(self) -> None:
        ctx = self.ctx
        running = await ctx.running_instances(await ctx.heartbeat_components())
        ctx.info(
            f"Shutting down {len(running)} components as requested by {self.config['user']}. "
            f"Reason: {self.config['reason']}"
        )
        for component in self.config["ignore"]:
            if running.pop(component, None) is not None:
                ctx.info(f"Excluding {component} from the list.")
        # Get ready to command them all at once (salobj's Remotes are all created up front).
        await ctx.sal.prepare_commands(running)
        board = await ctx.board()
        await board.watch(
            CscName(name=c, index=i) for c, indices in running.items() for i in indices
        )
        for component in self.config["start_with"]:
            if component in running:
                await self._shutdown(component, running.pop(component))
        end_with = self.config["end_with"]
        for component in sorted(running):
            if component not in end_with:
                await self._shutdown(component, running[component])
        for component in end_with:
            if component in running:
                await self._shutdown(component, running.pop(component))
        if self.failed:
            listed = "".join(f"{name}::{why}\n" for name, why in self.failed.items())
            ctx.error(f"The following components failed to transition to offline:\n{listed}")
            raise RuntimeError(
                f"A total of {len(self.failed)} components failed to transition to offline."
            )

    async def _shutdown(self, component: str, indices: list[int]) -> None:
        for index in indices:
            self.ctx.info(f"Shutdown {component}:{index}.")
            try:
                await self.ctx.set_summary_state(
                    CscName(name=component, index=index),
                    State.OFFLINE,
                    timeout_s=self.ctx.timing.shutdown_transition_timeout_s,
                )
            except Exception as exc:  # noqa: BLE001 (the real script keeps every failure)
                self.failed[f"{component}:{index}"] = str(exc)


class SetSummaryState(SimScript):
    """Put CSCs into states, item by item (ts_standardscripts SetSummaryState).

    With ``mute_alarms`` (the default) the Watcher's ``mute`` is sent before each OFFLINE item;
    a failed or unanswered mute is only a warning, but an absent Watcher answers nothing, so
    each such item first waits salobj's command limit (`ScriptTiming.mute_timeout_s`).
    """

    path = "set_summary_state.py"
    descr = "Put CSCs into specified states"
    schema_yaml = """
$schema: http://json-schema.org/draft-07/schema#
$id: https://github.com/lsst-ts/ts_standardscripts/SetSummaryState.yaml
title: SetSummaryState v1
description: Configuration for SetSummaryState
type: object
properties:
  data:
    description: List of (CSC_name[:index], state_name [, override_to_apply]);
        the default index is 0;
        the default override_to_apply is ""
        If the index is '*', the script will discover all running instances.
    type: array
    minItems: 1
    items:
        type: array
        minItems: 2
        maxItems: 3
        items:
            type: string
  mute_alarms:
    description: If true, temporarily mute watcher alarms for components being sent to Offline.
    type: boolean
    default: true
  mute_duration:
    description: Duration in minutes to mute the alarms. Default is 30.0 minutes.
    type: number
    minimum: 0
    default: 30.0
required: [data]
additionalProperties: false
"""

    def __init__(self, ctx: ScriptContext) -> None:
        super().__init__(ctx)
        self.items: list[tuple[CscName, State, str]] = []

    async def configure(self, config: dict[str, Any]) -> None:
        await super().configure(config)
        for item in config["data"]:
            name, index = _csc(item[0])
            state_name = item[1]
            try:
                state = State[state_name.upper()]
            except KeyError:
                raise ValueError(f"{item} has unknown summary state {state_name!r}") from None
            if state is State.FAULT:
                raise ValueError(f"{item} state cannot be FAULT")
            override = item[2] if len(item) == 3 else ""
            if index is None:
                found = await self.ctx.running_instances([name])
                indices = found.get(name, [])
            else:
                indices = [index]
            self.items.extend((CscName(name=name, index=i), state, override) for i in indices)

    async def run(self) -> None:
        for csc, state, override in self.items:
            if self.config["mute_alarms"] and state is State.OFFLINE:
                await self._mute(csc)
            await self.ctx.set_summary_state(
                csc,
                state,
                override=override,
                timeout_s=self.ctx.timing.set_summary_state_timeout_s,
            )

    async def _mute(self, csc: CscName) -> None:
        ctx = self.ctx
        duration_s = float(self.config["mute_duration"]) * 60
        ctx.info(
            f"Muting alarms for (Enabled|Heartbeat).{csc.name}:{csc.index} Severity CRITICAL "
            f"for {self.config['mute_duration']} minutes"
        )
        params = {
            "name": rf"^(Enabled|Heartbeat)\.{csc.name}:{csc.index}",
            "duration": duration_s,
            "severity": _CRITICAL,
            "mutedBy": "set_summary_state script",
        }
        try:
            try:
                await ctx.command(
                    CscName(name="Watcher", index=0),
                    "mute",
                    params,
                    timeout_s=ctx.timing.mute_timeout_s,
                )
            except SalTopicError:
                # salobj would create the topic and wait for an ack that never comes.
                await asyncio.sleep(ctx.timing.mute_timeout_s)
                raise
        except Exception as exc:  # noqa: BLE001 (the real script only warns)
            ctx.warning(f"Failed to mute alarms for {csc.name}:{csc.index}: {exc}")


class RunCommand(SimScript):
    """Send one command to a CSC and optionally wait for an event (ts_standardscripts RunCommand).

    As in the real script, ``parameters`` has no default: leaving it out fails configuration.
    """

    path = "run_command.py"
    descr = "Run command from CSC."
    schema_yaml = """
$schema: http://json-schema.org/draft-07/schema#
$id: https://github.com/lsst-ts/ts_standardscripts/RunCommand.yaml
title: RunCommand v1
description: Configuration for RunCommand.
type: object
properties:
  component:
    description: Name of the CSC to run command, format is CSC_name[:index]; the default index is 0.
    type: string
  cmd:
    description: Name of the command to run.
    type: string
  event:
    description: Name of the event to wait after the command is sent.
    type: string
  flush:
    description: Flush event before sending command?
    type: boolean
    default: True
  event_timeout:
    description: Timeout (seconds) to wait for the event to arrive.
    type: number
    default: 30
  parameters:
    description: Parameters for the command.
    type: object
    properties:
      timeout:
        description: Timeout (seconds) to wait for the command to complete.
        type: number
        default: 30
    additionalProperties: true
required: [component, cmd]
additionalProperties: false
"""

    def __init__(self, ctx: ScriptContext) -> None:
        super().__init__(ctx)
        self.csc = CscName(name="Unknown", index=0)
        self.params: dict[str, Any] = {}
        self.stream: EventStream | None = None
        self._stack = contextlib.AsyncExitStack()

    async def configure(self, config: dict[str, Any]) -> None:
        await super().configure(config)
        name, index = _csc(config["component"])
        self.csc = CscName(name=name, index=index or 0)
        if "parameters" not in config:
            raise AttributeError("'types.SimpleNamespace' object has no attribute 'parameters'")
        sal = self.ctx.sal
        try:
            writer = await sal.codec.latest_writer(sal.topic(name, f"command_{config['cmd']}"))
        except SalSchemaError:
            raise RuntimeError(f"Command {config['cmd']} not a valid command for {name}.") from None
        self.params = {k: v for k, v in config["parameters"].items() if k != "timeout"}
        unknown = set(self.params) - writer.field_names
        if unknown:
            raise RuntimeError(f"cmd_{config['cmd']} has no field(s) {', '.join(sorted(unknown))}")
        event = config.get("event")
        if event is not None:
            try:
                await sal.codec.latest_writer(sal.topic(name, f"logevent_{event}"))
            except SalSchemaError:
                raise RuntimeError(f"Event {event} not a valid event for {name}.") from None
            if not config["flush"]:
                # Without a flush the event may come from any time after configuration.
                self.stream = await self._stack.enter_async_context(
                    self.ctx.events(self.csc, f"logevent_{event}")
                )

    async def run(self) -> None:
        config = self.config
        event = config.get("event")
        if event is not None and self.stream is None:
            self.stream = await self._stack.enter_async_context(
                self.ctx.events(self.csc, f"logevent_{event}")
            )
        await self.ctx.command(
            self.csc, config["cmd"], self.params, timeout_s=config["parameters"]["timeout"]
        )
        if self.stream is not None:
            try:
                sample = await self.stream.next(float(config["event_timeout"]))
            except TimeoutError:
                raise RuntimeError(
                    f"No {event} event from {self.csc.name}:{self.csc.index} within "
                    f"{config['event_timeout']} s"
                ) from None
            public = {k: v for k, v in sample.items() if not k.startswith("private_")}
            self.ctx.info(f"{event}: {public}")

    async def cleanup(self) -> None:
        await self._stack.aclose()


# --- Groups of CSCs (ts_observatory_control's ATCS, LATISS, MTCS, LSSTCam) ----------------------


def _group(*names: str) -> dict[str, CscName]:
    """Group members by their ``components_attr`` name (``MTHexapod:1`` -> ``mthexapod_1``)."""
    members: dict[str, CscName] = {}
    for text in names:
        name, _, index = text.partition(":")
        csc = CscName(name=name, index=int(index) if index else 0)
        members[f"{name.lower()}_{index}" if index else name.lower()] = csc
    return members


ATCS = _group("ATMCS", "ATPtg", "ATAOS", "ATPneumatics", "ATHexapod", "ATDome", "ATDomeTrajectory")
LATISS = _group("ATCamera", "ATSpectrograph", "ATHeaderService", "ATOODS")
MTCS = _group(
    "MTMount",
    "MTPtg",
    "MTAOS",
    "MTM1M3",
    "MTM2",
    "MTHexapod:1",
    "MTHexapod:2",
    "MTRotator",
    "MTDome",
    "MTDomeTrajectory",
)
LSSTCAM = _group("MTCamera", "MTHeaderService", "MTOODS")


def _override_property(name: str) -> str:
    return f"""
    {name}:
        description: Configuration for the {name} component.
        anyOf:
          - type: string
          - type: "null"
        default: null"""


def _group_schema(title: str, configurable: Iterable[str], members: Iterable[str]) -> str:
    properties = "".join(_override_property(name) for name in configurable)
    return f"""
$schema: http://json-schema.org/draft-07/schema#
title: {title} v1
description: Configuration for {title}. Only include those CSCs that are configurable.
type: object
properties:{properties}
    ignore:
        description: >-
            CSCs from the group to ignore. Valid options are: {sorted(members)}.
        type: array
        items:
            type: string
additionalProperties: false
"""


class _GroupScript(SimScript):
    """Transitions every member of a group (not ignored) at once, as ``RemoteGroup.set_state``."""

    group: ClassVar[dict[str, CscName]]
    target: ClassVar[State]

    def __init__(self, ctx: ScriptContext) -> None:
        super().__init__(ctx)
        self.members: dict[str, CscName] = {}

    async def configure(self, config: dict[str, Any]) -> None:
        await super().configure(config)
        self.members = dict(self.group)
        for name in config.get("ignore", []):
            if self.members.pop(name, None) is None:
                self.ctx.warning(f"Component {name} not in CSC Group.")

    async def run(self) -> None:
        names = list(self.members)
        # RemoteGroup creates every member's Remote up front: read their states in one go.
        await self.ctx.sal.prepare_commands({csc.name for csc in self.members.values()})
        await (await self.ctx.board()).watch(self.members.values())
        results = await asyncio.gather(
            *(
                self.ctx.set_summary_state(
                    self.members[name],
                    self.target,
                    override=self.config.get(name) or "",
                    timeout_s=self.ctx.timing.group_timeout_s,
                )
                for name in names
            ),
            return_exceptions=True,
        )
        failed = {n: r for n, r in zip(names, results, strict=True) if isinstance(r, Exception)}
        if failed:
            for name, exc in failed.items():
                self.ctx.error(f"{name}: {exc}")
            raise RuntimeError(
                f"Failed to transition {sorted(failed)} to {self.target!r}: "
                + "; ".join(f"{n}: {e}" for n, e in failed.items())
            )


class EnableATCS(_GroupScript):
    path = "auxtel/enable_atcs.py"
    descr = "Enable ATCS."
    group = ATCS
    target = State.ENABLED
    schema_yaml = _group_schema(
        "EnableATTCS", ["ataos", "athexapod", "atdome", "atdometrajectory"], ATCS
    )


class EnableLATISS(_GroupScript):
    path = "auxtel/enable_latiss.py"
    descr = "Enable LATISS."
    group = LATISS
    target = State.ENABLED
    schema_yaml = _group_schema("EnableLATISS", ["atcamera", "atspectrograph", "atoods"], LATISS)


class EnableMTCS(_GroupScript):
    path = "maintel/enable_mtcs.py"
    descr = "Enable MTCS."
    group = MTCS
    target = State.ENABLED
    schema_yaml = _group_schema(
        "EnableMTCS",
        [
            "mtmount",
            "mtaos",
            "mtm1m3",
            "mtm2",
            "mthexapod_1",
            "mthexapod_2",
            "mtdome",
            "mtdometrajectory",
        ],
        MTCS,
    )


class EnableLSSTCam(_GroupScript):
    path = "maintel/enable_lsstcam.py"
    descr = "Enable LSSTCam."
    group = LSSTCAM
    target = State.ENABLED
    schema_yaml = _group_schema("EnableLSSTCam", ["mtcamera", "mtoods"], LSSTCAM)


class StandbyATCS(_GroupScript):
    path = "auxtel/standby_atcs.py"
    descr = "Put all ATCS components in standby state."
    group = ATCS
    target = State.STANDBY
    schema_yaml = _group_schema("StandbyGroup", [], ATCS)


# --- Telescope and camera scripts ------------------------------------------------------------

_BLOCK_PROPERTIES = """
  program:
    type: string
    description: Program this script is related to.
  reason:
    type: string
    description: Reason for executing this script.
  test_case:
    type: object
    description: Test case information.
    additionalProperties: false
    properties:
      name:
        type: string
      execution:
        type: string
      version:
        type: string
      initial_step:
        type: integer
      project:
        type: string
    required: [name, execution, version]"""

_BLOCK_SCHEMA = f"""
$schema: http://json-schema.org/draft-07/schema#
title: BaseBlockScript v1
description: Configuration for Base Block Script.
type: object
properties:{_BLOCK_PROPERTIES}
additionalProperties: false
"""

_IMAGE_TYPES = [
    "BIAS",
    "DARK",
    "FLAT",
    "OBJECT",
    "ENGTEST",
    "ACQ",
    "CWFS",
    "FOCUS",
    "STUTTERED",
    "INDOME",
    "CBP",
    "SFLAT",
    "DFLAT",
]


class _WithIgnore(SimScript):
    """A script acting on a group that may leave some members out of its checks."""

    group: ClassVar[dict[str, CscName]]

    def members(self) -> list[CscName]:
        ignored = set(self.config.get("ignore", []))
        return [csc for name, csc in self.group.items() if name not in ignored]


class PrepareForOnSky(_WithIgnore):
    """ATCS and LATISS must be ENABLED; takes 3 biases, then opens the telescope for the sky."""

    path = "auxtel/prepare_for/onsky.py"
    descr = "Run ATCS startup."
    group: ClassVar[dict[str, CscName]] = {**ATCS, **LATISS}
    schema_yaml = """
$schema: http://json-schema.org/draft-07/schema#
title: EnableATTCS v1
description: Configuration for EnableATTCS. Only include those CSCs that are configurable.
type: object
properties:
    ignore:
        description: CSCs from the group to ignore, e.g.; atdometrajectory.
        type: array
        items:
            type: string
additionalProperties: false
"""

    async def run(self) -> None:
        members = set(self.members())
        await self.ctx.assert_enabled(
            [c for c in ATCS.values() if c in members],
            "All ATCS components need to be enabled to prepare for sky observations.",
        )
        await self.ctx.assert_enabled(
            [c for c in LATISS.values() if c in members],
            "All LATISS components need to be enabled to prepare for sky observations.",
        )
        for _ in range(3):
            await _take_image(
                self.ctx,
                CscName(name="ATCamera", index=0),
                image_type="BIAS",
                exposure_s=0.0,
                reason="bias_ccd_clear",
                program="prepare_for_onsky",
                note="",
            )
        steps = [
            ("atpneumatics", "openM1Cover", None),
            ("atpneumatics", "openM1CellVents", None),
            ("atdome", "openShutter", None),
            ("atdometrajectory", "setFollowingMode", {"enable": True}),
        ]
        for member, command, params in steps:
            if ATCS[member] in members:
                await self.ctx.command(ATCS[member], command, params, timeout_s=600.0)


_TRACK_TARGET_SCHEMA = f"""
$schema: http://json-schema.org/draft-07/schema#
title: BaseTrackTarget v1
description: Configuration for BaseTrackTarget.
type: object
properties:{_BLOCK_PROPERTIES}
  slew_icrs:
    type: object
    additionalProperties: false
    required: [ra, dec]
    properties:
      ra:
        description: ICRS right ascension (hour), decimal or sexagesimal.
        anyOf:
          - type: number
            minimum: 0
            maximum: 24
          - type: string
      dec:
        description: ICRS declination (deg), decimal or sexagesimal.
        anyOf:
          - type: number
            minimum: -90
            maximum: 90
          - type: string
  track_azel:
    type: object
    additionalProperties: false
    required: [az, el]
    properties:
      az:
        anyOf:
          - type: number
          - type: string
      el:
        anyOf:
          - type: number
            minimum: 0
            maximum: 90
          - type: string
  slew_planet:
    type: object
    additionalProperties: false
    properties:
      planet_name:
        type: string
        enum: ["MERCURY", "VENUS", "MARS", "JUPITER", "SATURN", "URANUS", "NEPTUNE", "PLUTO"]
  slew_ephem:
    type: object
    additionalProperties: false
    properties:
      ephem_file:
        type: string
      object_name:
        type: string
  find_target:
    type: object
    additionalProperties: false
    required: [az, el, mag_limit]
    properties:
      az:
        type: number
      el:
        type: number
      mag_limit:
        type: number
      mag_range:
        type: number
      radius:
        type: number
  offset:
    type: object
    additionalProperties: false
    properties:
      x:
        type: number
        default: 0
      y:
        type: number
        default: 0
  differential_tracking:
    type: object
    additionalProperties: false
    properties:
      dra:
        type: number
        default: 0.0
      ddec:
        type: number
        default: 0.0
  rot_value:
    description: Rotator position value. Actual meaning depends on rot_type.
    type: number
    default: 0
  rot_type:
    description: Rotator strategy.
    type: string
    enum: ["Sky", "SkyAuto", "Parallactic", "PhysicalSky", "Physical"]
    default: SkyAuto
  target_name:
    description: Target name
    type: string
  track_for:
    description: How long to track target for (in seconds).
    type: number
    minimum: 0
    default: 0
  stop_when_done:
    description: Stop tracking once tracking time expires.
    type: boolean
    default: False
  az_wrap_strategy:
    type: string
    enum: ["MAXTIMEONTARGET", "NOUNWRAP", "OPTIMIZE"]
    default: OPTIMIZE
  slew_timeout:
    description: Timeout for slew procedure (in seconds).
    type: number
    default: 240.0
  ignore:
    description: CSCs from the group to ignore in status check.
    type: array
    items:
        type: string
if:
  properties:
    slew_icrs:
      const: null
    track_azel:
      const: null
    slew_planet:
      const: null
    slew_ephem:
      const: null
then:
  oneOf:
    - required: [target_name]
    - required: [find_target]
else:
  oneOf:
    - required: [slew_icrs]
    - required: [track_azel]
    - required: [slew_planet]
    - required: [slew_ephem]
additionalProperties: false
"""


def _angle(value: float | str) -> float:
    """Decimal or sexagesimal (``-30:30:00.0``)."""
    if isinstance(value, int | float):
        return float(value)
    parts = [float(p) for p in value.replace(" ", ":").split(":") if p]
    sign = -1.0 if value.strip().startswith("-") else 1.0
    total = abs(parts[0])
    for power, part in enumerate(parts[1:], start=1):
        total += part / 60.0**power
    return sign * total


def _resolve(name: str) -> tuple[float, float]:
    """Stand-in for the catalog lookup the real scripts make: stable coordinates per name."""
    digest = hashlib.sha256(name.encode()).digest()
    return digest[0] / 256 * 24, digest[1] / 256 * 60 - 70


_ROT_FRAMES = {"Sky": 1, "SkyAuto": 1, "Parallactic": 2, "PhysicalSky": 3, "Physical": 3}
_WRAP = {"NOUNWRAP": 1, "OPTIMIZE": 2, "MAXTIMEONTARGET": 3}


class _TrackTarget(_WithIgnore):
    """Slew to a target and track it for ``track_for`` seconds (BaseTrackTarget)."""

    ptg: ClassVar[CscName]
    schema_yaml = _TRACK_TARGET_SCHEMA

    async def run(self) -> None:
        config = self.config
        await self.ctx.assert_enabled(self.members(), "All TCS components must be enabled:")
        timeout_s = float(config["slew_timeout"])
        if "track_azel" in config:
            await self.ctx.command(
                self.ptg,
                "azElTarget",
                {
                    "targetName": config.get("target_name", "AzEl"),
                    "azDegs": _angle(config["track_azel"]["az"]),
                    "elDegs": _angle(config["track_azel"]["el"]),
                    "rotPA": float(config["rot_value"]),
                },
                timeout_s=timeout_s,
            )
        else:
            if "slew_icrs" in config:
                ra = _angle(config["slew_icrs"]["ra"])
                dec = _angle(config["slew_icrs"]["dec"])
            elif "target_name" in config:
                ra, dec = _resolve(config["target_name"])
            else:
                raise RuntimeError("only slew_icrs, track_azel and target_name are simulated")
            await self.ctx.command(
                self.ptg,
                "raDecTarget",
                {
                    "targetName": config.get("target_name", "slew_icrs"),
                    "frame": 2,
                    "epoch": 2000.0,
                    "equinox": 2000.0,
                    "ra": ra,
                    "declination": dec,
                    "rotAngle": float(config["rot_value"]),
                    "rotStartFrame": _ROT_FRAMES[config["rot_type"]],
                    "rotTrackFrame": _ROT_FRAMES[config["rot_type"]],
                    "azWrapStrategy": _WRAP[config["az_wrap_strategy"]],
                    "timeOnTarget": float(config["track_for"]),
                },
                timeout_s=timeout_s,
            )
        if config["track_for"] > 0:
            self.ctx.info(f"Tracking for {config['track_for']} s.")
            await self.ctx.sleep(float(config["track_for"]))
            if config["stop_when_done"]:
                await self.ctx.command(self.ptg, "stopTracking", {"ignored": False})


class ATTrackTarget(_TrackTarget):
    path = "auxtel/track_target.py"
    descr = "Slew and track a target with the auxiliary telescope."
    group = ATCS
    ptg = ATCS["atptg"]


class MTTrackTarget(_TrackTarget):
    path = "maintel/track_target.py"
    descr = "Slew and track a target with the main telescope."
    group = MTCS
    ptg = MTCS["mtptg"]


class _StopTracking(SimScript):
    ptg: ClassVar[CscName]

    async def run(self) -> None:
        await self.ctx.command(self.ptg, "stopTracking", {"ignored": False})


class ATStopTracking(_StopTracking):
    path = "auxtel/stop_tracking.py"
    descr = "ATCS stop tracking."
    ptg = ATCS["atptg"]


class MTStopTracking(_StopTracking):
    path = "maintel/stop_tracking.py"
    descr = "MTCS stop tracking."
    ptg = MTCS["mtptg"]


def _take_image_schema(title: str, instrument_properties: str) -> str:
    return f"""
$schema: http://json-schema.org/draft-07/schema#
title: {title}
description: Configuration for {title}.
type: object
properties:{_BLOCK_PROPERTIES}{instrument_properties}
  nimages:
    description: The number of images to take.
    anyOf:
      - type: integer
        minimum: 1
      - type: "null"
    default: null
  exp_times:
    description: The exposure time of each image (sec).
    anyOf:
      - type: array
        minItems: 1
        items:
          type: number
          minimum: 0
      - type: number
        minimum: 0
    default: 0
  image_type:
    description: Image type (a.k.a. IMGTYPE) (e.g. BIAS, DARK, FLAT, OBJECT)
    type: string
    enum: {_IMAGE_TYPES!r}
  note:
    description: A descriptive note about the image being taken.
    type: string
  slew_time:
    description: Emulate a slewttime by sleeping before taking data.
    type: number
    default: 0
  sleep_between_exposures:
    description: Add a sleep time in between exposures.
    type: number
    default: 0
  visit_metadata:
    type: object
    properties:
      ra:
        anyOf:
        - type: number
          minimum: 0
          maximum: 24
        - type: string
      dec:
        anyOf:
        - type: number
          minimum: -90
          maximum: 90
        - type: string
      rot_sky:
        type: number
    required: [ra, dec, rot_sky]
  ignore:
    description: CSCs from the groups to ignore in status check.
    type: array
    items:
      type: string
required: [image_type]
additionalProperties: false
"""


async def _take_image(
    ctx: ScriptContext,
    camera: CscName,
    *,
    image_type: str,
    exposure_s: float,
    reason: str,
    program: str,
    note: str,
) -> None:
    """One image, as ``BaseCamera.take_imgtype`` asks the camera for it."""
    key_values = {
        "groupId": ctx.group_id,
        "imageType": image_type,
        "reason": reason,
        "program": program,
    }
    await ctx.command(
        camera,
        "takeImages",
        {
            "numImages": 1,
            "expTime": exposure_s,
            "shutter": image_type not in {"BIAS", "DARK"},
            "keyValueMap": ", ".join(f"{k}: {v}" for k, v in key_values.items() if v),
            "obsNote": note,
        },
        timeout_s=exposure_s + ctx.timing.command_timeout_s,
    )


class _TakeImage(SimScript):
    """Take ``nimages`` images of ``image_type`` (BaseTakeImage)."""

    camera: ClassVar[CscName]

    async def configure(self, config: dict[str, Any]) -> None:
        await super().configure(config)
        nimages = config["nimages"]
        exp_times = config["exp_times"]
        if isinstance(exp_times, list):
            if nimages is not None and len(exp_times) != nimages:
                raise ValueError(
                    f"nimages={nimages} specified and exp_times={exp_times} is an array, "
                    "but the length does not match nimages"
                )
        else:
            config["exp_times"] = [exp_times] * (1 if nimages is None else nimages)

    async def run(self) -> None:
        exp_times = self.config["exp_times"]
        for number, exposure in enumerate(exp_times, start=1):
            self.ctx.info(f"exposure {number} of {len(exp_times)}")
            await _take_image(
                self.ctx,
                self.camera,
                image_type=self.config["image_type"],
                exposure_s=float(exposure),
                reason=self.config.get("reason", ""),
                program=self.config.get("program", ""),
                note=self.config.get("note", ""),
            )
            if self.config["sleep_between_exposures"] > 0:
                await self.ctx.sleep(float(self.config["sleep_between_exposures"]))


class TakeImageLatiss(_TakeImage):
    path = "auxtel/take_image_latiss.py"
    descr = "Take images with AT Camera"
    camera = LATISS["atcamera"]
    schema_yaml = _take_image_schema(
        "LatissTakeImage v2",
        """
  filter:
    anyOf:
      - type: string
      - type: integer
        minimum: 1
      - type: "null"
    default: null
  grating:
    anyOf:
      - type: string
      - type: integer
        minimum: 1
      - type: "null"
    default: null
  linear_stage:
    anyOf:
      - type: number
      - type: "null"
    default: null""",
    )


class TakeImageLSSTCam(_TakeImage):
    path = "maintel/take_image_lsstcam.py"
    descr = "Take images with LSSTCam"
    camera = LSSTCAM["mtcamera"]
    schema_yaml = _take_image_schema(
        "LSSTCamTakeImage v1",
        """
  filter:
    anyOf:
      - type: string
      - type: integer
        minimum: 1
      - type: "null"
    default: null
  set_roi:
    description: Whether to set the ROI specification. If false, roi_spec is ignored.
    type: boolean
    default: true
  roi_spec:
    description: Definition of the ROI Specification.
    type: object
    required: [common, roi]""",
    )


class HomeBothAxes(SimScript):
    path = "maintel/home_both_axes.py"
    descr = "Home azimuth and elevation axes of the MTMount."
    schema_yaml = """
$schema: http://json-schema.org/draft-07/schema#
title: HomeBothAxes v1
description: Configuration for HomeBothAxes.
type: object
properties:
    ignore_m1m3:
        description: Ignore the m1m3 component? (Deprecated property)
        type: boolean
    disable_m1m3_force_balance:
        description: Disable the M1M3 force balance system before homing (deprecated).
        type: boolean
        default: false
    final_home_position:
        type: object
        required: [az, el]
        properties:
            az:
                anyOf:
                - type: number
            el:
                anyOf:
                - type: number
                  minimum: 0
                  maximum: 90
    homing_attempts:
        description: Number of attempts to home both axes.
        type: integer
        default: 10
        minimum: 1
additionalProperties: false
"""

    async def run(self) -> None:
        await self.ctx.command(MTCS["mtmount"], "homeBothAxes", timeout_s=300.0)


class EnableHexapodCompensationMode(SimScript):
    path = "maintel/enable_hexapod_compensation_mode.py"
    descr = "Enable compensation mode for hexapods."
    schema_yaml = f"""
$schema: http://json-schema.org/draft-07/schema#
title: EnableHexapodCompensationMode v1
description: Configuration for EnableHexapodCompensationMode
type: object
properties:{_BLOCK_PROPERTIES}
  components:
    description: List of hexapods to enable compensation mode for.
    type: array
    items:
        type: string
        enum: ["M2Hexapod", "CameraHexapod"]
    minItems: 1
    default: ["M2Hexapod", "CameraHexapod"]
additionalProperties: false
"""

    async def run(self) -> None:
        hexapods = {"CameraHexapod": MTCS["mthexapod_1"], "M2Hexapod": MTCS["mthexapod_2"]}
        for name in self.config["components"]:
            await self.ctx.command(hexapods[name], "setCompensationMode", {"enable": True})


class OpenDome(_WithIgnore):
    path = "maintel/mtdome/open_dome.py"
    descr = "Open the MTDome shutter."
    group = MTCS
    schema_yaml = """
$schema: http://json-schema.org/draft-07/schema#
title: OpenDome v1
description: Configuration for OpenDome.
type: object
properties:
  force:
    description: Force opening regardless of conditions.
    type: boolean
    default: false
  ignore:
    description: CSCs from the group to ignore in status check.
    type: array
    items:
      type: string
additionalProperties: false
"""

    async def run(self) -> None:
        await self.ctx.command(MTCS["mtdome"], "openShutter", timeout_s=1200.0)


class EnableDomeFollowing(SimScript):
    path = "maintel/mtdome/enable_dome_following.py"
    descr = "Enable MTDome following."

    async def run(self) -> None:
        await self.ctx.command(MTCS["mtdometrajectory"], "setFollowingMode", {"enable": True})


class PointAzEl(_WithIgnore):
    """Slew MainTel to az/el (BasePointAzEl); M1M3 cannot be ignored."""

    path = "maintel/point_azel.py"
    descr = "Slew the main telescope to a pair of (az, el) coordinates."
    group = MTCS
    schema_yaml = f"""
$schema: http://json-schema.org/draft-07/schema#
title: PointAzEl v1
description: Configuration for PointAzEl command.
type: object
properties:{_BLOCK_PROPERTIES}
  az:
    description: Target Azimuth in degrees.
    type: number
  el:
    description: Target Elevation in degrees.
    type: number
    minimum: 0.0
    maximum: 90.0
  rot_tel:
    description: Rotator angle in mount physical coordinates (degrees).
    type: number
    default: 0.0
  target_name:
    description: Name of the position.
    type: string
    default: "AzEl"
  wait_dome:
    description: Wait for dome to be in sync with the telescope?
    type: boolean
    default: false
  slew_timeout:
    description: Timeout for slew procedure (in seconds).
    type: number
    default: 240.0
  slew_sequentially:
    description: Slew azimuth and elevation axes sequentially (one at a time).
    type: boolean
    default: true
  ignore:
    description: CSCs from the group to ignore in status check.
    type: array
    items:
      type: string
anyOf:
  - required: [az]
  - required: [el]
additionalProperties: false
"""

    async def run(self) -> None:
        config = self.config
        if "mtm1m3" in config.get("ignore", []):
            raise RuntimeError(
                "The MTM1M3 component cannot be ignored. "
                "To move the telescope without MTM1M3 available, use the TMA EUI."
            )
        if "az" not in config or "el" not in config:
            raise RuntimeError("the simulated mount publishes no position: give both az and el")
        await self.ctx.command(
            MTCS["mtptg"],
            "azElTarget",
            {
                "targetName": config["target_name"],
                "azDegs": float(config["az"]),
                "elDegs": float(config["el"]),
                "rotPA": float(config["rot_tel"]),
            },
            timeout_s=float(config["slew_timeout"]),
        )


_PARKED, _RAISING, _ACTIVE, _LOWERING = 5, 6, 7, 8
_M1M3_NAMES = {4: "STANDBY", 5: "PARKED", 6: "RAISING", 7: "ACTIVE", 8: "LOWERING", 1: "DISABLED"}


class RaiseM1M3(SimScript):
    """Raise M1M3 and wait until it is ACTIVE (MTCS.raise_m1m3)."""

    path = "maintel/m1m3/raise_m1m3.py"
    descr = "Raise M1M3"
    schema_yaml = _BLOCK_SCHEMA

    async def run(self) -> None:
        ctx = self.ctx
        m1m3 = MTCS["mtm1m3"]
        current = await ctx.latest_event(m1m3, "logevent_detailedState", timeout_s=10.0)
        state = None if current is None else int(current["detailedState"])
        if state == _ACTIVE:
            ctx.info("M1M3 current detailed state is ACTIVE. Nothing to do.")
            return
        if state != _PARKED:
            raise RuntimeError(
                f"M1M3 detailed state is {_M1M3_NAMES.get(state or 0, state)}, expected "
                "PARKED. Cannot execute command."
            )
        async with ctx.events(m1m3, "logevent_detailedState") as stream:
            await ctx.command(m1m3, "raiseM1M3", {"bypassReferencePosition": False})
            limit = ctx.timing.m1m3_raise_timeout_s
            deadline = asyncio.get_running_loop().time() + limit
            last = _RAISING
            while last != _ACTIVE:
                left = deadline - asyncio.get_running_loop().time()
                try:
                    last = int((await stream.next(max(left, 0.0)))["detailedState"])
                except TimeoutError:
                    raise RuntimeError(
                        f"M1M3 did not raise within {limit} s: its detailed state is "
                        f"{_M1M3_NAMES.get(last, last)}"
                    ) from None
                if last == _LOWERING:
                    raise RuntimeError("M1M3 started LOWERING while raising")
        ctx.info("M1M3 raised.")


_END_OF_NIGHT = {
    "mtmount": "DISABLED",
    "mtptg": "ENABLED",
    "mtaos": "STANDBY",
    "mtm1m3": "ENABLED",
    "mtm2": "ENABLED",
    "mthexapod_1": "DISABLED",
    "mthexapod_2": "DISABLED",
    "mtrotator": "DISABLED",
    "mtdome": "DISABLED",
    "mtdometrajectory": "DISABLED",
    "mtcamera": "ENABLED",
    "mtheaderservice": "ENABLED",
    "mtoods": "ENABLED",
}


class CscEndOfNight(SimScript):
    """Put MTCS and LSSTCam CSCs in their end-of-night states.

    The real schema puts ``additionalProperties: false`` inside ``properties`` (as a property
    named so), so unknown fields are accepted: kept as is.
    """

    path = "maintel/csc_end_of_night.py"
    descr = "Put MTCS and LSSTCam CSCs into the end-of-night state."
    schema_yaml = f"""
$schema: http://json-schema.org/draft-07/schema#
title: CscEndOfNight v1
description: Configuration for CscEndOfNight
type: object
properties:
  csc:
    description: List of CSCs to configure.
    type: array
    items:
      type: string
      enum: {list(_END_OF_NIGHT)!r}
    default: {list(_END_OF_NIGHT)!r}
  state:
    description: List of states corresponding to the CSCs.
    type: array
    items:
      type: string
      enum: ["ENABLED", "STANDBY", "DISABLED"]
    default: {list(_END_OF_NIGHT.values())!r}
  ignore:
    description: CSCs to exclude from the end-of-night target state transition.
    type: array
    items:
      type: string
  additionalProperties: false
"""

    async def configure(self, config: dict[str, Any]) -> None:
        await super().configure(config)
        if len(config["csc"]) != len(config["state"]):
            raise ValueError("Properties 'csc' and 'state' must have the same number of elements.")

    async def run(self) -> None:
        members = {**MTCS, **LSSTCAM}
        ignored = set(self.config.get("ignore", []))
        targets = [
            (members[name], State[state])
            for name, state in zip(self.config["csc"], self.config["state"], strict=True)
            if name not in ignored
        ]
        await self.ctx.sal.prepare_commands({csc.name for csc, _ in targets})
        await (await self.ctx.board()).watch(csc for csc, _ in targets)
        for csc, state in targets:
            await self.ctx.set_summary_state(csc, state, timeout_s=self.ctx.timing.group_timeout_s)


#: Every simulated standard script by its path (``maintel/enable_atcs.py`` is not one of them).
SCRIPTS: dict[str, type[SimScript]] = {
    script.path: script
    for script in (
        SystemWideShutdown,
        SetSummaryState,
        RunCommand,
        EnableATCS,
        EnableLATISS,
        PrepareForOnSky,
        ATTrackTarget,
        TakeImageLatiss,
        ATStopTracking,
        StandbyATCS,
        EnableMTCS,
        EnableLSSTCam,
        HomeBothAxes,
        EnableHexapodCompensationMode,
        OpenDome,
        EnableDomeFollowing,
        PointAzEl,
        RaiseM1M3,
        MTTrackTarget,
        TakeImageLSSTCam,
        MTStopTracking,
        CscEndOfNight,
    )
}
