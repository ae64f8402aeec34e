"""``minimal-testing``: the procedure's "Minimal Testing" — each telescope tracks and takes images.

Run as ``prefect deployment run minimal-testing/<site>``, or call `run_minimal_testing` inside
another flow's run (full-upgrade after bring-up, os-k8s-recovery, incremental-upgrade). For each
telescope the procedure's scripts run on its ScriptQueue with the procedure's configurations
(corrected as rubin-systems.md §1 says: ``maintel/enable_mtcs.py``, ``auxtel/enable_latiss.py``,
``maintel/point_azel.py`` to az 0 / el 80 before raising M1M3 on the test stands):

- AuxTel (ATQueue): enable_atcs, enable_latiss, *housekeeping* (a person runs it from Nublado or
  argo-workflows: a sign-off), the playlist with run_command, prepare_for/onsky, track_target,
  take_image_latiss; then stop_tracking and standby_atcs.
- MainTel (MTQueue): enable_mtcs, enable_lsstcam, *housekeeping*, the playlist, home_both_axes,
  enable_hexapod_compensation_mode, open_dome, enable_dome_following, point_azel (where the site
  says so), raise_m1m3, track_target, take_image_lsstcam, *RubinTV checked* (a sign-off); then
  stop_tracking and csc_end_of_night.

What a site can do is data (`blocks.site.MinimalTestingConfig`): at a site that takes no images
(the TTS) the camera steps are left out and the telescope only tracks. The images are confirmed
from the camera's ``endReadout`` (the images taken) and the OODS's ``imageInOODS`` (each one
ingested), not from dashboards. Whatever happens — a script fails, an operator aborts — tracking
is stopped and the telescope put back in its default state; what could not be is in the report.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefect import flow, task
from prefect.client.schemas.objects import State as PrefectState
from prefect.states import Cancelled

from blocks.site import AuxTelTesting, CscName, MainTelTesting, SiteConfig, State, Telescope
from clients.sal import scripts as sal_scripts
from clients.sal.events import EventCollector, EventWindow
from clients.sal.scripts import ScriptOutcome, ScriptResult, ScriptTimeout
from flows.common import upgrade_run
from flows.journal import StepHandle
from flows.run import UpgradeRun, current_run
from flows.signoff import UpgradeAborted
from flows.tagging import section
from flows.tasks import csc_statuses, resume_queue, run_script

__all__ = [
    "TELESCOPES",
    "MinimalTestingError",
    "TelescopeSpec",
    "TestStep",
    "chosen_telescopes",
    "minimal_testing",
    "planned_steps",
    "return_steps",
    "run_minimal_testing",
    "telescope_steps",
    "telescope_testing",
]

SECTION = "minimal testing"
#: ``logMessage`` levels (Python's): a script's errors are logged at ERROR.
_ERROR = 40


class MinimalTestingError(RuntimeError):
    """A telescope did not pass minimal testing; the message says where and why for each."""


def _group(*names: str) -> tuple[CscName, ...]:
    return tuple(
        CscName(name=n.partition(":")[0], index=int(n.partition(":")[2] or 0)) for n in names
    )


@dataclass(frozen=True, kw_only=True)
class TelescopeSpec:
    """The CSCs a telescope's scripts drive (ts_observatory_control's groups) and its scripts'
    directory."""

    name: Telescope
    title: str
    scripts: str
    tcs: tuple[CscName, ...]
    camera_group: tuple[CscName, ...]
    ptg: CscName
    camera: CscName
    oods: CscName

    def members(self, *, images: bool) -> tuple[CscName, ...]:
        return self.tcs + (self.camera_group if images else ())


TELESCOPES: dict[Telescope, TelescopeSpec] = {
    "auxtel": TelescopeSpec(
        name="auxtel",
        title="AuxTel",
        scripts="auxtel",
        tcs=_group(
            "ATMCS", "ATPtg", "ATAOS", "ATPneumatics", "ATHexapod", "ATDome", "ATDomeTrajectory"
        ),
        camera_group=_group("ATCamera", "ATSpectrograph", "ATHeaderService", "ATOODS"),
        ptg=CscName(name="ATPtg"),
        camera=CscName(name="ATCamera"),
        oods=CscName(name="ATOODS"),
    ),
    "maintel": TelescopeSpec(
        name="maintel",
        title="MainTel",
        scripts="maintel",
        tcs=_group(
            "MTMount",
            "MTPtg",
            "MTAOS",
            "MTM1M3",
            "MTM2",
            "MTHexapod:1",
            "MTHexapod:2",
            "MTRotator",
            "MTDome",
            "MTDomeTrajectory",
        ),
        camera_group=_group("MTCamera", "MTHeaderService", "MTOODS"),
        ptg=CscName(name="MTPtg"),
        camera=CscName(name="MTCamera"),
        oods=CscName(name="MTOODS"),
    ),
}

_HEXAPODS = {
    CscName(name="MTHexapod", index=1): "CameraHexapod",
    CscName(name="MTHexapod", index=2): "M2Hexapod",
}


def _attr(csc: CscName) -> str:
    """A group member's name in the scripts' ``ignore`` lists (``MTHexapod:1`` -> mthexapod_1)."""
    return csc.name.lower() + (f"_{csc.index}" if csc.index else "")


@dataclass(frozen=True, kw_only=True)
class TestStep:
    """One step of a telescope's minimal testing: a script, or a sign-off when ``path`` is None.

    ``tracks``: the script moves the telescope and leaves it tracking (stop it afterwards);
    ``images``: it takes that many images, whose ingestion is then confirmed.
    """

    key: str
    title: str
    path: str | None = None
    config: dict[str, Any] | None = None
    tracks: bool = False
    images: int = 0
    next_steps_md: str = ""


def _ignoring(config: dict[str, Any], absent: Iterable[CscName]) -> dict[str, Any] | None:
    """``config`` with the group members this site lacks in ``ignore`` (None when empty)."""
    ignore = sorted(_attr(csc) for csc in absent)
    merged = {**config, **({"ignore": ignore} if ignore else {})}
    return merged or None


def _absent(site: SiteConfig, members: Iterable[CscName]) -> list[CscName]:
    names = {entry.name for entry in site.cscs}
    return [csc for csc in members if csc not in names]


def _playlist(component: CscName, playlist: str) -> dict[str, Any]:
    return {
        "component": component.name,
        "cmd": "play",
        "parameters": {"playlist": playlist, "repeat": True},
    }


def _housekeeping(spec: TelescopeSpec, then: str) -> TestStep:
    script = f"{spec.scripts}_housekeeping.py"
    return TestStep(
        key="housekeeping",
        title=f"{script} run",
        next_steps_md=f"Run `{script}` from Nublado or argo-workflows (it is not a ScriptQueue "
        f"script) and sign off once it has finished. **Next:** {then}",
    )


def _auxtel_steps(site: SiteConfig, cfg: AuxTelTesting) -> list[TestStep]:
    spec = TELESCOPES["auxtel"]
    images = cfg.takes_images
    tcs_absent = _absent(site, spec.tcs)
    camera_absent = _absent(site, spec.camera_group)
    steps = [
        TestStep(
            key="enable-tcs",
            title="ATCS enabled",
            path="auxtel/enable_atcs.py",
            config=_ignoring({}, tcs_absent),
        )
    ]
    if images:
        steps.append(
            TestStep(
                key="enable-camera",
                title="LATISS enabled",
                path="auxtel/enable_latiss.py",
                config=_ignoring({}, camera_absent),
            )
        )
    steps.append(
        _housekeeping(
            spec,
            "the playlist is loaded and AuxTel prepared for the sky."
            if images
            else "AuxTel slews and tracks (this site takes no images).",
        )
    )
    if images:
        steps += [
            TestStep(
                key="playlist",
                title=f"Playlist {cfg.playlist} loaded on ATCamera",
                path="run_command.py",
                config=_playlist(spec.camera, cfg.playlist),
            ),
            # It takes three biases to clear the CCD: a camera step.
            TestStep(
                key="prepare-for-onsky",
                title="Prepared for on-sky",
                path="auxtel/prepare_for/onsky.py",
                config=_ignoring({}, tcs_absent + camera_absent),
            ),
        ]
    steps.append(
        TestStep(
            key="track",
            title="Slewing and tracking",
            path="auxtel/track_target.py",
            config=_ignoring({"slew_icrs": cfg.slew_icrs.model_dump()}, tcs_absent),
            tracks=True,
        )
    )
    if images:
        steps.append(
            TestStep(
                key="take-images",
                title=f"{cfg.nimages} images taken and ingested",
                path="auxtel/take_image_latiss.py",
                config=_ignoring(
                    {
                        "nimages": cfg.nimages,
                        "image_type": cfg.image_type,
                        "program": cfg.program,
                        "reason": cfg.reason,
                    },
                    tcs_absent + camera_absent,
                ),
                images=cfg.nimages,
            )
        )
    return steps


def _maintel_steps(site: SiteConfig, cfg: MainTelTesting) -> list[TestStep]:
    spec = TELESCOPES["maintel"]
    images = cfg.takes_images
    tcs_absent = _absent(site, spec.tcs)
    camera_absent = _absent(site, spec.camera_group)
    steps = [
        TestStep(
            key="enable-tcs",
            title="MTCS enabled",
            path="maintel/enable_mtcs.py",
            config=_ignoring({}, tcs_absent),
        )
    ]
    if images:
        steps.append(
            TestStep(
                key="enable-camera",
                title="LSSTCam enabled",
                path="maintel/enable_lsstcam.py",
                config=_ignoring({}, camera_absent),
            )
        )
    steps.append(
        _housekeeping(
            spec,
            "the playlist is loaded, then both axes are homed."
            if images
            else "both axes are homed (this site takes no images).",
        )
    )
    if images:
        steps.append(
            TestStep(
                key="playlist",
                title=f"Playlist {cfg.playlist} loaded on MTCamera",
                path="run_command.py",
                config=_playlist(spec.camera, cfg.playlist),
            )
        )
    hexapods = [name for csc, name in _HEXAPODS.items() if csc not in tcs_absent]
    steps += [
        TestStep(key="home", title="Both axes homed", path="maintel/home_both_axes.py"),
        TestStep(
            key="hexapod-compensation",
            title="Hexapod compensation mode enabled",
            path="maintel/enable_hexapod_compensation_mode.py",
            config=None if len(hexapods) == len(_HEXAPODS) else {"components": sorted(hexapods)},
        ),
        TestStep(
            key="open-dome",
            title="Dome open",
            path="maintel/mtdome/open_dome.py",
            config=_ignoring({}, tcs_absent),
        ),
        TestStep(
            key="dome-following",
            title="Dome following enabled",
            path="maintel/mtdome/enable_dome_following.py",
        ),
    ]
    if cfg.raise_m1m3_at is not None:
        # On the test stands raise_m1m3 hangs at low elevation: point near zenith first.
        at = cfg.raise_m1m3_at
        steps.append(
            TestStep(
                key="point-for-m1m3",
                title=f"Pointed to az {at.az:g} / el {at.el:g} for M1M3",
                path="maintel/point_azel.py",
                config=_ignoring({"az": at.az, "el": at.el}, tcs_absent),
                tracks=True,
            )
        )
    steps += [
        TestStep(key="raise-m1m3", title="M1M3 raised", path="maintel/m1m3/raise_m1m3.py"),
        TestStep(
            key="track",
            title="Slewing and tracking",
            path="maintel/track_target.py",
            config=_ignoring(
                {
                    "target_name": cfg.target_name,
                    "rot_value": cfg.rot_value,
                    "rot_type": cfg.rot_type,
                    "track_for": cfg.track_for,
                },
                tcs_absent,
            ),
            tracks=True,
        ),
    ]
    if images:
        steps += [
            TestStep(
                key="take-images",
                title=f"{cfg.nimages} images taken and ingested",
                path="maintel/take_image_lsstcam.py",
                config=_ignoring(
                    {
                        "exp_times": cfg.exp_times,
                        "nimages": cfg.nimages,
                        "image_type": cfg.image_type,
                        "reason": cfg.reason,
                    },
                    tcs_absent + camera_absent,
                ),
                images=cfg.nimages,
            ),
            TestStep(
                key="rubintv",
                title="No retrieval failures in RubinTV",
                next_steps_md="Check RubinTV for retrieval failures of the images just taken "
                "(the flow confirmed their ingestion from the OODS's imageInOODS events). "
                "**Next:** tracking stops and MainTel goes to its end-of-night states.",
            ),
        ]
    return steps


def telescope_steps(site: SiteConfig, telescope: Telescope) -> list[TestStep]:
    """The steps of one telescope's minimal testing at ``site``, before the return to default."""
    testing = site.minimal_testing
    if telescope == "auxtel":
        return _auxtel_steps(site, testing.auxtel)
    return _maintel_steps(site, testing.maintel)


