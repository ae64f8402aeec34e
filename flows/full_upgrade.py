"""``full-upgrade``: the whole "Deploying the Upgrade" procedure, sections 1 to 4.

Run as ``prefect deployment run full-upgrade/<site>``. The run graph reads like the procedure —
preconditions, shut down the control system, clean up, update configurations, deploy — and the
run stops for an operator's sign-off wherever a person must act. Whatever happens, the run ends
with a report artifact; a run that fails, is aborted or is cancelled puts back the registry's
compatibility and telegraf's replicas, or says in its report exactly what is left to restore.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.client.schemas.objects import State
from prefect.states import Cancelled

from flows.common import upgrade_run
from flows.minimal_testing import planned_steps, run_minimal_testing
from flows.run import UpgradeRun
from flows.sections import (
    SyncSasquatch,
    clean_up,
    deploy,
    preconditions,
    shut_down_control_system,
    update_configurations,
)
from flows.signoff import UpgradeAborted

__all__ = ["full_upgrade"]

# Steps a full upgrade records, for the progress bar (sign-offs at the Summit included).
_PLANNED_STEPS = 36


@flow(name="full-upgrade", log_prints=True)
async def full_upgrade(
    site: str,
    upgrade_id: str,
    *,
    breaks_schema_compatibility: bool = False,
    sync_sasquatch: SyncSasquatch = "auto",
    minimal_testing: bool = False,
    nublado_available_after: bool = True,
    dry_run: bool = False,
) -> dict[str, Any] | State[Any]:
    """Upgrade a site's control system from shutdown to bring-up.

    Parameters
    ----------
    site
        The name of the site's `Rubin Upgrade Site` block (summit, tts, bts, sim).
    upgrade_id
        The cycle or upgrade this run carries out (e.g. ``c0045``); re-running with the same id
        resumes: changes already made and sign-offs already given are not repeated.
    breaks_schema_compatibility
        The new XML breaks schema compatibility: the registry is set to NONE for the bring-up
        and put back to exactly what it was afterwards.
    sync_sasquatch
        ``auto`` syncs sasquatch only when Argo CD says it is out of sync (the diff is shown
        first); ``yes`` always; ``no`` never.
    minimal_testing
        Integration testing follows (Nublado stays closed to folks until it is done).
    nublado_available_after
        Tell folks on Slack they can use Nublado again (not when testing follows).
    dry_run
        Read everything, change nothing, and produce the plan.
    """
    try:
        async with upgrade_run(
            "full-upgrade", site, upgrade_id, dry_run=dry_run, planned_steps=_PLANNED_STEPS
        ) as run:
            await _full_upgrade(
                run,
                breaks_schema_compatibility=breaks_schema_compatibility,
                sync_sasquatch=sync_sasquatch,
                minimal_testing=minimal_testing,
                nublado_available_after=nublado_available_after,
            )
    except UpgradeAborted as exc:
        return Cancelled(name="Aborted", message=str(exc))
    return run.summary()


async def _full_upgrade(
    run: UpgradeRun,
    *,
    breaks_schema_compatibility: bool,
    sync_sasquatch: SyncSasquatch,
    minimal_testing: bool,
    nublado_available_after: bool,
) -> None:
    await preconditions()
    await shut_down_control_system(reason=f"{run.upgrade_id} upgrade")
    await clean_up()
    await update_configurations(breaks_schema_compatibility=breaks_schema_compatibility)
    await deploy(
        sync_sasquatch=sync_sasquatch,
        nublado_available_after=nublado_available_after and not minimal_testing,
    )
    if minimal_testing:
        run.journal.planned_steps += planned_steps(run.site)
        await run_minimal_testing(run, None)
        if nublado_available_after:
            await run.notify(
                f"{run.site.title}: minimal testing passed — Nublado can be used again."
            )
    short = run.journal.facts.get("CSCs short of their expected state")
    if run.dry_run:
        run.journal.final_message = "Plan complete: nothing was changed."
    elif short:
        run.journal.final_message = f"Upgrade deployed; {len(short)} CSC(s) short of their state."
    else:
        run.journal.final_message = "Upgrade deployed: every CSC is in its expected state."
