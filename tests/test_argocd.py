"""Our Argo CD client against the simulated Argo CD of a Summit model: what the upgrade relies on.

Syncing after the Phalanx merge must end Synced with the operation Succeeded while telescope apps
stay Progressing, recreate the CSC Jobs the cleanup deleted with the new image, survive the sites'
spurious first failure (once), and report real failures, expired sessions and bad passwords in
ways an operator can act on.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

from blocks.site import SiteConfig, load_site_file
from clients.argocd import (
    ArgoCdAuthError,
    ArgoCdClient,
    ArgoCdNotFoundError,
    ArgoCdOperationInProgressError,
    ArgoCdSyncFailedError,
    ArgoCdTimeoutError,
    ArgoCdUnavailableError,
    ArgoCdWebError,
    HealthStatusCode,
    OperationPhase,
    ResourceRef,
    SyncStatusCode,
)
from sim.argocd import ArgoCdState, create_argocd_app
from sim.http import serve_app
from sim.model import ModelOptions, SiteModel
from sim.writelog import WriteLog

SUMMIT = Path(__file__).resolve().parents[1] / "deployments" / "sites" / "summit.yaml"
PASSWORD = "sim-argocd-password-7f3a"  # the simulated server's; exists only in tests
NEW_REVISION = "5c1e2ab"
NEW_TAG = "c0045"
TIMEOUT_S = 5.0
POLL_S = 0.01


class _CurrentApp:
    """One uvicorn server for the module, serving whichever test's Argo CD is current."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None
        await self.app(scope, receive, send)


@dataclass
class ArgoCd:
    url: str
    state: ArgoCdState
    model: SiteModel
    write_log: WriteLog

    def syncs(self) -> list[str]:
        return [r.target for r in self.write_log.records if r.method == "sync"]

    def logins(self) -> int:
        return self.state.requests.count(("POST", "/argo-cd/api/v1/session"))


@pytest.fixture(scope="module")
def summit() -> SiteConfig:
    return load_site_file(SUMMIT)


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[tuple[str, _CurrentApp]]:
    current = _CurrentApp()
    async with serve_app(current, name="argocd") as url:
        yield url, current


@pytest.fixture
async def argocd(summit: SiteConfig, server: tuple[str, _CurrentApp]) -> AsyncIterator[ArgoCd]:
    url, current = server
    model = SiteModel(
        summit,
        options=ModelOptions(image_pull_s=0, broker_shutdown_s=0, namespace_termination_s=0),
        runner=None,
    )
    write_log = WriteLog()
    app = create_argocd_app(model, write_log, password=PASSWORD)
    current.app = app
    state: ArgoCdState = app.state.argocd
    yield ArgoCd(f"{url}/argo-cd", state, model, write_log)
    await state.aclose()
    await model.aclose()


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """One connection pool for the module: making an httpx client costs ~0.1 s (TLS context)."""
    async with httpx.AsyncClient(timeout=10.0) as http:
        yield http


@pytest.fixture
async def client(argocd: ArgoCd, http: httpx.AsyncClient) -> AsyncIterator[ArgoCdClient]:
    async with ArgoCdClient(
        argocd.url, password=SecretStr(PASSWORD), http_client=http, retries=2, retry_delay_s=0.0
    ) as client:
        yield client


# --- Reading applications ----------------------------------------------------------------------


async def test_lists_the_summits_telescope_apps(
    argocd: ArgoCd, client: ArgoCdClient, summit: SiteConfig
) -> None:
    apps = await client.list_applications(project="telescope")

    assert [a.name for a in apps] == sorted(summit.argocd.telescope_apps)
    assert len(apps) == 11
    assert {a.project for a in apps} == {"telescope"}
    assert {a.sync_status for a in apps} == {SyncStatusCode.SYNCED}
    auxtel = next(a for a in apps if a.name == "auxtel")
    # Running CSC Jobs keep a telescope app Progressing, never Healthy.
    assert auxtel.health_status is HealthStatusCode.PROGRESSING
    everything = await client.list_applications()
    assert {"science-platform", "nublado", "sasquatch"} <= {a.name for a in everything}
    assert argocd.logins() == 1
    assert argocd.write_log.records == []  # logging in and reading change nothing


async def test_unknown_app_is_not_found_and_not_retried(
    argocd: ArgoCd, client: ArgoCdClient
) -> None:
    with pytest.raises(ArgoCdNotFoundError, match="no-such-app"):
        await client.get_application("no-such-app")
    assert argocd.state.requests.count(("GET", "/argo-cd/api/v1/applications/no-such-app")) == 1