def return_steps(site: SiteConfig, telescope: Telescope) -> tuple[TestStep, TestStep]:
    """Stop tracking; the telescope's default state (the procedure's last two steps)."""
    spec = TELESCOPES[telescope]
    stop = TestStep(
        key="stop-tracking", title="Tracking stopped", path=f"{spec.scripts}/stop_tracking.py"
    )
    if telescope == "auxtel":
        default = TestStep(
            key="default-state",
            title="ATCS back in STANDBY",
            path="auxtel/standby_atcs.py",
            config=_ignoring({}, _absent(site, spec.tcs)),
        )
    else:
        absent = _absent(site, spec.tcs + spec.camera_group)
        default = TestStep(
            key="default-state",
            title="MainTel CSCs in their end-of-night states",
            path="maintel/csc_end_of_night.py",
            config=_ignoring({}, absent),
        )
    return stop, default


def chosen_telescopes(site: SiteConfig, telescopes: Sequence[Telescope] | None) -> list[Telescope]:
    """The telescopes to test, in the site's order; all the site's when None.

    Raises
    ------
    ValueError
        A telescope the site does not test (its ``minimal_testing.telescopes``).
    """
    offered = site.minimal_testing.telescopes
    if not offered:
        raise ValueError(f"{site.name} tests no telescope: its minimal_testing.telescopes is empty")
    if telescopes is None:
        return list(offered)
    unknown = [t for t in telescopes if t not in offered]
    if unknown:
        raise ValueError(
            f"{site.name} does not test {', '.join(unknown)}: its site file's "
            f"minimal_testing.telescopes lists {', '.join(offered) or 'none'}"
        )
    if not telescopes:
        raise ValueError("no telescope to test: give auxtel, maintel or both (or None for all)")
    return [t for t in offered if t in telescopes]


