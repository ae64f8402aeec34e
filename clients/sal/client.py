"""The SAL client: read CSC summary states and heartbeats, send commands, change states.

It speaks salobj's Kafka wire format itself (aiokafka + fastavro + the schema registry), because
current ts_salobj is not on PyPI. One client is one SAL user: its commands carry its identity
(``user@host``) and origin (process id), and only acks echoing both, and the command's seqNum
and index, are taken as answers. Nothing here imports Prefect.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import secrets
import socket
import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiokafka import ConsumerRecord, TopicPartition

from blocks.site import CscName, State
from clients.registry import SchemaRegistryClient
from clients.sal.board import StateBoard, by_component, in_state, offline
from clients.sal.codec import (
    SalCodec,
    kafka_timestamp_ms,
    message_key,
    private_stamps,
    topic_name,
)
from clients.sal.enums import SalRetCode
from clients.sal.errors import (
    CommandAborted,
    CommandError,
    CommandFailed,
    CommandNoPermission,
    CommandTimedOut,
    NoAckError,
    SalDecodeError,
    SalError,
    SalSchemaError,
    SalTopicError,
    TransitionError,
)
from clients.sal.history import read_latest
from clients.sal.kafka import END, KafkaSettings, PartitionFeed, SalProducer, start_consumer
from clients.sal.results import AckResult, CscStatus
from clients.sal.scripts import DEFAULT_ADD_TIMEOUT_S, ScriptConfig, ScriptResult, run_script

__all__ = ["DEFAULT_COMMAND_TIMEOUT_S", "SalClient", "default_identity", "transition_step"]

_logger = logging.getLogger(__name__)

#: The ack feed's fetch wait. It fetches only while a command awaits an ack, and only the ackcmd
#: topics of the components commanded (`PartitionFeed.focus`), so a short wait costs little: a
#: broker that answers a fetch only at the end of its wait (tansu, under 250 ms) then hands an
#: ack over within a few milliseconds.
_ACK_FETCH_WAIT_MS = 5

#: salobj's default time limit for a command's final ack.
DEFAULT_COMMAND_TIMEOUT_S = 30.0
_MAX_SEQ_NUM = 2**31 - 1

_ERRORS: dict[int, type[CommandError]] = {
    SalRetCode.CMD_NOPERM: CommandNoPermission,
    SalRetCode.CMD_TIMEOUT: CommandTimedOut,
    SalRetCode.CMD_ABORTED: CommandAborted,
}

# Commanded summary states in order; FAULT is left by `standby` (rubin-systems.md §2).
_LEVEL = {State.OFFLINE: 0, State.STANDBY: 1, State.DISABLED: 2, State.ENABLED: 3}
_UP = {
    State.OFFLINE: ("enterControl", State.STANDBY),
    State.STANDBY: ("start", State.DISABLED),
    State.DISABLED: ("enable", State.ENABLED),
}
_DOWN = {
    State.ENABLED: ("disable", State.DISABLED),
    State.DISABLED: ("standby", State.STANDBY),
    State.STANDBY: ("exitControl", State.OFFLINE),
}


def default_identity() -> str:
    """``user@host``, the identity salobj gives a user's process."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def transition_step(current: State, target: State) -> tuple[str, State]:
    """The next command from ``current`` towards ``target`` and the state it leads to.

    Raises
    ------
    TransitionError
        ``target`` is FAULT (no command leads there) or equals ``current``.
    """
    if target is State.FAULT:
        raise TransitionError("FAULT is not a state that can be commanded")
    if current is target:
        raise TransitionError(f"already in {target.name}")
    if current is State.FAULT:
        return ("standby", State.STANDBY)
    return _UP[current] if _LEVEL[target] > _LEVEL[current] else _DOWN[current]


@dataclass
class _Pending:
    csc: CscName
    command: str
    seq_num: int
    acks: asyncio.Queue[AckResult] = field(default_factory=asyncio.Queue)