async def test_deleted_jobs_make_the_app_out_of_sync_and_missing(
    argocd: ArgoCd, client: ArgoCdClient
) -> None:
    for namespace, name in [key for key in argocd.model.jobs if key[0] == "auxtel"]:
        argocd.model.delete_job(namespace, name)

    app = await client.get_application("auxtel")

    assert app.sync_status is SyncStatusCode.OUT_OF_SYNC
    assert app.health_status is HealthStatusCode.MISSING
    assert {r.name for r in app.out_of_sync_resources} >= {"atdome-job", "atmcs-job"}


# --- Syncing -----------------------------------------------------------------------------------


async def test_a_quick_sync_is_seen_long_before_the_poll_interval(
    argocd: ArgoCd, client: ArgoCdClient
) -> None:
    """The app is read again after 0.25 s, then twice as long each time up to the interval: a
    sync of a third of a second does not keep the upgrade waiting the site's whole interval."""
    argocd.state.sync_duration_s = 0.3
    argocd.model.publish_upgrade(revision=NEW_REVISION, image_tag=NEW_TAG)
    async with asyncio.timeout(10.0):  # polling every 60 s would wait a minute
        app = await client.sync_and_wait(
            "calsys", revision=NEW_REVISION, timeout_s=120.0, poll_interval_s=60.0
        )
    assert app.sync_status is SyncStatusCode.SYNCED
    assert argocd.syncs() == ["calsys"]


async def test_sync_recreates_deleted_jobs_with_the_new_image(
    argocd: ArgoCd, client: ArgoCdClient
) -> None:
    argocd.model.publish_upgrade(revision=NEW_REVISION, image_tag=NEW_TAG)
    argocd.model.delete_job("auxtel", "atdome-job")
    before = await client.get_application("auxtel")
    assert before.sync_status is SyncStatusCode.OUT_OF_SYNC
    assert before.target_revision == NEW_REVISION
    assert before.deployed_revision != NEW_REVISION

    app = await client.sync_and_wait(
        "auxtel", revision=NEW_REVISION, timeout_s=TIMEOUT_S, poll_interval_s=POLL_S
    )

    assert app.sync_status is SyncStatusCode.SYNCED
    state = app.operation_state
    assert state is not None
    assert state.phase is OperationPhase.SUCCEEDED
    assert state.sync_result is not None
    assert state.sync_result.revision == NEW_REVISION
    assert any(
        r.name == "atdome-job" and "created" in r.message for r in state.sync_result.resources or []
    )
    assert app.health_status is HealthStatusCode.PROGRESSING  # never Healthy: Jobs run
    assert app.deployed_revision == NEW_REVISION
    job = argocd.model.jobs[("auxtel", "atdome-job")]
    assert job.image.endswith(f":{NEW_TAG}")
    assert argocd.syncs() == ["auxtel"]
    assert argocd.write_log.records[0].service == "argocd"
    assert argocd.write_log.records[0].body == {
        "revision": NEW_REVISION,
        "prune": False,
        "dryRun": False,
    }


async def test_sync_is_an_operation_that_runs_then_succeeds(
    argocd: ArgoCd, client: ArgoCdClient
) -> None:
    argocd.state.sync_duration_s = 0.3
    argocd.model.publish_upgrade(revision=NEW_REVISION, image_tag=NEW_TAG, apps=["obssys"])

    started = await client.sync_application("obssys")
    assert started.operation_in_progress
    with pytest.raises(ArgoCdOperationInProgressError, match="already in progress"):
        await client.sync_application("obssys")
    app = await client.get_application("obssys", refresh=None)
    assert app.operation_state is not None
    assert app.operation_state.phase is OperationPhase.RUNNING
    assert app.sync_status is SyncStatusCode.OUT_OF_SYNC

    app = await client.wait_for_sync("obssys", timeout_s=TIMEOUT_S, poll_interval_s=POLL_S)

    assert app.operation_state is not None
    assert app.operation_state.phase is OperationPhase.SUCCEEDED
    assert argocd.syncs() == ["obssys"]  # the refused second request changed nothing


async def test_dry_run_changes_nothing(argocd: ArgoCd, client: ArgoCdClient) -> None:
    argocd.model.publish_upgrade(revision=NEW_REVISION, image_tag=NEW_TAG)
    argocd.model.delete_job("auxtel", "atdome-job")

    await client.sync_application("auxtel", dry_run=True)
    app = await client.wait_for_operation("auxtel", timeout_s=TIMEOUT_S, poll_interval_s=POLL_S)

    assert app.operation_state is not None
    assert app.operation_state.phase is OperationPhase.SUCCEEDED
    assert app.operation_state.dry_run
    assert app.sync_status is SyncStatusCode.OUT_OF_SYNC
    assert app.deployed_revision != NEW_REVISION
    assert ("auxtel", "atdome-job") not in argocd.model.jobs
    assert argocd.model.applications["auxtel"].image_tag != NEW_TAG
    assert argocd.write_log.records[0].body["dryRun"] is True


