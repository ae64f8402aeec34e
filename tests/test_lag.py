"""Consumer lag measured by our client against a real tansu broker, and the simulated consumers.

Producers send one record per request (tansu's end offsets are wrong after a multi-record batch).
Group state is never asserted: tansu reports a stopped consumer's group as Stable for a while.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from blocks.site import load_site_file
from clients.lag import (
    ConsumerLagClient,
    ConsumerLagError,
    ConsumerLagUnavailableError,
    GroupLag,
    LagReport,
    PartitionLag,
    UnknownPartition,
    render_lag_table,
)
from deployments import cli_lag
from sim.broker import TansuBroker, free_port
from sim.consumers import SimulatedConsumers, telegraf_connector_for
from sim.model import ModelOptions, SiteModel
from tests.conftest import SITES

TELEGRAF = "telegraf-kafka-consumer"
LOVE = "saluser@love-producer"
_unique = itertools.count()


class Kafka:
    """The module's broker with an admin client and a producer."""

    def __init__(self, broker: TansuBroker) -> None:
        self.broker = broker
        self.bootstrap = broker.bootstrap_servers
        self.admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap)

    async def topics(self, *specs: tuple[str, int]) -> None:
        await self.admin.create_topics([NewTopic(name, n, 1) for name, n in specs])

    async def produce(self, topic: str, count: int, partition: int = 0) -> None:
        for _ in range(count):
            await self.producer.send_and_wait(topic, b"sample", partition=partition)

    async def commit(self, group: str, offsets: dict[tuple[str, int], int]) -> None:
        """Commit as a group that never joins (manual assignment), like a finished consumer."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            partitions = {TopicPartition(t, p): o for (t, p), o in offsets.items()}
            consumer.assign(list(partitions))
            await consumer.commit(partitions)
        finally:
            await consumer.stop()

    async def expected_lag(
        self, group: str, partitions: list[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        """Lag computed directly: end offsets and committed offsets from aiokafka's own calls."""
        tps = [TopicPartition(t, p) for t, p in partitions]
        committed = await self.admin.list_consumer_group_offsets(group, partitions=tps)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
        await consumer.start()
        try:
            ends = await consumer.end_offsets(tps)
        finally:
            await consumer.stop()
        return {
            (tp.topic, tp.partition): max(0, ends[tp] - committed[tp].offset)
            for tp in tps
            if committed[tp].offset >= 0
        }


@pytest.fixture(scope="module")
async def kafka() -> AsyncIterator[Kafka]:
    async with TansuBroker() as broker:
        kafka = Kafka(broker)
        await kafka.admin.start()
        await kafka.producer.start()
        try:
            yield kafka
        finally:
            await kafka.producer.stop()
            await kafka.admin.close()


@pytest.fixture
async def lag_client(kafka: Kafka) -> AsyncIterator[ConsumerLagClient]:
    async with ConsumerLagClient(bootstrap_servers=kafka.bootstrap) as client:
        yield client


def unique(name: str) -> str:
    return f"{name}{next(_unique)}"


def rows(group: GroupLag) -> dict[tuple[str, int], int]:
    return {(row.topic, row.partition): row.lag for row in group.partitions}


