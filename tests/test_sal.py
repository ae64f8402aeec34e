"""SAL over Kafka end to end: the client against simulated CSCs on tansu and our registry.

Every test names its own CSCs: the broker and the registry live for the whole session, so old
topics still hold the states earlier tests left.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import os
import signal
import time
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from blocks.site import CscEntry, CscName, State
from clients.registry import CompatibilityLevel, SchemaRegistryClient
from clients.sal import (
    CommandAborted,
    CommandFailed,
    CommandNoPermission,
    CommandTimedOut,
    NoAckError,
    SalClient,
    SalRetCode,
    SalSchemaError,
    StateWaitTimeout,
    TransitionError,
    alive,
    gone,
    in_state,
)
from clients.sal.codec import SalCodec, message_key, parse_key, unpack_value
from clients.sal.errors import CommandError
from clients.sal.kafka import END, KafkaSettings, PartitionFeed, SalProducer, heartbeat_topic
from sim.broker import TansuBroker
from sim.csc import ALL_COMMANDS, CscBehaviour, CscFleet, Outgoing, SimulatedCsc
from sim.sal_schemas import component_schemas
from tests.conftest import REFERENCE, FleetUnderTest, RegistryServer

_serial = itertools.count(1)
WINDOW_S = 1.0  # liveness window for a fleet beating every 0.2 s


def fresh(prefix: str, *, indexed: bool = False) -> CscName:
    """A CSC name no other test uses: the broker keeps every topic for the session."""
    number = next(_serial)
    if indexed:
        return CscName(name=f"{prefix}X", index=number)
    return CscName(name=f"{prefix}{number}")


class Launcher(Protocol):
    async def __call__(self, name: CscName | CscEntry, **options: Any) -> SimulatedCsc: ...


@pytest.fixture
async def launch(csc_fleet: FleetUnderTest) -> AsyncIterator[Launcher]:
    """Start CSCs in the module's fleet; the ones still running are stopped after the test."""
    started: list[CscName] = []

    async def start(name: CscName | CscEntry, **options: Any) -> SimulatedCsc:
        csc = await csc_fleet.fleet.launch(name, **options)
        assert csc is not None, csc_fleet.fleet.failures
        started.append(csc.name)
        return csc

    yield start
    for name in started:
        await csc_fleet.fleet.stop(name)


