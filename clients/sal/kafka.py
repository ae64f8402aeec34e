"""Kafka plumbing shared by the SAL client and the simulated CSCs.

- `KafkaSettings`: where the brokers are and how to authenticate (SASL passthrough).
- `SalProducer`: one record per request (or a batch, then its last record alone) and one
  request in flight per topic-partition, so that end offsets stay right on tansu
  (test-servers.md, quirk 2) and order is kept per partition.
- `PartitionFeed`: one consumer whose manual assignment grows and shrinks while it reads, so
  that one consumer can serve many CSCs without consumer-group joins.

Importing this module makes aiokafka use `clients.kafkawire`'s codecs for Fetch and Metadata
in this process (`install_codecs`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, KafkaTimeoutError

from clients.kafkawire import install_codecs
from clients.sal.errors import SalKafkaError

__all__ = [
    "BEGINNING",
    "END",
    "KafkaSettings",
    "MessageBuilder",
    "PartitionFeed",
    "SalProducer",
    "StartAt",
    "heartbeat_topic",
    "start_consumer",
]

_logger = logging.getLogger(__name__)

install_codecs()

#: A broker too busy to answer an offsets request in time (10 s each) is asked again, so long.
_OFFSETS_ATTEMPTS = 3

#: Where a partition added to a `PartitionFeed` starts: its first record, the end, or an offset.
StartAt = Literal["beginning", "end"] | int
BEGINNING: StartAt = "beginning"
END: StartAt = "end"

RecordHandler = Callable[[ConsumerRecord[bytes, bytes]], Awaitable[None]]


@dataclass(frozen=True, kw_only=True)
class KafkaSettings:
    """How to reach the Kafka cluster that carries SAL; passed through to aiokafka.

    The consumer defaults suit tansu and salobj alike (salobj-wire/README.md): a short session
    timeout and fetch wait so that consumers start and answer quickly.
    """

    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = None
    request_timeout_ms: int = 10_000

    def client_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        if self.sasl_mechanism is not None:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password
        if self.ssl_context is not None:
            options["ssl_context"] = self.ssl_context
        return options

    def consumer(self, **overrides: Any) -> AIOKafkaConsumer:
        """A consumer without a group (manual assignment), positioned by its user."""
        options: dict[str, Any] = {
            **self.client_options(),
            "group_id": None,
            "enable_auto_commit": False,
            "auto_offset_reset": "latest",
            "session_timeout_ms": 2000,
            "heartbeat_interval_ms": 500,
            "fetch_max_wait_ms": 20,
            "metadata_max_age_ms": 30_000,
        }
        options.update(overrides)
        return AIOKafkaConsumer(**options)

    def admin(self) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(**self.client_options())

    def producer(self, **overrides: Any) -> AIOKafkaProducer:
        # No idempotence: tansu cannot hand out producer ids (test-servers.md, quirk 6).
        options: dict[str, Any] = {
            **self.client_options(),
            "linger_ms": 0,
            "enable_idempotence": False,
            "acks": 1,
        }
        options.update(overrides)
        return AIOKafkaProducer(**options)


async def start_consumer(consumer: AIOKafkaConsumer) -> None:
    """Start ``consumer``.

    Raises
    ------
    SalKafkaError
        The brokers cannot be reached.
    """
    try:
        await consumer.start()
    except KafkaError as exc:
        with contextlib.suppress(KafkaError):
            await consumer.stop()
        raise SalKafkaError(f"cannot connect to Kafka: {exc!r}") from exc
    except BaseException:
        # Cancelled while starting (a script stopped mid-command): close what was opened.
        with contextlib.suppress(Exception):
            await consumer.stop()
        raise


#: Builds a message when it is its turn to be sent: its value and Kafka timestamp (ms).
MessageBuilder = Callable[[], tuple[bytes, int]]


def _never(topic: str) -> bool:
    del topic
    return False


def heartbeat_topic(topic: str) -> bool:
    """A CSC's ``logevent_heartbeat`` topic: `SalProducer`'s lanes may write it at once."""
    return topic.endswith(".logevent_heartbeat")


class SalProducer:
    """Sends SAL messages one record per request (`send_batch`: several of one topic), one
    request in flight per topic and lane.

    Every SAL event and command topic has one partition. A message is built (stamped and
    encoded) only when its turn comes, so its time stamps say when it was really sent.

    A producer has one request in flight to a broker at a time, so the messages of many
    simulated CSCs sharing a topic (40 ESS heartbeats) would queue behind each other; ``lanes``
    producers take turns instead. A writer always uses the same lane, so its own messages stay
    in order.

    The lanes write to one topic in turn, except to the topics ``overlapping`` allows: tansu
    (0.6), written by two connections at once, can leave the partition's end offset one short
    until the next write, and a reader bounded by the end offset (a cold read of the latest
    states) would miss the newest message. Heartbeats may overlap: a reader that misses the
    newest one sees the CSC one beat older.

    Parameters
    ----------
    producers
        Started aiokafka producers, one per lane; closed by `stop`.
    overlapping
        Topics whose messages the lanes may write at the same time.
    """

    def __init__(
        self,
        producers: list[AIOKafkaProducer],
        *,
        overlapping: Callable[[str], bool] | None = None,
    ) -> None:
        if not producers:
            raise ValueError("a SalProducer needs at least one producer")
        self._producers = producers
        self._overlapping = overlapping or _never
        self._locks: dict[tuple[int, str], asyncio.Lock] = {}
        self._prepared: set[str] = set()

    @classmethod
    async def start(
        cls,
        settings: KafkaSettings,
        *,
        lanes: int = 1,
        overlapping: Callable[[str], bool] | None = None,
    ) -> SalProducer:
        """Create and start ``lanes`` producers.

        Raises
        ------
        SalKafkaError
            The brokers cannot be reached.
        """
        producers: list[AIOKafkaProducer] = []
        try:
            for _ in range(max(lanes, 1)):
                producer = settings.producer()
                producers.append(producer)
                await producer.start()
        except KafkaError as exc:
            for producer in producers:
                await producer.stop()
            raise SalKafkaError(
                f"cannot connect to Kafka at {settings.bootstrap_servers}: {exc}"
            ) from exc
        except BaseException:
            # Cancelled while starting: close what was opened.
            for producer in producers:
                with contextlib.suppress(Exception):
                    await producer.stop()
            raise
        return cls(producers, overlapping=overlapping)

    @property
    def lanes(self) -> int:
        return len(self._producers)

    async def stop(self) -> None:
        for producer in self._producers:
            await producer.stop()

    async def prepare(self, topics: Iterable[str]) -> None:
        """Learn these topics' partitions now, together, rather than one by one on first send.

        Raises
        ------
        SalKafkaError
            A topic does not exist or Kafka cannot be reached.
        """
        new = set(topics) - self._prepared
        if not new:
            return
        try:
            await asyncio.gather(
                *(p.partitions_for(topic) for p in self._producers for topic in new)
            )
        except KafkaError as exc:
            raise SalKafkaError(f"cannot look topics up: {exc!r}") from exc
        self._prepared |= new

    def forget(self) -> None:
        """Look topics up again before use (they may have been deleted and made again)."""
        self._prepared.clear()

    def _turn(self, topic: str, lane: int) -> asyncio.Lock:
        """Held while writing ``topic`` from ``lane``: lanes take turns unless it may overlap."""
        turn = (lane if self._overlapping(topic) else -1, topic)
        lock = self._locks.get(turn)
        if lock is None:
            lock = self._locks[turn] = asyncio.Lock()
        return lock

    async def send(
        self, topic: str, key: bytes | None, build: MessageBuilder, *, lane: int = 0
    ) -> int:
        """Build one message when its turn comes, write it and wait for the broker.

        Returns
        -------
        int
            The record's offset.

        Raises
        ------
        SalKafkaError
            The broker refused or could not be reached (for example, the topic does not exist).
        """
        lane %= len(self._producers)
        async with self._turn(topic, lane):
            value, timestamp_ms = build()
            try:
                metadata = await self._producers[lane].send_and_wait(
                    topic, value, key=key, partition=0, timestamp_ms=timestamp_ms
                )
            except KafkaError as exc:
                raise SalKafkaError(f"cannot write to {topic}: {exc!r}") from exc
        return int(metadata.offset)

    async def send_batch(
        self, topic: str, messages: Sequence[tuple[bytes | None, MessageBuilder]], *, lane: int = 0
    ) -> None:
        """Build several messages of one topic when their turn comes and write them together:
        one request per batch that fits the producer's ``max_batch_size``, not one each.

        For many writers of one topic at once (the simulation's ESS heartbeats: 900 CSCs at a
        1,000-CSC site, 1 Hz each, which one request each would make tansu's busiest work).
        Readers see the same records either way: each has its own key, value and time stamp.
        The last message goes in a request of its own: after a multi-record batch tansu
        answers a wrong end offset until the next single-record write (test-servers.md,
        quirk 2), and readers bounded by the end offset (lag, the latest heartbeats) would
        miss the batch's tail.

        Raises
        ------
        SalKafkaError
            As `send`.
        """
        if not messages:
            return
        lane %= len(self._producers)
        producer = self._producers[lane]
        async with self._turn(topic, lane):
            try:
                sent: list[asyncio.Future[Any]] = []
                batch = producer.create_batch()
                for position, (key, build) in enumerate(messages):
                    value, timestamp_ms = build()
                    last = position == len(messages) - 1
                    if batch.record_count() and last:
                        sent.append(await producer.send_batch(batch, topic, partition=0))
                        batch = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=timestamp_ms) is None:
                        sent.append(await producer.send_batch(batch, topic, partition=0))
                        batch = producer.create_batch()
                        batch.append(key=key, value=value, timestamp=timestamp_ms)
                sent.append(await producer.send_batch(batch, topic, partition=0))
                await asyncio.gather(*sent)
            except KafkaError as exc:
                raise SalKafkaError(f"cannot write to {topic}: {exc!r}") from exc


@dataclass
class _Change:
    add: dict[TopicPartition, StartAt]
    remove: set[TopicPartition]
    done: asyncio.Future[None]


class PartitionFeed:
    """One consumer reading a changing set of partitions and handing each record to ``handler``.

    `add` and `remove` may be called at any time; concurrent calls are applied together, with
    one re-assignment, between two fetches. Partitions that stay assigned keep their positions
    (aiokafka's ``assign`` forgets them, so they are saved and restored). `add` returns once the
    new partitions are positioned, so a caller that adds ``END`` and then writes a request is
    sure to see the answer.

    Records are handled one at a time, in order, by awaiting ``handler``; a handler that must
    wait for something should hand the record to a task of its own.

    `focus` fetches only some topics' partitions, keeping every position (`pause` fetches none,
    `resume` all): a feed read only while an answer is awaited (a command's acks) then asks the
    broker only for the partitions an answer can come on. Each partition of a fetch costs both
    sides on every round, and a broker such as tansu reads every partition of a waiting fetch
    again and again.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        handler: RecordHandler,
        *,
        name: str = "feed",
        fetch_max_wait_ms: int = 20,
        poll_timeout_ms: int = 1000,
    ) -> None:
        self.name = name
        self._consumer = settings.consumer(fetch_max_wait_ms=fetch_max_wait_ms)
        self._handler = handler
        self._poll_timeout_ms = poll_timeout_ms
        self._changes: list[_Change] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._focus: frozenset[str] | None = None  # the topics fetched; None: all

    async def start(self) -> None:
        """Connect and start reading.

        Raises
        ------
        SalKafkaError
            The brokers cannot be reached.
        """
        try:
            await self._consumer.start()
        except KafkaError as exc:
            await self._consumer.stop()
            raise SalKafkaError(f"{self.name}: cannot connect to Kafka: {exc}") from exc
        except BaseException:
            # Cancelled while starting: close what was opened.
            with contextlib.suppress(Exception):
                await self._consumer.stop()
            raise
        self._started = True
        self._task = asyncio.create_task(self._run(), name=f"{self.name}-reader")

    async def stop(self) -> None:
        """Stop reading and close the consumer, whatever state the reader is in."""
        task, self._task = self._task, None
        try:
            if task is not None:
                task.cancel()
                # Waits without raising what the reader may have died of: the consumer is
                # closed below on every path.
                await asyncio.wait([task])
                if not task.cancelled() and task.exception() is not None:
                    _logger.error("%s: the reader had died: %r", self.name, task.exception())
        finally:
            for change in self._changes:
                if not change.done.done():
                    change.done.cancel()
            self._changes.clear()
            self._started = False
            # Even if never started: aiokafka warns about any consumer not stopped.
            await self._consumer.stop()

    @property
    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(self._consumer.assignment())

    @property
    def paused(self) -> bool:
        """Nothing is fetched (`pause`, or `focus` on no topic)."""
        return self._focus == frozenset()

    def set_fetch_wait(self, wait_ms: int) -> None:
        """Use this fetch wait from the next fetch on.

        aiokafka has no public way to change it on a running consumer; its fetcher reads the
        setting for every request it builds. A consumer not started yet takes it at start.
        """
        fetcher = getattr(self._consumer, "_fetcher", None)
        if fetcher is not None and hasattr(fetcher, "_fetch_max_wait_ms"):
            fetcher._fetch_max_wait_ms = wait_ms  # noqa: SLF001 (see above)
        self._consumer._fetch_max_wait_ms = wait_ms  # noqa: SLF001 (read at start)

    def focus(self, topics: Iterable[str] | None) -> None:
        """Fetch only the partitions of ``topics`` (None: every partition), partitions added
        later included. The others keep their positions: what is written to them meanwhile
        is read once they are fetched again. Records already fetched for a partition left out
        are dropped and fetched again then (aiokafka's pause)."""
        self._focus = None if topics is None else frozenset(topics)
        self._apply_focus()

    def pause(self) -> None:
        """Stop fetching, partitions added later included, until `resume` (or `focus`)."""
        self.focus(())

    def resume(self) -> None:
        """Fetch every partition again, each from where it stopped."""
        self.focus(None)

    def _apply_focus(self) -> None:
        assignment = self._consumer.assignment()
        if self._focus is None:
            self._consumer.resume(*assignment)
            return
        self._consumer.pause(*(tp for tp in assignment if tp.topic not in self._focus))
        self._consumer.resume(*(tp for tp in assignment if tp.topic in self._focus))

    async def existing_topics(self, topics: Iterable[str]) -> set[str]:
        """Those of ``topics`` that exist on the brokers now (fresh metadata).

        Raises
        ------
        SalKafkaError
            The brokers cannot be reached.
        """
        try:
            known = await self._consumer.topics()
        except KafkaError as exc:
            raise SalKafkaError(f"{self.name}: cannot list topics: {exc}") from exc
        return set(topics) & set(known)

    async def add(self, partitions: Mapping[TopicPartition, StartAt]) -> None:
        """Start reading ``partitions`` (which must exist) from where each says.

        Partitions already assigned keep their position. Returns when all are positioned.

        Raises
        ------
        SalKafkaError
            The feed is not running, or Kafka failed.
        """
        if not self._changes and not set(partitions) - self.assignment:
            return
        await self._change(dict(partitions), set())

    async def remove(self, partitions: Iterable[TopicPartition]) -> None:
        """Stop reading ``partitions``."""
        await self._change({}, set(partitions))

    async def _change(
        self, add: dict[TopicPartition, StartAt], remove: set[TopicPartition]
    ) -> None:
        if self._task is None or self._task.done():
            raise SalKafkaError(f"{self.name} is not running")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._changes.append(_Change(add, remove, done))
        self._wake.set()
        await done

    async def _run(self) -> None:
        while True:
            if self._changes:
                await self._apply_changes()
            if not self._consumer.assignment():
                await self._wake.wait()
                self._wake.clear()
                continue
            try:
                batch = await self._poll()
            except Exception:
                # The reader must outlive any one bad fetch, or every later add() would fail.
                _logger.exception("%s: reading failed; retrying", self.name)
                await asyncio.sleep(0.5)
                continue
            for records in batch.values():
                for record in records:
                    try:
                        await self._handler(record)
                    except Exception:
                        _logger.exception(
                            "%s: handling a record of %s failed", self.name, record.topic
                        )

    async def _poll(self) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        """Fetch what is there, returning early (empty-handed) when a change is requested."""
        self._wake.clear()
        if self._changes:
            return {}
        fetch = asyncio.ensure_future(self._consumer.getmany(timeout_ms=self._poll_timeout_ms))
        wake = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({fetch, wake}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            wake.cancel()
        if not fetch.done():
            # Cancelling getmany while it waits loses nothing: records stay in the fetcher.
            fetch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fetch
            return {}
        result: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = fetch.result()
        return result

    async def _apply_changes(self) -> None:
        changes, self._changes = self._changes, []
        add, remove = _merge(changes)
        try:
            await self._reassign(add, remove)
        except (KafkaError, ValueError) as exc:
            error = SalKafkaError(f"{self.name}: cannot change the assignment: {exc!r}")
            for change in changes:
                if not change.done.done():
                    change.done.set_exception(error)
            return
        for change in changes:
            if not change.done.done():
                change.done.set_result(None)

    async def _reassign(
        self, add: dict[TopicPartition, StartAt], remove: set[TopicPartition]
    ) -> None:
        keep = set(self._consumer.assignment()) - remove
        positions = {tp: await self._consumer.position(tp) for tp in keep}
        new = {tp: where for tp, where in add.items() if tp not in keep}
        self._consumer.assign(sorted(keep | set(new), key=lambda tp: (tp.topic, tp.partition)))
        for tp, offset in positions.items():
            self._consumer.seek(tp, offset)
        for tp, where in new.items():
            if isinstance(where, int):
                self._consumer.seek(tp, where)
        to_end = [tp for tp, where in new.items() if where == END]
        if to_end:
            # A direct offsets request: seek_to_end waits for the fetcher's own reset cycle.
            for tp, offset in (await self._end_offsets(to_end)).items():
                self._consumer.seek(tp, offset)
        to_beginning = [tp for tp, where in new.items() if where == BEGINNING]
        if to_beginning:
            await self._consumer.seek_to_beginning(*to_beginning)
        if self._focus is not None:
            # A new assignment starts unpaused.
            self._apply_focus()

    async def _end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        for attempt in range(1, _OFFSETS_ATTEMPTS):
            with contextlib.suppress(KafkaTimeoutError):
                ends: dict[TopicPartition, int] = await self._consumer.end_offsets(partitions)
                return ends
            _logger.warning(
                "%s: the broker did not give %d end offset(s) in time; asking again (%d/%d)",
                self.name,
                len(partitions),
                attempt + 1,
                _OFFSETS_ATTEMPTS,
            )
        last: dict[TopicPartition, int] = await self._consumer.end_offsets(partitions)
        return last


def _merge(changes: list[_Change]) -> tuple[dict[TopicPartition, StartAt], set[TopicPartition]]:
    """Fold requested changes, in order, into one set of additions and one of removals."""
    add: dict[TopicPartition, StartAt] = {}
    remove: set[TopicPartition] = set()
    for change in changes:
        for tp in change.add:
            remove.discard(tp)
        add.update(change.add)
        remove |= change.remove
        for tp in change.remove:
            add.pop(tp, None)
    return add, remove
