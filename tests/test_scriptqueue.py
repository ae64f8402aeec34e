"""Scripts on the simulated ScriptQueues, run and followed with the project's SAL client.

Two simulated sites, one per test class so that only one set of queues answers at a time: a
test stand with the telescopes' CSCs (minimal testing, outcomes of `run_script`), and the
whole Summit inventory (the procedure's shutdown). The broker and registry are the session's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

import httpx
import jsonschema
import pytest

from blocks.site import CscEntry, CscName, SiteConfig, State, load_site_file
from clients.registry import SchemaRegistryClient
from clients.sal import (
    CommandFailed,
    SalClient,
    ScriptAddFailed,
    ScriptOutcome,
    ScriptProcessState,
    ScriptQueueNotEnabled,
    ScriptState,
    ScriptTimeout,
    alive,
    gone,
    queue_status,
    resume_queue,
    run_script,
    stop_scripts,
    wait_for_script,
)
from sim.broker import TansuBroker
from sim.csc import CscBehaviour, CscFleet
from sim.observatory import ObservatoryModel, ObservatoryTiming, SiteCapabilities
from sim.sal_schemas import indexed_components
from sim.scriptqueue import ScriptQueueSim
from sim.scripts import SCRIPTS, EventStream, ScriptTiming
from sim.writelog import WriteLog
from tests.conftest import SITES, RegistryServer

MT_QUEUE, AT_QUEUE, OCS_QUEUE = 1, 2, 3
QUEUES = [CscName(name="ScriptQueue", index=i) for i in (MT_QUEUE, AT_QUEUE, OCS_QUEUE)]
#: Real-time durations shrink 100-fold; protocol limits are set per site below.
TIME_SCALE = 0.01
RUN_TIMEOUT_S = 30.0
RAISE_TIMEOUT_S = 2.0

TEST_STAND_CSCS = [
    *QUEUES,
    *(
        CscName(name=name, index=0)
        for name in (
            "Watcher",
            "ATMCS",
            "ATPtg",
            "ATAOS",
            "ATPneumatics",
            "ATHexapod",
            "ATDome",
            "ATDomeTrajectory",
            "ATCamera",
            "ATSpectrograph",
            "ATHeaderService",
            "ATOODS",
            "MTMount",
            "MTPtg",
            "MTAOS",
            "MTM1M3",
            "MTM2",
            "MTRotator",
            "MTDome",
            "MTDomeTrajectory",
            "MTCamera",
            "MTHeaderService",
            "MTOODS",
        )
    ),
    CscName(name="MTHexapod", index=1),
    CscName(name="MTHexapod", index=2),
]


@dataclass
class SimSite:
    """A simulated site with its queues and hardware, and an operator's SAL client."""

    fleet: CscFleet
    queues: ScriptQueueSim
    observatory: ObservatoryModel
    write_log: WriteLog
    sal: SalClient


@contextlib.asynccontextmanager
async def simulated_site(
    broker: TansuBroker,
    registry: RegistryServer,
    cscs: Iterable[CscEntry | CscName],
    *,
    capabilities: SiteCapabilities,
    timing: ScriptTiming,
    heartbeat_interval_s: float,
) -> AsyncIterator[SimSite]:
    entries = list(cscs)
    names = [e.name if isinstance(e, CscEntry) else e for e in entries]
    write_log = WriteLog()
    transport = httpx.ASGITransport(app=registry.app)
    # M1M3 raises in 1.2 s and gives a stalled raise up after 1 s.
    observatory = ObservatoryModel(
        capabilities, ObservatoryTiming(time_scale=TIME_SCALE, m1m3_stall_abort_s=100.0)
    )
    async with (
        CscFleet(
            bootstrap_servers=broker.bootstrap_servers,
            registry_url=registry.url,
            registry_transport=transport,
            indexed=indexed_components(names),
            write_log=write_log,
            heartbeat_interval_s=heartbeat_interval_s,
            command_fetch_wait_ms=20,
        ) as fleet,
        ScriptQueueSim(
            fleet, registry_url=registry.url, registry_transport=transport, timing=timing
        ) as queues,
        SchemaRegistryClient(registry.url) as registry_client,
        SalClient(bootstrap_servers=broker.bootstrap_servers, registry=registry_client) as sal,
    ):
        observatory.install(fleet)
        try:
            started = await fleet.start_many(entries)
            assert fleet.failures == {}
            assert all(started.values())
            yield SimSite(fleet, queues, observatory, write_log, sal)
        finally:
            await queues.aclose()
            await observatory.aclose()