async def eventually(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 (the fleet offers no event for this)
            await asyncio.sleep(0.01)


async def read_topic(broker: TansuBroker, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Everything a topic holds, raw."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.assign([tp])
        consumer.seek(tp, 0)
        records: list[ConsumerRecord[bytes, bytes]] = []
        while len(records) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            records.extend(batch.get(tp, []))
        return records
    finally:
        await consumer.stop()


# --- Reading states and heartbeats ------------------------------------------------------------


async def test_summary_states_and_heartbeats(launch: Launcher, sal_client: SalClient) -> None:
    first, second = fresh("Probe", indexed=True), fresh("Probe", indexed=True)
    plain = fresh("Plain")
    await launch(first)
    await launch(second, initial_state=State.ENABLED)
    await launch(plain)
    never = CscName(name=first.name, index=first.index + 1000)
    absent = fresh("Absent")

    states = await sal_client.summary_states([first, second, plain, never, absent])
    assert states == {
        first: State.STANDBY,
        second: State.ENABLED,
        plain: State.STANDBY,
        never: None,
        absent: None,
    }
    ages = await sal_client.heartbeats([first, second, plain, never, absent], WINDOW_S)
    assert ages[never] is None
    assert ages[absent] is None
    for csc in (first, second, plain):
        age = ages[csc]
        assert age is not None
        assert age < WINDOW_S
    assert await sal_client.alive([first, absent], WINDOW_S) == {first: True, absent: False}
    statuses = await sal_client.statuses([second], WINDOW_S)
    assert statuses[second].state is State.ENABLED
    assert statuses[second].alive(WINDOW_S)


async def test_a_csc_whose_heartbeat_write_hangs_does_not_silence_the_others(
    launch: Launcher, sal_client: SalClient
) -> None:
    """Real CSCs beat each on its own: one stuck write (a busy topic) must not hold the rest."""
    stuck, steady = fresh("Stuck"), fresh("Steady")
    blocked = await launch(stuck)
    await launch(steady)
    outgoing = blocked.outgoing
    release = asyncio.Event()

    async def hanging_outgoing(sal_name: str, **values: Any) -> Outgoing:
        if sal_name == "logevent_heartbeat":
            await release.wait()
        return await outgoing(sal_name, **values)

    blocked.outgoing = hanging_outgoing  # type: ignore[method-assign]
    try:
        await asyncio.sleep(2.0)  # ten heartbeat periods of the fleet
        ages = await sal_client.heartbeats([stuck, steady], 5.0)
    finally:
        release.set()
    steady_age, stuck_age = ages[steady], ages[stuck]
    assert steady_age is not None
    assert steady_age < 0.6, ages
    assert stuck_age is not None
    assert stuck_age > 1.5, ages


async def test_the_cscs_of_one_component_beat_together_each_as_itself(
    launch: Launcher,
    csc_fleet: FleetUnderTest,
    tansu_broker: TansuBroker,
    schema_registry: RegistryServer,
) -> None:
    """A component's CSCs beat in shared requests (900 ESS at 1 Hz, one request each, swamp
    tansu), yet each heartbeat is the CSC's own: its key and salIndex, its seqNums in order,
    and every CSC beats at the fleet's interval."""
    first = fresh("Beat", indexed=True)
    cscs = [CscName(name=first.name, index=first.index + i) for i in range(40)]
    for csc in cscs:
        await launch(csc)
    await asyncio.sleep(1.5)  # about seven beats at the fleet's 0.2 s
    topic = csc_fleet.fleet.topic(first.name, "logevent_heartbeat")
    records = await read_topic(tansu_broker, topic)
    registry = SchemaRegistryClient(schema_registry.url)
    try:
        codec = SalCodec(registry)
        seq_nums: dict[int, list[int]] = {}
        for record in records:
            key = parse_key(record.key)
            assert key is not None
            value = await codec.decode(record.value or b"")
            assert value["salIndex"] == key.csc.index
            seq_nums.setdefault(key.csc.index, []).append(value["private_seqNum"])
    finally:
        await registry.aclose()
    assert set(seq_nums) == {csc.index for csc in cscs}
    for index, numbers in seq_nums.items():
        assert numbers == sorted(numbers), (index, numbers)
        assert len(numbers) >= 5, (index, numbers)


async def test_send_batch_writes_each_message_once_in_order(tansu_broker: TansuBroker) -> None:
    """More messages than fit one request (16 KiB): split, none lost, none twice, in order; and
    the partition's end offset is right after it (tansu's is wrong after a multi-record batch
    until a single-record write)."""
    settings = KafkaSettings(bootstrap_servers=tansu_broker.bootstrap_servers)
    topic = f"lsst.sal.Batch{next(_serial)}.logevent_heartbeat"
    producer = await SalProducer.start(settings)
    built: list[int] = []

    def builder(n: int) -> Callable[[], tuple[bytes, int]]:
        def build() -> tuple[bytes, int]:
            built.append(n)
            return f"{n:0200d}".encode(), 1_700_000_000_000 + n

        return build

    try:
        await producer.send(topic, None, builder(-1))  # makes the topic
        await producer.send_batch(topic, [(f"k{n}".encode(), builder(n)) for n in range(300)])
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=tansu_broker.bootstrap_servers)
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        assert (await consumer.end_offsets([partition]))[partition] == 301
    finally:
        await consumer.stop()
    records = (await read_topic(tansu_broker, topic))[1:]
    assert built == [-1, *range(300)]
    assert [r.key for r in records] == [f"k{n}".encode() for n in range(300)]
    assert [int(r.value or b"") for r in records] == list(range(300))
    assert [r.timestamp for r in records] == [1_700_000_000_000 + n for n in range(300)]


async def test_board_waits_and_names_the_cscs_still_short(
    launch: Launcher, sal_client: SalClient
) -> None:
    ready, lagging = fresh("Board"), fresh("Board")
    await launch(ready, initial_state=State.ENABLED)
    await launch(lagging)
    async with sal_client.state_board([ready, lagging]) as board:
        statuses = await board.wait_for(State.ENABLED, [ready], deadline_s=2.0)
        assert statuses[ready].state is State.ENABLED
        started = time.monotonic()
        with pytest.raises(StateWaitTimeout) as caught:
            await board.wait_for(in_state(State.ENABLED), [ready, lagging], deadline_s=0.3)
        assert time.monotonic() - started < 1.0
        assert set(caught.value.short) == {lagging}
        assert "STANDBY" in caught.value.short[lagging]
        assert str(lagging) in str(caught.value)
        assert "in ENABLED" in str(caught.value)


async def test_board_sees_a_csc_whose_topics_appear_later(
    launch: Launcher, sal_client: SalClient
) -> None:
    late = fresh("Late")
    async with sal_client.state_board([late]) as board:
        assert board.state(late) is None
        await launch(late)
        await board.wait_for(State.STANDBY, [late], deadline_s=5.0)


# --- Commands and their acks ------------------------------------------------------------------


async def test_command_complete_and_what_goes_on_the_wire(
    launch: Launcher,
    sal_client: SalClient,
    tansu_broker: TansuBroker,
    registry_client: SchemaRegistryClient,
) -> None:
    """The Test component, so that what is written can be held against salobj's recording."""
    name = CscName(name="Test", index=5000 + next(_serial))
    csc = await launch(name)
    ack = await sal_client.command(name, "start", {"configurationOverride": ""}, timeout_s=5)
    assert (ack.ack, ack.error, ack.result) == (SalRetCode.CMD_COMPLETE, 0, "Done")
    assert ack.ok
    assert ack.cmdtype == 10  # as recorded from salobj for Test's start
    assert (ack.identity, ack.origin) == (sal_client.identity, sal_client.origin)
    assert 0 < ack.seq_num < 2**31

    latest = await registry_client.get_latest("lsst.sal.Test.command_start-value")
    commands = [
        r
        for r in await read_topic(tansu_broker, "lsst.sal.Test.command_start")
        if parse_key(r.key) == parse_key(message_key(name, "command_start"))
    ]
    (command,) = commands
    assert command.key == message_key(name, "command_start")
    assert command.headers == ()
    schema_id, _ = unpack_value(command.value)
    assert command.value[0] == 0
    assert schema_id == latest.schema_id
    sent = await sal_client.codec.decode(command.value)
    assert sent["salIndex"] == name.index
    assert sent["private_seqNum"] == ack.seq_num
    assert sent["private_identity"] == sal_client.identity
    assert "@" in sent["private_identity"]
    assert sent["private_origin"] == sal_client.origin
    assert sent["private_sndStamp"] - sent["private_efdStamp"] == pytest.approx(37.0)
    assert sent["private_kafkaStamp"] == sent["private_sndStamp"]
    assert sent["private_rcvStamp"] == 0.0
    assert command.timestamp == int(sent["private_efdStamp"] * 1000)

    acks = [
        r
        for r in await read_topic(tansu_broker, "lsst.sal.Test.ackcmd")
        if r.key == message_key(name, "ackcmd")
    ]
    answer = await sal_client.codec.decode(acks[-1].value)
    assert answer["private_seqNum"] == ack.seq_num
    assert answer["private_identity"] == f"Test:{name.index}"
    assert answer["private_origin"] == csc.origin
    assert (answer["identity"], answer["origin"]) == (sal_client.identity, sal_client.origin)
    assert answer["salIndex"] == name.index

    states = [
        r
        for r in await read_topic(tansu_broker, "lsst.sal.Test.logevent_summaryState")
        if r.key == message_key(name, "logevent_summaryState")
    ]
    published = [await sal_client.codec.decode(r.value) for r in states]
    assert [d["summaryState"] for d in published] == [State.STANDBY, State.DISABLED]
    assert [d["private_seqNum"] for d in published] == [1, 2]
    if REFERENCE.is_dir():
        recorded = json.loads(
            (REFERENCE / "salobj-wire" / "logevent_summaryState.messages.json").read_text()
        )[0]["decoded"]
        assert published[0].keys() == recorded.keys()
        assert published[0]["private_revCode"] == recorded["private_revCode"]
        assert (
            sent.keys()
            == json.loads((REFERENCE / "salobj-wire" / "command_start.messages.json").read_text())[
                0
            ]["decoded"].keys()
        )


async def test_failed_command_carries_the_cscs_reason(
    launch: Launcher, sal_client: SalClient
) -> None:
    name = fresh("Failing")
    await launch(name)
    with pytest.raises(CommandFailed) as caught:
        await sal_client.command(name, "enable", timeout_s=5)
    assert caught.value.reason == "Failed: enable not allowed in state <State.STANDBY: 5>"
    assert caught.value.ack.ack == SalRetCode.CMD_FAILED
    assert caught.value.ack.error == 1
    assert caught.value.ack.cmdtype == component_cmdtype(name, "enable")


def component_cmdtype(name: CscName, command: str) -> int:
    ordered = sorted(component_schemas(name.name, indexed=False))
    return ordered.index(f"command_{command}")


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (SalRetCode.CMD_NOPERM, CommandNoPermission),
        (SalRetCode.CMD_TIMEOUT, CommandTimedOut),
        (SalRetCode.CMD_ABORTED, CommandAborted),
        (SalRetCode.CMD_STALLED, CommandFailed),
    ],
)
async def test_every_final_ack_has_its_error(
    launch: Launcher,
    sal_client: SalClient,
    code: SalRetCode,
    error: type[CommandError],
) -> None:
    name = fresh("Acks")
    behaviour = CscBehaviour(forced_acks={"start": (code, f"simulated {code.name}")})
    await launch(name, behaviour=behaviour)
    with pytest.raises(error) as caught:
        await sal_client.command(name, "start", timeout_s=5)
    assert caught.value.ack.ack == code
    assert caught.value.reason == f"simulated {code.name}"


