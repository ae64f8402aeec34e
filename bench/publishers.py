"""Simulated CSCs publishing, in a process of their own: ``python -m bench.publishers KIND ...``.

Each prints ``ready <count>`` once its CSCs publish and runs until SIGTERM or SIGINT:

- ``fleet BOOTSTRAP REGISTRY SITE_FILE``: a `CscFleet` running the site's CSC inventory, which
  registers every schema, publishes its summary states and beats every second;
- ``synthetic BOOTSTRAP REGISTRY LAYOUT``: the summaryState and heartbeat topics of many CSCs
  (`synthetic_names`), written straight with the codec in SAL's wire format with registered
  schemas: each CSC's summary-state history, then a heartbeat per CSC every second.

Both first give every heartbeat topic a history (`backfill_heartbeats`): at a site these topics
have been written every second for days (compaction never touches the active segment), so a
reader of their tail always finds a full window of records; a fresh broker would flatter it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka.admin import NewTopic

from bench.harness import until_stopped
from bench.layouts import HEARTBEAT_PERIOD_S, LAYOUTS, path, synthetic_names
from blocks.site import CscName, load_site_file
from clients.registry import SchemaRegistryClient
from clients.sal.codec import TopicWriter, message_key, private_stamps, topic_name, value_subject
from clients.sal.history import FIRST_WINDOW
from clients.sal.kafka import KafkaSettings, SalProducer, heartbeat_topic
from sim.csc import CscFleet
from sim.sal_schemas import GENERIC_TOPICS, avro_schema, indexed_components

__all__ = ["HEARTBEAT_BACKLOG", "backfill_heartbeats", "fleet", "synthetic"]

#: Old heartbeats written to each heartbeat topic first: more than the SAL client reads back at
#: first (`clients.sal.history.FIRST_WINDOW`, 32 records), as any topic at a site holds.
HEARTBEAT_BACKLOG = 320
_BATCH_BYTES = 256 * 1024
_STATE = "logevent_summaryState"
_HEARTBEAT = "logevent_heartbeat"
_LANES = 8


async def backfill_heartbeats(
    kafka: KafkaSettings,
    registry_url: str,
    names: Iterable[CscName],
    depth: int,
    writers: dict[str, TopicWriter] | None = None,
) -> None:
    """Write ``depth`` heartbeats to each component's heartbeat topic, one second apart per
    CSC and ending a second ago, with the schema registered for the topic.

    At a site each heartbeat is a record batch of its own (salobj writes one a second per CSC),
    and a fetch answers with whole batches. So the newest records, those a reader of the tail
    asks for (`tail_depth`), are written as single-record batches, a round of one per topic at
    a time; only the older ones go in multi-record batches, which are quicker to write. Written
    all in big batches, a read of the last 32 records would get the whole history of each
    topic (~37 KB) and cost its reader 10 times more than at a site. tansu's end offset is right
    after a single-record write (test-servers.md, quirk 2). ``writers`` (by component) spare
    asking the registry for the schemas.
    """
    by_component: dict[str, list[CscName]] = {}
    for name in names:
        by_component.setdefault(name.name, []).append(name)
    producer = kafka.producer(max_batch_size=_BATCH_BYTES)
    await producer.start()
    limit = asyncio.Semaphore(16)
    tails: dict[str, list[tuple[int, bytes, bytes]]] = {}

    async def fill(schema_registry: SchemaRegistryClient, component: str) -> None:
        cscs = by_component[component]
        topic = topic_name("sal", component, _HEARTBEAT)
        async with limit:
            writer = (writers or {}).get(component)
            if writer is None:
                latest = await schema_registry.get_latest(value_subject(topic))
                writer = TopicWriter.create(topic, latest.schema_id, latest.avro_schema)
            records = _heartbeats(cscs, writer, depth)
            split = max(depth - tail_depth(len(cscs)), 0)
            tails[topic] = records[split:]
            batch = producer.create_batch()
            for stamp, key, value in records[:split]:
                if batch.append(timestamp=stamp, key=key, value=value) is None:
                    await (await producer.send_batch(batch, topic, partition=0))
                    batch = producer.create_batch()
                    batch.append(timestamp=stamp, key=key, value=value)
            if batch.record_count():
                await (await producer.send_batch(batch, topic, partition=0))

    async def single(topic: str, record: tuple[int, bytes, bytes]) -> None:
        batch = producer.create_batch()
        batch.append(timestamp=record[0], key=record[1], value=record[2])
        await (await producer.send_batch(batch, topic, partition=0))

    try:
        async with SchemaRegistryClient(registry_url) as schema_registry:
            await asyncio.gather(*(fill(schema_registry, c) for c in by_component))
        # A round writes one record to every topic: aiokafka sends a round in a request or a
        # few, and each topic's records stay in order.
        for round_ in range(max(map(len, tails.values()), default=0)):
            await asyncio.gather(
                *(
                    single(t, records[round_])
                    for t, records in tails.items()
                    if round_ < len(records)
                )
            )
    finally:
        await producer.stop()


def _heartbeats(
    cscs: list[CscName], writer: TopicWriter, depth: int
) -> list[tuple[int, bytes, bytes]]:
    """``depth`` heartbeats (timestamp, key, value), the CSCs in turn, a second apart per CSC and
    ending a second ago, oldest first."""
    # One encoded value per CSC: readers of the tail look at keys and timestamps.
    values = []
    for csc in cscs:
        fields: dict[str, object] = {**private_stamps(), "private_identity": str(csc)}
        if csc.index:
            fields["salIndex"] = csc.index
        values.append((message_key(csc, _HEARTBEAT), writer.encode(fields)[1]))
    newest_ms = int((time.time() - HEARTBEAT_PERIOD_S) * 1000)
    period_ms = int(HEARTBEAT_PERIOD_S * 1000)
    return [
        (newest_ms - (depth - 1 - n) // len(values) * period_ms, *values[n % len(values)])
        for n in range(depth)
    ]


def tail_depth(cscs: int) -> int:
    """How many of a heartbeat topic's newest records are single-record batches: what the SAL
    client reads first (`clients.sal.history.FIRST_WINDOW`, or 4 per CSC). Not more: tansu
    looks for a fetch's offset through the partition's batches one by one (reading the last 32
    records of 200 partitions takes 0.4 s at 40 batches deep and 1.6 s at 400), where Kafka
    has an index."""
    return max(FIRST_WINDOW, 4 * cscs)


async def fleet(bootstrap: str, registry_url: str, site_file: str) -> None:
    site = load_site_file(site_file)
    async with CscFleet(
        bootstrap_servers=bootstrap,
        registry_url=registry_url,
        indexed=indexed_components(site.cscs),
        heartbeat_interval_s=HEARTBEAT_PERIOD_S,
        # Set-up speed only: the CSCs of a component share one registration of each schema
        # (the registry would answer the repeats with the same ids), and the command reader,
        # which this benchmark never uses, polls its ~400 empty partitions slowly.
        registration_reuse_s=3600.0,
        command_fetch_wait_ms=1000,
    ) as csc_fleet:
        started = await csc_fleet.start_many(site.cscs)
        missing = [str(name) for name, csc in started.items() if csc is None]
        if missing:
            raise RuntimeError(f"{len(missing)} CSCs did not start: {csc_fleet.failures}")
        await backfill_heartbeats(
            csc_fleet.kafka, registry_url, (e.name for e in site.cscs), HEARTBEAT_BACKLOG
        )
        # Every CSC beats once more: the newest heartbeat is live, the end offsets are right.
        await asyncio.sleep(1.2 * HEARTBEAT_PERIOD_S)
        print(f"ready {len(started)}", flush=True)
        await until_stopped()


async def _make_topics(kafka: KafkaSettings, components: list[str]) -> None:
    # tansu makes a few hundred topics a second, fewer on a busy machine: wait for it.
    admin = dataclasses.replace(kafka, request_timeout_ms=120_000).admin()
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(topic_name("sal", c, s), 1, 1, topic_configs={"cleanup.policy": "compact"})
                for c in components
                for s in (_STATE, _HEARTBEAT)
            ],
            timeout_ms=120_000,
        )
    finally:
        await admin.close()


async def _register(
    registry_url: str, components: list[str], indexed: set[str]
) -> dict[tuple[str, str], TopicWriter]:
    """Register each topic's schema, as the CSC would when it starts; a writer per topic."""
    writers: dict[tuple[str, str], TopicWriter] = {}
    limit = asyncio.Semaphore(16)

    async def register(
        schema_registry: SchemaRegistryClient, component: str, sal_name: str
    ) -> None:
        schema = avro_schema(component, GENERIC_TOPICS[sal_name], indexed=component in indexed)
        topic = topic_name("sal", component, sal_name)
        async with limit:
            schema_id = await schema_registry.register(value_subject(topic), schema)
        writers[(component, sal_name)] = TopicWriter.create(topic, schema_id, schema)

    async with SchemaRegistryClient(registry_url) as schema_registry:
        await asyncio.gather(
            *(register(schema_registry, c, s) for c in components for s in (_STATE, _HEARTBEAT))
        )
    return writers


