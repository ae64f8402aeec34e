"""minimal-testing on the simulated test stands: the TTS tracks without images, the BTS takes and
confirms its images, and a failing script still leaves the telescope stopped and in its default
state.

The sites are trimmed to the telescopes' CSCs and the ScriptQueues (what the scripts touch), so
that starting them costs seconds, not the whole inventory's.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prefect.client.schemas.objects import State as PrefectState

from blocks.site import CscName, SiteConfig, State
from clients.registry import SchemaRegistryClient
from clients.sal import SalClient, SalRetCode
from clients.sal.events import EventCollector
from deployments.operator import GateAnswer
from sim.csc import CscBehaviour
from sim.site import SimulatedSite, load_base_site
from sim.writelog import WriteRecord
from tests.sitekit import FAST, operator_for, run_with_operator, sal_commands, save_site

_TELESCOPE_CSCS = {
    "ATMCS", "ATPtg", "ATAOS", "ATPneumatics", "ATHexapod", "ATDome", "ATDomeTrajectory",
    "ATCamera", "ATSpectrograph", "ATHeaderService", "ATOODS",
    "MTMount", "MTPtg", "MTAOS", "MTM1M3", "MTM2", "MTHexapod", "MTRotator", "MTDome",
    "MTDomeTrajectory", "MTCamera", "MTHeaderService", "MTOODS",
    "ScriptQueue",
}  # fmt: skip
_ATCS = ["ATMCS", "ATPtg", "ATAOS", "ATPneumatics", "ATHexapod", "ATDome", "ATDomeTrajectory"]
#: csc_end_of_night's default states (the MainTel CSCs the TTS has).
_MT_END_OF_NIGHT = {
    "MTMount:0": State.DISABLED,
    "MTPtg:0": State.ENABLED,
    "MTAOS:0": State.STANDBY,
    "MTM1M3:0": State.ENABLED,
    "MTM2:0": State.ENABLED,
    "MTHexapod:1": State.DISABLED,
    "MTHexapod:2": State.DISABLED,
    "MTRotator:0": State.DISABLED,
    "MTDome:0": State.DISABLED,
    "MTDomeTrajectory:0": State.DISABLED,
}


# --- The site's capabilities are data ------------------------------------------------------------


def test_the_site_files_say_what_each_site_can_do() -> None:
    from flows.minimal_testing import return_steps, telescope_steps

    tts, bts = load_base_site("tts"), load_base_site("bts")
    assert tts.minimal_testing.telescopes == ["auxtel", "maintel"]
    assert not tts.minimal_testing.auxtel.takes_images
    assert not tts.minimal_testing.maintel.takes_images
    assert bts.minimal_testing.auxtel.takes_images
    assert bts.minimal_testing.maintel.takes_images
    assert load_base_site("summit").minimal_testing.maintel.raise_m1m3_at is None

    # The TTS: no camera step; csc_end_of_night leaves out the LSSTCam CSCs it does not have.
    paths = [step.path for step in telescope_steps(tts, "maintel") if step.path]
    assert paths[0] == "maintel/enable_mtcs.py"
    assert not any("lsstcam" in p or p == "run_command.py" for p in paths)
    assert not any(step.images for step in telescope_steps(tts, "auxtel"))
    _, end_of_night = return_steps(tts, "maintel")
    assert end_of_night.path == "maintel/csc_end_of_night.py"
    assert end_of_night.config == {"ignore": ["mtcamera", "mtheaderservice", "mtoods"]}
    # The BTS: the procedure's configurations, M1M3 raised once pointed near zenith.
    steps = {step.key: step for step in telescope_steps(bts, "maintel")}
    assert steps["playlist"].config == {
        "component": "MTCamera",
        "cmd": "play",
        "parameters": {"playlist": "lsstcam-20250530", "repeat": True},
    }
    assert steps["point-for-m1m3"].config == {"az": 0.0, "el": 80.0}
    keys = list(steps)
    assert keys.index("point-for-m1m3") + 1 == keys.index("raise-m1m3")
    assert steps["take-images"].config == {
        "exp_times": 30.0,
        "nimages": 5,
        "image_type": "ACQ",
        "reason": "minimal_testing",
    }


def test_a_bad_minimal_testing_section_is_refused_naming_the_field() -> None:
    from blocks.site import SiteConfigError, site_config_from_dict
    from flows.minimal_testing import chosen_telescopes

    data = load_base_site("tts").model_dump(mode="json")
    data["minimal_testing"]["auxtel"]["queue"] = 7
    with pytest.raises(SiteConfigError, match=r"minimal_testing.auxtel.queue: ScriptQueue:7"):
        site_config_from_dict(data, source="tts.yaml")
    data["minimal_testing"]["auxtel"]["queue"] = 2
    data["minimal_testing"]["maintel"]["image_type"] = "SELFIE"
    with pytest.raises(SiteConfigError, match=r"minimal_testing.maintel.image_type"):
        site_config_from_dict(data, source="tts.yaml")
    data["minimal_testing"]["maintel"]["image_type"] = "ACQ"
    data["minimal_testing"]["telescopes"] = ["auxtel"]
    only_auxtel = site_config_from_dict(data, source="tts.yaml")
    with pytest.raises(ValueError, match=r"does not test maintel: .*lists auxtel"):
        chosen_telescopes(only_auxtel, ["maintel"])


# --- Runs on the simulated test stands ----------------------------------------------------------


def _stand(site: str) -> SiteConfig:
    base = load_base_site(site)
    kept = [entry for entry in base.cscs if entry.name.name in _TELESCOPE_CSCS]
    return base.model_copy(update={"cscs": kept})


#: Nothing here needs the telegraf and LOVE-producer consumer groups: spare their polling.
_OPTIONS = dataclasses.replace(FAST, consumers=False)


def _added(records: list[WriteRecord], queue: int) -> list[str]:
    """The script paths added to ScriptQueue:<queue>, in order."""
    return [
        str(r.body["params"]["path"])
        for r in records
        if r.service == "sal" and r.method == "add" and r.target == f"ScriptQueue:{queue}"
    ]


def _position(records: list[WriteRecord], command: str, target: str, *, last: bool = False) -> int:
    found = [
        i
        for i, r in enumerate(records)
        if r.service == "sal" and r.method == command and r.target == target
    ]
    assert found, f"no {command} to {target}"
    return found[-1] if last else found[0]


def _state(site: SimulatedSite, name: str) -> State | None:
    assert site.fleet is not None
    component, _, index = name.partition(":")
    return site.fleet.state_of(CscName(name=component, index=int(index or 0)))


async def _report(site_name: str) -> str:
    """The run's report artifact (its markdown)."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.run import artifact_key

    key = artifact_key("minimal-testing", site_name, "report")
    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    assert found, f"no report artifact {key}"
    return str(found[-1].data)