async def test_in_progress_extends_the_wait(launch: Launcher, sal_client: SalClient) -> None:
    """An IN_PROGRESS ack extends a command's wait past its timeout. The timeouts leave a busy
    CI machine a second for the first ack (0.2 s was once too short with two test workers)."""
    name = fresh("Slow")
    await launch(name, behaviour=CscBehaviour(in_progress_s=2.0))
    started = time.monotonic()
    ack = await sal_client.command(name, "start", timeout_s=1.0)
    assert ack.ok
    assert time.monotonic() - started >= 2.0

    waiting = CscName(name="Test", index=6000 + next(_serial))
    await launch(waiting)
    ack = await sal_client.command(waiting, "wait", {"duration": 2.0}, timeout_s=1.0)
    assert ack.ok
    assert ack.cmdtype == 11  # Test's wait, as recorded from salobj


async def test_no_final_ack_in_time(launch: Launcher, sal_client: SalClient) -> None:
    name = fresh("Mute")
    await launch(name, behaviour=CscBehaviour(ignores=frozenset({ALL_COMMANDS})))
    started = time.monotonic()
    with pytest.raises(NoAckError) as caught:
        await sal_client.command(name, "start", timeout_s=0.4)
    assert 0.4 <= time.monotonic() - started < 1.5
    assert caught.value.last is None
    assert isinstance(caught.value, TimeoutError)

    slow = fresh("Slow")
    behaviour = CscBehaviour(in_progress_s=0.2, in_progress_work_s=3.0)
    await launch(slow, behaviour=behaviour)
    started = time.monotonic()
    with pytest.raises(NoAckError) as late:
        await sal_client.command(slow, "start", timeout_s=0.4)
    assert 0.6 <= time.monotonic() - started < 2.0
    assert late.value.last is not None
    assert late.value.last.ack == SalRetCode.CMD_INPROGRESS


