"""What every upgrade flow does around its sections: load the site, hold the site's lock, open
the services, and — however the run ends — restore what must be restored and publish the report.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import anyio
from prefect import get_client
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.responses import GlobalConcurrencyLimitResponse
from prefect.concurrency.asyncio import concurrency
from prefect.concurrency.context import ConcurrencyContext
from prefect.exceptions import MissingContextError, ObjectAlreadyExists, ObjectNotFound
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.variables import Variable

from blocks.upgrade_site import load_site_block
from flows.context import open_services
from flows.run import UpgradeRun, artifact_key
from flows.signoff import UpgradeAborted
from flows.tagging import run_tags

__all__ = ["SiteBusyError", "UnknownSiteError", "site_lock", "upgrade_run"]

# How long a run's hold on its site's lock lasts unless renewed: Prefect's shortest lease (its
# server refuses less). While the run lives, Prefect renews it from a thread of its own every
# three quarters of it, however long the run; a run whose process is killed stops renewing, and
# the server's repossessor (every 15 s) frees the slot once the lease has run out.
LOCK_LEASE_S = 60.0
# How long a run waits for a held site before saying who holds it: long enough for the hold of a
# run whose process was killed without Prefect knowing (its run still says Running) to lapse,
# so that a re-run after such a kill carries on (the server's repossessor frees it: a server
# started without its services — Prefect's ephemeral and test servers — never does). A holder
# whose run has ended (a worker marks a killed process Crashed) is released at once. Taking a
# free lock is one request, but a loaded server has taken several seconds to answer it.
LOCK_WAIT_S = LOCK_LEASE_S + 30.0
# How often a waiting run looks whether the site has been released.
LOCK_POLL_S = 1.0

_logger = logging.getLogger(__name__)


class UnknownSiteError(ValueError):
    """No saved site of that name."""


class SiteBusyError(RuntimeError):
    """Another upgrade flow is acting on the site."""


def lock_name(site: str) -> str:
    return artifact_key("rubin-upgrade-site", site)


def _log() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()
    except MissingContextError:  # outside a flow run (the CLI, a test)
        return _logger


def _describe(held: object) -> str:
    if not isinstance(held, dict) or not held:
        return "another run"
    return ", ".join(f"{key} {value}" for key, value in held.items() if key != "lease")


async def _limit(client: PrefectClient, name: str) -> GlobalConcurrencyLimitResponse | None:
    """The site's limit, created if absent (None then: nobody holds it yet)."""
    try:
        return await client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        # Created at a site's first run; two first runs at once: one creates it.
        with contextlib.suppress(ObjectAlreadyExists):
            await client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=1)
            )
        return None


async def _ended_state(client: PrefectClient, held: object) -> str | None:
    """The final state of the holder's flow run (Crashed, Failed...), None if it has not ended
    or cannot be told."""
    if not isinstance(held, dict):
        return None
    try:
        run = await client.read_flow_run(UUID(str(held.get("id"))))
    except ObjectNotFound:
        return "deleted"
    except ValueError:  # no run id recorded
        return None
    if run.state is None or not run.state.is_final():
        return None
    return run.state.name


async def _release_if_ended(client: PrefectClient, name: str, site: str, wait_s: float) -> None:
    """The site is held: release the hold of a run that has ended without releasing it (its
    process was killed), or say whom this run waits for, and how long at most."""
    held: object = await Variable.aget(f"{name}-holder", default={})
    who = _describe(held)
    ended = await _ended_state(client, held)
    lease = held.get("lease") if isinstance(held, dict) else None
    if ended is not None and lease:
        try:
            await client.release_concurrency_slots_with_lease(UUID(str(lease)))
        except Exception as exc:  # noqa: BLE001 - its lease lapses anyway: this run waits for it
            _log().warning("could not release the hold %s left on %s: %s", who, site, exc)
        else:
            _log().warning(
                "%s was left held by %s, which ended %s without releasing it (its process was "
                "killed?): released",
                site,
                who,
                ended,
            )
            return
    _log().warning(
        "%s is held by %s: waiting up to %.0f s for it to be released (a run whose process "
        "died loses its hold within %.0f s; a live one keeps it)",
        site,
        who,
        wait_s,
        LOCK_LEASE_S + 15,
    )


def _lease_ids() -> list[UUID]:
    context = ConcurrencyContext.get()
    return list(context.cleanup_lease_ids) if context is not None else []


@contextlib.asynccontextmanager
async def site_lock(
    site: str, holder: dict[str, Any], *, wait_s: float | None = None
) -> AsyncIterator[None]:
    """Hold the site's named concurrency limit (one run at a time), created if absent —
    an absent limit would silently admit everyone.

    The hold is a lease of `LOCK_LEASE_S` that Prefect renews while the run lives. A run that
    finds the site held releases the hold of a run that has ended without releasing it (a
    killed process), else waits up to ``wait_s`` (default `LOCK_WAIT_S`) — long enough for the
    lease of a process that died unseen to lapse — saying whom it waits for.

    Raises
    ------
    SiteBusyError
        Another run holds the site; the message says which.
    """
    name = lock_name(site)
    wait = LOCK_WAIT_S if wait_s is None else wait_s
    async with get_client() as client:
        limit = await _limit(client, name)
        if limit is not None and limit.active_slots >= limit.limit:
            await _release_if_ended(client, name, site, wait)
            # Waited for here rather than by Prefect's acquisition timing out, which leaves
            # its abandoned request's connection open.
            if not await _free_within(client, name, wait):
                raise await _busy(site, name, wait)
    acquired = False
    before = _lease_ids()
    try:
        async with concurrency(
            name, occupy=1, timeout_seconds=wait, lease_duration=LOCK_LEASE_S, strict=True
        ):
            acquired = True
            # The lease's id lets a later run release the hold if this run's process is
            # killed (Prefect records it in the flow run's concurrency context).
            lease = next((str(i) for i in _lease_ids() if i not in before), "")
            await Variable.aset(f"{name}-holder", {**holder, "lease": lease}, overwrite=True)
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
        raise await _busy(site, name, wait) from None


async def _free_within(client: PrefectClient, name: str, wait_s: float) -> bool:
    """Whether the held limit ``name`` is free within ``wait_s``."""
    deadline = anyio.current_time() + wait_s
    while True:
        await anyio.sleep(min(LOCK_POLL_S, max(0.0, deadline - anyio.current_time())))
        limit = await client.read_global_concurrency_limit_by_name(name)
        if limit.active_slots < limit.limit:
            return True
        if anyio.current_time() >= deadline:
            return False


async def _busy(site: str, name: str, wait_s: float) -> SiteBusyError:
    held: object = await Variable.aget(f"{name}-holder", default={})
    return SiteBusyError(
        f"{site} is busy: {_describe(held)} is acting on it (waited {wait_s:.0f} s for it to "
        "be released). Wait for that run to end (or cancel it) before starting another."
    )


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
    # tags (the UI's filters, a simulated operator) sees the sign-offs they pause at. Its task
    # runs go untagged (`flows.tagging`).
    with run_tags(flow_run.get_tags()):
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