def sal_commands(site: SimSite, *, identity: str | None = None) -> list[tuple[str, str]]:
    """(target, command) of every SAL command the simulated CSCs received, in order."""
    return [
        (r.target, r.method)
        for r in site.write_log.records
        if r.service == "sal" and (identity is None or r.body.get("identity") == identity)
    ]


# --- A test stand: outcomes and minimal testing ------------------------------------------------


@pytest.fixture(scope="class")
async def stand(
    tansu_broker: TansuBroker, schema_registry: RegistryServer
) -> AsyncIterator[SimSite]:
    timing = ScriptTiming(
        time_scale=TIME_SCALE,
        discovery_window_s=1.0,
        shutdown_transition_timeout_s=2.0,
        set_summary_state_timeout_s=5.0,
        group_timeout_s=5.0,
        command_timeout_s=5.0,
        m1m3_raise_timeout_s=RAISE_TIMEOUT_S,
    )
    async with simulated_site(
        tansu_broker,
        schema_registry,
        TEST_STAND_CSCS,
        capabilities=SiteCapabilities.for_site("bts"),
        timing=timing,
        heartbeat_interval_s=0.2,
    ) as site:
        for queue in QUEUES:
            csc = site.fleet.running[queue]
            await csc.publish_state(State.ENABLED)
        yield site


