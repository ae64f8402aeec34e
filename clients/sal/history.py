"""Reading what SAL topics already hold: the newest record per CSC index, tail first.

One consumer reads many partitions at once with manual assignment (no group): batched
beginning/end offsets, then windows read from the end backwards, widened only for the
partitions where a wanted index has not been seen yet. Summary states are rare events, so the
first window usually holds everything; heartbeats are read back only as far as the liveness
window (tansu does not look offsets up by time, so the tail is read instead).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from clients.sal.codec import parse_key
from clients.sal.errors import SalKafkaError

__all__ = ["FIRST_WINDOW", "LatestRecords", "read_latest", "read_ranges"]

#: Records read from each partition's end at first (at least four per wanted index); each
#: further window is four times larger. A CSC's latest summaryState and its heartbeats within a
#: liveness window are among its component's last few records per index: reading 256 from
#: each of the 250 heartbeat topics of 1,000 CSCs (250 x 4) took 2.3 s, 32 took 0.9 s.
FIRST_WINDOW = 32
_GROWTH = 4

Record: TypeAlias = "ConsumerRecord[bytes, bytes]"
#: topic -> index -> its newest record.
LatestRecords: TypeAlias = dict[str, dict[int, Record]]


@dataclass
class _Plan:
    begin: int
    start: int
    stop: int
    window: int
    wanted: frozenset[int] | None


async def read_ranges(
    consumer: AIOKafkaConsumer,
    ranges: Mapping[TopicPartition, tuple[int, int]],
    on_record: Callable[[Record], None],
    *,
    timeout_s: float,
) -> None:
    """Hand every record of each partition's ``[start, stop)`` to ``on_record``, oldest first.

    Raises
    ------
    SalKafkaError
        Kafka failed, or the records did not arrive within ``timeout_s``.
    """
    active = {tp: span for tp, span in ranges.items() if span[0] < span[1]}
    if not active:
        return
    deadline = time.monotonic() + timeout_s
    try:
        consumer.assign(list(active))
        for tp, (start, _) in active.items():
            consumer.seek(tp, start)
        remaining = set(active)
        while remaining:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                names = ", ".join(sorted(tp.topic for tp in remaining)[:5])
                raise SalKafkaError(
                    f"reading {len(remaining)} partition(s) ({names}, ...) took over {timeout_s} s"
                )
            batch = await consumer.getmany(*remaining, timeout_ms=min(left_ms, 500))
            for tp, records in batch.items():
                stop = active[tp][1]
                for record in records:
                    if record.offset < stop:
                        on_record(record)
            done = [tp for tp in remaining if await consumer.position(tp) >= active[tp][1]]
            if done:
                # Paused partitions are no longer fetched: tansu answers a fetch only when
                # every fetched partition has been looked at, so finished ones only slow it.
                consumer.pause(*done)
                remaining.difference_update(done)
    except KafkaError as exc:
        raise SalKafkaError(f"reading SAL topics failed: {exc!r}") from exc
    finally:
        consumer.assign([])


@dataclass
class _Window:
    """What one window of reads found: the newest record per index, the oldest timestamp."""

    seen: Callable[[Record], None] | None = None
    found: dict[TopicPartition, dict[int, Record]] = field(default_factory=dict)
    oldest_ms: dict[TopicPartition, int] = field(default_factory=dict)

    def keep(self, record: Record) -> None:
        tp = TopicPartition(record.topic, record.partition)
        self.oldest_ms.setdefault(tp, record.timestamp)
        key = parse_key(record.key)
        if key is not None:
            self.found.setdefault(tp, {})[key.index] = record
        if self.seen is not None:
            self.seen(record)


async def read_latest(
    consumer: AIOKafkaConsumer,
    wanted: Mapping[str, frozenset[int] | None],
    *,
    not_before_ms: int | None = None,
    timeout_s: float = 10.0,
    seen: Callable[[Record], None] | None = None,
) -> LatestRecords:
    """The newest record per index (from the message key) of each topic's partition 0.

    ``wanted`` maps each topic to the indices that matter (None: all). Reading goes back until
    each wanted index has been seen, or the partition's beginning, or (with ``not_before_ms``)
    a record older than that Kafka timestamp. Topics that do not exist are left out. ``seen``
    is shown every record read, as it arrives.

    Raises
    ------
    SalKafkaError
        Kafka failed or was too slow.
    """
    plans = await _first_windows(consumer, wanted)
    latest: LatestRecords = {}
    deadline = time.monotonic() + timeout_s
    while plans:
        window = _Window(seen)
        await read_ranges(
            consumer,
            {tp: (plan.start, plan.stop) for tp, plan in plans.items()},
            window.keep,
            timeout_s=max(deadline - time.monotonic(), 0.001),
        )
        next_plans: dict[TopicPartition, _Plan] = {}
        for tp, plan in plans.items():
            newest = latest.setdefault(tp.topic, {})
            for index, record in window.found.get(tp, {}).items():
                # An earlier window holds older records: what is already known is newer.
                newest.setdefault(index, record)
            if _needs_more(plan, newest, window.oldest_ms.get(tp), not_before_ms):
                size = plan.window * _GROWTH
                next_plans[tp] = _Plan(
                    plan.begin, max(plan.begin, plan.start - size), plan.start, size, plan.wanted
                )
        plans = next_plans
    return latest


async def _first_windows(
    consumer: AIOKafkaConsumer, wanted: Mapping[str, frozenset[int] | None]
) -> dict[TopicPartition, _Plan]:
    try:
        existing = set(await consumer.topics())
        partitions = {
            TopicPartition(topic, 0): want for topic, want in wanted.items() if topic in existing
        }
        if not partitions:
            return {}
        begins = await consumer.beginning_offsets(list(partitions))
        ends = await consumer.end_offsets(list(partitions))
    except KafkaError as exc:
        raise SalKafkaError(f"cannot read SAL topic offsets: {exc!r}") from exc
    plans: dict[TopicPartition, _Plan] = {}
    for tp, want in partitions.items():
        begin, end = begins[tp], ends[tp]
        if end > begin:
            size = max(FIRST_WINDOW, 4 * len(want or ()))
            plans[tp] = _Plan(begin, max(begin, end - size), end, size, want)
    return plans


def _needs_more(
    plan: _Plan, newest: dict[int, Record], oldest_ms: int | None, not_before_ms: int | None
) -> bool:
    if plan.start <= plan.begin:
        return False
    if not_before_ms is not None and (oldest_ms is None or oldest_ms < not_before_ms):
        return False
    return plan.wanted is None or not plan.wanted <= newest.keys()