async def test_acks_for_other_senders_are_ignored(launch: Launcher, sal_client: SalClient) -> None:
    """Acks that differ in identity, origin or index from the command are someone else's,
    even with the same seqNum: they are written first, and only the CSC's own counts."""
    target = fresh("Shared", indexed=True)
    neighbour = CscName(name=target.name, index=target.index + 500)
    csc = await launch(target, behaviour=CscBehaviour(answer_delay_s=0.6))
    other = await launch(neighbour)
    task = asyncio.create_task(sal_client.command(target, "start", timeout_s=5))
    await eventually(lambda: bool(csc.commands_received))
    _, data = csc.commands_received[-1]
    failed = SalRetCode.CMD_FAILED
    await csc.ack("start", {**data, "private_identity": "someone@else"}, failed, result="x")
    await csc.ack("start", {**data, "private_origin": data["private_origin"] + 1}, failed)
    await other.ack("start", data, failed, result="Failed: wrong index")
    ack = await task
    assert ack.ok


async def test_command_to_a_component_without_schemas(sal_client: SalClient) -> None:
    with pytest.raises(SalSchemaError, match="no schema registered"):
        await sal_client.command(fresh("Nowhere"), "start", timeout_s=1)


async def test_commands_are_in_the_write_log(
    launch: Launcher, csc_fleet: FleetUnderTest, sal_client: SalClient
) -> None:
    name = fresh("Logged")
    await launch(name)
    await sal_client.command(name, "start", {"configurationOverride": "night.yaml"}, timeout_s=5)
    (record,) = [r for r in csc_fleet.write_log.records if r.target == str(name)]
    assert (record.service, record.method) == ("sal", "start")
    assert record.body["identity"] == sal_client.identity
    assert record.body["params"] == {"configurationOverride": "night.yaml"}
    assert record.body["state"] == "STANDBY"