def planned_steps(site: SiteConfig, telescopes: Sequence[Telescope] | None = None) -> int:
    """How many journal steps `run_minimal_testing` records (for a caller's progress bar)."""
    chosen = chosen_telescopes(site, telescopes)
    return 1 + sum(len(telescope_steps(site, t)) + 2 for t in chosen)


# --- Running it -----------------------------------------------------------------------------------


@dataclass
class _Progress:
    """What one telescope's testing has done so far, for its return to the default state, and
    what its CSCs and scripts published meanwhile (None in a dry run)."""

    events: EventCollector | None = None
    started: bool = False
    tracking: bool = False
    images: list[str] = field(default_factory=list)


def _topics(spec: TelescopeSpec) -> list[tuple[str, str]]:
    """What is read during a telescope's testing: the scripts' log messages (why one failed),
    the images read out, and their ingestion."""
    return [
        ("Script", "logevent_logMessage"),
        (spec.camera.name, "logevent_endReadout"),
        (spec.oods.name, "logevent_imageInOODS"),
    ]


async def _preconditions(run: UpgradeRun, telescopes: list[Telescope]) -> None:
    """Before any change: each queue ENABLED, every CSC the scripts drive heartbeating."""
    site = run.site
    async with run.step(SECTION, "preconditions", "Queues enabled, telescope CSCs up") as step:
        problems: list[str] = []
        wanted: list[CscName] = []
        for telescope in telescopes:
            spec = TELESCOPES[telescope]
            cfg = site.minimal_testing.telescope(telescope)
            needed = [spec.ptg] + ([spec.camera, spec.oods] if cfg.takes_images else [])
            missing = _absent(site, needed)
            if missing:
                problems.append(
                    f"{spec.title} needs {', '.join(map(str, missing))}, not in the site's "
                    "inventory (or set minimal_testing."
                    f"{telescope}.takes_images: false in the site file)"
                )
            queue = CscName(name="ScriptQueue", index=cfg.queue)
            wanted += [queue, *_present(site, spec.members(images=cfg.takes_images))]
        if problems:
            raise ValueError("; ".join(problems))
        window = site.timeouts.heartbeat_window_s
        statuses = await csc_statuses(list(dict.fromkeys(wanted)), window)
        for csc, status in statuses.items():
            if not status.alive(window):
                problems.append(f"{csc} has no heartbeat")
            elif csc.name == "ScriptQueue" and status.state is not State.ENABLED:
                state = "in no known state" if status.state is None else status.state.name
                problems.append(f"{csc} is {state}, not ENABLED")
        if problems:
            raise RuntimeError(
                "nothing was changed: "
                + "; ".join(problems)
                + ". Bring them up (or fix the site file) and run again."
            )
        step.note(f"{len(statuses)} CSCs up; queues enabled")


