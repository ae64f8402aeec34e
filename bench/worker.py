"""The measured code, one task per fresh process: ``python -m bench.worker TASK < params.json``.

A worker imports everything first, then notes its peak resident set (``ru_maxrss``), runs the
task's rounds and prints one JSON line: the seconds of each round, what it found (so that the
driver can check ours and the baseline agree) and ``rss_kib``, the growth of the peak resident
set over the rounds — the memory the measured code needed on top of the interpreter and its
imports, and ``error`` when the measured code failed (a `SalError`, a `ConsumerLagError` or a
Kafka error): what it measured before that stays in the answer. Tasks:

- ``sweep-ours``: a cold `SalClient` (and registry client) per round reads every CSC's summary
  state (``state_rounds`` times), then states and heartbeat liveness (`SalClient.statuses`,
  ``rounds`` times);
- ``sweep-naive``: the baseline, one consumer per CSC topic read in turn (`naive_sweep`), on
  all the CSCs or on a sample, then scaled to all;
- ``lag-ours``: per round, a cold `ConsumerLagClient` measures both families in one pass
  (`ConsumerLagClient.consumer_lags`, as the flow's lag wait does);
- ``lag-kt``: the baseline, kafka-tools' algorithm (`kt_lag`), one new AdminClient per family as
  each ``kt consumers <site> lag`` run makes;
- ``flow-upgrade``: one full upgrade, sampled (`bench.flowrun`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import faulthandler
import gc
import importlib
import json
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from confluent_kafka import ConsumerGroupTopicPartitions
from confluent_kafka import TopicPartition as ConfluentTopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from bench.harness import peak_rss_kib
from blocks.site import CscName, parse_csc_name
from clients.lag import ConsumerLagClient, ConsumerLagError
from clients.registry import SchemaRegistryClient
from clients.sal import SalClient, SalError
from clients.sal.codec import SalCodec, parse_key, topic_name
from clients.sal.kafka import KafkaSettings

__all__ = ["kt_lag", "naive_latest", "naive_sweep"]

_STATE = "logevent_summaryState"
_HEARTBEAT = "logevent_heartbeat"
#: Records a naive reader looks at first, from a topic's end; it reads further back 4x at a time.
_NAIVE_WINDOW = 64
_KT_TIMEOUT_S = 60.0

#: CSC -> [summary state or None, seconds since its last heartbeat or None].
Sweep = dict[str, list[float | None]]


# -- the state sweep -----------------------------------------------------------------------------


async def sweep_ours(params: dict[str, Any], answer: dict[str, Any]) -> None:
    names = [parse_csc_name(n) for n in params["names"]]
    window_s = float(params["window_s"])
    states_s: list[float] = answer.setdefault("states_s", [])
    statuses_s: list[float] = answer.setdefault("seconds", [])
    for _ in range(int(params["state_rounds"])):
        started = time.perf_counter()
        async with (
            SchemaRegistryClient(params["registry"]) as registry,
            SalClient(bootstrap_servers=params["bootstrap"], registry=registry) as sal,
        ):
            await sal.summary_states(names)
        states_s.append(time.perf_counter() - started)
    for _ in range(int(params["rounds"])):
        started = time.perf_counter()
        async with (
            SchemaRegistryClient(params["registry"]) as registry,
            SalClient(bootstrap_servers=params["bootstrap"], registry=registry) as sal,
        ):
            statuses = await sal.statuses(names, window_s)
        statuses_s.append(time.perf_counter() - started)
        answer["found"] = {
            str(csc): [
                None if status.state is None else float(status.state),
                status.heartbeat_age_s,
            ]
            for csc, status in statuses.items()
        }


async def naive_latest(
    kafka: KafkaSettings, topic: str, index: int
) -> ConsumerRecord[bytes, bytes] | None:
    """The newest record of ``index`` in ``topic``, read by a consumer of its own.

    What a script does that asks one CSC at a time (and what one salobj Remote per CSC does when
    it starts): connect, look at the end of the topic, read back until the CSC's newest record.
    """
    consumer: AIOKafkaConsumer = kafka.consumer()
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        begin = (await consumer.beginning_offsets([tp]))[tp]
        stop = (await consumer.end_offsets([tp]))[tp]
        window = _NAIVE_WINDOW
        while stop > begin:
            start = max(begin, stop - window)
            # Assigned and positioned at once: an await in between lets the consumer's own
            # offset reset (to the end) race the seek, and sometimes win.
            consumer.assign([tp])
            consumer.seek(tp, start)
            newest = None
            while await consumer.position(tp) < stop:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for record in batch.get(tp, []):
                    key = parse_key(record.key)
                    if record.offset < stop and key is not None and key.index == index:
                        newest = record
            if newest is not None:
                return newest
            stop, window = start, window * 4
        return None
    finally:
        await consumer.stop()


async def naive_sweep(
    kafka: KafkaSettings,
    registry_url: str,
    names: list[CscName],
    window_s: float,
    durations: list[float] | None = None,
) -> Sweep:
    """The baseline: every CSC in turn, a consumer per topic (summaryState, then heartbeat).

    One registry client serves the whole sweep, so each schema is fetched once: kinder to the
    baseline than one salobj Remote per CSC, which would fetch its own. ``durations`` gets the
    seconds each CSC took.
    """
    found: Sweep = {}
    async with SchemaRegistryClient(registry_url) as registry:
        codec = SalCodec(registry)
        for csc in names:
            started = time.perf_counter()
            record = await naive_latest(kafka, topic_name("sal", csc.name, _STATE), csc.index)
            state = None
            if record is not None:
                data = await codec.decode(record.value or b"")
                state = float(data["summaryState"])
            beat = await naive_latest(kafka, topic_name("sal", csc.name, _HEARTBEAT), csc.index)
            age = None
            if beat is not None and time.time() - beat.timestamp / 1000 <= window_s:
                age = max(time.time() - beat.timestamp / 1000, 0.0)
            found[str(csc)] = [state, age]
            if durations is not None:
                durations.append(time.perf_counter() - started)
    return found


async def sweep_naive(params: dict[str, Any], answer: dict[str, Any]) -> None:
    """Time the naive sweep of ``names``; ``seconds`` is scaled to ``total`` CSCs.

    When ``names`` is a sample, each CSC left out adds what a CSC after the first took on
    average: costs paid once (the first connection, the first schema) are not multiplied.
    """
    names = [parse_csc_name(n) for n in params["names"]]
    total = int(params.get("total", len(names)))
    kafka = KafkaSettings(bootstrap_servers=params["bootstrap"])
    seconds: list[float] = answer.setdefault("seconds", [])
    sampled: list[float] = answer.setdefault("sample_seconds", [])
    for _ in range(int(params["rounds"])):
        durations: list[float] = []
        started = time.perf_counter()
        found = await naive_sweep(
            kafka, params["registry"], names, float(params["window_s"]), durations
        )
        elapsed = time.perf_counter() - started
        steady = durations[1:] or durations
        sampled.append(elapsed)
        seconds.append(elapsed + (total - len(names)) * sum(steady) / len(steady))
        answer["found"] = found


# -- consumer lag --------------------------------------------------------------------------------

#: prefix -> group -> lag.
LagTotals = dict[str, dict[str, int]]


async def lag_ours(params: dict[str, Any], answer: dict[str, Any]) -> None:
    seconds: list[float] = answer.setdefault("seconds", [])
    for _ in range(int(params["rounds"])):
        started = time.perf_counter()
        async with ConsumerLagClient(bootstrap_servers=params["bootstrap"]) as client:
            reports = await client.consumer_lags(params["prefixes"])
        seconds.append(time.perf_counter() - started)
        totals: LagTotals = {r.prefix: {g.group: g.lag for g in r.groups} for r in reports}
        for report in reports:
            if report.total_lag != sum(totals[report.prefix].values()):
                raise AssertionError(f"{report.prefix}: total is not the sum of its groups")
        answer["found"] = totals


def _latest() -> Any:
    return OffsetSpec.latest()  # type: ignore[no-untyped-call]


def kt_lag(bootstrap: str, prefix: str) -> dict[str, int]:
    """``kt consumers <site> lag`` for one family, as kafka-tools computes it: lag per group.

    A new synchronous AdminClient; list the groups; one committed-offsets request per matching
    group (all sent, then all awaited); one batched latest-offset query for every partition;
    per partition ``max(0, end - committed)``, leaving out partitions without a commit.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap})
    listing = admin.list_consumer_groups()
    concurrent.futures.wait([listing], timeout=_KT_TIMEOUT_S)
    groups = [g.group_id for g in listing.result().valid if g.group_id.startswith(prefix)]
    offsets = {
        group: admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group]
        for group in groups
    }
    concurrent.futures.wait(list(offsets.values()), timeout=_KT_TIMEOUT_S)
    committed: dict[str, dict[tuple[str, int], int]] = {}
    wanted: dict[ConfluentTopicPartition, OffsetSpec] = {}
    for group, future in offsets.items():
        committed[group] = {}
        for tp in future.result().topic_partitions:
            committed[group][(tp.topic, tp.partition)] = tp.offset
            wanted[ConfluentTopicPartition(tp.topic, tp.partition)] = _latest()
    latest = admin.list_offsets(wanted) if wanted else {}
    concurrent.futures.wait(list(latest.values()), timeout=_KT_TIMEOUT_S)
    ends = {(tp.topic, tp.partition): future.result().offset for tp, future in latest.items()}
    return {
        group: sum(
            max(0, ends[key] - offset) for key, offset in by_partition.items() if offset >= 0
        )
        for group, by_partition in committed.items()
    }


