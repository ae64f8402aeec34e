"""The hardware behind the simulated CSCs that the minimal-testing scripts drive.

`ObservatoryModel` serves the component-specific commands of the telescopes, domes, cameras and
M1M3 on a `CscFleet`, keeps what they change (pointing, the MainTel elevation, M1M3's detailed
state, image sequence numbers) and publishes the events the real CSCs publish: a camera's
``startIntegration``/``endReadout`` per image and its OODS CSC's ``imageInOODS`` once the image
is ingested. Like salobj CSCs, they refuse these commands unless ENABLED.

What a site can do is data (`SiteCapabilities`): the TTS tracks but cannot take images, and on
the test stands M1M3 only raises with the telescope near zenith (it hangs in RAISING below).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from blocks.site import CscName, State
from clients.sal.codec import TAI_MINUS_UTC_S
from clients.sal.enums import SalRetCode
from sim.csc import AckReply, CommandHandler, CscFleet, SimulatedCsc

__all__ = [
    "CAMERAS",
    "CameraSpec",
    "M1M3DetailedState",
    "ObservatoryModel",
    "ObservatoryTiming",
    "SiteCapabilities",
    "TakenImage",
]

_logger = logging.getLogger(__name__)


class M1M3DetailedState(enum.IntEnum):
    """MTM1M3 ``logevent_detailedState.detailedState`` (ts_xml ``MTM1M3.DetailedStates``)."""

    DISABLED = 1
    FAULT = 2
    OFFLINE = 3
    STANDBY = 4
    PARKED = 5
    RAISING = 6
    ACTIVE = 7
    LOWERING = 8


_M1M3_BY_STATE = {
    State.DISABLED: M1M3DetailedState.DISABLED,
    State.FAULT: M1M3DetailedState.FAULT,
    State.OFFLINE: M1M3DetailedState.OFFLINE,
    State.STANDBY: M1M3DetailedState.STANDBY,
}


@dataclass(frozen=True, kw_only=True)
class CameraSpec:
    """A camera CSC, its OODS and how its images are named (``AT_O_20261127_000001``)."""

    csc: str
    oods: str
    camera: str
    source: str
    detectors: tuple[tuple[str, str], ...]


CAMERAS: dict[str, CameraSpec] = {
    "ATCamera": CameraSpec(
        csc="ATCamera", oods="ATOODS", camera="LATISS", source="AT", detectors=(("R00", "S00"),)
    ),
    "CCCamera": CameraSpec(
        csc="CCCamera",
        oods="CCOODS",
        camera="LSSTComCam",
        source="CC",
        detectors=(("R22", "S11"),),
    ),
    # LSSTCam ingests 189 science CCDs per image; one stands for them here.
    "MTCamera": CameraSpec(
        csc="MTCamera", oods="MTOODS", camera="LSSTCam", source="MC", detectors=(("R22", "S11"),)
    ),
}


@dataclass(frozen=True, kw_only=True)
class SiteCapabilities:
    """What the simulated site's hardware can do.

    Attributes
    ----------
    takes_images
        The cameras produce images (the TTS has no image source: takeImages fails).
    m1m3_min_raise_elevation_deg
        Below this MainTel elevation a raise stalls in RAISING (the test stands) until the
        mount is pointed higher or M1M3 gives up (`ObservatoryTiming.m1m3_stall_abort_s`) and
        parks again; None: any elevation.
    """

    takes_images: bool = True
    m1m3_min_raise_elevation_deg: float | None = None

    @classmethod
    def for_site(cls, site: str) -> SiteCapabilities:
        """The Summit raises M1M3 anywhere; the test stands only near zenith; TTS has no images."""
        if site == "summit":
            return cls()
        return cls(takes_images=site != "tts", m1m3_min_raise_elevation_deg=75.0)


@dataclass(frozen=True, kw_only=True)
class ObservatoryTiming:
    """How long the hardware takes, in seconds, before ``time_scale`` shrinks it for tests."""

    time_scale: float = 1.0
    slew_s: float = 10.0
    readout_s: float = 2.0
    ingest_s: float = 3.0
    home_s: float = 30.0
    m1m3_raise_s: float = 120.0
    m1m3_stall_abort_s: float = 600.0
    m1m3_lower_s: float = 120.0
    shutter_s: float = 60.0

    def scaled(self, seconds: float) -> float:
        return max(seconds * self.time_scale, 0.0)


@dataclass(frozen=True)
class TakenImage:
    camera: str
    obsid: str
    image_type: str


@dataclass
class _Pointing:
    tracking: bool = False
    target: str = ""
    azimuth_deg: float = 0.0
    elevation_deg: float = 20.0


@dataclass
class _State:
    at: _Pointing = field(default_factory=_Pointing)
    mt: _Pointing = field(default_factory=_Pointing)
    mt_homed: bool = False
    m1m3: M1M3DetailedState = M1M3DetailedState.STANDBY
    at_dome_open: bool = False
    mt_dome_open: bool = False
    at_m1_cover_open: bool = False
    dome_following: dict[str, bool] = field(default_factory=dict)
    compensation: dict[int, bool] = field(default_factory=dict)
    playlists: dict[str, tuple[str, bool]] = field(default_factory=dict)
    mutes: list[dict[str, Any]] = field(default_factory=list)
    images: list[TakenImage] = field(default_factory=list)


class ObservatoryModel:
    """Serves the hardware commands of the simulated telescopes on a `CscFleet`.

    Parameters
    ----------
    capabilities
        What this site's hardware can do.
    timing
        Hardware durations (``time_scale`` shrinks them all).
    """

    def __init__(
        self,
        capabilities: SiteCapabilities | None = None,
        timing: ObservatoryTiming | None = None,
    ) -> None:
        self.capabilities = capabilities or SiteCapabilities()
        self.timing = timing or ObservatoryTiming()
        self.state = _State()
        self._fleet: CscFleet | None = None
        self._sequence: dict[tuple[str, str], itertools.count[int]] = {}
        self._mount_moved = asyncio.Event()
        self._m1m3_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- Wiring -----------------------------------------------------------------------------

    def install(self, fleet: CscFleet) -> None:
        """Register the command handlers and state listeners on ``fleet``."""
        self._fleet = fleet
        handlers: dict[tuple[str, str], CommandHandler] = {
            ("Watcher", "mute"): self._mute,
            ("ATPtg", "raDecTarget"): self._pointing("ATPtg", self.state.at),
            ("ATPtg", "azElTarget"): self._pointing("ATPtg", self.state.at),
            ("ATPtg", "stopTracking"): self._stop_tracking(self.state.at),
            ("MTPtg", "raDecTarget"): self._pointing("MTPtg", self.state.mt),
            ("MTPtg", "azElTarget"): self._pointing("MTPtg", self.state.mt),
            ("MTPtg", "stopTracking"): self._stop_tracking(self.state.mt),
            ("MTMount", "homeBothAxes"): self._home_both_axes,
            ("MTM1M3", "raiseM1M3"): self._raise_m1m3,
            ("MTM1M3", "lowerM1M3"): self._lower_m1m3,
            ("MTHexapod", "setCompensationMode"): self._compensation_mode,
            ("ATDome", "openShutter"): self._shutter("at", opening=True),
            ("ATDome", "closeShutter"): self._shutter("at", opening=False),
            ("MTDome", "openShutter"): self._shutter("mt", opening=True),
            ("MTDome", "closeShutter"): self._shutter("mt", opening=False),
            ("ATDomeTrajectory", "setFollowingMode"): self._following_mode,
            ("MTDomeTrajectory", "setFollowingMode"): self._following_mode,
            ("ATPneumatics", "openM1Cover"): self._m1_cover,
            ("ATPneumatics", "openM1CellVents"): self._simple("openM1CellVents"),
        }
        for camera in CAMERAS:
            handlers[(camera, "takeImages")] = self._take_images
            handlers[(camera, "play")] = self._play
        for (component, command), handler in handlers.items():
            fleet.register_command(component, command, handler)
        fleet.add_state_listener("MTM1M3", self._m1m3_state)

    async def aclose(self) -> None:
        """Stop what the hardware is still doing (raising, ingesting)."""
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    @property
    def fleet(self) -> CscFleet:
        if self._fleet is None:
            raise RuntimeError("the observatory model is not installed on a fleet")
        return self._fleet

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(self.timing.scaled(seconds))

    # --- Pointing ---------------------------------------------------------------------------

    def _pointing(self, component: str, pointing: _Pointing) -> CommandHandler:
        async def handle(csc: SimulatedCsc, data: dict[str, Any]) -> AckReply | None:
            _require_enabled(csc, "target")
            await self._sleep(self.timing.slew_s)
            pointing.tracking = True
            pointing.target = str(data.get("targetName", ""))
            if "elDegs" in data:
                pointing.azimuth_deg = float(data["azDegs"])
                pointing.elevation_deg = float(data["elDegs"])
            else:
                # Sky targets are placed well up; the elevation only matters to M1M3 here.
                pointing.elevation_deg = 60.0
            if component == "MTPtg":
                self._mount_moved.set()
            return None

        return handle

    def _stop_tracking(self, pointing: _Pointing) -> CommandHandler:
        async def handle(csc: SimulatedCsc, data: dict[str, Any]) -> AckReply | None:
            del data
            _require_enabled(csc, "stopTracking")
            pointing.tracking = False
            return None

        return handle

    async def _home_both_axes(self, csc: SimulatedCsc, data: dict[str, Any]) -> AckReply | None:
        _require_enabled(csc, "homeBothAxes")
        await csc.ack(
            "homeBothAxes",
            data,
            SalRetCode.CMD_INPROGRESS,
            timeout_s=self.timing.scaled(self.timing.home_s) + 5.0,
        )
        await self._sleep(self.timing.home_s)
        self.state.mt_homed = True
        return None

    # --- M1M3 -------------------------------------------------------------------------------

    async def _m1m3_state(self, csc: SimulatedCsc, state: State) -> None:
        if state is State.ENABLED:
            detailed = (
                M1M3DetailedState.ACTIVE
                if self.state.m1m3 is M1M3DetailedState.ACTIVE
                else M1M3DetailedState.PARKED
            )
        else:
            self._cancel_m1m3_motion()
            detailed = _M1M3_BY_STATE.get(state, M1M3DetailedState.STANDBY)
        await self._publish_m1m3(csc, detailed)

    async def _publish_m1m3(self, csc: SimulatedCsc, detailed: M1M3DetailedState) -> None:
        self.state.m1m3 = detailed
        await csc.write(
            "logevent_detailedState",
            timestamp=time.time() + TAI_MINUS_UTC_S,
            detailedState=detailed,
        )

    def _cancel_m1m3_motion(self) -> None:
        if self._m1m3_task is not None and not self._m1m3_task.done():
            self._m1m3_task.cancel()
        self._m1m3_task = None

    def _elevation_allows_raise(self) -> bool:
        limit = self.capabilities.m1m3_min_raise_elevation_deg
        return limit is None or self.state.mt.elevation_deg >= limit

    async def _raise_m1m3(self, csc: SimulatedCsc, data: dict[str, Any]) -> AckReply | None:
        del data
        _require_enabled(csc, "raiseM1M3")
        if self.state.m1m3 in (M1M3DetailedState.ACTIVE, M1M3DetailedState.RAISING):
            return None
        if self.state.m1m3 is not M1M3DetailedState.PARKED:
            raise RuntimeError(f"raiseM1M3 not allowed in detailed state {self.state.m1m3.name}")
        await self._publish_m1m3(csc, M1M3DetailedState.RAISING)
        self._m1m3_task = self._spawn(self._raising(csc), "m1m3-raising")
        return None

    async def _raising(self, csc: SimulatedCsc) -> None:
        # Below the site's limit the raise stalls (the test stands) until the mount is pointed
        # high enough, or M1M3 gives up and parks the mirror again.
        try:
            async with asyncio.timeout(self.timing.scaled(self.timing.m1m3_stall_abort_s)):
                while not self._elevation_allows_raise():
                    self._mount_moved.clear()
                    await self._mount_moved.wait()
        except TimeoutError:
            await self._publish_m1m3(csc, M1M3DetailedState.PARKED)
            return
        await self._sleep(self.timing.m1m3_raise_s)
        await self._publish_m1m3(csc, M1M3DetailedState.ACTIVE)

    async def _lower_m1m3(self, csc: SimulatedCsc, data: dict[str, Any]) -> AckReply | None:
        del data
        _require_enabled(csc, "lowerM1M3")
        if self.state.m1m3 not in (M1M3DetailedState.ACTIVE, M1M3DetailedState.RAISING):
            return None
        self._cancel_m1m3_motion()
        await self._publish_m1m3(csc, M1M3DetailedState.LOWERING)

        async def lowering() -> None:
            await self._sleep(self.timing.m1m3_lower_s)
            await self._publish_m1m3(csc, M1M3DetailedState.PARKED)

        self._m1m3_task = self._spawn(lowering(), "m1m3-lowering")
        return None

    # --- Domes, hexapods, pneumatics, Watcher -----------------------------------------------

    def _shutter(self, telescope: str, *, opening: bool) -> CommandHandler:
        async def handle(csc: SimulatedCsc, data: dict[str, Any]) -> AckReply | None:
            del data
            _require_enabled(csc, "openShutter" if opening else "closeShutter")
            await self._sleep(self.timing.shutter_s)
            if telescope == "at":
                self.state.at_dome_open = opening
            else:
                self.state.mt_dome_open = opening
            return None

        return handle

    async def _following_mode(self, csc: SimulatedCsc, data: dict[str, Any]) -> AckReply | None:
        _require_enabled(csc, "setFollowingMode")
        enabled = bool(data.get("enable", False))
        self.state.dome_following[csc.name.name] = enabled
        await csc.write("logevent_followingMode", enabled=enabled)
        return None

    async def _compensation_mode(self, csc: SimulatedCsc, data: dict[str, Any]) -> AckReply | None:
        _require_enabled(csc, "setCompensationMode")
        enabled = bool(data.get("enable", False))
        self.state.compensation[csc.name.index] = enabled
        await csc.write("logevent_compensationMode", enabled=enabled)
        return None

    async def _m1_cover(self, csc: SimulatedCsc, data: dict[str, Any]) -> AckReply | None:
        del data
        _require_enabled(csc, "openM1Cover")
        self.state.at_m1_cover_open = True
        return None

    def _simple(self, command: str) -> CommandHandler:
        async def handle(csc: SimulatedCsc, data: dict[str, Any]) -> AckReply | None:
            del data
            _require_enabled(csc, command)
            return None

        return handle

    async def _mute(self, csc: SimulatedCsc, data: dict[str, Any]) -> AckReply | None:
        _require_enabled(csc, "mute")
        self.state.mutes.append(
            {k: data.get(k) for k in ("name", "duration", "severity", "mutedBy")}
        )
        return None

    # --- Cameras and OODS -------------------------------------------------------------------

    async def _play(self, csc: SimulatedCsc, data: dict[str, Any]) -> AckReply | None:
        _require_enabled(csc, "play")
        self.state.playlists[csc.name.name] = (
            str(data.get("playlist", "")),
            bool(data.get("repeat", False)),
        )
        return None

    async def _take_images(self, csc: SimulatedCsc, data: dict[str, Any]) -> AckReply | None:
        _require_enabled(csc, "takeImages")
        spec = CAMERAS[csc.name.name]
        if not self.capabilities.takes_images:
            raise RuntimeError(f"{spec.camera} has no image source on this test stand")
        count = int(data.get("numImages", 1))
        if count < 1:
            raise RuntimeError(f"numImages={count} must be positive")
        exposure_s = float(data.get("expTime", 0.0))
        per_image_s = self.timing.scaled(exposure_s + self.timing.readout_s)
        await csc.ack(
            "takeImages", data, SalRetCode.CMD_INPROGRESS, timeout_s=count * per_image_s + 10.0
        )
        keys, values = _key_values(str(data.get("keyValueMap", "")))
        for index in range(1, count + 1):
            day, number = self._next_image_number(spec.source)
            obsid = f"{spec.source}_O_{day}_{number:06d}"
            image = {
                "additionalKeys": keys,
                "additionalValues": values,
                "imagesInSequence": count,
                "imageName": obsid,
                "imageIndex": index,
                "imageSource": spec.source,
                "imageController": "O",
                "imageDate": day,
                "imageNumber": number,
                "timestampAcquisitionStart": time.time() + TAI_MINUS_UTC_S,
            }
            await csc.write(
                "logevent_startIntegration",
                **image,
                exposureTime=exposure_s,
                mode="normal",
                timeout=exposure_s + 30.0,
            )
            await asyncio.sleep(per_image_s)
            await csc.write(
                "logevent_endReadout",
                **image,
                requestedExposureTime=exposure_s,
                timestampEndOfReadout=time.time() + TAI_MINUS_UTC_S,
            )
            # From the map itself: a value may hold colons (groupId is an ISO time).
            image_type = _key_value_pairs(str(data.get("keyValueMap", ""))).get("imageType", "")
            self.state.images.append(TakenImage(spec.camera, obsid, image_type))
            _ = self._spawn(self._ingest(spec, obsid), f"ingest-{obsid}")
        return None

    def _next_image_number(self, source: str) -> tuple[str, int]:
        # The observing day rolls over at noon UTC-12 (dayObs), as the cameras name images.
        day = (datetime.now(UTC) - timedelta(hours=12)).strftime("%Y%m%d")
        counter = self._sequence.setdefault((source, day), itertools.count(1))
        return day, next(counter)

    async def _ingest(self, spec: CameraSpec, obsid: str) -> None:
        await self._sleep(self.timing.ingest_s)
        oods = self.fleet.running.get(CscName(name=spec.oods, index=0))
        if oods is None or oods.state is not State.ENABLED:
            # Nothing ingests the image: the operator sees no imageInOODS for it.
            _logger.info("%s not ENABLED: %s is not ingested", spec.oods, obsid)
            return
        for raft, sensor in spec.detectors:
            await oods.write(
                "logevent_imageInOODS",
                camera=spec.camera,
                obsid=obsid,
                raft=raft,
                sensor=sensor,
                statusCode=0,
                description="file ingested",
            )


def _require_enabled(csc: SimulatedCsc, command: str) -> None:
    """salobj's ``assert_enabled``: the ack says ``<cmd> not allowed in state=<State...>``."""
    if csc.state is not State.ENABLED:
        raise RuntimeError(f"{command} not allowed in state={csc.state!r}")


def _key_value_pairs(text: str) -> dict[str, str]:
    """``imageType: BIAS, groupId: X`` as a mapping."""
    pairs: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition(":")
        if sep and key.strip():
            pairs[key.strip()] = value.strip()
    return pairs


def _key_values(text: str) -> tuple[str, str]:
    """``imageType: BIAS, groupId: X`` as the cameras' ``additionalKeys``/``Values``."""
    keys: list[str] = []
    values: list[str] = []
    for item in text.split(","):
        key, sep, value = item.partition(":")
        if sep and key.strip():
            keys.append(key.strip())
            values.append(value.strip())
    return ":".join(keys), ":".join(values)