# --- State transitions ------------------------------------------------------------------------


async def test_transitions_choose_their_path(
    launch: Launcher, csc_fleet: FleetUnderTest, sal_client: SalClient
) -> None:
    name = fresh("Path", indexed=True)
    await launch(name)
    async with sal_client.state_board([name]) as board:
        acks = await sal_client.set_summary_state(name, State.ENABLED, board=board, timeout_s=5)
        assert [a.command for a in acks] == ["start", "enable"]
        assert board.state(name) is State.ENABLED
        assert await sal_client.set_summary_state(name, State.ENABLED, board=board) == []
        acks = await sal_client.set_summary_state(name, State.STANDBY, board=board, timeout_s=5)
        assert [a.command for a in acks] == ["disable", "standby"]
        assert csc_fleet.fleet.state_of(name) is State.STANDBY

        await csc_fleet.fleet.fault(name, "Simulated hardware trouble")
        await board.wait_for(State.FAULT, [name], deadline_s=3)
        acks = await sal_client.set_summary_state(name, State.STANDBY, board=board, timeout_s=5)
        assert [a.command for a in acks] == ["standby"]
    methods = [r.method for r in csc_fleet.write_log.records if r.target == str(name)]
    assert methods == ["start", "enable", "disable", "standby", "standby"]
    with pytest.raises(TransitionError):
        await sal_client.set_summary_state(name, State.FAULT)


async def test_fault_on_a_command(launch: Launcher, sal_client: SalClient) -> None:
    name = fresh("Faulty")
    await launch(name, behaviour=CscBehaviour(fault_on=frozenset({"start"})))
    with pytest.raises(CommandFailed, match="simulated fault on start"):
        await sal_client.set_summary_state(name, State.ENABLED, timeout_s=5)
    assert (await sal_client.summary_states([name]))[name] is State.FAULT


async def test_exit_control_reports_offline_and_goes_silent(
    launch: Launcher, csc_fleet: FleetUnderTest, sal_client: SalClient
) -> None:
    name = fresh("Leaving")
    await launch(name)
    acks = await sal_client.set_summary_state(name, State.OFFLINE, timeout_s=5)
    assert [a.command for a in acks] == ["exitControl"]
    assert (await sal_client.summary_states([name]))[name] is State.OFFLINE
    assert name not in csc_fleet.fleet.running
    assert (str(name), False, "") in csc_fleet.exits
    async with sal_client.state_board([name]) as board:
        await board.wait_for(gone(WINDOW_S), [name], deadline_s=3)
    assert (await sal_client.heartbeats([name], WINDOW_S))[name] is None
    with pytest.raises(TransitionError, match="not running"):
        await sal_client.set_summary_state(name, State.STANDBY, heartbeat_window_s=WINDOW_S)


async def test_never_reports_offline_is_confirmed_by_silence(
    launch: Launcher, csc_fleet: FleetUnderTest, sal_client: SalClient
) -> None:
    """Like the VMS cRIOs (``never_reports_offline`` in the site file): STANDBY stays the last
    state it reports, so only the absence of heartbeats says it is gone."""
    name = fresh("Crio", indexed=True)
    entry = CscEntry(name=name, bare_metal="cRIO", never_reports_offline=True)
    await launch(entry)
    started = time.monotonic()
    acks = await sal_client.set_summary_state(
        name, State.OFFLINE, timeout_s=5, heartbeat_window_s=WINDOW_S
    )
    assert [a.command for a in acks] == ["exitControl"]
    assert time.monotonic() - started >= WINDOW_S
    assert (await sal_client.summary_states([name]))[name] is State.STANDBY
    assert (await sal_client.alive([name], WINDOW_S))[name] is False
    assert (str(name), False, "") in csc_fleet.exits


