"""Simulated CSCs: many SAL components in one process, each behaving like a salobj CSC on Kafka.

A `CscFleet` shares a few producers, one command consumer (manual assignment, no group joins)
and one heartbeat loop among all its CSCs, so the Summit's 122 CSCs cost ten Kafka clients, not
hundreds. Each CSC, when it starts, does what salobj does: creates its topics if they are
missing (events compacted; topics are never auto-created), registers the schema of every topic
it reads or writes (a 409 from the registry keeps it from starting, and the reason is kept in
`CscFleet.failures`), looks a schema up before its first write of a topic, publishes its
initial summary state and heartbeats until it exits.

Commands get salobj's acks: ``CMD_COMPLETE`` "Done", or ``CMD_FAILED`` error 1 with
``Failed: <cmd> not allowed in state <State.STANDBY: 5>``, echoing the command's identity,
origin and seqNum, with the component's ``cmdtype``. ``exitControl`` publishes OFFLINE, acks,
goes silent and reports the exit (the Kubernetes model completes the CSC's Job). Each CSC can be
given quirks (`CscBehaviour`): never reporting OFFLINE, faulting on a command, answering slowly
or never, or answering with a given ack. Component-specific commands (ScriptQueue's ``add``...)
are served by handlers registered with `CscFleet.register_command`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import itertools
import json
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import quote

import httpx
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError

from blocks.site import CscEntry, CscName, State
from clients.registry import (
    SchemaRegistryClient,
    SchemaRegistryError,
    SchemaRegistryIncompatibleError,
)
from clients.sal.codec import (
    SalCodec,
    TopicWriter,
    kafka_timestamp_ms,
    message_key,
    parse_key,
    private_stamps,
    topic_name,
    value_subject,
)
from clients.sal.enums import SalRetCode
from clients.sal.errors import SalError
from clients.sal.kafka import (
    END,
    KafkaSettings,
    MessageBuilder,
    PartitionFeed,
    SalProducer,
    heartbeat_topic,
)
from sim.sal_schemas import DEFAULT_CATALOG, TopicCatalog, command_types, component_schemas
from sim.writelog import WriteLog

__all__ = [
    "ALL_COMMANDS",
    "AckReply",
    "CommandHandler",
    "CscBehaviour",
    "CscFleet",
    "ExitCallback",
    "SimulatedCsc",
    "StateListener",
]

_logger = logging.getLogger(__name__)

SERVICE = "sal"
#: In `CscBehaviour.ignores`: the CSC answers no command at all.
ALL_COMMANDS = "*"

# salobj's state machine: command -> (states it is allowed in, state it leads to).
_TRANSITIONS: dict[str, tuple[frozenset[State], State]] = {
    "enterControl": (frozenset({State.OFFLINE}), State.STANDBY),
    "start": (frozenset({State.STANDBY}), State.DISABLED),
    "enable": (frozenset({State.DISABLED}), State.ENABLED),
    "disable": (frozenset({State.ENABLED}), State.DISABLED),
    "standby": (frozenset({State.DISABLED, State.FAULT}), State.STANDBY),
    "exitControl": (frozenset({State.STANDBY}), State.OFFLINE),
}
_BODY_CHARS = 200


@dataclass(frozen=True, kw_only=True)
class CscBehaviour:
    """How a simulated CSC departs from a well-behaved salobj CSC.

    Attributes
    ----------
    never_reports_offline
        On ``exitControl`` it acks and goes silent without publishing OFFLINE (the VMS cRIOs).
    fault_on
        Commands that send it to FAULT (errorCode, summaryState FAULT, ack ``CMD_FAILED``).
    answer_delay_s
        Seconds it waits before handling each command.
    in_progress_s
        If set, every command is first acked ``CMD_INPROGRESS`` with this ``timeout`` and
        finished that many seconds later.
    in_progress_work_s
        How long the work after ``CMD_INPROGRESS`` really takes, if not what was announced
        (a CSC that underestimates).
    ignores
        Commands it never answers (`ALL_COMMANDS` for all); it does not act on them either.
    forced_acks
        Commands it answers with a given final ack and result instead of acting on them.
    heartbeat_interval_s
        Its own heartbeat interval, if slower than the fleet's (Scripts beat every 5 s;
        ``math.inf`` for a hung process that sends none).
    """

    never_reports_offline: bool = False
    fault_on: frozenset[str] = frozenset()
    answer_delay_s: float = 0.0
    in_progress_s: float | None = None
    in_progress_work_s: float | None = None
    ignores: frozenset[str] = frozenset()
    forced_acks: Mapping[str, tuple[SalRetCode, str]] = field(default_factory=dict)
    heartbeat_interval_s: float | None = None

    def replace(self, **changes: Any) -> CscBehaviour:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class AckReply:
    """The final ack a command handler asks for (the default is ``CMD_COMPLETE`` "Done")."""

    ack: SalRetCode = SalRetCode.CMD_COMPLETE
    result: str = "Done"
    error: int = 0


class CommandHandler(Protocol):
    """Serves one component-specific command; may write events with `SimulatedCsc.write`.

    Raising an exception acks ``CMD_FAILED`` with ``Failed: <exception>``, as salobj does.
    """

    def __call__(self, csc: SimulatedCsc, data: dict[str, Any]) -> Awaitable[AckReply | None]: ...


class ExitCallback(Protocol):
    """Told when a CSC's process ends: after ``exitControl``, or refused at start."""

    def __call__(self, name: CscName, *, failed: bool = False, message: str = "") -> object: ...