async def _run(
    site: SimulatedSite,
    *,
    upgrade_id: str = "c0045",
    answers: dict[str, GateAnswer] | None = None,
    **parameters: Any,
) -> tuple[PrefectState[Any], list[str], str]:
    from flows.minimal_testing import minimal_testing

    name = f"sim-{uuid.uuid4().hex[:6]}"
    await save_site(site, name)
    operator = operator_for(site, name, name, **(answers or {}))
    state = await run_with_operator(
        operator,
        lambda: minimal_testing(site=name, upgrade_id=upgrade_id, return_state=True, **parameters),
    )
    assert isinstance(state, PrefectState)
    return state, [gate for gate, _ in operator.answered], await _report(name)


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.slow
async def test_the_tts_tracks_without_taking_images(tmp_path: Path) -> None:
    # AuxTel: the TTS has its camera (ATCamera), but no image source.
    async with SimulatedSite(_stand("tts"), workdir=tmp_path, options=_OPTIONS) as tts:
        state, gates, _ = await _run(tts, telescopes=["auxtel"])
        assert state.is_completed(), state.message
        result = await state.aresult()
        records = tts.write_log.records

        assert result["message"] == (
            "Minimal testing passed: AuxTel tracked (this site takes no images)."
        )
        # No camera step at all: no image, no playlist, the camera left alone.
        assert sal_commands(records, "takeImages") == []
        assert sal_commands(records, "play") == []
        assert _state(tts, "ATCamera") is State.STANDBY
        assert _added(records, 2) == [
            "auxtel/enable_atcs.py",
            "auxtel/track_target.py",
            "auxtel/stop_tracking.py",
            "auxtel/standby_atcs.py",
        ]
        # It tracked the procedure's target, and tracking was stopped after.
        slew = _position(records, "raDecTarget", "ATPtg:0")
        assert records[slew].body["params"]["ra"] == 18
        assert records[slew].body["params"]["declination"] == -20
        assert slew < _position(records, "stopTracking", "ATPtg:0", last=True)
        assert not tts.observatory.state.at.tracking
        assert {name: _state(tts, name) for name in _ATCS} == dict.fromkeys(_ATCS, State.STANDBY)
        assert gates == ["auxtel-housekeeping"]
        texts = [m.text for m in tts.slack_messages]
        assert any("AuxTel passed minimal testing" in text for text in texts), texts

        # Aborted at the housekeeping sign-off: ATCS, already enabled, goes back to STANDBY.
        before = len(tts.write_log.records)
        state, gates, _ = await _run(
            tts,
            upgrade_id="c0045-abort",
            answers={"auxtel-housekeeping": GateAnswer(decision="abort")},
            telescopes=["auxtel"],
        )
        assert state.is_cancelled(), state
        assert state.name == "Aborted"
        assert _added(tts.write_log.records[before:], 2) == [
            "auxtel/enable_atcs.py",
            "auxtel/standby_atcs.py",
        ]
        assert {name: _state(tts, name) for name in _ATCS} == dict.fromkeys(_ATCS, State.STANDBY)

        # A dry run of both telescopes plans the whole sequence and changes nothing.
        before = len(tts.write_log.records)
        state, gates, _ = await _run(tts, dry_run=True)
        assert state.is_completed(), state.message
        plan = (await state.aresult())["plan"]
        assert len(tts.write_log.records) == before
        assert gates == []
        scripts = [line.split()[1] for line in plan if line.startswith("Run ")]
        assert scripts[4:] == [
            "maintel/enable_mtcs.py",
            "maintel/home_both_axes.py",
            "maintel/enable_hexapod_compensation_mode.py",
            "maintel/mtdome/open_dome.py",
            "maintel/mtdome/enable_dome_following.py",
            "maintel/point_azel.py",
            "maintel/m1m3/raise_m1m3.py",
            "maintel/track_target.py",
            "maintel/stop_tracking.py",
            "maintel/csc_end_of_night.py",
        ]
        assert "Sign-off: maintel_housekeeping.py run" in plan