async def test_a_board_reading_behind_takes_no_csc_for_gone(
    launch: Launcher, csc_fleet: FleetUnderTest, sal_client: SalClient
) -> None:
    """A board's feed can fall behind (a busy broker or process): heartbeats seem to stop where
    they have not. Neither a wait for silence nor a transition to OFFLINE may take that for a
    CSC that is gone; both read the topic's end first."""
    name = fresh("Behind")
    await launch(name)
    async with sal_client.state_board([name]) as board:
        await board.wait_for(State.STANDBY, [name], deadline_s=5)
        board._feed.pause()  # the feed reads behind: nothing new arrives
        await asyncio.sleep(WINDOW_S * 1.5)
        assert not board.status(name).alive(WINDOW_S)  # the feed alone says "gone"
        with pytest.raises(StateWaitTimeout):
            await board.wait_for(gone(WINDOW_S), [name], deadline_s=0.5)
        await asyncio.sleep(WINDOW_S * 1.5)
        acks = await sal_client.set_summary_state(
            name, State.OFFLINE, board=board, timeout_s=5, heartbeat_window_s=WINDOW_S
        )
    assert [a.command for a in acks] == ["exitControl"]
    assert name not in csc_fleet.fleet.running


# --- Schema registration ----------------------------------------------------------------------


async def test_forward_refusal_keeps_a_csc_from_starting(
    launch: Launcher,
    csc_fleet: FleetUnderTest,
    sal_client: SalClient,
    registry_client: SchemaRegistryClient,
    schema_registry: RegistryServer,
) -> None:
    name = fresh("Upgraded")
    await launch(name)
    await csc_fleet.fleet.stop(name)
    subject = f"lsst.sal.{name.name}.logevent_heartbeat-value"
    changed = component_schemas(name.name, indexed=False)["logevent_heartbeat"]
    for field in changed["fields"]:
        if field["name"] == "heartbeat":
            field["type"], field["default"] = "string", ""
    fleet = csc_fleet.fleet
    fleet.image_schemas["c0045"] = {name.name: {"logevent_heartbeat": changed}}

    assert await fleet.start(name, image="c0045") is None
    assert name not in fleet.running
    reason = fleet.failures[name]
    assert subject in reason
    assert "409" in reason
    assert (str(name), True, reason) in csc_fleet.exits
    assert schema_registry.state.compatibility(subject) == "FORWARD"
    await asyncio.sleep(0.5)
    assert (await sal_client.heartbeats([name], 0.4))[name] is None  # not even briefly alive

    # What the procedure does: switch the registry to NONE, then the CSC starts.
    await registry_client.set_compatibility(CompatibilityLevel.NONE, subject)
    csc = await fleet.start(name, image="c0045")
    assert csc is not None
    assert name not in fleet.failures
    assert (await sal_client.summary_states([name]))[name] is State.STANDBY


# --- The fleet as the Kubernetes model drives it ---------------------------------------------


async def test_a_csc_starts_again_after_it_exits(
    csc_fleet: FleetUnderTest, sal_client: SalClient
) -> None:
    """A Job recreated after ``exitControl``: the new process reads its commands again."""
    name = fresh("Again", indexed=True)
    sibling = CscName(name=name.name, index=name.index + 1)
    fleet = csc_fleet.fleet
    for _ in range(2):
        assert await fleet.start(name, image="c0045") is not None
        await sal_client.set_summary_state(name, State.OFFLINE, timeout_s=5)
        assert name not in fleet.running
    # Exiting and starting at once, as a sync may do with a component's two indices.
    assert await fleet.start(sibling) is not None
    starting = fleet.start(name)
    await sal_client.set_summary_state(sibling, State.OFFLINE, timeout_s=5)
    assert await starting is not None
    assert [a.command for a in await sal_client.set_summary_state(name, State.DISABLED)] == [
        "start"
    ]
    fleet.kill(name)
    assert name not in fleet.running


async def test_starting_a_running_csc_again_is_refused(launch: Launcher) -> None:
    name = fresh("Twice")
    csc = await launch(name)
    fleet = csc.fleet
    assert await fleet.start(name) is None  # the model's fire-and-forget start only logs
    with pytest.raises(ValueError, match="already running"):
        await fleet.launch(name)