#: Told after a CSC publishes a summary state (see `CscFleet.add_state_listener`).
StateListener = Callable[["SimulatedCsc", State], Awaitable[None]]


@dataclass(frozen=True)
class Outgoing:
    """A message to send: its topic and key, how to build it, and (once built) its fields."""

    topic: str
    key: bytes | None
    build: MessageBuilder
    written: dict[str, Any]


class _CscExit(Exception):  # noqa: N818 (control flow, never escapes)
    """Raised inside a command to end the CSC once its ack is written."""


class SimulatedCsc:
    """One running simulated CSC; made by `CscFleet`."""

    def __init__(
        self,
        fleet: CscFleet,
        name: CscName,
        *,
        indexed: bool,
        image: str,
        state: State,
        behaviour: CscBehaviour,
        schemas: dict[str, dict[str, Any]],
        schema_ids: dict[str, int],
        origin: int,
    ) -> None:
        self.fleet = fleet
        self.name = name
        self.indexed = indexed
        self.image = image
        self.state = state
        self.behaviour = behaviour
        self.schemas = schemas
        self.origin = origin
        self.identity = f"{name.name}:{name.index}" if indexed else name.name
        #: Which of the fleet's producers writes this CSC's messages.
        self.lane = origin
        self.cmdtypes = command_types(schemas)
        #: The latest commands it received, as decoded (name without ``command_``, data).
        self.commands_received: collections.deque[tuple[str, dict[str, Any]]] = collections.deque(
            maxlen=1000
        )
        self._schema_ids = schema_ids
        self._writers: dict[str, TopicWriter] = {}
        self._seq_nums: dict[str, itertools.count[int]] = {}
        self._queue: asyncio.Queue[ConsumerRecord[bytes, bytes]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._last_beat = asyncio.get_running_loop().time()
        self.running = False

    def __repr__(self) -> str:
        return f"SimulatedCsc({self.name}, {self.state.name}, image={self.image!r})"

    # --- Writing ----------------------------------------------------------------------------

    async def write(self, sal_name: str, **values: Any) -> dict[str, Any]:
        """Write one message of one of this CSC's topics, filling the private fields as salobj
        does; return the record written.

        Raises
        ------
        SalError
            The topic is not one of this CSC's, a value does not fit, or Kafka refused.
        """
        message = await self.outgoing(sal_name, **values)
        await self.fleet.producer.send(message.topic, message.key, message.build, lane=self.lane)
        return message.written

    async def outgoing(self, sal_name: str, **values: Any) -> Outgoing:
        """One message of one of this CSC's topics, built (stamped, numbered, encoded) only when
        it is sent: `write` sends it alone, the fleet's heartbeats many of one topic together.

        Raises
        ------
        SalError
            The topic is not one of this CSC's (or its schema cannot be looked up).
        """
        writer = await self._writer(sal_name)
        counter = self._seq_nums.setdefault(sal_name, itertools.count(1))
        written: dict[str, Any] = {}

        def build() -> tuple[bytes, int]:
            # Stamped and numbered when sent, as salobj does in its write().
            fields: dict[str, Any] = {
                **private_stamps(),
                "private_seqNum": next(counter),
                "private_revCode": writer.rev_code,
                "private_identity": self.identity,
                "private_origin": self.origin,
                **values,
            }
            if self.indexed:
                fields["salIndex"] = self.name.index
            record, value = writer.encode(fields)
            written.update(record)
            return value, kafka_timestamp_ms(record)

        key = None if _is_telemetry(sal_name) else self.key(sal_name)
        return Outgoing(writer.topic, key, build, written)

    def key(self, sal_name: str) -> bytes:
        return message_key(self.name, sal_name, indexed=self.indexed)

    async def _writer(self, sal_name: str) -> TopicWriter:
        writer = self._writers.get(sal_name)
        if writer is None:
            schema = self.schemas.get(sal_name)
            if schema is None:
                raise SalError(f"{self.name} has no topic {sal_name}")
            topic = self.fleet.topic(self.name.name, sal_name)
            # salobj's serializer looks its schema up before the first write of a topic.
            schema_id = await self.fleet.lookup_schema(value_subject(topic), schema)
            writer = TopicWriter.create(topic, schema_id, schema)
            self._writers[sal_name] = writer
        return writer

    async def publish_state(self, state: State) -> None:
        """Change the summary state and publish it."""
        self.state = state
        await self.write("logevent_summaryState", summaryState=int(state))
        await self.fleet.state_published(self, state)

    async def go_to_fault(self, report: str, code: int = 1) -> None:
        """Publish an errorCode and go to FAULT, as salobj's ``fault()`` does."""
        await self.write("logevent_errorCode", errorCode=code, errorReport=report, traceback="")
        await self.publish_state(State.FAULT)

    async def ack(
        self,
        command: str,
        data: Mapping[str, Any],
        ack: SalRetCode,
        *,
        result: str = "",
        error: int = 0,
        timeout_s: float = 0.0,
    ) -> None:
        """Acknowledge a command (``data`` is the command as decoded)."""
        await self.write(
            "ackcmd",
            private_seqNum=int(data["private_seqNum"]),
            ack=int(ack),
            error=error,
            result=result,
            identity=str(data.get("private_identity", "")),
            origin=int(data.get("private_origin", 0)),
            cmdtype=self.cmdtypes.get(command, 0),
            timeout=timeout_s,
        )

    # --- Serving commands -------------------------------------------------------------------

    def beat_due(self, now: float) -> bool:
        """Whether a heartbeat is due (the fleet's loop ticks at the fleet's interval)."""
        interval = self.behaviour.heartbeat_interval_s
        if interval is None:
            return True
        if now - self._last_beat < interval * 0.999:
            return False
        self._last_beat = now
        return True

    def start_serving(self) -> None:
        self.running = True
        self._worker = asyncio.create_task(self._serve(), name=f"csc-{self.name}")

    def halt(self) -> None:
        """Stop at once: no more heartbeats, commands or messages (the process is gone)."""
        self.running = False
        if self._worker is not None and self._worker is not asyncio.current_task():
            self._worker.cancel()

    def deliver(self, record: ConsumerRecord[bytes, bytes]) -> None:
        if self.running:
            self._queue.put_nowait(record)

    async def _serve(self) -> None:
        while self.running:
            record = await self._queue.get()
            command = record.topic.rsplit(".", 1)[-1].removeprefix("command_")
            try:
                data = await self.fleet.codec.decode(record.value or b"")
            except SalError as exc:
                _logger.warning("%s: undecodable %s command: %s", self.name, command, exc)
                continue
            if self.indexed and int(data.get("salIndex", 0)) != self.name.index:
                continue
            try:
                await self._handle(command, data)
            except _CscExit:
                self.fleet.exited(self)
                return
            except SalError as exc:
                _logger.warning("%s: %s could not be answered: %s", self.name, command, exc)
            except Exception:
                # One command's bug must not leave the CSC deaf to the next ones.
                _logger.exception("%s: serving %s failed", self.name, command)

    async def _handle(self, command: str, data: dict[str, Any]) -> None:
        self.commands_received.append((command, data))
        self.fleet.log_command(self, command, data)
        behaviour = self.behaviour
        if command in behaviour.ignores or ALL_COMMANDS in behaviour.ignores:
            return
        if behaviour.answer_delay_s > 0:
            await asyncio.sleep(behaviour.answer_delay_s)
        forced = behaviour.forced_acks.get(command)
        if forced is not None:
            code, result = forced
            await self.ack(command, data, code, result=result, error=0 if code > 0 else 1)
            return
        if behaviour.in_progress_s is not None:
            await self.ack(
                command, data, SalRetCode.CMD_INPROGRESS, timeout_s=behaviour.in_progress_s
            )
            work_s = behaviour.in_progress_work_s
            await asyncio.sleep(behaviour.in_progress_s if work_s is None else work_s)
        if command in behaviour.fault_on:
            await self.go_to_fault(f"Simulated fault on {command}")
            await self._fail(command, data, f"simulated fault on {command}")
            return
        await self._act(command, data)

    async def _act(self, command: str, data: dict[str, Any]) -> None:
        if command in _TRANSITIONS:
            allowed, new_state = _TRANSITIONS[command]
            if self.state not in allowed:
                # salobj's text: "<cmd> not allowed in state <State.STANDBY: 5>".
                await self._fail(command, data, f"{command} not allowed in state {self.state!r}")
                return
            if command == "exitControl":
                if not self.behaviour.never_reports_offline:
                    await self.publish_state(State.OFFLINE)
                await self.ack(command, data, SalRetCode.CMD_COMPLETE, result="Done")
                raise _CscExit
            await self.publish_state(new_state)
            await self.ack(command, data, SalRetCode.CMD_COMPLETE, result="Done")
            return
        if command == "setLogLevel":
            await self.write(
                "logevent_logLevel",
                level=int(data.get("level", 0)),
                subsystem=str(data.get("subsystem", "")),
            )
            await self.ack(command, data, SalRetCode.CMD_COMPLETE, result="Done")
            return
        handler = self.fleet.handler(self.name.name, command)
        reply: AckReply | None = None
        if handler is not None:
            try:
                reply = await handler(self, data)
            except _CscExit:
                raise
            except Exception as exc:  # noqa: BLE001 (a CSC acks any failure, as salobj does)
                await self._fail(command, data, str(exc))
                return
        reply = reply or AckReply()
        await self.ack(command, data, reply.ack, result=reply.result, error=reply.error)

    async def _fail(self, command: str, data: Mapping[str, Any], reason: str) -> None:
        await self.ack(command, data, SalRetCode.CMD_FAILED, result=f"Failed: {reason}", error=1)


CommandKey = tuple[str, str]


class CscFleet:
    """Simulated CSCs sharing Kafka clients; ``async with CscFleet(...) as fleet``.

    Parameters
    ----------
    bootstrap_servers
        The broker (tansu) the CSCs write to.
    registry_url
        The schema registry the CSCs register their schemas with.
    sal_subname
        ``lsst.{sal_subname}.{Component}.{topic}``.
    indexed
        Components that are indexed (see `sim.sal_schemas.indexed_components`); a CSC with a
        non-zero index is always indexed.
    write_log
        Where every SAL command a CSC receives is recorded (service ``sal``).
    heartbeat_interval_s
        Seconds between heartbeats (salobj: 1 s).
    catalog
        The components' topics (`sim.sal_schemas.DEFAULT_CATALOG` by default).
    on_exit
        Told when a CSC exits (``exitControl``) or is refused at start.
    xml_version
        What ``softwareVersions.xmlVersion`` says.
    start_concurrency
        How many CSCs register their schemas at the same time.
    registration_reuse_s
        For how long an identical registration (same subject, same schema) by another CSC of
        this fleet is reused instead of repeated, and likewise a schema lookup. The registry
        answers a repeat with the same id and records nothing, so this only saves time when
        many CSCs start together; 0 makes every CSC call the registry for every topic, as each
        salobj process does.
    registry_transport
        How to reach the registry: give ``httpx.ASGITransport(app)`` when its app runs in this
        process, to spare the CPU of real HTTP (the registry sees the same requests).
    command_fetch_wait_ms
        The command consumer's fetch wait while commands come: tansu answers a fetch shorter
        than 250 ms only at its wait's end, and reads every partition of it at the start and
        at the end, so each fetch costs CPU in proportion to the partitions (hundreds).
    command_idle_fetch_wait_ms
        The fetch wait once no command has come for ``command_idle_after_s``: the first command
        after a quiet spell is heard up to this late, the next ones at the short wait again.
    producer_lanes
        Producers shared by the CSCs (see `SalProducer`): real CSCs each have their own, so
        that 40 ESS heartbeats do not wait for each other.
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        registry_url: str,
        sal_subname: str = "sal",
        indexed: Iterable[str] = (),
        write_log: WriteLog | None = None,
        heartbeat_interval_s: float = 1.0,
        catalog: TopicCatalog | None = None,
        on_exit: ExitCallback | None = None,
        xml_version: str = "sim",
        start_concurrency: int = 16,
        registration_reuse_s: float = 10.0,
        registry_transport: httpx.AsyncBaseTransport | None = None,
        command_fetch_wait_ms: int = 100,
        command_idle_fetch_wait_ms: int = 200,
        command_idle_after_s: float = 3.0,
        producer_lanes: int = 8,
    ) -> None:
        self.kafka = KafkaSettings(bootstrap_servers=bootstrap_servers)
        self.registry_url = registry_url.rstrip("/")
        self.sal_subname = sal_subname
        self.indexed = set(indexed)
        self.write_log = write_log
        self.heartbeat_interval_s = heartbeat_interval_s
        self.catalog = catalog or DEFAULT_CATALOG
        self.on_exit = on_exit
        self.xml_version = xml_version
        #: CSCs running now.
        self.running: dict[CscName, SimulatedCsc] = {}
        #: Why each CSC that failed to start did not (cleared when it starts).
        self.failures: dict[CscName, str] = {}
        #: Quirks given to a CSC when it starts (site-file quirks are added to these).
        self.behaviours: dict[CscName, CscBehaviour] = {}
        #: A state for a CSC's next start instead of its ``expected_state`` (used once: a
        #: site running ENABLED before an upgrade comes back as its Jobs define after).
        self.initial_states: dict[CscName, State] = {}
        #: Schema changes an image brings: image -> component -> SAL name -> Avro schema.
        self.image_schemas: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
        self._handlers: dict[CommandKey, CommandHandler] = {}
        self._state_listeners: dict[str, list[StateListener]] = {}
        self._origins = itertools.count(random.randint(20_000, 60_000))  # noqa: S311 (a fake pid)
        self._start_limit = asyncio.Semaphore(start_concurrency)
        self._reuse_s = registration_reuse_s
        self._command_fetch_wait_ms = command_fetch_wait_ms
        self._command_idle_fetch_wait_ms = max(command_idle_fetch_wait_ms, command_fetch_wait_ms)
        self._command_idle_after_s = command_idle_after_s
        self._last_command = 0.0
        self._commands_quiet = False
        self._registry_transport = registry_transport
        self._producer_lanes = producer_lanes
        self._registry_calls: dict[tuple[str, str, str], tuple[float, asyncio.Task[int]]] = {}
        self._known_topics: set[str] = set()
        self._starting: set[CscName] = set()
        # CSCs of each component that read (or are about to read) its command topics.
        self._listeners: collections.Counter[str] = collections.Counter()
        self._topic_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._http: httpx.AsyncClient | None = None
        self._registry: SchemaRegistryClient | None = None
        self._codec: SalCodec | None = None
        self._producer: SalProducer | None = None
        self._admin: Any = None
        self._feed: PartitionFeed | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._stack = contextlib.AsyncExitStack()
        self.register_command("Test", "fault", _test_fault)
        self.register_command("Test", "wait", _test_wait)

    # --- Lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect to Kafka and the registry and start the heartbeat loop.

        Raises
        ------
        SalKafkaError
            The broker cannot be reached.
        """
        try:
            self._http = await self._stack.enter_async_context(
                httpx.AsyncClient(timeout=10.0, transport=self._registry_transport)
            )
            self._registry = SchemaRegistryClient(self.registry_url, http_client=self._http)
            self._codec = SalCodec(self._registry)
            self._producer = await SalProducer.start(
                self.kafka, lanes=self._producer_lanes, overlapping=heartbeat_topic
            )
            self._stack.push_async_callback(self._producer.stop)
            admin = self.kafka.admin()
            await admin.start()
            self._admin = admin
            self._stack.push_async_callback(admin.close)
            feed = PartitionFeed(
                self.kafka,
                self._on_command,
                name="sim-csc-commands",
                fetch_max_wait_ms=self._command_fetch_wait_ms,
            )
            await feed.start()
            self._feed = feed
            self._stack.push_async_callback(feed.stop)
            self._heartbeat_task = asyncio.create_task(self._heartbeats(), name="sim-heartbeats")
            self._spawn(self._quieten_commands())
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Stop every CSC (silently, as if killed) and close the Kafka and HTTP clients."""
        for csc in list(self.running.values()):
            csc.halt()
        self.running.clear()
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
        for task in [self._heartbeat_task, *self._tasks]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._heartbeat_task = None
        await self._stack.aclose()

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

    @property
    def producer(self) -> SalProducer:
        if self._producer is None:
            raise SalError("the fleet is not open")
        return self._producer

    @property
    def codec(self) -> SalCodec:
        if self._codec is None:
            raise SalError("the fleet is not open")
        return self._codec

    def topic(self, component: str, sal_name: str) -> str:
        return topic_name(self.sal_subname, component, sal_name)

    # --- Configuration ----------------------------------------------------------------------

    def register_command(self, component: str, command: str, handler: CommandHandler) -> None:
        """Serve ``component``'s ``command`` with ``handler`` (replacing any earlier one)."""
        self._handlers[(component, command)] = handler

    def handler(self, component: str, command: str) -> CommandHandler | None:
        return self._handlers.get((component, command))

    def add_state_listener(self, component: str, listener: StateListener) -> None:
        """Call ``listener(csc, state)`` after each summary state a CSC of ``component``
        publishes, its initial one included (a simulated ScriptQueue follows its own state so).

        It runs before the command that caused the state is acked: keep it short.
        """
        self._state_listeners.setdefault(component, []).append(listener)

    async def state_published(self, csc: SimulatedCsc, state: State) -> None:
        for listener in self._state_listeners.get(csc.name.name, ()):
            try:
                await listener(csc, state)
            except Exception:
                # A listener's bug must not keep the CSC from acking its command.
                _logger.exception("%s: a state listener failed on %s", csc.name, state.name)

    def set_behaviour(self, name: CscName, behaviour: CscBehaviour) -> None:
        """Give ``name`` these quirks now (if running) and whenever it starts."""
        self.behaviours[name] = behaviour
        if name in self.running:
            self.running[name].behaviour = behaviour

    def state_of(self, name: CscName) -> State | None:
        """The state of a running CSC; None if it is not running."""
        csc = self.running.get(name)
        return None if csc is None else csc.state

    # --- Starting and stopping CSCs ---------------------------------------------------------

    def start(
        self,
        entry: CscEntry | CscName,
        *,
        image: str = "",
        initial_state: State | None = None,
        behaviour: CscBehaviour | None = None,
        schema_overrides: Mapping[str, dict[str, Any]] | None = None,
    ) -> asyncio.Task[SimulatedCsc | None]:
        """Start a CSC in the background, as its Job's container would; await the task for it.

        The task's result is the running CSC, or None if it could not start (the reason is in
        `failures` and ``on_exit`` is told). See `launch` for the parameters.
        """

        async def run() -> SimulatedCsc | None:
            try:
                return await self.launch(
                    entry,
                    image=image,
                    initial_state=initial_state,
                    behaviour=behaviour,
                    schema_overrides=schema_overrides,
                )
            except ValueError as exc:
                # Nobody may await this task (the Kubernetes model does not): say it here.
                _logger.warning("not starting %s: %s", _name_of(entry), exc)
                return None

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def start_many(
        self, entries: Iterable[CscEntry | CscName], *, image: str = ""
    ) -> dict[CscName, SimulatedCsc | None]:
        """Start CSCs concurrently; return each one (None where it could not start).

        Topics, the producer's metadata and the command partitions of all of them are prepared
        together first: one round trip each instead of one per CSC.
        """
        items = list(entries)
        components: dict[str, dict[str, dict[str, Any]]] = {}
        for entry in items:
            name = _name_of(entry)
            components.setdefault(name.name, self._schemas_for(name, image, None))
        with contextlib.suppress(_StartRefused, SalError, KafkaError):
            # A failure here is met again, and reported, by each CSC's own start.
            await self._prepare(components)
        started = await asyncio.gather(*(self.launch(e, image=image) for e in items))
        return {_name_of(e): csc for e, csc in zip(items, started, strict=True)}

    def _schemas_for(
        self,
        name: CscName,
        image: str,
        overrides: Mapping[str, dict[str, Any]] | None,
    ) -> dict[str, dict[str, Any]]:
        if overrides is None:
            overrides = self.image_schemas.get(image, {}).get(name.name, {})
        return component_schemas(
            name.name, indexed=self.is_indexed(name), catalog=self.catalog, overrides=overrides
        )

    def is_indexed(self, name: CscName) -> bool:
        return name.index != 0 or name.name in self.indexed

    async def _prepare(self, components: Mapping[str, Mapping[str, dict[str, Any]]]) -> None:
        """Make sure the components' topics exist, are known to the producer and their
        command topics are read (from their end)."""
        if self._feed is None:
            raise SalError("the fleet is not open")
        await self._ensure_topics(components)
        topics = [
            self.topic(component, sal_name)
            for component, schemas in components.items()
            for sal_name in schemas
        ]
        await self.producer.prepare(t for t in topics if ".command_" not in t)
        await self._feed.add({TopicPartition(t, 0): END for t in topics if ".command_" in t})

    async def launch(
        self,
        entry: CscEntry | CscName,
        *,
        image: str = "",
        initial_state: State | None = None,
        behaviour: CscBehaviour | None = None,
        schema_overrides: Mapping[str, dict[str, Any]] | None = None,
    ) -> SimulatedCsc | None:
        """Start one CSC and return it once it has published its initial state.

        ``initial_state`` defaults to `initial_states` (once), else the entry's
        ``expected_state`` (STANDBY for a bare name);
        ``behaviour`` to `behaviours` plus the entry's ``never_reports_offline``;
        ``schema_overrides`` (SAL name -> schema) to what `image_schemas` says of ``image``.
        Returns None if the CSC could not start: the reason is in `failures`.

        Raises
        ------
        ValueError
            The CSC is already running.
        """
        name = _name_of(entry)
        if name in self.running or name in self._starting:
            raise ValueError(f"{name} is already running")
        self._starting.add(name)
        self._listeners[name.name] += 1
        try:
            csc = await self._launch(
                entry,
                name,
                image=image,
                initial_state=initial_state,
                behaviour=behaviour,
                schema_overrides=schema_overrides,
            )
        finally:
            self._starting.discard(name)
        if csc is None:
            self._release(name.name)
        return csc

    async def _launch(
        self,
        entry: CscEntry | CscName,
        name: CscName,
        *,
        image: str,
        initial_state: State | None,
        behaviour: CscBehaviour | None,
        schema_overrides: Mapping[str, dict[str, Any]] | None,
    ) -> SimulatedCsc | None:
        quirks = behaviour or self.behaviours.get(name, CscBehaviour())
        once = self.initial_states.pop(name, None)
        if isinstance(entry, CscEntry):
            if entry.never_reports_offline:
                quirks = quirks.replace(never_reports_offline=True)
            state = initial_state or once or entry.expected_state
        else:
            state = initial_state or once or State.STANDBY
        schemas = self._schemas_for(name, image, schema_overrides)
        async with self._start_limit:
            try:
                await self._prepare({name.name: schemas})
                schema_ids = await self._register(schemas, name.name)
                csc = SimulatedCsc(
                    self,
                    name,
                    indexed=self.is_indexed(name),
                    image=image,
                    state=state,
                    behaviour=quirks,
                    schemas=schemas,
                    schema_ids=schema_ids,
                    origin=next(self._origins),
                )
                self.running[name] = csc
                csc.start_serving()
                # Different topics: salobj gives no order among them either.
                first: list[Awaitable[object]] = [
                    csc.write(
                        "logevent_softwareVersions",
                        salVersion="",
                        xmlVersion=self.xml_version,
                        cscVersion=image,
                        subsystemVersions="",
                    ),
                    csc.write("logevent_heartbeat"),
                ]
                if "logevent_summaryState" in schemas:  # Scripts have none
                    first.append(csc.publish_state(state))
                await asyncio.gather(*first)
            except _StartRefused as exc:
                self._refuse(name, str(exc))
                return None
            except (SalError, KafkaError, SchemaRegistryError) as exc:
                # After a broker restart (tansu forgets everything) topics must be made again.
                self.forget_topics()
                stray = self.running.pop(name, None)
                if stray is not None:
                    stray.halt()
                self._refuse(name, f"{type(exc).__name__}: {exc}")
                return None
        self.failures.pop(name, None)
        return csc

    def forget_topics(self) -> None:
        """Check for and create topics again at the next start (after a broker restart)."""
        self._known_topics.clear()
        if self._producer is not None:
            self._producer.forget()

    def kill(self, name: CscName) -> None:
        """End a CSC at once, as deleting its pod does: no OFFLINE, no more heartbeats."""
        csc = self.running.pop(name, None)
        if csc is None:
            return
        csc.halt()
        self._release(name.name)

    async def stop(self, name: CscName) -> None:
        """`kill` and wait until its commands are no longer read."""
        csc = self.running.pop(name, None)
        if csc is None:
            return
        csc.halt()
        self._listeners[name.name] -= 1
        await self._unlisten(name.name)

    def exited(self, csc: SimulatedCsc) -> None:
        """Called by a CSC after its ``exitControl`` ack: it is gone."""
        if self.running.get(csc.name) is not csc:
            return
        del self.running[csc.name]
        csc.halt()
        self._release(csc.name.name)
        if self.on_exit is not None:
            self.on_exit(csc.name)

    def _release(self, component: str) -> None:
        """One CSC of ``component`` no longer reads commands; the last one stops the reading."""
        self._listeners[component] -= 1
        if self._listeners[component] <= 0:
            self._spawn(self._unlisten(component))

    async def fault(self, name: CscName, report: str = "Simulated fault") -> None:
        """Send a running CSC to FAULT, as a hardware problem would.

        Raises
        ------
        KeyError
            The CSC is not running.
        """
        await self.running[name].go_to_fault(report)

    def _refuse(self, name: CscName, reason: str) -> None:
        _logger.warning("simulated %s did not start: %s", name, reason)
        self.failures[name] = reason
        if self.on_exit is not None:
            self.on_exit(name, failed=True, message=reason)

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- Kafka and the registry, as salobj uses them -----------------------------------------

    async def _ensure_topics(self, components: Mapping[str, Mapping[str, Any]]) -> None:
        wanted = {
            self.topic(component, sal_name): sal_name
            for component, schemas in components.items()
            for sal_name in schemas
        }
        async with self._topic_lock:
            missing = set(wanted) - self._known_topics
            if not missing:
                return
            # Creating a topic that exists is answered "already exists", which is fine.
            new = [
                NewTopic(
                    topic,
                    num_partitions=1,
                    replication_factor=1,
                    # salobj compacts event topics only, so each index keeps its last sample.
                    topic_configs=(
                        {"cleanup.policy": "compact"}
                        if wanted[topic].startswith("logevent_")
                        else {}
                    ),
                )
                for topic in sorted(missing)
            ]
            response = await self._admin.create_topics(new)
            errors = [
                f"{topic}: {message or code}"
                for topic, code, message in response.topic_errors
                if code not in (0, _TOPIC_ALREADY_EXISTS)
            ]
            if errors:
                raise _StartRefused(f"cannot create topics: {'; '.join(errors)}")
            self._known_topics |= missing

    async def _register(
        self, schemas: Mapping[str, dict[str, Any]], component: str
    ) -> dict[str, int]:
        """Register every topic's schema in order, as salobj does; the ids by SAL name."""
        ids: dict[str, int] = {}
        for sal_name, schema in schemas.items():
            subject = value_subject(self.topic(component, sal_name))
            try:
                ids[sal_name] = await self._registry_call("register", subject, schema)
            except SchemaRegistryIncompatibleError as exc:
                raise _StartRefused(
                    f"the schema registry refused {subject} (HTTP 409): {exc.detail}"
                ) from exc
        return ids

    async def lookup_schema(self, subject: str, schema: dict[str, Any]) -> int:
        """salobj's lookup before a first write (``POST /subjects/{subject}``); the schema id.

        Raises
        ------
        SalError
            The registry does not hold this schema under ``subject``.
        """
        return await self._registry_call("lookup", subject, schema)

    async def _registry_call(self, kind: str, subject: str, schema: dict[str, Any]) -> int:
        """One registry call, shared with identical calls made within ``registration_reuse_s``."""
        key = (kind, subject, json.dumps(schema))
        now = asyncio.get_running_loop().time()
        known = self._registry_calls.get(key)
        if known is not None:
            made, task = known
            if not task.done() or (
                now - made < self._reuse_s and not task.cancelled() and task.exception() is None
            ):
                return await asyncio.shield(task)
        call = self._register_one if kind == "register" else self._lookup_one
        task = asyncio.ensure_future(call(subject, schema))
        if self._reuse_s > 0:
            self._registry_calls[key] = (now, task)
        return await asyncio.shield(task)

    async def _register_one(self, subject: str, schema: dict[str, Any]) -> int:
        if self._registry is None:
            raise SalError("the fleet is not open")
        return await self._registry.register(subject, schema)

    async def _lookup_one(self, subject: str, schema: dict[str, Any]) -> int:
        if self._http is None:
            raise SalError("the fleet is not open")
        body = {"schema": json.dumps(schema), "schemaType": "AVRO", "references": []}
        response = await self._http.post(
            f"{self.registry_url}/subjects/{quote(subject, safe='')}",
            params={"normalize": "False", "deleted": "False"},
            content=json.dumps(body),
            headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
        )
        if response.status_code != httpx.codes.OK:
            raise SalError(f"schema lookup for {subject}: HTTP {response.status_code}")
        return int(response.json()["id"])

    async def _unlisten(self, component: str) -> None:
        # A CSC of the component may have begun starting since: it needs the partitions.
        if self._feed is None or self._listeners[component] > 0:
            return
        prefix = self.topic(component, "command_")
        with contextlib.suppress(SalError):
            await self._feed.remove(
                tp for tp in self._feed.assignment if tp.topic.startswith(prefix)
            )

    async def _on_command(self, record: ConsumerRecord[bytes, bytes]) -> None:
        self._last_command = asyncio.get_running_loop().time()
        if self._commands_quiet and self._feed is not None:
            self._commands_quiet = False
            self._feed.set_fetch_wait(self._command_fetch_wait_ms)
        key = parse_key(record.key)
        if key is None:
            return
        csc = self.running.get(key.csc)
        if csc is not None:
            csc.deliver(record)

    async def _quieten_commands(self) -> None:
        """Fetch commands at the idle wait once none has come for a while (see the class)."""
        if self._command_idle_fetch_wait_ms == self._command_fetch_wait_ms:
            return
        loop = asyncio.get_running_loop()
        self._last_command = loop.time()
        while True:
            quiet_at = self._last_command + self._command_idle_after_s
            await asyncio.sleep(
                self._command_idle_after_s
                if self._commands_quiet
                else max(quiet_at - loop.time(), 0.1)
            )
            quiet = loop.time() - self._last_command >= self._command_idle_after_s
            if quiet and not self._commands_quiet and self._feed is not None:
                self._commands_quiet = True
                self._feed.set_fetch_wait(self._command_idle_fetch_wait_ms)

    async def _heartbeats(self) -> None:
        """Beat every running CSC each interval. The CSCs of one component beating in one lane
        go in one request (`SalProducer.send_batch`): 900 ESS CSCs, one request each, would keep
        tansu busy and fall seconds behind. As real CSCs, which do not wait for each other, a
        slow write delays only the CSCs in it: those of one component and lane."""
        failing: set[CscName] = set()
        pending: set[CscName] = set()

        def done(names: list[CscName], task: asyncio.Task[None]) -> None:
            pending.difference_update(names)
            if task.cancelled():
                return
            error = task.exception()
            if error is None:
                failing.difference_update(names)
                return
            new = [name for name in names if name not in failing]
            failing.update(new)
            if new:
                shown = ", ".join(map(str, new[:5])) + (" ..." if len(new) > 5 else "")
                _logger.warning("%s: heartbeat failed (%s); quiet until it works", shown, error)

        loop = asyncio.get_running_loop()
        tick = loop.time()
        beats: set[asyncio.Task[None]] = set()
        try:
            while True:
                # A fixed cadence; after a stall (a busy loop) it starts again from now.
                tick = max(tick + self.heartbeat_interval_s, loop.time())
                await asyncio.sleep(tick - loop.time())
                now = loop.time()
                due: dict[tuple[str, int], list[SimulatedCsc]] = {}
                for csc in list(self.running.values()):
                    if csc.name in pending or not csc.running or not csc.beat_due(now):
                        continue
                    lane = csc.lane % self.producer.lanes
                    due.setdefault((csc.name.name, lane), []).append(csc)
                for (_, lane), cscs in due.items():
                    names = [csc.name for csc in cscs]
                    pending.update(names)
                    task = asyncio.create_task(self._beat(cscs, lane))
                    beats.add(task)
                    task.add_done_callback(beats.discard)
                    task.add_done_callback(functools.partial(done, names))
        finally:
            for task in beats:
                task.cancel()
            await asyncio.gather(*beats, return_exceptions=True)

    async def _beat(self, cscs: list[SimulatedCsc], lane: int) -> None:
        messages = [await csc.outgoing("logevent_heartbeat") for csc in cscs]
        await self.producer.send_batch(
            messages[0].topic, [(m.key, m.build) for m in messages], lane=lane
        )

    def log_command(self, csc: SimulatedCsc, command: str, data: Mapping[str, Any]) -> None:
        if self.write_log is None:
            return
        params = {
            k: _summary(v)
            for k, v in data.items()
            if not k.startswith("private_") and k != "salIndex"
        }
        self.write_log.record(
            SERVICE,
            command,
            str(csc.name),
            {
                "identity": data.get("private_identity", ""),
                "origin": data.get("private_origin", 0),
                "seqNum": data.get("private_seqNum", 0),
                "state": csc.state.name,
                "params": params,
            },
        )


_TOPIC_ALREADY_EXISTS = 36


class _StartRefused(Exception):  # noqa: N818 (internal)
    """A CSC cannot start; the message is the reason kept in `CscFleet.failures`."""


def _name_of(entry: CscEntry | CscName) -> CscName:
    return entry.name if isinstance(entry, CscEntry) else entry


def _is_telemetry(sal_name: str) -> bool:
    return not sal_name.startswith(("logevent_", "command_")) and sal_name != "ackcmd"


def _summary(value: Any) -> Any:
    if isinstance(value, str) and len(value) > _BODY_CHARS:
        return value[:_BODY_CHARS] + "..."
    if isinstance(value, list) and len(value) > 10:
        return [*value[:10], "..."]
    return value


async def _test_fault(csc: SimulatedCsc, data: dict[str, Any]) -> AckReply | None:
    """The Test CSC's ``fault`` command: go to FAULT and say Done."""
    del data
    await csc.go_to_fault("Fault commanded")
    return None


async def _test_wait(csc: SimulatedCsc, data: dict[str, Any]) -> AckReply | None:
    """The Test CSC's ``wait`` command: INPROGRESS for ``duration``, then the given ack."""
    duration = float(data.get("duration", 0.0))
    await csc.ack("wait", data, SalRetCode.CMD_INPROGRESS, timeout_s=duration)
    await asyncio.sleep(duration)
    code = int(data.get("ack", 0)) or SalRetCode.CMD_COMPLETE
    if code == SalRetCode.CMD_COMPLETE:
        return None
    return AckReply(SalRetCode(code), result=f"Failed: wait ended with ack {code}", error=1)