class TestTestStand:
    async def test_a_script_that_works_is_done(self, stand: SimSite) -> None:
        watcher = CscName(name="Watcher", index=0)
        result = await stand.sal.run_script(
            OCS_QUEUE,
            "set_summary_state.py",
            {"data": [["Watcher", "DISABLED"]], "mute_alarms": False},
            timeout_s=RUN_TIMEOUT_S,
        )
        assert result.outcome is ScriptOutcome.DONE, stand.queues.log_lines(result.script_index)
        assert result.ok
        assert result.script_index >= OCS_QUEUE * 100_000
        assert result.process_state is ScriptProcessState.DONE
        assert result.script_state is ScriptState.DONE
        assert result.configured_at is not None
        assert result.started_at is not None
        assert result.ended_at is not None
        assert result.configured_at <= result.started_at <= result.ended_at
        assert result.duration_s is not None
        assert result.duration_s >= 0
        assert (await stand.sal.summary_states([watcher]))[watcher] is State.DISABLED
        # The script commanded the Watcher itself, as SAL user Script:<index>.
        assert sal_commands(stand, identity=f"Script:{result.script_index}") == [
            ("Watcher:0", "start")
        ]
        # Put it back for the other tests.
        await stand.sal.set_summary_state(watcher, State.STANDBY, heartbeat_window_s=1.0)

    async def test_the_published_ignore_under_set_summary_state_fails_configuration(
        self, stand: SimSite
    ) -> None:
        # The procedure's configuration as published (rubin-systems.md §1): `ignore` is not a
        # field of set_summary_state.py, so the script never runs and no queue goes OFFLINE.
        published = """
data:
  - [ScriptQueue:3, OFFLINE]
  - [ScriptQueue:2, OFFLINE]
  - [ScriptQueue:1, OFFLINE]
ignore:
  - MTM1M3
  - MTM1M3TS
mute_alarms: false
"""
        before = len(stand.write_log)
        result = await run_script(
            stand.sal, MT_QUEUE, "set_summary_state.py", published, timeout_s=RUN_TIMEOUT_S
        )
        assert result.outcome is ScriptOutcome.CONFIGURE_FAILED
        assert result.process_state is ScriptProcessState.CONFIGURE_FAILED
        assert result.started_at is None
        assert result.duration_s is None
        assert any(
            "'ignore' was unexpected" in line
            for line in stand.queues.log_lines(result.script_index)
        )
        assert [r for r in stand.write_log.records[before:] if r.method != "add"] == []
        states = await stand.sal.summary_states(QUEUES)
        assert set(states.values()) == {State.ENABLED}
        # A configuration failure does not pause the queue.
        assert (await queue_status(stand.sal, MT_QUEUE)).running

    async def test_a_failed_script_pauses_the_queue_until_resume(self, stand: SimSite) -> None:
        # ATDome is in STANDBY: it refuses openShutter, so the script fails.
        failing = await run_script(
            stand.sal,
            AT_QUEUE,
            "run_command.py",
            {"component": "ATDome", "cmd": "openShutter", "parameters": {}},
            timeout_s=RUN_TIMEOUT_S,
        )
        assert failing.outcome is ScriptOutcome.FAILED
        assert failing.script_state is ScriptState.FAILED
        assert any(
            "openShutter not allowed in state=<State.STANDBY: 5>" in line
            for line in stand.queues.log_lines(failing.script_index)
        )
        status = await queue_status(stand.sal, AT_QUEUE)
        assert status.paused
        assert status.current_index == failing.script_index

        follower = asyncio.create_task(
            run_script(
                stand.sal,
                AT_QUEUE,
                "run_command.py",
                {"component": "ATCamera", "cmd": "setLogLevel", "parameters": {"level": 10}},
                timeout_s=RUN_TIMEOUT_S,
            )
        )
        try:
            async with asyncio.timeout(10):
                while not (await queue_status(stand.sal, AT_QUEUE)).queued:  # noqa: ASYNC110 (polled as an operator would)
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            assert not follower.done(), "a paused queue must not run the next script"
            assert (await queue_status(stand.sal, AT_QUEUE)).paused

            await resume_queue(stand.sal, AT_QUEUE)
            after = await follower
        finally:
            follower.cancel()
        assert after.outcome is ScriptOutcome.DONE
        status = await queue_status(stand.sal, AT_QUEUE)
        assert status.running
        assert status.past[:2] == [after.script_index, failing.script_index]

    async def test_a_queue_that_is_not_enabled_is_a_typed_error(self, stand: SimSite) -> None:
        queue = CscName(name="ScriptQueue", index=OCS_QUEUE)
        await stand.sal.set_summary_state(queue, State.DISABLED, heartbeat_window_s=1.0)
        try:
            with pytest.raises(ScriptQueueNotEnabled) as raised:
                await run_script(
                    stand.sal,
                    OCS_QUEUE,
                    "set_summary_state.py",
                    {"data": [["Watcher", "STANDBY"]]},
                    timeout_s=RUN_TIMEOUT_S,
                )
            assert raised.value.state is State.DISABLED
            # The queue itself refuses, with salobj's words.
            with pytest.raises(CommandFailed, match=r"add not allowed in state=<State.DISABLED"):
                await stand.sal.command(queue, "add", {"path": "run_command.py", "location": 2})
        finally:
            await stand.sal.set_summary_state(queue, State.ENABLED, heartbeat_window_s=1.0)

    async def test_adding_an_unknown_path_or_location_fails(self, stand: SimSite) -> None:
        # The published page's MainTel enable script does not exist.
        with pytest.raises(ScriptAddFailed, match=r"Cannot find script .*maintel/enable_atcs.py"):
            await run_script(stand.sal, MT_QUEUE, "maintel/enable_atcs.py", timeout_s=5.0)
        queue = CscName(name="ScriptQueue", index=MT_QUEUE)
        with pytest.raises(CommandFailed, match="Unknown location 0"):
            await stand.sal.command(
                queue, "add", {"isStandard": True, "path": "run_command.py", "location": 0}
            )

    async def test_auxtel_takes_images_that_the_oods_ingests(self, stand: SimSite) -> None:
        async def run(path: str, config: dict[str, object] | None = None) -> None:
            result = await run_script(stand.sal, AT_QUEUE, path, config, timeout_s=RUN_TIMEOUT_S)
            assert result.ok, (path, stand.queues.log_lines(result.script_index))

        oods = CscName(name="ATOODS", index=0)
        camera = CscName(name="ATCamera", index=0)
        async with (
            EventStream(stand.sal, oods, "logevent_imageInOODS") as ingested,
            EventStream(stand.sal, camera, "logevent_endReadout") as readouts,
        ):
            await run("auxtel/enable_atcs.py")
            await run("auxtel/enable_latiss.py")
            await run(
                "run_command.py",
                {
                    "component": "ATCamera",
                    "cmd": "play",
                    "parameters": {"playlist": "bias", "repeat": True},
                },
            )
            await run("auxtel/track_target.py", {"slew_icrs": {"ra": 18, "dec": -20}})
            await run(
                "auxtel/take_image_latiss.py",
                {
                    "nimages": 3,
                    "image_type": "BIAS",
                    "program": "IntegrationTesting",
                    "reason": "minimal_testing",
                },
            )
            taken = [(await readouts.next(5.0))["imageName"] for _ in range(3)]
            seen = [await ingested.next(5.0) for _ in range(3)]
            with pytest.raises(TimeoutError):
                await ingested.next(0.5)
        assert [s["obsid"] for s in seen] == taken
        assert all(s["camera"] == "LATISS" and s["raft"] == "R00" for s in seen)
        assert all(
            name.startswith("AT_O_") and len(name) == len("AT_O_20261127_000001") for name in taken
        )
        assert stand.observatory.state.playlists["ATCamera"] == ("bias", True)
        await run("auxtel/stop_tracking.py")
        await run("auxtel/standby_atcs.py")
        states = await stand.sal.summary_states([CscName(name="ATMCS", index=0), camera])
        assert states == {CscName(name="ATMCS", index=0): State.STANDBY, camera: State.ENABLED}

    async def test_a_test_stand_without_images_tracks_but_cannot_take_them(
        self, stand: SimSite
    ) -> None:
        stand.observatory.capabilities = SiteCapabilities.for_site("tts")
        try:
            result = await run_script(
                stand.sal,
                AT_QUEUE,
                "auxtel/take_image_latiss.py",
                {"nimages": 1, "image_type": "BIAS"},
                timeout_s=RUN_TIMEOUT_S,
            )
            assert result.outcome is ScriptOutcome.FAILED
            assert any(
                "no image source" in line for line in stand.queues.log_lines(result.script_index)
            )
            await resume_queue(stand.sal, AT_QUEUE)
        finally:
            stand.observatory.capabilities = SiteCapabilities.for_site("bts")

    async def test_m1m3_raises_only_when_pointed_high(self, stand: SimSite) -> None:
        async def run(path: str, config: dict[str, object] | None = None) -> ScriptOutcome:
            result = await run_script(stand.sal, MT_QUEUE, path, config, timeout_s=RUN_TIMEOUT_S)
            return result.outcome

        assert await run("maintel/enable_mtcs.py") is ScriptOutcome.DONE
        # At low elevation the raise hangs: the script gives up after its limit.
        started = time.monotonic()
        assert await run("maintel/m1m3/raise_m1m3.py") is ScriptOutcome.FAILED
        assert time.monotonic() - started >= RAISE_TIMEOUT_S
        await resume_queue(stand.sal, MT_QUEUE)
        assert await run("maintel/point_azel.py", {"az": 0, "el": 80}) is ScriptOutcome.DONE
        assert await run("maintel/m1m3/raise_m1m3.py") is ScriptOutcome.DONE
        assert stand.observatory.state.m1m3.name == "ACTIVE"
        track = {
            "target_name": "HD164461",
            "rot_value": 80.0,
            "rot_type": "PhysicalSky",
            "track_for": 30,
        }
        assert await run("maintel/track_target.py", track) is ScriptOutcome.DONE
        assert await run("maintel/stop_tracking.py") is ScriptOutcome.DONE

    async def test_a_running_script_can_be_stopped_or_terminated(self, stand: SimSite) -> None:
        enabled = await run_script(stand.sal, AT_QUEUE, "auxtel/enable_atcs.py", timeout_s=30)
        assert enabled.ok
        long_track = {"slew_icrs": {"ra": 1.0, "dec": -30.0}, "track_for": 3000}
        for terminate, outcome in (
            (False, ScriptOutcome.STOPPED),
            (True, ScriptOutcome.TERMINATED),
        ):
            running = asyncio.create_task(
                run_script(
                    stand.sal,
                    AT_QUEUE,
                    "auxtel/track_target.py",
                    long_track,
                    timeout_s=RUN_TIMEOUT_S,
                )
            )
            try:
                async with asyncio.timeout(10):
                    while not (status := await queue_status(stand.sal, AT_QUEUE)).current_index:  # noqa: ASYNC110 (polled as an operator would)
                        await asyncio.sleep(0.05)
                    # Stop it while it tracks, once its slew command was acknowledged.
                    identity = f"Script:{status.current_index}"
                    while ("ATPtg:0", "raDecTarget") not in sal_commands(stand, identity=identity):  # noqa: ASYNC110 (the write log has no event)
                        await asyncio.sleep(0.05)
                    await asyncio.sleep(0.2)
                started = time.monotonic()
                await stop_scripts(stand.sal, AT_QUEUE, [status.current_index], terminate=terminate)
                result = await running
            finally:
                running.cancel()
            assert result.outcome is outcome
            assert time.monotonic() - started < 5.0
        assert (await queue_status(stand.sal, AT_QUEUE)).running

    async def test_system_wide_shutdown_reports_the_cscs_that_did_not_go_offline(
        self, stand: SimSite
    ) -> None:
        # Last in this class: it shuts the whole test stand down but its queues.
        stuck = CscName(name="ATHexapod", index=0)
        stand.fleet.set_behaviour(stuck, CscBehaviour(ignores=frozenset({"exitControl"})))
        shut = {"Watcher", "ATHexapod", "ATDome"}
        kept = [n for n in TEST_STAND_CSCS if n.name not in shut]
        ignore = sorted({n.name for n in kept} - {"ScriptQueue"})
        result = await run_script(
            stand.sal,
            OCS_QUEUE,
            "system_wide_shutdown.py",
            {"user": "tester", "reason": "test", "start_with": ["Watcher"], "ignore": ignore},
            timeout_s=60.0,
        )
        assert result.outcome is ScriptOutcome.FAILED
        lines = stand.queues.log_lines(result.script_index)
        assert any(
            "A total of 1 components failed to transition to offline." in line for line in lines
        )
        assert any("ATHexapod:0::" in line for line in lines)
        commands = sal_commands(stand, identity=f"Script:{result.script_index}")
        assert [c for c in commands if c[1] == "exitControl"] == [
            ("Watcher:0", "exitControl"),
            ("ATDome:0", "exitControl"),
            ("ATHexapod:0", "exitControl"),
        ]
        async with stand.sal.state_board(TEST_STAND_CSCS) as board:
            await board.wait_for(
                gone(1.0), [CscName(name=n, index=0) for n in ("Watcher", "ATDome")], deadline_s=5.0
            )
            await board.wait_for(alive(1.0), [*kept, stuck], deadline_s=5.0)