async def test_a_component_without_summary_state(launch: Launcher, sal_client: SalClient) -> None:
    """Scripts (component Script, index 100000 and up) have no summaryState, only heartbeats."""
    name = CscName(name="Script", index=100_000 + next(_serial))
    csc = await launch(name, behaviour=CscBehaviour(heartbeat_interval_s=0.4))
    assert "logevent_summaryState" not in csc.schemas
    assert (await sal_client.summary_states([name]))[name] is None
    assert (await sal_client.heartbeats([name], WINDOW_S))[name] is not None


async def test_board_reads_a_component_without_summary_state_by_its_heartbeats(
    launch: Launcher, sal_client: SalClient
) -> None:
    """LOVE and the Scripts have no state machine, nor a summaryState topic: a board waiting
    for one to be up sees its heartbeats (it used to wait for the missing topic forever)."""
    name = CscName(name="Script", index=100_000 + next(_serial))
    await launch(name, behaviour=CscBehaviour(heartbeat_interval_s=0.2))
    async with sal_client.state_board([name]) as board:
        statuses = await board.wait_for(alive(WINDOW_S), [name], deadline_s=5.0)
    assert statuses[name].state is None


async def test_initial_states_apply_to_the_next_start_only(
    csc_fleet: FleetUnderTest, sal_client: SalClient
) -> None:
    name = fresh("Before")
    fleet = csc_fleet.fleet
    fleet.initial_states[name] = State.ENABLED
    assert await fleet.start(name) is not None
    assert (await sal_client.summary_states([name]))[name] is State.ENABLED
    await fleet.stop(name)
    assert await fleet.start(name) is not None
    assert (await sal_client.summary_states([name]))[name] is State.STANDBY
    await fleet.stop(name)


async def test_a_feed_closes_its_consumer_on_every_path(tansu_broker: TansuBroker) -> None:
    """A watch that is stopped before it started (an error on the way in, a cancelled run)
    still closes its consumer: aiokafka warns about any consumer left open."""
    settings = KafkaSettings(bootstrap_servers=tansu_broker.bootstrap_servers)

    async def ignore(record: ConsumerRecord[bytes, bytes]) -> None:
        del record

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        never_started = PartitionFeed(settings, ignore, name="never-started")
        await never_started.stop()
        started = PartitionFeed(settings, ignore, name="started")
        await started.start()
        await started.stop()
        await started.stop()  # twice is harmless
        del never_started, started
        gc.collect()
    unclosed = [str(w.message) for w in seen if "Unclosed" in str(w.message)]
    assert unclosed == []


async def test_a_feed_rides_out_a_broker_that_stalls_while_it_is_positioned() -> None:
    """A broker too busy to answer the end-offsets request in time is asked again: the watch
    that needed it (a command's acks, a board) starts late rather than failing the run."""
    async with TansuBroker() as broker:
        assert broker.pid is not None
        settings = KafkaSettings(
            bootstrap_servers=broker.bootstrap_servers, request_timeout_ms=1000
        )
        producer = settings.producer()
        await producer.start()
        seen: list[bytes | None] = []

        async def keep(record: ConsumerRecord[bytes, bytes]) -> None:
            seen.append(record.value)

        feed = PartitionFeed(settings, keep, name="stalled")
        try:
            await producer.send_and_wait("stalled", b"before", partition=0)
            await feed.start()
            os.kill(broker.pid, signal.SIGSTOP)
            try:
                adding = asyncio.create_task(feed.add({TopicPartition("stalled", 0): END}))
                await asyncio.sleep(1.5)  # past one request's time limit
                assert not adding.done()
            finally:
                os.kill(broker.pid, signal.SIGCONT)
            async with asyncio.timeout(10):
                await adding
            await producer.send_and_wait("stalled", b"after", partition=0)
            await eventually(lambda: seen == [b"after"])
        finally:
            await feed.stop()
            await producer.stop()