def _present(site: SiteConfig, members: Iterable[CscName]) -> list[CscName]:
    names = {entry.name for entry in site.cscs}
    return [csc for csc in members if csc in names]


def _describe(step: TestStep, queue: int) -> str:
    config = f" with {step.config}" if step.config else ""
    return f"Run {step.path} on ScriptQueue:{queue}{config}"


async def _run_script_step(
    run: UpgradeRun,
    spec: TelescopeSpec,
    step: TestStep,
    queue: int,
    handle: StepHandle,
    *,
    events: EventCollector | None,
) -> list[str]:
    """Run the step's script; the images it took and the OODS ingested (confirmed).

    Raises
    ------
    RuntimeError
        The script did not end DONE (its errors in the message), or its images were not all
        ingested in time.
    """
    assert step.path is not None
    if events is None:
        run.journal.planned(_describe(step, queue))
        if step.images:
            run.journal.planned(
                f"Confirm {spec.camera.name} read out {step.images} images and "
                f"{spec.oods.name} reports imageInOODS for each"
            )
        return []
    testing = run.site.minimal_testing
    mark = events.mark
    try:
        result = await run_script(queue, step.path, step.config, testing.script_timeout_s)
    except ScriptTimeout as exc:
        # Left running it would hold the queue: the return to default needs it.
        await _quietly(stop_script(queue, exc.index))
        raise RuntimeError(
            f"{step.path} did not finish within {testing.script_timeout_s:.0f} s "
            f"(script {exc.index} was stopped)"
        ) from exc
    handle.note(f"script {result.script_index} {result.outcome.value}")
    if not result.ok:
        if result.outcome is ScriptOutcome.FAILED:
            # A failed script pauses its queue: the scripts that follow need it running.
            await _quietly(resume_queue(queue))
        raise RuntimeError(_failure(step, result, _errors(events, result.script_index)))
    if not step.images:
        return []
    return await _confirm_images(run, spec, step, events.since(mark), handle)


