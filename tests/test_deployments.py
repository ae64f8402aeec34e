"""The deployments operators run (``<flow>/<site>``) and the demo that serves ``<flow>/sim``."""

from __future__ import annotations

import argparse
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prefect import get_client

from deployments.catalog import FLOWS, ParameterError, parse_parameters, production_deployments
from deployments.cli import build_parser
from deployments.cli_demo import run_on_site
from deployments.cli_deploy import deploy_site
from deployments.cli_plan import plan_flow
from sim.site import SimulatedSite, load_base_site
from tests.sitekit import FAST

pytestmark = pytest.mark.usefixtures("prefect_server")


async def test_each_site_gets_every_flow_on_its_kubernetes_work_pool() -> None:
    pool = f"k8s-{uuid.uuid4().hex[:6]}"
    image = "ghcr.io/lsst-ts/rubin-upgrade:1.0.0"
    names = []
    for site in ("summit", "tts", "bts"):
        names += await deploy_site(site, work_pool=pool, image=image)
    assert names == [f"{flow}/{site}" for site in ("summit", "tts", "bts") for flow in FLOWS]
    async with get_client() as client:
        work_pool = await client.read_work_pool(pool)
        assert work_pool.type == "kubernetes"
        summit = await client.read_deployment_by_name("full-upgrade/summit")
    # A run of full-upgrade/summit acts on the summit block and nothing else.
    assert summit.parameters == {"site": "summit"}
    assert summit.work_pool_name == pool
    assert summit.job_variables == {"image": image, "namespace": "rubin-upgrade"}
    assert summit.entrypoint == "flows.full_upgrade.full_upgrade"


async def test_deploying_to_a_site_that_is_not_one_changes_nothing() -> None:
    with pytest.raises(ValueError, match="choose one of summit, tts, bts"):
        await production_deployments("sim", work_pool="p", image="i")
    with pytest.raises(ValueError, match="no flow fool-upgrade"):
        await deploy_site("tts", work_pool="p", image="i", flows=["fool-upgrade"])


def test_demo_parameters_are_json_or_text_and_must_be_the_flows() -> None:
    accepted: dict[str, object] = {"upgrade_id": {}, "dry_run": {}, "site": {}}
    fixed = {"site": "the sim deployments act on the sim site"}
    assert parse_parameters(["dry_run=true", "upgrade_id=c0046"], accepted, fixed=fixed) == {
        "dry_run": True,
        "upgrade_id": "c0046",
    }
    with pytest.raises(ParameterError, match="it takes dry_run, upgrade_id"):
        parse_parameters(["dryrun=true"], accepted, fixed=fixed)
    with pytest.raises(ParameterError, match="KEY=VALUE"):
        parse_parameters(["dry_run"], accepted, fixed=fixed)
    with pytest.raises(ParameterError, match="act on the sim site"):
        parse_parameters(["site=summit"], accepted, fixed=fixed)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--flow", "fool-upgrade"], "choose one of"),
        (["demo", "-p", "breaks_schema=true"], "not a parameter of this flow"),
    ],
)
async def test_demo_refuses_bad_input_before_starting_anything(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args: argparse.Namespace = build_parser().parse_args([*argv, "--workdir", str(tmp_path)])
    assert await args.handler(args) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # noqa: ASYNC240 - no server database, no site files


@pytest.fixture(scope="module")
async def bts(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SimulatedSite]:
    workdir = tmp_path_factory.mktemp("bts")
    async with SimulatedSite(load_base_site("bts"), workdir=workdir, options=FAST) as site:
        yield site


async def test_plan_prints_the_dry_run_of_a_site_file(bts: SimulatedSite) -> None:
    name = f"plan-{uuid.uuid4().hex[:6]}"
    start = len(bts.write_log.records)  # the CSCs registered their schemas on starting
    summary = await plan_flow("full-upgrade", bts.site_config(name), bts.credentials(), {})
    plan = summary["plan"]
    assert plan[0].startswith("Send the Watcher OFFLINE")
    assert any(p.startswith("Delete the CSC Jobs as cleanup_all does") for p in plan)
    assert plan[-1].startswith("Slack (site):")
    assert bts.write_log.records[start:] == []


# Prefect's Runner leaves one loopback transport of its own for the garbage collector after a
# clean stop (the demo awaits its exit); the unraisable warning names no object of ours.
@pytest.mark.filterwarnings("ignore:Exception ignored in:pytest.PytestUnraisableExceptionWarning")
async def test_the_sim_deployment_runs_served_and_prints_its_report(
    bts: SimulatedSite, capsys: pytest.CaptureFixture[str]
) -> None:
    # As `prefect deployment run full-upgrade/sim -p dry_run=true` with the demo serving it.
    start = len(bts.write_log.records)
    status = await run_on_site(
        bts, "full-upgrade", {"upgrade_id": "c0045", "dry_run": True}, auto_approve=True
    )
    out = capsys.readouterr()
    assert status == 0, out.err[-2000:]
    assert "# full-upgrade at sim — c0045" in out.out
    assert "Plan complete: nothing was changed." in out.out
    assert "full-upgrade/sim ended Completed" in out.err
    assert bts.write_log.records[start:] == []
