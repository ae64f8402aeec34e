"""Figure 2: consumer lag at Summit scale, `ConsumerLagClient` against kafka-tools' algorithm.

The broker holds about 3,350 SAL topics spread over the Summit's components, some with records
in them; the Summit's 27 telegraf groups commit offsets for the topics of their components
(every topic read by exactly one connector, as `sim.consumers` assigns them) and 120
LOVE-producer groups, one per CSC, commit offsets for their component's topics. One
measurement is the lag of both families, ``telegraf-kafka-consumer`` and
``saluser@love-producer``:

- ours: a cold `ConsumerLagClient` (connected in the measurement) reads both families in one
  pass (`ConsumerLagClient.consumer_lags`, as the flow's lag wait does);
- baseline: kafka-tools' ``kt consumers <site> lag`` for each family (`bench.worker.kt_lag`):
  a new synchronous confluent-kafka AdminClient, one committed-offsets request per group.

Both must find the lag the set-up wrote, group by group; the run stops otherwise.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiokafka.admin import NewTopic
from confluent_kafka import ConsumerGroupTopicPartitions
from confluent_kafka import TopicPartition as ConfluentTopicPartition
from confluent_kafka.admin import AdminClient

from bench.harness import (
    ROOT,
    Figure,
    Options,
    Target,
    Worker,
    WorkerError,
    at_least,
    at_most,
    median,
)
from blocks.site import SiteConfig, load_site_file
from clients.sal.codec import topic_name
from clients.sal.kafka import KafkaSettings
from sim.broker import TansuBroker
from sim.consumers import telegraf_connector_for

__all__ = ["LagPlan", "figures", "plan_lag"]

SITE_FILE = ROOT / "deployments" / "sites" / "summit.yaml"
TOPICS = 3350
LOVE_GROUPS = 120
TARGET_S = 1.0
TARGET_RATIO = 5.0
_COMMIT_TIMEOUT_S = 120.0
_TOPICS_PER_REQUEST = 1000
_KINDS = ("logevent", "command", "telemetry")


@dataclass
class LagPlan:
    """What the set-up writes: topics and their record counts, groups and their offsets."""

    records: dict[str, int] = field(default_factory=dict)
    #: group -> topic -> committed offset.
    commits: dict[str, dict[str, int]] = field(default_factory=dict)
    prefixes: tuple[str, ...] = ()

    def expected(self) -> dict[str, dict[str, int]]:
        """prefix -> group -> lag, as both clients must find it."""
        return {
            prefix: {
                group: sum(max(0, self.records[t] - offset) for t, offset in offsets.items())
                for group, offsets in self.commits.items()
                if group.startswith(prefix)
            }
            for prefix in self.prefixes
        }


def plan_lag(site: SiteConfig) -> LagPlan:
    """~3,350 topics over the site's components, its telegraf groups and 120 LOVE groups.

    A topic holds 0-3 records; telegraf groups are mostly caught up (lag 0 or 1), LOVE-producer
    groups of stopped producers are further behind (committed at 0).
    """
    components = sorted({entry.name.name for entry in site.cscs})
    connectors = [d.removeprefix("sasquatch-telegraf-") for d in site.telegraf.deployments]
    connector_of = _connectors(components, connectors)
    topics_of: dict[str, list[str]] = {c: [] for c in components}
    plan = LagPlan(prefixes=(site.telegraf.group_prefix, site.love_producers.group_prefix))
    for n in range(TOPICS):
        component = components[n % len(components)]
        topic = topic_name("sal", component, f"{_KINDS[n % len(_KINDS)]}_t{n:04d}")
        topics_of[component].append(topic)
        plan.records[topic] = n % 4
    for component, topics in topics_of.items():
        group = f"{site.telegraf.group_prefix}-{connector_of[component]}"
        offsets = plan.commits.setdefault(group, {})
        for n, topic in enumerate(topics):
            offsets[topic] = max(0, plan.records[topic] - n % 2)
    for n, entry in enumerate(site.cscs[:LOVE_GROUPS]):
        group = (
            f"{site.love_producers.group_prefix}-{n % 4 + 1}-{entry.name.name}-"
            f"{secrets.token_hex(4)}"
        )
        plan.commits[group] = dict.fromkeys(topics_of[entry.name.name], 0)
    return plan


def _connectors(components: list[str], connectors: list[str]) -> dict[str, str]:
    """Each component's telegraf connector (`telegraf_connector_for`); a connector left without
    a component (scimma, backpack...: they read other topics at the site) takes one from the
    connector with the most, so that every connector's group has offsets."""
    connector_of = {c: telegraf_connector_for(c, connectors) for c in components}
    for connector in connectors:
        if connector in connector_of.values():
            continue
        counts = Counter(connector_of.values())
        busiest = max(connectors, key=lambda c: counts[c])
        moved = max(c for c, k in connector_of.items() if k == busiest)
        connector_of[moved] = connector
    return connector_of