@task(name="stop script", task_run_name="stop script {script_index} on ScriptQueue:{queue}")
async def stop_script(queue: int, script_index: int) -> None:
    """Terminate a script that overran its time (the queue then runs the next one)."""
    sal = current_run().services.sal
    await sal_scripts.stop_scripts(sal, queue, [script_index], terminate=True)


async def _quietly(work: Any) -> None:
    try:
        await work
    except Exception:  # noqa: BLE001 - best effort; what it was for reports its own failure
        return


def _failure(step: TestStep, result: ScriptResult, errors: list[str]) -> str:
    why = "; ".join(errors) if errors else "see the script's log in LOVE"
    return f"{step.path} ended {result.outcome.value} (script {result.script_index}): {why}"


def _errors(events: EventCollector, script_index: int) -> list[str]:
    """The error messages script ``script_index`` logged (with its traceback's last line)."""
    found = []
    for sample in events.of("Script", "logevent_logMessage"):
        data = sample.data
        if sample.index != script_index or int(data.get("level", 0)) < _ERROR:
            continue
        text = str(data.get("message", "")).strip()
        lines = str(data.get("traceback", "")).strip().splitlines()
        if lines and lines[-1] not in text:
            text = f"{text} ({lines[-1]})"
        if text:
            found.append(text)
    return found