@dataclass
class BtsRun:
    """One minimal-testing run of both telescopes at the BTS, MTCamera refusing to take images."""

    site: SimulatedSite
    state: PrefectState[Any]
    gates: list[str]
    records: list[WriteRecord]
    report: str
    readouts: list[str]
    ingested: list[str]


@pytest.fixture(scope="module")
async def bts_run(
    prefect_server: None, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[BtsRun]:
    del prefect_server
    workdir = tmp_path_factory.mktemp("bts")
    async with SimulatedSite(_stand("bts"), workdir=workdir, options=_OPTIONS) as bts:
        assert bts.fleet is not None
        bts.fleet.set_behaviour(
            CscName(name="MTCamera"),
            CscBehaviour(
                forced_acks={"takeImages": (SalRetCode.CMD_FAILED, "Failed: the shutter is stuck")}
            ),
        )
        config = bts.site_config()
        async with (
            SchemaRegistryClient(config.schema_registry.url) as registry,
            SalClient(bootstrap_servers=config.kafka.bootstrap_servers, registry=registry) as sal,
            EventCollector(
                sal, [("ATCamera", "logevent_endReadout"), ("ATOODS", "logevent_imageInOODS")]
            ) as seen,
        ):
            state, gates, report = await _run(bts)
            # What the camera and the OODS published, as the test saw it itself.
            readouts = seen.of("ATCamera", "logevent_endReadout")
            ingested = seen.of("ATOODS", "logevent_imageInOODS")
        yield BtsRun(
            bts,
            state,
            gates,
            bts.write_log.records,
            report,
            [str(s.data["imageName"]) for s in readouts],
            [str(s.data["obsid"]) for s in ingested],
        )


@pytest.mark.slow
async def test_the_bts_takes_and_confirms_the_configured_number_of_images(
    bts_run: BtsRun,
) -> None:
    bts, records = bts_run.site, bts_run.records
    nimages = bts.base.minimal_testing.auxtel.nimages
    # prepare_for/onsky clears the CCD with 3 biases; then take_image_latiss takes the test's.
    latiss = [i for i in bts.observatory.state.images if i.camera == "LATISS"]
    ours = latiss[3:]
    assert len(ours) == nimages
    assert [i.image_type for i in ours] == ["BIAS"] * nimages
    assert bts_run.readouts == [i.obsid for i in latiss]
    assert sorted(bts_run.ingested) == sorted(bts_run.readouts)
    # The report lists exactly the test's images, each confirmed by an imageInOODS.
    rows = [line for line in bts_run.report.splitlines() if line.startswith("| AT_O_")]
    assert rows == [f"| {image.obsid} | True | file ingested |" for image in ours]
    assert f"AuxTel tracked and took {nimages} images, all ingested" in bts_run.report
    assert bts.observatory.state.playlists["ATCamera"] == ("bias", True)
    assert _added(records, 2) == [
        "auxtel/enable_atcs.py",
        "auxtel/enable_latiss.py",
        "run_command.py",
        "auxtel/prepare_for/onsky.py",
        "auxtel/track_target.py",
        "auxtel/take_image_latiss.py",
        "auxtel/stop_tracking.py",
        "auxtel/standby_atcs.py",
    ]
    assert not bts.observatory.state.at.tracking
    assert {name: _state(bts, name) for name in _ATCS} == dict.fromkeys(_ATCS, State.STANDBY)
    texts = [m.text for m in bts.slack_messages]
    assert any(
        f"AuxTel passed minimal testing — tracked and took {nimages} images, all ingested" in t
        for t in texts
    ), texts


@pytest.mark.slow
async def test_a_failing_script_still_stops_tracking_and_restores_the_default_state(
    bts_run: BtsRun,
) -> None:
    bts, records = bts_run.site, bts_run.records
    # The run failed, naming the telescope, the script and the camera's reason.
    assert bts_run.state.is_failed()
    message = bts_run.state.message or ""
    assert "MainTel failed at '5 images taken and ingested'" in message, message
    assert "maintel/take_image_lsstcam.py ended FAILED" in message
    assert "the shutter is stuck" in message
    assert "Tracking stopped and MainTel back in its default state" in message
    # M1M3 was raised once MainTel pointed near zenith, then it tracked.
    point = _position(records, "azElTarget", "MTPtg:0")
    assert records[point].body["params"]["elDegs"] == 80
    assert point < _position(records, "raiseM1M3", "MTM1M3:0")
    assert bts.observatory.state.m1m3.name == "ACTIVE"
    # Tracking had started; after the failure it was stopped, then the end-of-night states.
    failed_take = _position(records, "takeImages", "MTCamera:0")
    assert _position(records, "raDecTarget", "MTPtg:0") < failed_take
    assert failed_take < _position(records, "stopTracking", "MTPtg:0", last=True)
    assert _added(records, 1) == [
        "maintel/enable_mtcs.py",
        "maintel/enable_lsstcam.py",
        "run_command.py",
        "maintel/home_both_axes.py",
        "maintel/enable_hexapod_compensation_mode.py",
        "maintel/mtdome/open_dome.py",
        "maintel/mtdome/enable_dome_following.py",
        "maintel/point_azel.py",
        "maintel/m1m3/raise_m1m3.py",
        "maintel/track_target.py",
        "maintel/take_image_lsstcam.py",
        "maintel/stop_tracking.py",
        "maintel/csc_end_of_night.py",
    ]
    assert not bts.observatory.state.mt.tracking
    for name, expected in _MT_END_OF_NIGHT.items():
        assert _state(bts, name) is expected, name
    # The failed script paused MTQueue: it was resumed so that the return to default could run.
    assert _position(records, "resume", "ScriptQueue:1") < _position(
        records, "stopTracking", "MTPtg:0", last=True
    )
    # AuxTel was tested all the same; no RubinTV sign-off without MainTel images.
    assert bts_run.gates == ["auxtel-housekeeping", "maintel-housekeeping"]
    texts = [m.text for m in bts.slack_messages]
    assert any(
        t.startswith(":x:") and "take_image_lsstcam" in t and "back in its default state" in t
        for t in texts
    ), texts