async def test_spurious_first_failure_is_retried_once(
    argocd: ArgoCd, client: ArgoCdClient, caplog: pytest.LogCaptureFixture
) -> None:
    argocd.model.publish_upgrade(revision=NEW_REVISION, image_tag=NEW_TAG)
    argocd.model.delete_job("calsys", "atmonochromator-job")
    argocd.state.fail_first_sync("calsys")

    with caplog.at_level(logging.WARNING, logger="clients.argocd"):
        app = await client.sync_and_wait("calsys", timeout_s=TIMEOUT_S, poll_interval_s=POLL_S)

    assert app.sync_status is SyncStatusCode.SYNCED
    assert argocd.syncs() == ["calsys", "calsys"]
    assert ("calsys", "atmonochromator-job") in argocd.model.jobs
    assert "syncing once more" in caplog.text


async def test_permanent_failure_raises_with_argos_message(
    argocd: ArgoCd, client: ArgoCdClient
) -> None:
    message = 'Job.batch "atdome-job" is invalid: spec.template: field is immutable'
    argocd.model.publish_upgrade(revision=NEW_REVISION, image_tag=NEW_TAG)
    argocd.state.fail_every_sync("auxtel", message)

    with pytest.raises(ArgoCdSyncFailedError) as caught:
        await client.sync_and_wait("auxtel", timeout_s=TIMEOUT_S, poll_interval_s=POLL_S)

    assert caught.value.message == message
    assert caught.value.phase is OperationPhase.FAILED
    assert message in str(caught.value)
    assert argocd.syncs() == ["auxtel", "auxtel"]  # retried once, not more
    app = await client.get_application("auxtel")
    assert app.sync_status is SyncStatusCode.OUT_OF_SYNC


async def test_unknown_revision_fails_the_sync(argocd: ArgoCd, client: ArgoCdClient) -> None:
    await client.sync_application("auxtel", revision="deadbee")
    with pytest.raises(ArgoCdSyncFailedError, match="unable to resolve 'deadbee'"):
        await client.wait_for_sync("auxtel", timeout_s=TIMEOUT_S, poll_interval_s=POLL_S)


async def test_terminating_a_running_sync(argocd: ArgoCd, client: ArgoCdClient) -> None:
    argocd.state.sync_duration_s = 30.0
    argocd.model.publish_upgrade(revision=NEW_REVISION, image_tag=NEW_TAG)
    argocd.model.delete_job("auxtel", "atdome-job")
    await client.sync_application("auxtel")
    with pytest.raises(ArgoCdTimeoutError, match="operation Running"):
        await client.wait_for_sync("auxtel", timeout_s=0.05, poll_interval_s=0.01)

    await client.terminate_operation("auxtel")

    with pytest.raises(ArgoCdSyncFailedError, match="Operation terminated") as caught:
        await client.wait_for_sync("auxtel", timeout_s=TIMEOUT_S, poll_interval_s=POLL_S)
    assert caught.value.terminated
    assert ("auxtel", "atdome-job") not in argocd.model.jobs  # the sync never applied
    assert [(r.method, r.target) for r in argocd.write_log.records] == [
        ("sync", "auxtel"),
        ("terminate", "auxtel"),
    ]
    with pytest.raises(ArgoCdWebError, match="No operation is in progress") as nothing:
        await client.terminate_operation("auxtel")
    assert nothing.value.status == 400


async def test_terminated_sync_is_not_retried(argocd: ArgoCd, client: ArgoCdClient) -> None:
    argocd.state.sync_duration_s = 30.0

    async def terminate_when_running() -> None:
        while True:
            app = await client.get_application("obssys", refresh=None)
            if app.operation_state and app.operation_state.phase is OperationPhase.RUNNING:
                await client.terminate_operation("obssys")
                return

    terminator = asyncio.create_task(terminate_when_running())
    with pytest.raises(ArgoCdSyncFailedError, match="terminated"):
        await client.sync_and_wait("obssys", timeout_s=TIMEOUT_S, poll_interval_s=POLL_S)
    await terminator
    assert argocd.syncs() == ["obssys"]


async def test_partial_sync_request_is_recorded(argocd: ArgoCd, client: ArgoCdClient) -> None:
    resource = ResourceRef(group="batch", kind="Job", namespace="auxtel", name="atdome-job")
    await client.sync_application("auxtel", resources=[resource], prune=True)
    await client.wait_for_sync("auxtel", timeout_s=TIMEOUT_S, poll_interval_s=POLL_S)
    assert argocd.write_log.records[0].body["resources"] == ["Job/atdome-job"]
    assert argocd.write_log.records[0].body["prune"] is True


# --- Sessions and faults -----------------------------------------------------------------------


