"""The simulated Summit acts as one site: Kubernetes, Argo CD, Kafka and the CSCs agree."""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from blocks.site import CscName, State
from clients.argocd import ArgoCdClient
from clients.kubernetes import KubernetesClient
from clients.registry import SchemaRegistryClient
from clients.sal import SalClient, alive, gone, in_state
from sim.site import SimOptions, SimulatedSite, load_base_site


@pytest.fixture(scope="module")
async def summit(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SimulatedSite]:
    workdir = tmp_path_factory.mktemp("summit")
    options = SimOptions(
        heartbeat_interval_s=0.5, image_pull_s=0.3, argocd_sync_s=0.1, consumers=False
    )
    async with SimulatedSite(load_base_site("summit"), workdir=workdir, options=options) as site:
        site.write_site_file(workdir / "sim.yaml")
        yield site


async def test_status_lists_every_csc_in_its_expected_state(
    summit: SimulatedSite, capsys: pytest.CaptureFixture[str]
) -> None:
    from deployments.cli_status import run

    site_file = summit.workdir / "sim.yaml"
    code = await run(argparse.Namespace(site_file=site_file, json=True, window=3.0))
    rows = json.loads(capsys.readouterr().out)
    assert code == 0, [row for row in rows if row["short"]]
    assert len(rows) == 122
    assert {row["state"] == row["expected_state"] for row in rows} == {True}
    assert all(row["heartbeat_age_s"] is not None and row["heartbeat_age_s"] < 3 for row in rows)
    queue = next(row for row in rows if row["name"] == "ScriptQueue" and row["index"] == 1)
    assert queue["expected_state"] == "ENABLED"


async def test_deleted_jobs_stop_their_cscs_and_a_sync_brings_them_back(
    summit: SimulatedSite,
) -> None:
    config = summit.site_config()
    obssys = [
        e.name
        for e in config.kubernetes_cscs()
        if e.kubernetes and e.kubernetes.namespace == "obssys"
    ]
    assert CscName(name="ScriptQueue", index=1) in obssys
    password = summit.credentials().argocd_password
    assert password is not None
    async with (
        SchemaRegistryClient(config.schema_registry.url) as registry,
        SalClient(bootstrap_servers=config.kafka.bootstrap_servers, registry=registry) as sal,
        await KubernetesClient.from_site(config.kubernetes) as kubernetes,
        ArgoCdClient(config.argocd.url, password=password) as argocd,
        sal.state_board(obssys) as board,
    ):
        await board.wait_for(alive(1.5), obssys, deadline_s=10)
        deleted = await kubernetes.delete_jobs("obssys")
        assert len(deleted.deleted) == len(obssys)
        await board.wait_for(gone(1.5), obssys, deadline_s=10)

        app = await argocd.get_application("obssys")
        assert app.status.sync.status == "OutOfSync"
        await argocd.sync_and_wait("obssys", timeout_s=30)
        await board.wait_for(alive(1.5), obssys, deadline_s=15)
        for csc in obssys:
            expected = config.csc(csc).expected_state
            await board.wait_for(in_state(expected), [csc], deadline_s=10)
        assert config.csc("ScriptQueue:2").expected_state is State.ENABLED
    jobs = {job.name: job for job in summit.model.jobs.values() if job.namespace == "obssys"}
    assert all(job.image.endswith(":c0044") for job in jobs.values())
    writes = [(r.service, r.method) for r in summit.write_log.records]
    assert ("kubernetes", "DELETE") in writes
    assert ("argocd", "sync") in writes
    assert writes.index(("kubernetes", "DELETE")) < writes.index(("argocd", "sync"))


def test_site_file_names_the_simulated_endpoints(summit: SimulatedSite) -> None:
    config = summit.site_config()
    assert config.kubernetes.kubeconfig == summit.kubeconfig
    assert config.love.url.endswith("/love")
    assert config.argocd.url.endswith("/argo-cd")
    assert config.slack.base_url is not None
    secrets_file = SimulatedSite.secrets_path(summit.workdir / "sim.yaml")
    assert secrets_file.stat().st_mode & 0o777 == 0o600
    text = (summit.workdir / "sim.yaml").read_text()
    password = summit.credentials().argocd_password
    assert password is not None
    assert password.get_secret_value() not in text
    assert config.kubernetes.kubeconfig is not None
    assert Path(config.kubernetes.kubeconfig).exists()
