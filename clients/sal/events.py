"""Collecting what CSCs publish on some event topics while something else happens.

`EventCollector` reads each topic from its end, from the moment it is entered, so that every
sample published in answer to what the caller does next is seen (a camera's ``endReadout`` per
image, its OODS's ``imageInOODS`` per ingested image, a script's ``logMessage``). Topics that do
not exist yet are left out and named in `EventCollector.missing`: nothing was ever published
on them, and a collector that cannot read them should not stop the caller from acting.

Nothing here imports Prefect.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from aiokafka import ConsumerRecord, TopicPartition

from clients.sal.errors import SalDecodeError, SalSchemaError
from clients.sal.kafka import END, PartitionFeed

if TYPE_CHECKING:
    from clients.sal.client import SalClient

__all__ = ["EventCollector", "EventSample", "EventWindow"]


@dataclass(frozen=True)
class EventSample:
    """One decoded sample: its component, its topic's SAL name and its fields."""

    component: str
    sal_name: str
    data: dict[str, Any]

    @property
    def index(self) -> int:
        """The SAL index of an indexed component's sample (0 otherwise)."""
        return int(self.data.get("salIndex", 0))


class EventWindow:
    """The samples of a collector from one moment on (see `EventCollector.since`)."""

    def __init__(self, collector: EventCollector, start: int) -> None:
        self._collector = collector
        self._start = start

    def of(self, component: str, sal_name: str) -> list[EventSample]:
        """The samples of one topic since the window's start, oldest first."""
        return self._collector.of(component, sal_name, since=self._start)

    async def wait_until(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """As `EventCollector.wait_until`."""
        return await self._collector.wait_until(condition, timeout_s)


class EventCollector:
    """Every sample of ``topics`` (``(component, sal_name)``) from entering to leaving.

    Parameters
    ----------
    sal
        The SAL client whose Kafka settings and codec are used.
    topics
        The events to collect, e.g. ``("ATOODS", "logevent_imageInOODS")``.
    """

    def __init__(self, sal: SalClient, topics: Iterable[tuple[str, str]]) -> None:
        self._sal = sal
        self._names = {sal.topic(component, name): (component, name) for component, name in topics}
        self._feed = PartitionFeed(sal.kafka, self._on_record, name="event-collector")
        self.samples: list[EventSample] = []
        #: Topics that did not exist when the collector was entered (nothing is read from them).
        self.missing: set[tuple[str, str]] = set()
        self._changed = asyncio.Event()

    async def __aenter__(self) -> Self:
        """Start reading every existing topic from its end.

        Raises
        ------
        SalKafkaError
            Kafka cannot be reached.
        """
        await self._feed.start()
        try:
            existing = await self._feed.existing_topics(self._names)
            self.missing = {self._names[t] for t in self._names if t not in existing}
            if existing:
                await self._feed.add({TopicPartition(topic, 0): END for topic in existing})
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
            return  # not a SAL sample this client can read: nothing to collect
        component, sal_name = self._names[record.topic]
        self.samples.append(EventSample(component, sal_name, data))
        self._changed.set()

    @property
    def mark(self) -> int:
        """A moment, for `since`: how many samples have been collected so far."""
        return len(self.samples)

    def since(self, mark: int) -> EventWindow:
        """The samples collected after ``mark`` (taken before some action began)."""
        return EventWindow(self, mark)

    def of(self, component: str, sal_name: str, *, since: int = 0) -> list[EventSample]:
        """The samples of one topic (from sample number ``since`` on), oldest first."""
        return [
            s for s in self.samples[since:] if (s.component, s.sal_name) == (component, sal_name)
        ]

    async def wait_until(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until ``condition()`` holds, checked after every new sample; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            # Cleared before the check: a sample arriving after it wakes the wait below.
            self._changed.clear()
            if condition():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
