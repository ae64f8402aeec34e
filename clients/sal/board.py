"""A live board of CSC summary states and heartbeats, and waits on conditions over it.

`StateBoard` reads the ``logevent_summaryState`` and ``logevent_heartbeat`` topics of the CSCs
it watches with one consumer, starting from what the topics already hold, and keeps each CSC's
last state and heartbeat time current. `StateBoard.wait_for` waits until every CSC of a list
meets a `Condition` ("all in STANDBY", "none alive") and otherwise raises `StateWaitTimeout`
naming the CSCs still short and what they are at.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Self

from aiokafka import ConsumerRecord, TopicPartition

from blocks.site import CscName, State
from clients.sal.codec import parse_key
from clients.sal.errors import SalDecodeError, SalError, SalSchemaError, StateWaitTimeout
from clients.sal.history import read_latest
from clients.sal.kafka import END, PartitionFeed, start_consumer
from clients.sal.results import CscStatus

if TYPE_CHECKING:
    from clients.sal.client import SalClient

__all__ = ["Condition", "StateBoard", "alive", "by_component", "gone", "in_state", "offline"]

_logger = logging.getLogger(__name__)

#: How often waits look again when nothing arrives (heartbeat ages grow without messages).
_RECHECK_S = 0.1
#: How far back the board looks for heartbeats when it starts watching a component.
_HEARTBEAT_HISTORY_S = 60.0
#: How often topics that do not exist yet are looked for.
_MISSING_RECHECK_S = 0.5


def by_component(cscs: Iterable[CscName]) -> dict[str, set[int]]:
    """The indices asked for, by component name."""
    wanted: dict[str, set[int]] = {}
    for csc in cscs:
        wanted.setdefault(csc.name, set()).add(csc.index)
    return wanted


@dataclass(frozen=True)
class Condition:
    """A test of one CSC's status, with the words a timeout message uses for it.

    ``silence_s`` is set for a condition that a CSC can meet by silence alone (no heartbeat
    for that long): `StateBoard.wait_for` then confirms the silence from the topics' ends, as
    a board that reads behind would see silence where there is none.
    """

    description: str
    test: Callable[[CscStatus], bool]
    silence_s: float | None = None

    def __call__(self, status: CscStatus) -> bool:
        return self.test(status)


def in_state(*states: State) -> Condition:
    """The CSC's last summaryState is one of ``states``."""
    wanted = frozenset(states)
    names = " or ".join(s.name for s in states)
    return Condition(f"in {names}", lambda status: status.state in wanted)


def alive(window_s: float) -> Condition:
    """The CSC sent a heartbeat within the last ``window_s`` seconds."""
    return Condition(f"alive (heartbeat within {window_s:g} s)", lambda s: s.alive(window_s))


def gone(window_s: float) -> Condition:
    """No heartbeat within the last ``window_s`` seconds: the CSC's process is not running."""
    return Condition(
        f"gone (no heartbeat for {window_s:g} s)",
        lambda s: not s.alive(window_s),
        silence_s=window_s,
    )


def offline(window_s: float) -> Condition:
    """Reported OFFLINE, or gone: how shutdown is confirmed (some CSCs never report OFFLINE)."""
    return Condition(
        f"OFFLINE or gone (no heartbeat for {window_s:g} s)",
        lambda s: s.state is State.OFFLINE or not s.alive(window_s),
        silence_s=window_s,
    )


