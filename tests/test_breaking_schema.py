"""An upgrade that breaks schema compatibility: it fails without NONE and succeeds with it.

The new ATDome image changes a field's type in its heartbeat, which FORWARD compatibility
refuses (an old reader cannot read the new writer's records). Run as an ordinary upgrade, the
registry refuses the schema, the CSC's process cannot start and its Job fails: the bring-up
reports it with the Job's message (without waiting out its budget on a CSC that cannot come)
and the registry is never touched. Run again as a breaking upgrade, the registry goes to NONE
for the bring-up, every CSC comes up on the new image, and FORWARD is back at the end.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from prefect.client.schemas.objects import State as PrefectState

from blocks.site import CscName, SiteConfig, State
from blocks.upgrade_site import save_site_block
from clients.registry import CompatibilityLevel, SchemaRegistryClient
from flows.run import UpgradeRun
from sim.site import SimulatedSite
from tests.sitekit import (
    break_heartbeat_schema,
    heartbeat_field_type,
    operator_for,
    run_with_operator,
)
from tests.test_faults import LIMIT_S, report_of, run_steps, stand

pytestmark = pytest.mark.usefixtures("prefect_server")

__all__ = ["stand"]  # the small test stand, a fixture of the fault suite

ATDOME = CscName(name="ATDome", index=0)
SUBJECT = "lsst.sal.ATDome.logevent_heartbeat-value"


def compatibility_writes(site: SimulatedSite, since: int) -> list[Any]:
    return [
        r.body.get("compatibility")
        for r in site.write_log.records[since:]
        if r.service == "schema-registry" and r.target == "/config"
    ]


async def upgrade(site: SimulatedSite, name: str, upgrade_id: str, *, breaks: bool) -> Any:
    from flows.full_upgrade import full_upgrade

    operator = operator_for(site, name, name)
    async with asyncio.timeout(LIMIT_S):
        state: PrefectState[Any] = await run_with_operator(
            operator,
            lambda: full_upgrade(
                site=name,
                upgrade_id=upgrade_id,
                breaks_schema_compatibility=breaks,
                return_state=True,
            ),
        )
    return state


async def save_breaking_stand(stand: SimulatedSite) -> tuple[str, SiteConfig]:
    """The stand, with the upgrade's ATDome image breaking FORWARD, saved under a new name."""
    name = f"breaking-{uuid.uuid4().hex[:6]}"
    # A budget no test would wait out: a failed Job ends the wait, not the budget.
    config = stand.site_config(name)
    config = config.model_copy(
        update={"timeouts": config.timeouts.model_copy(update={"bring_up_s": 600.0})}
    )
    await save_site_block(config, stand.credentials(), name)
    break_heartbeat_schema(stand, "ATDome", "atdome")
    return name, config


async def deploy_only(stand: SimulatedSite, name: str) -> Any:
    """The deploy section alone, after what the clean-up did: the CSC Jobs deleted."""
    from flows.sections import deploy

    async def steps(run: UpgradeRun) -> None:
        stand.model.publish_upgrade(revision="5f3e2a1", image_tag=stand.options.upgrade_image_tag)
        await run.services.kubernetes.cleanup_all(run.site.cleanup)
        await deploy(sync_sasquatch="no", nublado_available_after=False)

    return await run_steps(name, steps, operator_for(stand, name, name))


@pytest.mark.parametrize(
    "how",
    [
        # The deploy section meets the refusal; the whole upgrade (slow) shows the same.
        "deploy",
        pytest.param("full-upgrade", marks=pytest.mark.slow),
    ],
)
async def test_without_none_the_new_schema_is_refused_and_its_csc_reported_short(
    stand: SimulatedSite, how: str
) -> None:
    name, config = await save_breaking_stand(stand)
    assert stand.fleet is not None
    start = len(stand.write_log.records)

    if how == "deploy":
        state = await deploy_only(stand, name)
    else:
        state = await upgrade(stand, name, "c0045", breaks=False)

    # The procedure: report the stragglers, then carry on.
    assert state.is_completed(), state
    assert compatibility_writes(stand, start) == []  # the registry is never touched
    assert stand.registry_app.state.registry.compatibility(SUBJECT) == "FORWARD"
    assert ATDOME not in stand.fleet.running
    assert SUBJECT in stand.fleet.failures[ATDOME]
    summary = await state.aresult()
    assert [s.split(" (")[0] for s in summary["short"]] == ["ATDome:0"], summary
    (short,) = summary["short"]
    # Why, in the registry's own words, from the Job's failure.
    assert "Job auxtel/atdome-job failed" in short
    assert f'incompatible with an earlier schema for subject "{SUBJECT}"' in short
    assert "incompatible" in await report_of(state)
    warnings = [m.text for m in stand.slack_messages if ":warning:" in m.text]
    assert any("ATDome:0" in w and "incompatible" in w for w in warnings), warnings
    # Every other CSC's Job is up on the new image.
    others = [e.name for e in config.cscs if e.kubernetes and e.name != ATDOME]
    images = {str(n): stand.fleet.running[n].image for n in others}
    assert all(image.endswith(":c0045") for image in images.values()), images