@dataclass(frozen=True)
class _Sender:
    """Writes one CSC's messages of one topic, on its own producer lane."""

    producer: SalProducer
    writer: TopicWriter
    csc: CscName
    key: bytes
    lane: int

    async def send(self, **values: int) -> int:
        def build() -> tuple[bytes, int]:
            fields = {**private_stamps(), **values, "private_identity": str(self.csc)}
            if self.csc.index:
                fields["salIndex"] = self.csc.index
            record, value = self.writer.encode(fields)
            return value, int(record["private_efdStamp"] * 1000)

        return await self.producer.send(self.writer.topic, self.key, build, lane=self.lane)


async def _beat_forever(beats: list[_Sender]) -> None:
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    while True:
        next_at += HEARTBEAT_PERIOD_S
        await asyncio.sleep(max(next_at - loop.time(), 0.0))
        await asyncio.gather(*(beat.send() for beat in beats))


async def synthetic(bootstrap: str, registry_url: str, layout: str) -> None:
    names = synthetic_names(layout)
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    components = sorted({n.name for n in names})
    await _make_topics(kafka, components)
    writers = await _register(registry_url, components, {n.name for n in names if n.index})
    producer = await SalProducer.start(kafka, lanes=_LANES, overlapping=heartbeat_topic)
    try:
        await producer.prepare(w.topic for w in writers.values())
        senders = {
            sal_name: [
                _Sender(producer, writers[(n.name, sal_name)], n, message_key(n, sal_name), lane)
                for lane, n in enumerate(names)
            ]
            for sal_name in (_STATE, _HEARTBEAT)
        }

        async def history(position: int) -> None:
            for state in path(position):
                await senders[_STATE][position].send(summaryState=int(state))

        await asyncio.gather(*(history(p) for p in range(len(names))))
        await backfill_heartbeats(
            kafka,
            registry_url,
            names,
            HEARTBEAT_BACKLOG,
            {c: w for (c, sal_name), w in writers.items() if sal_name == _HEARTBEAT},
        )
        await asyncio.gather(*(beat.send() for beat in senders[_HEARTBEAT]))
        print(f"ready {len(names)}", flush=True)
        beating = asyncio.create_task(_beat_forever(senders[_HEARTBEAT]))
        try:
            await until_stopped()
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
    finally:
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.publishers")
    kinds = parser.add_subparsers(dest="kind", required=True)
    fleet_args = kinds.add_parser("fleet")
    synthetic_args = kinds.add_parser("synthetic")
    for sub in (fleet_args, synthetic_args):
        sub.add_argument("bootstrap")
        sub.add_argument("registry")
    fleet_args.add_argument("site_file")
    synthetic_args.add_argument("layout", choices=sorted(LAYOUTS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.kind == "fleet":
        asyncio.run(fleet(args.bootstrap, args.registry, args.site_file))
    else:
        asyncio.run(synthetic(args.bootstrap, args.registry, args.layout))


if __name__ == "__main__":
    main()