class StateBoard:
    """Summary states and heartbeat ages of CSCs, kept current by one consumer.

    Use it with ``async with client.state_board(cscs) as board``. `watch` adds CSCs at any
    time; a component whose topics do not exist yet is picked up when they appear. Every index
    of a watched component is tracked, not only the ones asked for.
    """

    def __init__(self, client: SalClient, components: Iterable[CscName] = ()) -> None:
        self._client = client
        self._initial = list(components)
        # A board reads many partitions; a longer fetch wait spares the broker (~0.1 s later).
        self._feed = PartitionFeed(
            client.kafka, self._on_record, name="sal-state-board", fetch_max_wait_ms=100
        )
        self._states: dict[CscName, tuple[int, State | None]] = {}
        self._beats: dict[CscName, int] = {}
        self._components: set[str] = set()
        self._missing: set[str] = set()
        # Components whose heartbeat partition the feed reads.
        self._beating: set[str] = set()
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._decode_tasks: set[asyncio.Task[None]] = set()
        self._missing_task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start reading and load the initial CSCs' current states and heartbeats.

        Raises
        ------
        SalKafkaError
            Kafka cannot be reached.
        SalSchemaError, SalDecodeError
            A summaryState cannot be decoded.
        """
        await self._feed.start()
        try:
            await self.watch(self._initial)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        task, self._missing_task = self._missing_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for decode in list(self._decode_tasks):
            decode.cancel()
        await self._feed.stop()

    async def watch(self, components: Iterable[CscName]) -> None:
        """Track these CSCs too; returns once their current states are loaded.

        Raises
        ------
        SalKafkaError, SalSchemaError, SalDecodeError
            As `start`.
        """
        names = {csc.name for csc in components}
        async with self._lock:
            new = names - self._components
            if not new:
                return
            self._components |= new
            await self._load(new)

    async def _load(self, names: set[str]) -> None:
        # A component is read once its heartbeat topic exists. Its summaryState topic may
        # come later (a CSC starting) or never (LOVE has no state machine, nor the topic):
        # until it exists the component is read by its heartbeats and looked for again.
        beats = {n: self._topic(n, "heartbeat") for n in names}
        states = {n: self._topic(n, "summaryState") for n in names}
        existing = await self._feed.existing_topics(set(beats.values()) | set(states.values()))
        beating = {n for n in names if beats[n] in existing} - self._beating
        stated = {n for n in names if beats[n] in existing and states[n] in existing}
        self._missing |= names - stated
        if self._missing and (self._missing_task is None or self._missing_task.done()):
            self._missing_task = asyncio.create_task(self._look_for_missing())
        if not beating and not stated:
            return
        # Live first, then history: whatever falls in between is read twice, and the newer
        # record (higher offset, later timestamp) wins either way.
        await self._feed.add(
            {TopicPartition(beats[n], 0): END for n in beating}
            | {TopicPartition(states[n], 0): END for n in stated}
        )
        self._beating |= beating
        await self._read_tails(beating, heartbeats_since_s=_HEARTBEAT_HISTORY_S, states_of=stated)

    async def _read_tails(
        self,
        names: set[str],
        *,
        heartbeats_since_s: float,
        states_of: set[str] | frozenset[str] = frozenset(),
        wanted: Mapping[str, frozenset[int]] | None = None,
    ) -> None:
        """Note what the components' topics hold now, read from their ends: the heartbeats of
        ``names`` of the last ``heartbeats_since_s`` and the latest summaryStates of
        ``states_of``. ``wanted`` narrows the heartbeats read to some indices of each
        component."""
        consumer = self._client.kafka.consumer(fetch_max_wait_ms=500)
        await start_consumer(consumer)
        try:
            latest_states = (
                await read_latest(
                    consumer, {self._topic(n, "summaryState"): None for n in states_of}
                )
                if states_of
                else {}
            )
            beats = (
                await read_latest(
                    consumer,
                    {
                        self._topic(n, "heartbeat"): None if wanted is None else wanted.get(n)
                        for n in names
                    },
                    not_before_ms=int((time.time() - heartbeats_since_s) * 1000),
                )
                if names
                else {}
            )
        finally:
            await consumer.stop()
        for by_index in beats.values():
            for record in by_index.values():
                self._note_heartbeat(record)
        records = [r for by_index in latest_states.values() for r in by_index.values()]
        await asyncio.gather(*(self._note_state(r) for r in records))
        self._changed.set()

    async def confirm_silence(self, cscs: Iterable[CscName], window_s: float) -> None:
        """Read these CSCs' newest heartbeats from the topics' ends, beside the live feed.

        The board's feed can read behind (a busy broker or process): a CSC whose heartbeats
        seem to have stopped may only be unread. After this, a CSC silent on the board for
        ``window_s`` was silent in Kafka too, as of now.

        Raises
        ------
        SalKafkaError, SalSchemaError, SalDecodeError
            As `start`.
        """
        wanted = by_component(cscs)
        if not wanted:
            return
        await self._read_tails(
            set(wanted),
            # A heartbeat older than the window changes nothing; a little more for the clocks.
            heartbeats_since_s=window_s + 1.0,
            wanted={name: frozenset(indices) for name, indices in wanted.items()},
        )

    async def _look_for_missing(self) -> None:
        while self._missing:
            await asyncio.sleep(_MISSING_RECHECK_S)
            async with self._lock:
                names, self._missing = self._missing, set()
                try:
                    await self._load(names)
                except SalError as exc:
                    _logger.warning("state board: loading %s failed: %s", sorted(names), exc)
                    self._missing |= names

    def _topic(self, component: str, kind: str) -> str:
        return self._client.topic(component, f"logevent_{kind}")

    async def _on_record(self, record: ConsumerRecord[bytes, bytes]) -> None:
        if record.topic.endswith(".logevent_heartbeat"):
            self._note_heartbeat(record)
            self._changed.set()
            return
        # Decoding may have to fetch a schema: do it aside so the feed keeps reading.
        task = asyncio.create_task(self._note_state(record))
        self._decode_tasks.add(task)
        task.add_done_callback(self._decode_tasks.discard)

    def _note_heartbeat(self, record: ConsumerRecord[bytes, bytes]) -> None:
        key = parse_key(record.key)
        if key is None:
            return
        csc = key.csc
        if record.timestamp > self._beats.get(csc, -1):
            self._beats[csc] = record.timestamp

    async def _note_state(self, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            data = await self._client.codec.decode(record.value or b"")
        except (SalDecodeError, SalSchemaError) as exc:
            _logger.warning("state board: %s at %d: %s", record.topic, record.offset, exc)
            return
        key = parse_key(record.key)
        name = record.topic.split(".")[-2]
        index = int(data.get("salIndex", key.index if key is not None else 0))
        csc = CscName(name=name, index=index)
        if record.offset > self._states.get(csc, (-1, None))[0]:
            try:
                state: State | None = State(int(data.get("summaryState", 0)))
            except ValueError:
                state = None
            self._states[csc] = (record.offset, state)
            self._changed.set()

    # --- Reading the board ------------------------------------------------------------------

    def state(self, csc: CscName) -> State | None:
        """The CSC's last summaryState; None if none was seen."""
        return self._states.get(csc, (-1, None))[1]

    def heartbeat_age(self, csc: CscName) -> float | None:
        """Seconds since the CSC's last heartbeat; None if none was seen."""
        stamp = self._beats.get(csc)
        return None if stamp is None else max(time.time() - stamp / 1000, 0.0)

    def status(self, csc: CscName) -> CscStatus:
        return CscStatus(csc=csc, state=self.state(csc), heartbeat_age_s=self.heartbeat_age(csc))

    def statuses(self, components: Iterable[CscName]) -> dict[CscName, CscStatus]:
        return {csc: self.status(csc) for csc in components}

    @property
    def known(self) -> set[CscName]:
        """Every CSC of the watched components that has published a state or a heartbeat."""
        return set(self._states) | set(self._beats)

    async def wait_for(
        self,
        condition: Condition | State | Callable[[CscStatus], bool],
        components: Iterable[CscName],
        *,
        deadline_s: float,
    ) -> dict[CscName, CscStatus]:
        """Wait until every CSC of ``components`` meets ``condition``; return their statuses.

        ``condition`` is a `Condition` (`in_state`, `alive`, `gone`, `offline`), a `State`
        (same as ``in_state(state)``) or any function of a `CscStatus`.

        Raises
        ------
        StateWaitTimeout
            Some CSCs still fall short after ``deadline_s`` seconds; its ``short`` attribute
            maps each of them to what it is at.
        SalKafkaError, SalSchemaError, SalDecodeError
            Watching a new component failed (see `watch`).
        """
        cscs = list(components)
        test = _as_condition(condition)
        deadline = time.monotonic() + deadline_s
        await self.watch(cscs)
        while True:
            self._changed.clear()
            statuses = self.statuses(cscs)
            short = {csc: s for csc, s in statuses.items() if not test(s)}
            if not short and test.silence_s is not None:
                silent = [csc for csc, s in statuses.items() if not s.alive(test.silence_s)]
                if silent:
                    # Silence on the board may only be a feed reading behind: confirm it.
                    await self.confirm_silence(silent, test.silence_s)
                    statuses = self.statuses(cscs)
                    short = {csc: s for csc, s in statuses.items() if not test(s)}
            if not short:
                return statuses
            left = deadline - time.monotonic()
            if left <= 0:
                raise StateWaitTimeout(
                    f"waiting for {len(cscs)} CSC(s) to be {test.description}",
                    deadline_s,
                    {csc: s.describe() for csc, s in short.items()},
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, _RECHECK_S))


def _as_condition(condition: Condition | State | Callable[[CscStatus], bool]) -> Condition:
    if isinstance(condition, Condition):
        return condition
    if isinstance(condition, State):
        return in_state(condition)
    return Condition(getattr(condition, "__name__", "as required"), condition)