async def _confirm_images(
    run: UpgradeRun,
    spec: TelescopeSpec,
    step: TestStep,
    events: EventWindow,
    handle: StepHandle,
) -> list[str]:
    """The camera read out exactly ``step.images`` images and the OODS ingested each of them.

    Raises
    ------
    RuntimeError
        Another number of images, or some not ingested (or ingested with an error) in time.
    """
    timeout_s = run.site.minimal_testing.ingest_timeout_s
    taken = [
        str(s.data.get("imageName", "")) for s in events.of(spec.camera.name, "logevent_endReadout")
    ]
    if len(taken) != step.images:
        raise RuntimeError(
            f"{spec.camera.name} read out {len(taken)} image(s) ({', '.join(taken) or 'none'}) "
            f"where {step.images} were asked for"
        )

    def ingest_reports() -> dict[str, list[dict[str, Any]]]:
        reports: dict[str, list[dict[str, Any]]] = {name: [] for name in taken}
        for sample in events.of(spec.oods.name, "logevent_imageInOODS"):
            obsid = str(sample.data.get("obsid", ""))
            if obsid in reports:
                reports[obsid].append(sample.data)
        return reports

    def all_reported() -> bool:
        return all(ingest_reports().values())

    await events.wait_until(all_reported, timeout_s)
    reports = ingest_reports()
    missing = [name for name, found in reports.items() if not found]
    failed = [
        name
        for name, found in reports.items()
        if any(int(r.get("statusCode", 0)) != 0 for r in found)
    ]
    rows = [
        {
            "image": name,
            "ingested": bool(found) and name not in failed,
            "oods": "; ".join(sorted({str(r.get("description", "")) for r in found})) or "-",
        }
        for name, found in reports.items()
    ]
    await run.table(f"{spec.title} images", rows, f"{spec.title} minimal testing: images")
    problems = []
    if missing:
        problems.append(f"no imageInOODS within {timeout_s:.0f} s for {', '.join(missing)}")
    if failed:
        problems.append(f"ingestion failed for {', '.join(failed)}")
    if problems:
        raise RuntimeError(f"{spec.oods.name} did not confirm every image: " + "; ".join(problems))
    handle.note(f"{len(taken)} images, all ingested by {spec.oods.name}: {', '.join(taken)}")
    return taken