async def lag_kt(params: dict[str, Any], answer: dict[str, Any]) -> None:
    seconds: list[float] = answer.setdefault("seconds", [])
    for _ in range(int(params["rounds"])):
        started = time.perf_counter()
        totals = {prefix: kt_lag(params["bootstrap"], prefix) for prefix in params["prefixes"]}
        seconds.append(time.perf_counter() - started)
        answer["found"] = totals


async def _flow_upgrade(params: dict[str, Any], answer: dict[str, Any]) -> None:
    # Imported only by this task's worker: the others need no Prefect.
    from bench.flowrun import flow_upgrade  # noqa: PLC0415

    await flow_upgrade(params, answer)


#: A task runs its rounds and fills in its answer as it goes (what it got before a failure stays).
Task = Callable[[dict[str, Any], dict[str, Any]], Coroutine[Any, Any, None]]
TASKS: dict[str, Task] = {
    "sweep-ours": sweep_ours,
    "sweep-naive": sweep_naive,
    "lag-ours": lag_ours,
    "lag-kt": lag_kt,
    "flow-upgrade": _flow_upgrade,
}


def _print_tasks() -> None:
    """Print where how many tasks wait, then one stack per such place."""
    places: dict[str, list[asyncio.Task[Any]]] = {}
    for running in asyncio.all_tasks():
        frames = running.get_stack()
        where = f"{frames[-1].f_code.co_filename}:{frames[-1].f_lineno}" if frames else "-"
        places.setdefault(where, []).append(running)
    for where, tasks in sorted(places.items(), key=lambda item: -len(item[1])):
        print(f"{len(tasks)} task(s) waiting at {where}", file=sys.stderr)
    for tasks in places.values():
        tasks[0].print_stack(file=sys.stderr)
    sys.stderr.flush()


async def _run(task: Task, params: dict[str, Any], answer: dict[str, Any]) -> None:
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _print_tasks)
    await task(params, answer)


def main() -> None:
    # A worker that overruns gets SIGUSR2 (the stacks of its threads, for blocking code) and
    # SIGUSR1 (of its asyncio tasks) before it is killed: the driver reports where it hung.
    faulthandler.register(signal.SIGUSR2, all_threads=True)
    task = TASKS[sys.argv[1]]
    if sys.argv[1] == "flow-upgrade":
        # Prefect and the flows are imports, not what the upgrade itself needs.
        importlib.import_module("bench.flowrun")
        importlib.import_module("flows.full_upgrade")
    params = json.loads(sys.stdin.read())
    gc.collect()
    before = peak_rss_kib()
    answer: dict[str, Any] = {}
    try:
        asyncio.run(_run(task, params, answer))
    except (SalError, ConsumerLagError, KafkaError) as exc:
        # A failure of the measured code is a result (its targets fail), not a crash.
        answer["error"] = f"{type(exc).__name__}: {exc}"[:500]
    answer["rss_kib"] = peak_rss_kib() - before
    answer["peak_kib"] = peak_rss_kib()
    print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