async def test_a_paused_feed_asks_nothing_and_misses_nothing(tansu_broker: TansuBroker) -> None:
    """A command's ack feed is paused while no command waits: what is written meanwhile, to
    its partitions or to one added while paused, is read once it resumes."""
    settings = KafkaSettings(bootstrap_servers=tansu_broker.bootstrap_servers)
    first, second = (f"paused-{n}-{next(_serial)}" for n in (1, 2))
    producer = settings.producer()
    await producer.start()
    seen: list[bytes] = []

    async def keep(record: ConsumerRecord[bytes, bytes]) -> None:
        seen.append(record.value or b"")

    feed = PartitionFeed(settings, keep, name="paused")
    try:
        for topic in (first, second):
            await producer.send_and_wait(topic, b"old", partition=0)
        await feed.start()
        await feed.add({TopicPartition(first, 0): END})
        feed.pause()
        await producer.send_and_wait(first, b"while paused", partition=0)
        await feed.add({TopicPartition(second, 0): END})
        assert feed.paused
        await producer.send_and_wait(second, b"added while paused", partition=0)
        await asyncio.sleep(0.5)  # many fetch waits: a running feed would have read both
        assert seen == []
        feed.resume()
        await eventually(lambda: sorted(seen) == [b"added while paused", b"while paused"])

        # Focused on one topic: it is read at once, the other only once it is fetched again.
        seen.clear()
        feed.focus([second])
        await producer.send_and_wait(first, b"out of focus", partition=0)
        await producer.send_and_wait(second, b"in focus", partition=0)
        await eventually(lambda: seen == [b"in focus"])
        await asyncio.sleep(0.5)
        assert seen == [b"in focus"]
        feed.focus([first])
        await eventually(lambda: seen == [b"in focus", b"out of focus"])
    finally:
        await feed.stop()
        await producer.stop()


async def test_csc_hear_commands_after_a_quiet_spell_and_in_a_burst(
    tansu_broker: TansuBroker, schema_registry: RegistryServer, sal_client: SalClient
) -> None:
    """Once no command has come for a while the fleet fetches commands less often (tansu reads
    every command partition at every fetch); the next command is still heard, and the burst
    that follows it at the short wait again."""
    async with CscFleet(
        bootstrap_servers=tansu_broker.bootstrap_servers,
        registry_url=schema_registry.url,
        registry_transport=httpx.ASGITransport(app=schema_registry.app),
        heartbeat_interval_s=0.2,
        command_fetch_wait_ms=20,
        command_idle_fetch_wait_ms=400,
        command_idle_after_s=0.2,
    ) as fleet:
        name = fresh("Quiet", indexed=True)
        csc = await fleet.launch(name)
        assert csc is not None, fleet.failures
        for pause_s in (1.0, 1.0, 0.0, 0.0, 0.0):
            await asyncio.sleep(pause_s)  # past the 0.2 s: the idle wait
            ack = await sal_client.command(name, "setLogLevel", {"level": 10}, timeout_s=5)
            assert ack.ok
        assert [command for command, _ in csc.commands_received] == ["setLogLevel"] * 5


@pytest.mark.parametrize("overlap", [False, True])
async def test_lanes_write_a_shared_topic_in_turn_but_heartbeats_at_once(
    tansu_broker: TansuBroker, overlap: bool
) -> None:
    """tansu, written by two connections at once, can leave a partition's end offset one short
    (1 in ~400 under load), and a cold read of the latest states then misses the newest: two
    CSCs' lanes write a shared topic in turn. Heartbeats may overlap (a missed newest beat only
    ages a CSC by one beat)."""
    settings = KafkaSettings(bootstrap_servers=tansu_broker.bootstrap_servers)
    suffix = "logevent_heartbeat" if overlap else "logevent_summaryState"
    topic = f"lsst.sal.Lanes{next(_serial)}.{suffix}"
    producer = await SalProducer.start(settings, lanes=2, overlapping=heartbeat_topic)
    events: list[str] = []

    def builder(n: int) -> Callable[[], tuple[bytes, int]]:
        def build() -> tuple[bytes, int]:
            events.append(f"build {n}")
            return b"x", int(time.time() * 1000)

        return build

    async def send(n: int) -> None:
        await producer.send(topic, None, builder(n), lane=n)
        events.append(f"sent {n}")

    try:
        await send(0)  # the topic exists, both lanes know it
        await producer.send(topic, None, builder(1), lane=1)
        events.clear()
        await asyncio.gather(send(0), send(1))
    finally:
        await producer.stop()
    if overlap:
        assert events[:2] == ["build 0", "build 1"], events
    else:
        assert events == ["build 0", "sent 0", "build 1", "sent 1"], events