async def _run_step(
    run: UpgradeRun, spec: TelescopeSpec, step: TestStep, queue: int, progress: _Progress
) -> None:
    section = f"{SECTION}: {spec.title}"
    async with run.step(section, f"{spec.name}-{step.key}", step.title) as handle:
        if step.path is None:
            await run.gate(f"{spec.name}-{step.key}", step.title, step.next_steps_md)
            return
        progress.started = True
        progress.tracking = progress.tracking or step.tracks
        images = await _run_script_step(run, spec, step, queue, handle, events=progress.events)
        progress.images += images


async def _return_to_default(
    run: UpgradeRun, spec: TelescopeSpec, queue: int, progress: _Progress
) -> list[str]:
    """Stop tracking (if it may have started) and put the telescope in its default state; each
    is tried whatever happened before. What could not be done, for the report."""
    section = f"{SECTION}: {spec.title}"
    stop, default = return_steps(run.site, spec.name)
    problems: list[str] = []
    for step, needed in ((stop, progress.tracking), (default, progress.started)):
        if not needed and not run.dry_run:
            async with run.step(section, f"{spec.name}-{step.key}", step.title) as handle:
                handle.skip("nothing was started")
            continue
        try:
            async with run.step(section, f"{spec.name}-{step.key}", step.title) as handle:
                await _run_script_step(run, spec, step, queue, handle, events=progress.events)
        except Exception as exc:  # noqa: BLE001 - the next one is tried; both are reported
            problems.append(f"{step.path}: {exc}")
    if problems:
        run.journal.left_to_restore.append(
            f"{spec.title} may still be tracking or out of its default state ("
            + "; ".join(problems)
            + f"): run {stop.path} and {default.path} on ScriptQueue:{queue} from LOVE"
        )
    return problems


@section("minimal testing of a telescope", flow_run_name="minimal testing {telescope}")
async def telescope_testing(telescope: Telescope) -> str:
    """One telescope: its steps in order, then — whatever happened — back to its default state.

    Returns what it showed (for the report and Slack).

    Raises
    ------
    MinimalTestingError
        A step failed; tracking was stopped and the default state restored (or the message says
        what could not be).
    UpgradeAborted
        An operator aborted at a sign-off (the telescope was put back first).
    """
    run = current_run()
    site = run.site
    spec = TELESCOPES[telescope]
    cfg = site.minimal_testing.telescope(telescope)
    progress = _Progress()
    await run.notify(
        f":telescope: {site.title}: minimal testing of {spec.title} starts on "
        f"ScriptQueue:{cfg.queue} ({run.upgrade_id}) — please leave that queue to it."
    )
    failure: Exception | None = None
    failed_at = ""
    async with contextlib.AsyncExitStack() as stack:
        if not run.dry_run:
            collector = EventCollector(run.services.sal, _topics(spec))
            progress.events = await stack.enter_async_context(collector)
        try:
            for step in telescope_steps(site, telescope):
                failed_at = step.title
                await _run_step(run, spec, step, cfg.queue, progress)
        except (UpgradeAborted, asyncio.CancelledError):
            # Aborted at a sign-off, or cancelled: the telescope is put back all the same.
            await _return_to_default(run, spec, cfg.queue, progress)
            raise
        except Exception as exc:  # noqa: BLE001 - reported once the telescope is put back
            failure = exc
        problems = await _return_to_default(run, spec, cfg.queue, progress)
    back = (
        f"{spec.title} could NOT be put back: " + "; ".join(problems)
        if problems
        else f"tracking stopped and {spec.title} back in its default state"
    )
    if failure is not None:
        message = f"{spec.title} failed at '{failed_at}': {failure}. {back[0].upper()}{back[1:]}"
        await run.notify(f":x: {site.title}: {message}.")
        raise MinimalTestingError(message) from failure
    if run.dry_run:
        return f"{spec.title}: planned"
    shown = (
        f"tracked and took {len(progress.images)} images, all ingested"
        if cfg.takes_images
        else "tracked (this site takes no images)"
    )
    if problems:
        await run.notify(f":x: {site.title}: {spec.title} {shown}, but {back}.")
        raise MinimalTestingError(f"{spec.title} {shown}, but {back}")
    await run.notify(
        f":white_check_mark: {site.title}: {spec.title} passed minimal testing — {shown}; {back}."
    )
    return f"{spec.title} {shown}"


