"""What every upgrade flow does around its sections: load the site, hold the site's lock, open
the services, and — however the run ends — restore what must be restored and publish the report.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from prefect import get_client, tags
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.asyncio import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.variables import Variable

from blocks.upgrade_site import load_site_block
from flows.context import open_services
from flows.run import UpgradeRun, artifact_key
from flows.signoff import UpgradeAborted

__all__ = ["SiteBusyError", "UnknownSiteError", "site_lock", "upgrade_run"]

# How long a second run waits for a site's lock before saying who holds it. Taking a free lock
# is one request, but a loaded server has taken several seconds to answer it.
LOCK_WAIT_S = 15.0


class UnknownSiteError(ValueError):
    """No saved site of that name."""


class SiteBusyError(RuntimeError):
    """Another upgrade flow is acting on the site."""


def lock_name(site: str) -> str:
    return artifact_key("rubin-upgrade-site", site)


@contextlib.asynccontextmanager
async def site_lock(site: str, holder: dict[str, Any]) -> AsyncIterator[None]:
    """Hold the site's named concurrency limit (one run at a time), created if absent —
    an absent limit would silently admit everyone.

    Raises
    ------
    SiteBusyError
        Another run holds the site; the message says which.
    """
    name = lock_name(site)
    async with get_client() as client:
        try:
            await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            # Created at a site's first run; two first runs at once: one creates it.
            with contextlib.suppress(ObjectAlreadyExists):
                await client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )
    acquired = False
    try:
        async with concurrency(name, occupy=1, timeout_seconds=LOCK_WAIT_S, strict=True):
            acquired = True
            await Variable.aset(f"{name}-holder", holder, overwrite=True)
            try:
                yield
            finally:
                with contextlib.suppress(Exception):
                    await Variable.aunset(f"{name}-holder")
    except TimeoutError:
        if acquired:
            # The run's own time limit (a script that did not end in time is a TimeoutError):
            # the site was ours, so it is not busy.
            raise
        held: object = await Variable.aget(f"{name}-holder", default={})
        who = (
            ", ".join(f"{key} {value}" for key, value in held.items())
            if isinstance(held, dict) and held
            else "another run"
        )
        raise SiteBusyError(
            f"{site} is busy: {who} is acting on it. Wait for that run to end (or cancel it) "
            "before starting another."
        ) from None


@contextlib.asynccontextmanager
async def upgrade_run(
    flow: str, site: str, upgrade_id: str, *, dry_run: bool, planned_steps: int
) -> AsyncIterator[UpgradeRun]:
    """Everything around a flow's sections (see the module docstring).

    Raises
    ------
    UnknownSiteError
        No `Rubin Upgrade Site` block is saved under ``site``.
    SiteBusyError
        Another upgrade flow holds the site.
    """
    if not upgrade_id.strip():
        raise ValueError("upgrade_id is empty: give the cycle or upgrade this run carries out")
    try:
        block = await load_site_block(site)
    except ValueError:
        raise UnknownSiteError(
            f"no site named {site!r}: save it first with "
            "`rubin-upgrade site save --site-file deployments/sites/<site>.yaml`"
        ) from None
    config = block.site
    holder = {
        "flow run": flow_run.get_name() or "?",
        "id": flow_run.get_id() or "?",
        "flow": flow,
        "upgrade": upgrade_id,
    }
    lock = contextlib.nullcontext() if dry_run else site_lock(config.name, holder)
    # Sections are subflows: give them the run's tags, so that whoever follows the run by its
    # tags (the UI's filters, a simulated operator) sees the sign-offs they pause at.
    with tags(*flow_run.get_tags()):
        async with lock, open_services(config, block.credentials()) as services:
            run = UpgradeRun(
                flow=flow, site=config, services=services, upgrade_id=upgrade_id, dry_run=dry_run
            )
            async with run.activate(planned_steps):
                try:
                    yield run
                except UpgradeAborted as exc:
                    run.journal.final_message = (
                        f"Aborted by {exc.record.operator} at '{exc.record.title}'"
                        + (f": {exc.record.notes}" if exc.record.notes else "")
                    )
                    await run.restore("aborted")
                    run.explain_stop()
                    raise
                except BaseException as exc:
                    run.journal.final_message = f"Stopped: {type(exc).__name__}: {exc}"
                    await run.restore(f"the run stopped: {type(exc).__name__}")
                    run.explain_stop()
                    raise
                finally:
                    report = await run.publish_report()
                    get_run_logger().info("report:\n%s", report)