async def _set_up(options: Options, bootstrap: str, plan: LagPlan) -> None:
    # tansu makes a few hundred topics a second, fewer on a busy machine: wait for it.
    kafka = KafkaSettings(bootstrap_servers=bootstrap, request_timeout_ms=120_000)
    admin = kafka.admin()
    await admin.start()
    try:
        names = list(plan.records)
        for start in range(0, len(names), _TOPICS_PER_REQUEST):
            await admin.create_topics(
                [NewTopic(t, 1, 1) for t in names[start : start + _TOPICS_PER_REQUEST]],
                timeout_ms=120_000,
            )
    finally:
        await admin.close()
    options.note(f"lag: {len(plan.records)} topics made")
    producer = kafka.producer()
    await producer.start()
    try:

        async def fill(topic: str, count: int) -> None:
            # One record per request: tansu's end offsets are wrong after a batch (quirk 2).
            for n in range(count):
                await producer.send_and_wait(topic, b"sample %d" % n, partition=0)

        await asyncio.gather(*(fill(t, n) for t, n in plan.records.items() if n))
    finally:
        await producer.stop()
    options.note(f"lag: {sum(plan.records.values())} records written")
    await asyncio.to_thread(_commit, bootstrap, plan)


def _commit(bootstrap: str, plan: LagPlan) -> None:
    """Commit every group's offsets (one request per group, all at once)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = [
        admin.alter_consumer_group_offsets(
            [
                ConsumerGroupTopicPartitions(
                    group, [ConfluentTopicPartition(t, 0, o) for t, o in offsets.items()]
                )
            ]
        )[group]
        for group, offsets in plan.commits.items()
    ]
    done, pending = concurrent.futures.wait(futures, timeout=_COMMIT_TIMEOUT_S)
    if pending:
        raise RuntimeError(f"{len(pending)} groups' commits did not finish")
    for future in done:
        future.result()


def _check(
    label: str, found: dict[str, dict[str, int]], expected: dict[str, dict[str, int]]
) -> None:
    if found != expected:
        wrong = [
            f"{group}: {found.get(prefix, {}).get(group)} != {lag}"
            for prefix, groups in expected.items()
            for group, lag in groups.items()
            if found.get(prefix, {}).get(group) != lag
        ]
        raise AssertionError(
            f"{label} found other lag than the set-up wrote ({len(wrong)} groups), such as "
            + "; ".join(wrong[:5])
        )


async def figures(options: Options) -> AsyncIterator[Figure]:
    rounds = 3 if options.quick else 7
    site = load_site_file(SITE_FILE)
    plan = plan_lag(site)
    expected = plan.expected()
    async with (
        Worker("lag-ours") as ours_worker,
        Worker("lag-kt") as kt_worker,
        TansuBroker() as broker,
    ):
        options.note("lag: broker up")
        await _set_up(options, broker.bootstrap_servers, plan)
        options.note("lag: set up")
        params = {
            "bootstrap": broker.bootstrap_servers,
            "prefixes": list(plan.prefixes),
            "rounds": rounds,
        }
        kt = await kt_worker.run(params, timeout_s=60 + 30 * rounds)
        options.note("lag: baseline measured")
        try:
            ours = await ours_worker.run(params, timeout_s=60 + 30 * rounds)
        except WorkerError as exc:
            # Ours hanging is a result too: its figure fails.
            ours = {"error": str(exc)}
        options.note("lag: ours measured")
    if "error" in kt:
        raise RuntimeError(f"kafka-tools' algorithm failed: {kt['error']}")
    _check("kafka-tools' algorithm", kt["found"], expected)
    error = ours.get("error", "")
    if not error:
        _check("ConsumerLagClient", ours["found"], expected)
    totals = {prefix: sum(groups.values()) for prefix, groups in expected.items()}
    # A failed measurement leaves NaN, which fails every target.
    ours_s = median(ours["seconds"]) if not error else math.nan
    kt_s = median(kt["seconds"])
    groups = sum(len(g) for g in expected.values())
    yield Figure(
        "lag-summit",
        ours_s,
        "s",
        kt_s,
        targets=(
            at_most(f"< {TARGET_S:g} s", ours_s, TARGET_S),
            at_least(f">= {TARGET_RATIO:g}x", kt_s / ours_s, TARGET_RATIO),
            # Checked above: a difference stops the run before this line.
            Target("same totals", met=not error),
        ),
        detail=(
            f"{len(plan.records)} topics, {groups} groups, both families per measurement, "
            f"median of {rounds}; totals "
            + ", ".join(f"{prefix}* {total}" for prefix, total in totals.items())
        ),
        error=f"ConsumerLagClient failed: {error}" if error else "",
    )
    yield Figure(
        "memory-lag-summit",
        ours["rss_kib"] / 1024 if "rss_kib" in ours else math.nan,
        "MiB",
        kt["rss_kib"] / 1024,
        detail="growth of the worker's peak RSS over its rounds (ru_maxrss)",
        error="" if "rss_kib" in ours else "not measured: the worker was stopped",
    )