@pytest.mark.slow  # the Summit's end-to-end run (in CI) upgrades a breaking ATDome too
async def test_with_none_every_csc_comes_up_and_forward_is_restored(
    stand: SimulatedSite,
) -> None:
    name, _ = await save_breaking_stand(stand)
    assert stand.fleet is not None
    start = len(stand.write_log.records)

    state = await upgrade(stand, name, "c0045", breaks=True)

    assert state.is_completed(), state
    summary = await state.aresult()
    assert summary["short"] == [], summary
    # NONE before the first CSC of the new images starts, FORWARD again after the bring-up.
    records = stand.write_log.records[start:]
    none_at = next(i for i, r in enumerate(records) if r.body.get("compatibility") == "NONE")
    first_sync = next(
        i for i, r in enumerate(records) if r.service == "argocd" and r.method == "sync"
    )
    assert none_at < first_sync
    assert compatibility_writes(stand, start) == ["NONE", "FORWARD"]
    assert stand.registry_app.state.registry.compatibility(SUBJECT) == "FORWARD"
    assert ATDOME not in stand.fleet.failures
    atdome = stand.fleet.running[ATDOME]
    assert atdome.image.endswith(":c0045")
    assert atdome.state is State.STANDBY
    # ATDome's new schema is now the subject's latest version.
    assert heartbeat_field_type(stand, SUBJECT) == "string"


async def test_a_rerun_after_the_fix_recreates_the_refused_cscs_job(stand: SimulatedSite) -> None:
    """The refused Job has failed and will not start again by itself. The operator fixes the
    cause (here: NONE by hand) and runs the same upgrade id again: the failed Job is deleted
    and its app synced again, the apps synced already are left alone, and the CSC comes up."""
    from flows.sections import deploy

    name, config = await save_breaking_stand(stand)
    assert stand.fleet is not None
    refused = await deploy_only(stand, name)
    assert refused.is_completed(), refused
    assert ATDOME not in stand.fleet.running
    registry = stand.registry_app.state.registry
    async with SchemaRegistryClient(stand.urls["schema_registry"]) as client:
        await client.set_compatibility(CompatibilityLevel.NONE)
    start = len(stand.write_log.records)

    async def deploy_again(run: UpgradeRun) -> None:
        await deploy(sync_sasquatch="no", nublado_available_after=False)

    state = await run_steps(name, deploy_again, operator_for(stand, name, name))

    assert state.is_completed(), state
    summary = await state.aresult()
    assert summary["short"] == [], summary
    atdome = stand.fleet.running[ATDOME]
    assert atdome.image.endswith(":c0045")
    assert atdome.state is State.STANDBY
    assert registry.compatibility(SUBJECT) == "NONE"
    records = stand.write_log.records[start:]
    syncs = [r.target for r in records if r.service == "argocd" and r.method == "sync"]
    assert syncs == ["auxtel"], syncs
    deletions = [r.target for r in records if r.service == "kubernetes" and r.method == "DELETE"]
    assert deletions == [
        "batch/v1/namespaces/auxtel/jobs?labelSelector=csc-class=atdome,csc in (atdome)"
    ], deletions
    report = await report_of(state)
    assert "failed Job(s) atdome-job deleted and auxtel synced again" in report
    # A third run finds nothing failed: nothing is deleted or synced.
    again = len(stand.write_log.records)
    third = await run_steps(name, deploy_again, operator_for(stand, name, name))
    assert third.is_completed(), third
    assert not [r for r in stand.write_log.records[again:] if r.service in ("argocd", "kubernetes")]
    assert config.name == name