async def test_expired_session_logs_in_again_transparently(
    argocd: ArgoCd, client: ArgoCdClient
) -> None:
    await client.get_application("auxtel")
    argocd.state.expire_tokens()

    app = await client.get_application("auxtel")

    assert app.name == "auxtel"
    assert argocd.logins() == 2


async def test_wrong_password_is_an_auth_error_that_never_shows_the_password(
    argocd: ArgoCd, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "hunter2-not-the-password"
    caplog.set_level(logging.DEBUG)
    async with ArgoCdClient(
        argocd.url, password=SecretStr(wrong), http_client=http, retry_delay_s=0.0
    ) as client:
        with pytest.raises(ArgoCdAuthError) as caught:
            await client.list_applications()
        assert wrong not in repr(client)

    error = caught.value
    for text in (str(error), repr(error), *map(str, error.args), caplog.text):
        assert wrong not in text
        assert PASSWORD not in text
    assert "admin" in str(error)
    assert "Invalid username or password" in str(error)
    assert argocd.logins() == 1  # a refused login is not retried


async def test_server_errors_are_retried_and_client_errors_are_not(
    argocd: ArgoCd, client: ArgoCdClient
) -> None:
    argocd.state.fail_next(2, status=503)
    app = await client.get_application("auxtel")
    assert app.name == "auxtel"
    assert argocd.state.pending_failures == 0

    argocd.state.fail_next(10, status=502)
    with pytest.raises(ArgoCdWebError) as caught:
        await client.get_application("auxtel")
    assert caught.value.status == 502
    assert caught.value.attempts == 3  # retries=2
    argocd.state.clear_faults()


async def test_unreachable_argocd_is_retried_then_reported(http: httpx.AsyncClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/argo-cd"
    async with ArgoCdClient(
        url, password=SecretStr(PASSWORD), http_client=http, retries=2, retry_delay_s=0.0
    ) as client:
        with pytest.raises(ArgoCdUnavailableError) as caught:
            await client.get_application("auxtel")
    assert caught.value.attempts == 3
    assert PASSWORD not in str(caught.value)


async def test_injected_http_client_is_not_closed(argocd: ArgoCd, http: httpx.AsyncClient) -> None:
    async with ArgoCdClient(argocd.url, password=SecretStr(PASSWORD), http_client=http) as c:
        await c.login()
    assert not http.is_closed


# --- The diff report before syncing Sasquatch -------------------------------------------------


async def test_diff_report_for_out_of_sync_sasquatch(
    argocd: ArgoCd, client: ArgoCdClient, summit: SiteConfig
) -> None:
    model = argocd.model
    model.publish_upgrade(revision=NEW_REVISION, image_tag=NEW_TAG, apps=[], sasquatch_changes=True)
    telegraf = model.deployments[("sasquatch", "sasquatch-telegraf-auxtel")]
    model.scale_deployment(telegraf, 0)

    report = await client.diff_report("sasquatch")

    assert report.sync_status is SyncStatusCode.OUT_OF_SYNC
    assert not report.in_sync
    assert report.target_revision == NEW_REVISION
    assert report.deployed_revision == "0000000"
    by_name = {(r.resource.kind, r.resource.name): r for r in report.resources}
    scaled = by_name[("Deployment", "sasquatch-telegraf-auxtel")]
    assert scaled.changes == ["spec.replicas: 0 -> 1"]
    config_maps = [r for r in report.resources if r.resource.kind == "ConfigMap"]
    assert len(config_maps) == len(summit.telegraf.deployments)
    assert any("new topics" in change for change in config_maps[0].changes)
    assert ("Deployment", "sasquatch-telegraf-m2") not in by_name  # unchanged ones are left out
    text = report.render()
    assert f"0000000 -> {NEW_REVISION}" in text
    assert "spec.replicas: 0 -> 1" in text

    await client.sync_and_wait("sasquatch", timeout_s=TIMEOUT_S, poll_interval_s=POLL_S)

    assert telegraf.replicas == 1
    after = await client.diff_report("sasquatch")
    assert after.in_sync
    assert after.deployed_revision == NEW_REVISION


async def test_diff_report_shows_new_images_and_missing_jobs(
    argocd: ArgoCd, client: ArgoCdClient
) -> None:
    argocd.model.publish_upgrade(revision=NEW_REVISION, image_tag=NEW_TAG, apps=["auxtel"])
    argocd.model.delete_job("auxtel", "atdome-job")

    report = await client.diff_report("auxtel")

    by_name = {r.resource.name: r for r in report.resources}
    assert by_name["atdome-job"].changes == ["missing: a sync creates it"]
    assert by_name["atdome-job"].health is HealthStatusCode.MISSING
    image = "spec.template.spec.containers[0].image"
    assert by_name["atmcs-job"].changes == [
        f'{image}: "ts-dockerhub.lsst.org/atmcs:c0044" -> "ts-dockerhub.lsst.org/atmcs:c0045"'
    ]