def test_every_script_schema_is_a_valid_json_schema() -> None:
    for path, script in SCRIPTS.items():
        schema = script.schema()
        if schema is not None:
            jsonschema.Draft7Validator.check_schema(schema)
            assert schema.get("additionalProperties") is False or path.endswith("end_of_night.py")
    assert "maintel/enable_atcs.py" not in SCRIPTS


# --- The Summit: shutting the control system down ---------------------------------------------


@pytest.fixture(scope="class")
def summit() -> SiteConfig:
    return load_site_file(SITES / "summit.yaml")


SUMMIT_WINDOW_S = 2.0
MUTE_TIMEOUT_S = 2.0


@pytest.fixture(scope="class")
async def summit_site(
    summit: SiteConfig, tansu_broker: TansuBroker, schema_registry: RegistryServer
) -> AsyncIterator[SimSite]:
    # The procedure's rule for the Summit: MTM1M3TS stays ENABLED, MTM1M3 DISABLED.
    keep = {"MTM1M3TS": State.ENABLED, "MTM1M3": State.DISABLED}
    entries = [
        e.model_copy(update={"expected_state": keep[e.name.name]}) if e.name.name in keep else e
        for e in summit.cscs
    ]
    timing = ScriptTiming(
        time_scale=TIME_SCALE,
        discovery_window_s=SUMMIT_WINDOW_S,
        shutdown_transition_timeout_s=10.0,
        set_summary_state_timeout_s=10.0,
        mute_timeout_s=MUTE_TIMEOUT_S,
    )
    async with simulated_site(
        tansu_broker,
        schema_registry,
        entries,
        capabilities=SiteCapabilities.for_site("summit"),
        timing=timing,
        heartbeat_interval_s=0.5,
    ) as site:
        yield site