class SalClient:
    """A SAL user on one site's Kafka: ``async with SalClient(...) as sal``.

    Parameters
    ----------
    bootstrap_servers
        The Kafka brokers (``host:port``, comma-separated).
    registry
        The schema registry client (not closed by this client).
    sal_subname
        The topic name's second part (``lsst.{sal_subname}.{Component}.{topic}``).
    identity, origin
        What this client's commands carry (``private_identity``, ``private_origin``) and what
        acks must echo; by default ``user@host`` and this process's id.
    security_protocol, sasl_mechanism, sasl_username, sasl_password, ssl_context
        Passed through to aiokafka (the sites use SASL SCRAM).
    history_timeout_s
        Limit for one read of what the topics hold (`summary_states`, `heartbeats`).
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        registry: SchemaRegistryClient,
        sal_subname: str = "sal",
        identity: str | None = None,
        origin: int | None = None,
        security_protocol: str = "PLAINTEXT",
        sasl_mechanism: str | None = None,
        sasl_username: str | None = None,
        sasl_password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        history_timeout_s: float = 10.0,
    ) -> None:
        self.kafka = KafkaSettings(
            bootstrap_servers=bootstrap_servers,
            security_protocol=security_protocol,
            sasl_mechanism=sasl_mechanism,
            sasl_username=sasl_username,
            sasl_password=sasl_password,
            ssl_context=ssl_context,
        )
        self.sal_subname = sal_subname
        self.identity = identity if identity is not None else default_identity()
        self.origin = origin if origin is not None else os.getpid()
        self.codec = SalCodec(registry)
        self._history_timeout_s = history_timeout_s
        self._producer: SalProducer | None = None
        self._producer_lock = asyncio.Lock()
        self._acks: PartitionFeed | None = None
        self._ack_lock = asyncio.Lock()
        self._ack_topics: set[str] = set()
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the producer and the ack reader (the registry client stays open)."""
        self._closed = True
        acks, self._acks = self._acks, None
        if acks is not None:
            await acks.stop()
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    def topic(self, component: str, sal_name: str) -> str:
        """The Kafka topic of ``sal_name`` (``logevent_summaryState``, ``ackcmd``, ...)."""
        return topic_name(self.sal_subname, component, sal_name)

    # --- Reading what the topics hold -------------------------------------------------------

    async def summary_states(self, components: Iterable[CscName]) -> dict[CscName, State | None]:
        """The last ``summaryState`` each CSC published (None if it never did).

        One consumer reads every component's ``logevent_summaryState`` topic at once.

        Raises
        ------
        SalKafkaError
            Kafka cannot be reached or is too slow.
        SalSchemaError
            A summaryState's schema cannot be fetched from the registry.
        SalDecodeError
            A summaryState message cannot be decoded.
        """
        wanted = by_component(components)
        topics = {self.topic(name, "logevent_summaryState"): name for name in wanted}
        consumer = self.kafka.consumer(fetch_max_wait_ms=500)
        try:
            await start_consumer(consumer)
            latest = await read_latest(
                consumer,
                {topic: frozenset(wanted[name]) for topic, name in topics.items()},
                timeout_s=self._history_timeout_s,
                # Schemas are fetched while Kafka is still being read.
                seen=lambda record: self.codec.prefetch(record.value),
            )
        finally:
            await consumer.stop()
        chosen = [
            (CscName(name=topics[topic], index=index), record)
            for topic, by_index in latest.items()
            for index, record in by_index.items()
            if index in wanted[topics[topic]]
        ]
        decoded = await asyncio.gather(*(self.codec.decode(r.value or b"") for _, r in chosen))
        states: dict[CscName, State | None] = {
            CscName(name=name, index=index): None
            for name, indices in wanted.items()
            for index in indices
        }
        for (csc, _), data in zip(chosen, decoded, strict=True):
            states[csc] = _state(data.get("summaryState"))
        return states

    async def heartbeats(
        self, components: Iterable[CscName], window_s: float
    ) -> dict[CscName, float | None]:
        """Seconds since each CSC's last heartbeat, if it sent one in the last ``window_s``.

        Only message keys and Kafka timestamps (``private_efdStamp``) are read; nothing is
        decoded.

        Raises
        ------
        SalKafkaError
            Kafka cannot be reached or is too slow.
        """
        wanted = by_component(components)
        topics = {self.topic(name, "logevent_heartbeat"): name for name in wanted}
        now = time.time()
        cutoff_ms = int((now - window_s) * 1000)
        consumer = self.kafka.consumer(fetch_max_wait_ms=500)
        try:
            await start_consumer(consumer)
            latest = await read_latest(
                consumer,
                {topic: frozenset(wanted[name]) for topic, name in topics.items()},
                not_before_ms=cutoff_ms,
                timeout_s=self._history_timeout_s,
            )
        finally:
            await consumer.stop()
        ages: dict[CscName, float | None] = {}
        for name, indices in wanted.items():
            by_index = latest.get(self.topic(name, "logevent_heartbeat"), {})
            for index in indices:
                record = by_index.get(index)
                ages[CscName(name=name, index=index)] = (
                    max(now - record.timestamp / 1000, 0.0)
                    if record is not None and record.timestamp >= cutoff_ms
                    else None
                )
        return ages

    async def alive(self, components: Iterable[CscName], window_s: float) -> dict[CscName, bool]:
        """Whether each CSC sent a heartbeat within the last ``window_s`` seconds.

        Raises
        ------
        SalKafkaError
            Kafka cannot be reached or is too slow.
        """
        ages = await self.heartbeats(components, window_s)
        return {csc: age is not None for csc, age in ages.items()}

    async def statuses(
        self, components: Iterable[CscName], window_s: float
    ) -> dict[CscName, CscStatus]:
        """Summary state and heartbeat age of each CSC (see `summary_states`, `heartbeats`).

        Raises
        ------
        SalKafkaError, SalSchemaError, SalDecodeError
            As `summary_states`.
        """
        names = list(components)
        states, ages = await asyncio.gather(
            self.summary_states(names), self.heartbeats(names, window_s)
        )
        return {
            csc: CscStatus(csc=csc, state=states[csc], heartbeat_age_s=ages[csc]) for csc in states
        }

    def state_board(self, components: Iterable[CscName] = ()) -> StateBoard:
        """A live view of these CSCs' states and heartbeats; use it with ``async with``."""
        return StateBoard(self, components)

    # --- Commands ---------------------------------------------------------------------------

    async def command(
        self,
        csc: CscName,
        name: str,
        params: Mapping[str, Any] | None = None,
        *,
        timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S,
    ) -> AckResult:
        """Send ``command_{name}`` to ``csc`` and wait for its final ack.

        The command is encoded with the newest schema registered for it. Its acks are read from
        the component's ``ackcmd`` topic, positioned at its end before the command is written.
        ``CMD_INPROGRESS`` adds its ``timeout`` to the time allowed, as salobj does.

        Returns
        -------
        AckResult
            The ``CMD_COMPLETE`` ack.

        Raises
        ------
        CommandFailed
            ``CMD_FAILED`` (its ``reason`` is the CSC's text), ``CMD_STALLED`` or ``CMD_NOACK``.
        CommandNoPermission
            ``CMD_NOPERM``.
        CommandTimedOut
            ``CMD_TIMEOUT``: the CSC gave up.
        CommandAborted
            ``CMD_ABORTED``.
        NoAckError
            No final ack within ``timeout_s`` (plus extensions).
        SalTopicError
            The command or ackcmd topic does not exist (no CSC of the component has run).
        SalSchemaError
            No schema is registered for the command, or ``params`` do not fit it.
        SalKafkaError
            Kafka cannot be reached or refused the command.
        """
        if self._closed:
            raise SalError("the SAL client is closed")
        sal_name = f"command_{name}"
        command_topic = self.topic(csc.name, sal_name)
        writer = await self.codec.latest_writer(command_topic)
        await self._watch_acks(csc.name, command_topic)
        producer = await self._get_producer()
        seq_num = self._fresh_seq_num(csc.name)
        values: dict[str, Any] = {
            **(params or {}),
            "private_seqNum": seq_num,
            "private_revCode": writer.rev_code,
            "private_identity": self.identity,
            "private_origin": self.origin,
        }
        if csc.index and "salIndex" in writer.field_names:
            values["salIndex"] = csc.index
        writer.encode(values)  # checks the parameters before anything is sent

        def build() -> tuple[bytes, int]:
            record, value = writer.encode({**values, **private_stamps()})
            return value, kafka_timestamp_ms(record)

        pending = _Pending(csc, name, seq_num)
        self._pending[(csc.name, seq_num)] = pending
        acks = self._acks
        assert acks is not None  # made by _watch_acks
        # Only the ackcmd topics of components awaiting an ack are fetched; the others keep
        # their place without asking the broker.
        acks.focus(self._awaited_ack_topics())
        try:
            await producer.send(command_topic, message_key(csc, sal_name), build)
            return await self._final_ack(pending, timeout_s)
        finally:
            self._pending.pop((csc.name, seq_num), None)
            acks.focus(self._awaited_ack_topics())

    def _awaited_ack_topics(self) -> set[str]:
        return {self.topic(component, "ackcmd") for component, _ in self._pending}

    async def _final_ack(self, pending: _Pending, timeout_s: float) -> AckResult:
        allowed = timeout_s
        started = time.monotonic()
        last: AckResult | None = None
        while True:
            left = started + allowed - time.monotonic()
            if left <= 0:
                raise NoAckError(pending.csc, pending.command, allowed, last)
            try:
                ack = await asyncio.wait_for(pending.acks.get(), left)
            except TimeoutError:
                raise NoAckError(pending.csc, pending.command, allowed, last) from None
            last = ack
            if ack.ack == SalRetCode.CMD_INPROGRESS:
                allowed += ack.timeout_s
            elif ack.ack == SalRetCode.CMD_COMPLETE:
                return ack
            elif ack.ack != SalRetCode.CMD_ACK:
                raise _ERRORS.get(ack.ack, CommandFailed)(ack)

    def _fresh_seq_num(self, component: str) -> int:
        while True:
            seq_num = secrets.randbelow(_MAX_SEQ_NUM) + 1
            if (component, seq_num) not in self._pending:
                return seq_num

    async def _get_producer(self) -> SalProducer:
        async with self._producer_lock:
            if self._producer is None:
                self._producer = await SalProducer.start(self.kafka)
            return self._producer

    async def prepare_commands(self, components: Iterable[str]) -> None:
        """Start reading the ackcmd topics of many components at once, before commanding them.

        One reassignment of the ack reader instead of one per component: sending OFFLINE to a
        hundred CSCs of sixty components otherwise spends most of its time on these. Components
        whose topics do not exist are left out (their commands fail as usual).

        Raises
        ------
        SalKafkaError
            Kafka failed.
        """
        async with self._ack_lock:
            wanted = {self.topic(name, "ackcmd") for name in components} - self._ack_topics
            if not wanted:
                return
            acks = await self._ack_feed()
            existing = await acks.existing_topics(wanted)
            if existing:
                await acks.add({TopicPartition(topic, 0): END for topic in existing})
                self._ack_topics |= existing

    async def _watch_acks(self, component: str, command_topic: str) -> None:
        """Read ``component``'s ackcmd from its current end (once per component)."""
        ack_topic = self.topic(component, "ackcmd")
        async with self._ack_lock:
            if ack_topic in self._ack_topics:
                return
            acks = await self._ack_feed()
            missing = {command_topic, ack_topic} - await acks.existing_topics(
                {command_topic, ack_topic}
            )
            if missing:
                raise SalTopicError(
                    f"{', '.join(sorted(missing))} does not exist: no {component} CSC has "
                    "started on this broker"
                )
            await acks.add({TopicPartition(ack_topic, 0): END})
            self._ack_topics.add(ack_topic)

    async def _ack_feed(self) -> PartitionFeed:
        """The feed of the ackcmd topics, started on first use (under ``_ack_lock``)."""
        if self._acks is None:
            feed = PartitionFeed(
                self.kafka, self._on_ack, name="sal-acks", fetch_max_wait_ms=_ACK_FETCH_WAIT_MS
            )
            feed.focus(self._awaited_ack_topics())
            await feed.start()
            self._acks = feed
        return self._acks

    async def _on_ack(self, record: ConsumerRecord[bytes, bytes]) -> None:
        if not self._pending:
            return
        component = record.topic.split(".")[-2]
        try:
            data = await self.codec.decode(record.value or b"")
        except (SalDecodeError, SalSchemaError) as exc:
            _logger.warning("undecodable ack on %s at %d: %s", record.topic, record.offset, exc)
            return
        if data.get("identity") != self.identity or data.get("origin") != self.origin:
            return
        pending = self._pending.get((component, int(data.get("private_seqNum", 0))))
        if pending is None or int(data.get("salIndex", 0)) != pending.csc.index:
            return
        code = int(data.get("ack", 0))
        pending.acks.put_nowait(
            AckResult(
                csc=pending.csc,
                command=pending.command,
                ack=_ret_code(code),
                error=int(data.get("error", 0)),
                result=str(data.get("result", "")),
                timeout_s=float(data.get("timeout", 0.0)),
                seq_num=pending.seq_num,
                cmdtype=int(data.get("cmdtype", 0)),
                identity=str(data.get("identity", "")),
                origin=int(data.get("origin", 0)),
            )
        )

    # --- Scripts ----------------------------------------------------------------------------

    async def run_script(
        self,
        queue_index: int,
        path: str,
        config: ScriptConfig = None,
        *,
        timeout_s: float,
        is_standard: bool = True,
        descr: str = "",
        log_level: int = 0,
        add_timeout_s: float = DEFAULT_ADD_TIMEOUT_S,
        heartbeat_window_s: float = 5.0,
    ) -> ScriptResult:
        """Run a script on ScriptQueue ``queue_index`` and wait for its end.

        See `clients.sal.scripts.run_script`, which this calls, for the parameters.

        Raises
        ------
        ScriptQueueNotEnabled, ScriptAddFailed, ScriptTimeout, ScriptQueueExited
            See `clients.sal.scripts.run_script`.
        SalTopicError, SalKafkaError, SalSchemaError
            As `command`.
        """
        return await run_script(
            self,
            queue_index,
            path,
            config,
            timeout_s=timeout_s,
            is_standard=is_standard,
            descr=descr,
            log_level=log_level,
            add_timeout_s=add_timeout_s,
            heartbeat_window_s=heartbeat_window_s,
        )

    # --- Summary-state transitions ----------------------------------------------------------

    async def set_summary_state(
        self,
        csc: CscName,
        target: State,
        *,
        board: StateBoard | None = None,
        timeout_s: float = 60.0,
        configuration_override: str = "",
        heartbeat_window_s: float = 5.0,
    ) -> list[AckResult]:
        """Command ``csc`` step by step to ``target`` and confirm each step by its summaryState.

        The path depends on the current state (FAULT first goes to STANDBY). Each step waits
        for the state itself, never for the ack alone: an ack can be read before the
        summaryState written just before it. OFFLINE counts as reached when the CSC reports
        OFFLINE or its heartbeats stop for ``heartbeat_window_s`` (some CSCs never report
        OFFLINE). Give ``board`` to reuse a running `StateBoard`.

        Returns
        -------
        list[AckResult]
            The final ack of each command sent (empty if already in ``target``).

        Raises
        ------
        TransitionError
            ``target`` is FAULT, or the CSC never reported a state, or it is OFFLINE and gone.
        StateWaitTimeout
            A step's state was not seen within ``timeout_s``.
        CommandError, NoAckError
            A command failed or was not answered (see `command`).
        SalTopicError, SalSchemaError, SalKafkaError
            As `command`.
        """
        if target is State.FAULT:
            raise TransitionError("FAULT is not a state that can be commanded")
        async with contextlib.AsyncExitStack() as stack:
            if board is None:
                board = await stack.enter_async_context(self.state_board([csc]))
            else:
                await board.watch([csc])
            return await self._transition(
                csc,
                target,
                board,
                timeout_s=timeout_s,
                override=configuration_override,
                window_s=heartbeat_window_s,
            )

    async def _transition(
        self,
        csc: CscName,
        target: State,
        board: StateBoard,
        *,
        timeout_s: float,
        override: str,
        window_s: float,
    ) -> list[AckResult]:
        acks: list[AckResult] = []
        while True:
            status = board.status(csc)
            if status.state is not None and not status.alive(window_s):
                # Gone, or only unread by a board reading behind: the topic's end says which.
                await board.confirm_silence([csc], window_s)
                status = board.status(csc)
            if status.state is None:
                raise TransitionError(f"{csc} has never reported a summary state: is it running?")
            if status.state is target:
                return acks
            if target is State.OFFLINE and not status.alive(window_s):
                return acks
            if status.state is State.OFFLINE and not status.alive(window_s):
                raise TransitionError(f"{csc} is OFFLINE and not running: start it first")
            command, next_state = transition_step(status.state, target)
            params = {"configurationOverride": override} if command == "start" else None
            acks.append(await self.command(csc, command, params, timeout_s=timeout_s))
            condition = offline(window_s) if next_state is State.OFFLINE else in_state(next_state)
            await board.wait_for(condition, [csc], deadline_s=timeout_s)


def _ret_code(code: int) -> SalRetCode | int:
    try:
        return SalRetCode(code)
    except ValueError:
        return code


def _state(value: Any) -> State | None:
    try:
        return State(int(value))
    except (TypeError, ValueError):
        return None