async def wait_for(
    measure: Callable[[], Awaitable[LagReport]],
    condition: Callable[[LagReport], bool],
    *,
    timeout_s: float = 20.0,
) -> LagReport:
    """Poll until the report satisfies the condition; fail with the last report otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        report = await measure()
        if condition(report):
            return report
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s} s:\n{render_lag_table(report)}")
        await asyncio.sleep(0.2)


# -- the client --------------------------------------------------------------------------------


async def test_lag_is_end_minus_committed_per_partition_and_in_total(
    kafka: Kafka, lag_client: ConsumerLagClient
) -> None:
    component = unique("LagSum")
    event, telemetry = f"lsst.sal.{component}.logevent_x", f"lsst.sal.{component}.position"
    await kafka.topics((event, 1), (telemetry, 3))
    await kafka.produce(event, 7)
    for partition, count in enumerate((4, 0, 9)):
        await kafka.produce(telemetry, count, partition)
    prefix = unique(f"{TELEGRAF}-sum")
    offsets = {
        f"{prefix}-a": {(event, 0): 2, (telemetry, 0): 4, (telemetry, 1): 0, (telemetry, 2): 1},
        # Committed beyond the end (possible after a topic is recreated): lag 0, as kt says.
        f"{prefix}-b": {(event, 0): 7, (telemetry, 0): 0, (telemetry, 1): 0, (telemetry, 2): 30},
    }
    for group_id, committed in offsets.items():
        await kafka.commit(group_id, committed)

    report = await lag_client.consumer_lag(prefix)

    assert [group.group for group in report.groups] == sorted(offsets)
    expected_total = 0
    for group in report.groups:
        expected = await kafka.expected_lag(group.group, list(offsets[group.group]))
        assert rows(group) == expected
        assert group.lag == sum(expected.values())
        assert group.unknown_partitions == []
        expected_total += group.lag
    assert rows(report.groups[0]) == {
        (event, 0): 5,
        (telemetry, 0): 0,
        (telemetry, 1): 0,
        (telemetry, 2): 8,
    }
    assert report.total_lag == expected_total == 13 + 4
    assert report.measured_at.tzinfo is not None


async def test_partition_without_committed_offset_is_reported_unknown(
    kafka: Kafka, lag_client: ConsumerLagClient
) -> None:
    topic = f"lsst.sal.{unique('LagUnknown')}.position"
    await kafka.topics((topic, 2))
    await kafka.produce(topic, 3, partition=0)
    await kafka.produce(topic, 6, partition=1)
    group = unique(f"{TELEGRAF}-unknown")
    await kafka.commit(group, {(topic, 0): 1})

    report = await lag_client.consumer_lag(group)

    (only,) = report.groups
    assert rows(only) == {(topic, 0): 2}
    assert only.unknown_partitions == [
        UnknownPartition(
            topic=topic, partition=1, committed=None, end=6, reason="no committed offset"
        )
    ]
    # Unknown lag is not counted as 0 silently: it is out of the total and said to be so.
    assert report.total_lag == 2
    assert report.unknown_partitions == 1
    table = render_lag_table(report)
    assert f"{topic}[1]  committed=None  end_offset=6  lag=unknown (no committed offset)" in table
    assert "Unknown lag: 1 partition in 1 group" in table
    assert f"{topic}[1]" in render_lag_table(report, summary=True)


async def test_prefix_selects_telegraf_or_love_producer_groups(
    kafka: Kafka, lag_client: ConsumerLagClient
) -> None:
    component = unique("LagPrefix")
    topic = f"lsst.sal.{component}.logevent_heartbeat"
    await kafka.topics((topic, 1))
    await kafka.produce(topic, 4)
    tag = unique("p")
    telegraf = [f"{TELEGRAF}-{tag}-auxtel", f"{TELEGRAF}-{tag}-maintel"]
    love = [f"{LOVE}-{tag}-{component}-0a1b2c3d"]
    others = [f"{tag}-ScriptQueue:1-feedbeef", f"telegraf-other-{tag}"]
    for group in telegraf + love + others:
        await kafka.commit(group, {(topic, 0): 1})

    telegraf_report = await lag_client.consumer_lag(f"{TELEGRAF}-{tag}")
    love_report = await lag_client.consumer_lag(f"{LOVE}-{tag}")
    groups = await lag_client.list_groups()

    assert [group.group for group in telegraf_report.groups] == telegraf
    assert [group.group for group in love_report.groups] == love
    assert telegraf_report.total_lag == 6
    assert love_report.total_lag == 3
    assert set(telegraf + love + others) <= set(groups)
    empty = await lag_client.consumer_lag(unique("no-such-group-"))
    assert empty.groups == []
    assert empty.total_lag == 0

    # Both families and an empty one in one measurement: the same reports, of one moment.
    together = await lag_client.consumer_lags(
        [f"{TELEGRAF}-{tag}", f"{LOVE}-{tag}", unique("no-such-group-")]
    )
    assert [report.model_dump(exclude={"measured_at", "prefix"}) for report in together] == [
        report.model_dump(exclude={"measured_at", "prefix"})
        for report in (telegraf_report, love_report, empty)
    ]
    assert len({report.measured_at for report in together}) == 1


async def test_offsets_read_group_by_group_give_the_same_report(kafka: Kafka) -> None:
    """The fallbacks for brokers without OffsetFetch v8 (kt's request pattern) or without the
    pinned versions agree."""
    component = unique("LagFallback")
    topic = f"lsst.sal.{component}.position"
    await kafka.topics((topic, 2))
    await kafka.produce(topic, 5, 0)
    await kafka.produce(topic, 2, 1)
    prefix = unique(f"{TELEGRAF}-fallback")
    await kafka.commit(f"{prefix}-a", {(topic, 0): 1, (topic, 1): 2})
    await kafka.commit(f"{prefix}-b", {(topic, 0): 5})

    async with ConsumerLagClient(bootstrap_servers=kafka.bootstrap) as batched:
        first = await batched.consumer_lag(prefix)
    # Also aiokafka's own codecs at the broker's versions, instead of the pinned fast ones.
    async with ConsumerLagClient(
        bootstrap_servers=kafka.bootstrap, batch_offset_fetch=False, pinned_codecs=False
    ) as per_group:
        second = await per_group.consumer_lag(prefix)

    assert first.model_dump(exclude={"measured_at"}) == second.model_dump(exclude={"measured_at"})
    assert first.total_lag == 4
    assert [len(group.unknown_partitions) for group in first.groups] == [0, 1]


async def test_unreachable_cluster_and_missing_credentials_raise_typed_errors() -> None:
    with pytest.raises(ConsumerLagUnavailableError, match="cannot reach Kafka"):
        async with ConsumerLagClient(bootstrap_servers=f"127.0.0.1:{free_port()}"):
            pass
    with pytest.raises(ConsumerLagError, match="SASL username and password"):
        ConsumerLagClient(
            bootstrap_servers="127.0.0.1:9092",
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="ts-salkafka",
        )


def test_table_reads_like_kt_and_sets_stale_groups_apart() -> None:
    def group(name: str, lag: int, *, stale: bool) -> GroupLag:
        return GroupLag(
            group=name,
            lag=lag,
            partitions=[
                PartitionLag(
                    topic="lsst.sal.ATDome.position", partition=0, committed=1, end=1 + lag, lag=lag
                )
            ],
            unknown_partitions=[],
            stale=stale,
            state="Empty" if stale else "Stable",
            members=0 if stale else 1,
        )

    report = LagReport(
        prefix=LOVE,
        groups=[
            group(f"{LOVE}-1-ATDome-00000001", 5, stale=True),
            group(f"{LOVE}-1-ATDome-00000002", 2, stale=False),
        ],
        total_lag=7,
        measured_at=datetime.now(UTC),
    )

    table = render_lag_table(report)
    summary = render_lag_table(report, summary=True)

    assert (
        table.index("ATDome-00000002")
        < table.index("Stale groups")
        < table.index("ATDome-00000001")
    )
    assert "  lsst.sal.ATDome.position[0]  committed=1  end_offset=3  lag=2" in table
    assert "  Group total lag: 2" in table
    assert f"Combined lag for '{LOVE}*': 7" in table
    assert "in groups with members: 2; in stale groups: 5" in table
    assert "lsst.sal.ATDome.position" not in summary
    assert report.active_lag == 2
    assert "partitions" not in report.as_json(summary=True)["groups"][0]


# -- the simulated consumers -------------------------------------------------------------------


def test_every_component_has_one_telegraf_connector() -> None:
    config = load_site_file(SITES / "summit.yaml")
    connectors = [name.removeprefix("sasquatch-telegraf-") for name in config.telegraf.deployments]
    owners = {c: telegraf_connector_for(c, connectors) for c in ("MTM1M3TS", "MTM1M3", "ATDome")}
    assert owners == {"MTM1M3TS": "m1m3ts", "MTM1M3": "m1m3", "ATDome": "auxtel"}
    for component in {entry.name.name for entry in config.cscs}:
        assert telegraf_connector_for(component, connectors) in connectors


def summit_consumers(kafka: Kafka) -> tuple[SiteModel, SimulatedConsumers]:
    """The Summit's telegraf connectors and two LOVE producers on ``kafka``, not started."""
    model = SiteModel(
        load_site_file(SITES / "summit.yaml"), options=ModelOptions(love_producers=2), runner=None
    )
    consumers = SimulatedConsumers(model, kafka.bootstrap, "sal", topic_refresh_s=0.2, poll_s=0.1)
    return model, consumers


@pytest.fixture
async def summit(kafka: Kafka) -> AsyncIterator[tuple[SiteModel, SimulatedConsumers]]:
    model, consumers = summit_consumers(kafka)
    await consumers.start()
    try:
        yield model, consumers
    finally:
        await consumers.stop()
        await model.aclose()


async def test_started_consumers_have_committed_what_the_topics_hold(
    kafka: Kafka, lag_client: ConsumerLagClient
) -> None:
    # At a site the groups are always there: a flow's preflight right after the simulation
    # starts must find them, each with its offsets committed.
    component = unique("Started")
    topic = f"lsst.sal.{component}.logevent_heartbeat"
    await kafka.topics((topic, 1))
    await kafka.produce(topic, 4)
    model, consumers = summit_consumers(kafka)
    await consumers.start()
    try:
        # No waiting: read at once.
        telegraf, love = await lag_client.consumer_lags([TELEGRAF, LOVE])
        listed = await lag_client.list_groups()
    finally:
        await consumers.stop()
        await model.aclose()
    assert set(consumers.groups()) <= set(listed)
    committed = [
        (row.committed, row.lag)
        for report in (telegraf, love)
        for group in report.groups
        for row in group.partitions
        if row.topic == topic
    ]
    # Its telegraf connector read from the start, its LOVE producer from the end.
    assert committed == [(4, 0), (4, 0)]


async def test_consumers_that_do_not_commit_in_time_are_named_and_stopped(kafka: Kafka) -> None:
    topic = f"lsst.sal.{unique('Late')}.logevent_heartbeat"
    await kafka.topics((topic, 1))
    model, consumers = summit_consumers(kafka)
    try:
        # No group joins in 1 ms (tansu answers a first JoinGroup after about 1 s).
        with pytest.raises(TimeoutError, match=rf"did not commit within 0 s: .*{TELEGRAF}-"):
            await consumers.start(settle_s=0.001)
        assert consumers.groups() == {}
    finally:
        await consumers.stop()
        await model.aclose()


async def test_telegraf_lag_grows_while_scaled_to_zero_and_drains_when_scaled_back(
    kafka: Kafka, lag_client: ConsumerLagClient, summit: tuple[SiteModel, SimulatedConsumers]
) -> None:
    model, _ = summit
    # Components of three connectors; Kafka topics outlive a test, so only these are counted.
    topics = [
        f"lsst.sal.ATDome.logevent_{unique('heartbeat')}",
        f"lsst.sal.MTMount.{unique('elevation')}",
        f"lsst.sal.MTM1M3TS.{unique('thermalData')}",
    ]
    await kafka.topics(*((topic, 1) for topic in topics))
    for topic in topics:
        await kafka.produce(topic, 3)
    owners = dict(zip(topics, ("auxtel", "mtmount", "m1m3ts"), strict=True))

    def lag_by_topic(report: LagReport) -> dict[str, tuple[str, int]]:
        return {
            row.topic: (group.group.removeprefix(f"{TELEGRAF}-"), row.lag)
            for group in report.groups
            for row in group.partitions
            if row.topic in owners
        }

    def lag_is(expected: dict[str, int]) -> Callable[[LagReport], bool]:
        def check(report: LagReport) -> bool:
            wanted = {topic: (owners[topic], lag) for topic, lag in expected.items()}
            return lag_by_topic(report) == wanted

        return check

    def measure() -> Awaitable[LagReport]:
        return lag_client.consumer_lag(TELEGRAF)

    await wait_for(measure, lag_is(dict.fromkeys(topics, 0)))

    telegraf = [d for d in model.deployments.values() if d.name.startswith("sasquatch-telegraf-")]
    assert len(telegraf) == 27
    for deployment in telegraf:
        model.scale_deployment(deployment, 0)
    for topic in topics:
        await kafka.produce(topic, 5)
    await wait_for(measure, lag_is(dict.fromkeys(topics, 5)), timeout_s=5)
    await kafka.produce(topics[0], 2)
    await wait_for(measure, lag_is({topics[0]: 7, topics[1]: 5, topics[2]: 5}), timeout_s=5)

    for deployment in telegraf:
        model.scale_deployment(deployment, 1)
    drained = await wait_for(measure, lag_is(dict.fromkeys(topics, 0)))
    assert not any(
        row.topic in owners for group in drained.groups for row in group.unknown_partitions
    )


async def test_love_producer_groups_are_renamed_at_each_start_and_old_ones_linger(
    kafka: Kafka, lag_client: ConsumerLagClient, summit: tuple[SiteModel, SimulatedConsumers]
) -> None:
    model, consumers = summit
    component = unique("LoveLag")
    topic = f"lsst.sal.{component}.logevent_summaryState"
    await kafka.topics((topic, 1))
    await kafka.produce(topic, 1)

    def groups_of(report: LagReport) -> list[GroupLag]:
        return [g for g in report.groups if f"-{component}-" in g.group]

    first = await wait_for(
        lambda: lag_client.consumer_lag(LOVE),
        lambda r: [rows(g) for g in groups_of(r)] == [{(topic, 0): 0}],
    )
    (old,) = groups_of(first)
    assert old.group.startswith(f"{LOVE}-1-{component}-") or old.group.startswith(
        f"{LOVE}-2-{component}-"
    )
    assert old.group in consumers.groups()

    # cleanup_all deletes LOVE's deployments; the Argo CD sync of `love` creates them again.
    for namespace, name in list(model.deployments):
        if namespace == "love":
            model.delete_deployment(namespace, name)
    await kafka.produce(topic, 4)
    model.sync_application(model.applications["love"])

    def renewed(report: LagReport) -> bool:
        lags = {g.group: g for g in groups_of(report)}
        new = [g for name, g in lags.items() if name != old.group]
        return (
            old.group in lags
            and rows(lags[old.group]) == {(topic, 0): 4}
            and len(new) == 1
            and rows(new[0]) == {(topic, 0): 0}
        )

    await wait_for(lambda: lag_client.consumer_lag(LOVE), renewed)
    assert old.group not in consumers.groups()


# -- the command -------------------------------------------------------------------------------


def write_site_file(path: Path, bootstrap: str) -> Path:
    data: dict[str, Any] = yaml.safe_load((SITES / "summit.yaml").read_text(encoding="utf-8"))
    data["kafka"] = {
        "bootstrap_servers": bootstrap,
        "sal_subname": "sal",
        "security_protocol": "PLAINTEXT",
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rubin-upgrade")
    cli_lag.add_parser(parser.add_subparsers())
    return parser.parse_args(["lag", *argv])


async def test_lag_command_prints_kt_table_and_json(
    kafka: Kafka, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = f"lsst.sal.{unique('LagCli')}.position"
    await kafka.topics((topic, 2))
    await kafka.produce(topic, 3, 0)
    group = f"{TELEGRAF}-{unique('cli')}"
    await kafka.commit(group, {(topic, 0): 1})
    site_file = write_site_file(tmp_path / "site.yaml", kafka.bootstrap)

    assert await cli_lag.run_lag(parse("--site-file", str(site_file), "--telegraf")) == 0
    table = capsys.readouterr().out
    assert f"\nGroup: {group}" in table
    assert f"\n  {topic}[0]  committed=1  end_offset=3  lag=2\n" in table
    assert f"Combined lag for '{TELEGRAF}*': " in table

    args = parse("--site-file", str(site_file), "--telegraf", "--json")
    assert await cli_lag.run_lag(args) == 0
    data = json.loads(capsys.readouterr().out)
    (mine,) = [g for g in data["groups"] if g["group"] == group]
    assert mine["lag"] == 2
    assert mine["partitions"] == [
        {"topic": topic, "partition": 0, "committed": 1, "end": 3, "lag": 2}
    ]
    assert mine["unknown_partitions"] == [
        {
            "topic": topic,
            "partition": 1,
            "committed": None,
            "end": 0,
            "reason": "no committed offset",
        }
    ]
    assert data["total_lag"] == sum(g["lag"] for g in data["groups"])

    args = parse("--site-file", str(site_file), "--telegraf", "--json", "--summary")
    assert await cli_lag.run_lag(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert all("partitions" not in g for g in summary["groups"])
    assert {"group", "lag", "unknown_partitions"} <= set(summary["groups"][0])

    args = parse("--site-file", str(site_file), "--love-producer", "--json")
    assert await cli_lag.run_lag(args) == 0
    assert all(g["group"].startswith(LOVE) for g in json.loads(capsys.readouterr().out)["groups"])


async def test_lag_command_rejects_a_bad_site_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: Not A Site\n", encoding="utf-8")
    assert await cli_lag.run_lag(parse("--site-file", str(bad), "--love-producer")) == 2
    assert str(bad) in capsys.readouterr().err

    with pytest.raises(SystemExit):
        parse("--site-file", str(bad))  # neither --telegraf nor --love-producer


async def test_lag_command_asks_for_the_sasl_password(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RUBIN_UPGRADE_KAFKA_SASL_PASSWORD", raising=False)
    summit = str(SITES / "summit.yaml")
    assert await cli_lag.run_lag(parse("--site-file", summit, "--telegraf")) == 2
    assert "RUBIN_UPGRADE_KAFKA_SASL_PASSWORD" in capsys.readouterr().err


async def test_lag_command_reports_an_unreachable_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site_file = write_site_file(tmp_path / "site.yaml", f"127.0.0.1:{free_port()}")
    assert await cli_lag.run_lag(parse("--site-file", str(site_file), "--telegraf")) == 1
    assert "cannot reach Kafka" in capsys.readouterr().err