class TestSummitShutdown:
    async def test_system_wide_shutdown_leaves_the_queues_and_m1m3(
        self, summit: SiteConfig, summit_site: SimSite
    ) -> None:
        site = summit_site
        names = [e.name for e in summit.cscs]
        assert len(names) == 122
        site.write_log.clear()
        started = time.perf_counter()
        result = await site.sal.run_script(
            MT_QUEUE,
            "system_wide_shutdown.py",
            {
                "user": "upgrade-flow",
                "reason": "Cycle upgrade",
                "start_with": ["Watcher"],
                "ignore": ["MTM1M3", "MTM1M3TS"],
            },
            timeout_s=300.0,
        )
        elapsed = time.perf_counter() - started
        print(
            f"\nSummit-wide system_wide_shutdown took {elapsed:.1f} s (script ran "
            f"{result.duration_s:.1f} s)"
        )
        assert result.outcome is ScriptOutcome.DONE, site.queues.log_lines(result.script_index)

        commands = sal_commands(site, identity=f"Script:{result.script_index}")
        assert commands[0] == ("Watcher:0", "exitControl")
        targets = {target for target, _ in commands}
        assert not {t for t in targets if t.startswith(("ScriptQueue", "MTM1M3", "Script:"))}

        kept = {*QUEUES, CscName(name="MTM1M3", index=0), CscName(name="MTM1M3TS", index=0)}
        stopped = [n for n in names if n not in kept]
        assert len(stopped) == 117
        async with site.sal.state_board(names) as board:
            await board.wait_for(gone(SUMMIT_WINDOW_S), stopped, deadline_s=10.0)
            await board.wait_for(alive(SUMMIT_WINDOW_S), kept, deadline_s=5.0)
            vms = [CscName(name="MTVMS", index=i) for i in (1, 2, 3)]
            # The VMS never report OFFLINE: they only go silent.
            assert {board.state(v) for v in vms} == {State.STANDBY}
            assert board.state(CscName(name="MTM1M3TS", index=0)) is State.ENABLED
            assert board.state(CscName(name="MTM1M3", index=0)) is State.DISABLED

    async def test_muting_alarms_without_a_watcher_blocks(self, summit_site: SimSite) -> None:
        site = summit_site
        config = {"data": [["ATDome", "OFFLINE"]]}  # mute_alarms defaults to true
        started = time.monotonic()
        with pytest.raises(ScriptTimeout) as raised:
            await run_script(site.sal, MT_QUEUE, "set_summary_state.py", config, timeout_s=1.0)
        timeout = raised.value
        assert timeout.last is not None
        assert timeout.last.script_state is ScriptState.RUNNING
        assert str(timeout.index) in str(timeout)
        result = await wait_for_script(site.sal, MT_QUEUE, timeout.index, timeout_s=30.0)
        waited = time.monotonic() - started
        # salobj's limit for the unanswered mute (here shortened) is spent before going on.
        assert waited >= MUTE_TIMEOUT_S
        assert result.outcome is ScriptOutcome.DONE
        assert any(
            "Failed to mute alarms for ATDome:0" in line
            for line in site.queues.log_lines(timeout.index)
        )

    async def test_the_queues_go_offline_the_running_one_last(
        self, summit: SiteConfig, summit_site: SimSite
    ) -> None:
        site = summit_site
        config = {
            "data": [
                ["ScriptQueue:3", "OFFLINE"],
                ["ScriptQueue:2", "OFFLINE"],
                ["ScriptQueue:1", "OFFLINE"],
            ],
            "mute_alarms": False,
        }
        result = await run_script(
            site.sal, MT_QUEUE, "set_summary_state.py", config, timeout_s=60.0
        )
        assert result.outcome is ScriptOutcome.DONE, site.queues.log_lines(result.script_index)
        commands = sal_commands(site, identity=f"Script:{result.script_index}")
        assert commands[-1] == ("ScriptQueue:1", "exitControl")
        names = [e.name for e in summit.cscs]
        m1m3 = [CscName(name="MTM1M3", index=0), CscName(name="MTM1M3TS", index=0)]
        async with site.sal.state_board(names) as board:
            await board.wait_for(
                gone(SUMMIT_WINDOW_S), [n for n in names if n not in m1m3], deadline_s=10.0
            )
            assert {board.state(q) for q in QUEUES} == {State.OFFLINE}
            await board.wait_for(alive(SUMMIT_WINDOW_S), m1m3, deadline_s=5.0)
            assert board.state(m1m3[1]) is State.ENABLED
            assert board.state(m1m3[0]) is State.DISABLED
        with pytest.raises(ScriptQueueNotEnabled):
            await run_script(site.sal, MT_QUEUE, "set_summary_state.py", config, timeout_s=5.0)