async def run_minimal_testing(
    run: UpgradeRun, telescopes: Sequence[Telescope] | None = None
) -> list[str]:
    """Minimal testing of ``telescopes`` (None: the site's) inside ``run``; what each showed.

    Other flows call this inside their own run (full-upgrade after bring-up, os-k8s-recovery,
    incremental-upgrade): it records its steps, sign-offs and Slack notices in that run. A
    telescope that passed for this upgrade id is not tested again on a re-run; every telescope
    is tested even when one fails.

    Raises
    ------
    ValueError
        A telescope the site does not test, or a CSC the testing needs is not in the inventory
        (before anything is changed).
    RuntimeError
        A queue is not ENABLED or a CSC has no heartbeat (before anything is changed).
    MinimalTestingError
        A telescope failed; the message says where and why for each.
    UpgradeAborted
        An operator aborted at a sign-off.
    """
    chosen = chosen_telescopes(run.site, telescopes)
    await _preconditions(run, chosen)
    shown: list[str] = []
    failures: list[str] = []
    for telescope in chosen:
        key = f"minimal-testing-{telescope}"
        title = TELESCOPES[telescope].title
        if run.already_done(key):
            async with run.step(f"{SECTION}: {title}", key, f"{title} tested") as step:
                step.skip(f"{title} passed in an earlier run of {run.upgrade_id}")
            continue
        try:
            result = await telescope_testing(telescope)
        except UpgradeAborted:
            raise
        except Exception as exc:  # noqa: BLE001 - the other telescope is tested too
            failures.append(str(exc))
            run.journal.facts[f"minimal testing {title}"] = f"FAILED: {exc}"
            continue
        shown.append(result)
        run.journal.facts[f"minimal testing {title}"] = result
        if not run.dry_run:
            await run.act(key, f"{title} passed minimal testing", _nothing)
    if failures:
        raise MinimalTestingError("minimal testing failed — " + " | ".join(failures))
    return shown


async def _nothing() -> None:
    """Marks a telescope as passed for the upgrade id (`UpgradeRun.act` remembers it)."""


@flow(name="minimal-testing", log_prints=True)
async def minimal_testing(
    site: str,
    upgrade_id: str,
    *,
    telescopes: list[Telescope] | None = None,
    dry_run: bool = False,
) -> dict[str, Any] | PrefectState[Any]:
    """Test that the telescopes track and take images after an upgrade (procedure: "Minimal
    Testing").

    Parameters
    ----------
    site
        The name of the site's `Rubin Upgrade Site` block (summit, tts, bts, sim).
    upgrade_id
        The upgrade being tested (e.g. ``c0045``); a re-run with the same id does not test
        again a telescope that passed (give a new id, e.g. ``c0045-retest``, to test it again).
    telescopes
        ``auxtel``, ``maintel`` or both; None tests every telescope the site file lists.
    dry_run
        Read everything, change nothing, and produce the plan.
    """
    try:
        async with upgrade_run(
            "minimal-testing", site, upgrade_id, dry_run=dry_run, planned_steps=1
        ) as run:
            run.journal.planned_steps = planned_steps(run.site, telescopes)
            shown = await run_minimal_testing(run, telescopes)
            if run.dry_run:
                run.journal.final_message = "Plan complete: nothing was changed."
            else:
                run.journal.final_message = "Minimal testing passed: " + "; ".join(shown) + "."
    except UpgradeAborted as exc:
        return Cancelled(name="Aborted", message=str(exc))
    return run.summary()
