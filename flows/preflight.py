"""Preflight: every check that must pass before the first change, reported all at once.

Services reachable with valid credentials, the Kubernetes context pointing at the site's
cluster, the site file's applications present in Argo CD, the ScriptQueues ENABLED, and, for a
flow that stops the consumers and waits for their lag to drain, the telegraf Deployments under
the site file's selector and consumer groups under its prefixes (a misspelt selector or prefix
selects nothing: nothing would be scaled, and an empty wait would pass at once). Each check
runs whatever the others found; the failures are listed together in one `PreflightError`, and
nothing has been changed when it is raised.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Collection

from blocks.site import CscName, State
from flows.run import UpgradeRun

__all__ = ["PreflightError", "preflight"]


class PreflightError(RuntimeError):
    """Preconditions failed; ``problems`` lists each, and nothing was changed."""

    def __init__(self, site: str, problems: list[str]) -> None:
        lines = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"preflight failed at {site}; nothing was changed:\n{lines}")
        self.problems = problems


async def _kubernetes(run: UpgradeRun, problems: list[str], *, telegraf: bool = False) -> None:
    await run.services.kubernetes.list_namespaces()
    if not telegraf or run.memory.actions:
        # A resumed run's steps act on the connectors there are now.
        return
    selection = run.site.telegraf
    if not await run.services.kubernetes.list_deployments(
        selection.namespace, selector=selection.selector
    ):
        problems.append(
            f"Kubernetes has no Deployment labelled {selection.selector} in namespace "
            f"{selection.namespace} (site file: telegraf.selector, telegraf.namespace): there "
            "would be no telegraf connector to scale to 0"
        )


async def _argocd(run: UpgradeRun, problems: list[str]) -> None:
    argocd = run.site.argocd
    apps = {app.metadata.name for app in await run.services.argocd.list_applications()}
    wanted = [*argocd.platform_apps, argocd.sasquatch_app, *argocd.telescope_apps]
    missing = [name for name in wanted if name not in apps]
    if missing:
        problems.append(f"Argo CD has no application {', '.join(missing)} (site file: argocd)")


async def _registry(run: UpgradeRun, _problems: list[str]) -> None:
    await run.services.registry.get_compatibility()


async def _love(run: UpgradeRun, problems: list[str]) -> None:
    if run.already_done("cleanup-all"):
        # A resumed run: this upgrade's cleanup_all took LOVE's deployments down; LOVE is back
        # once its app is synced (rubin-systems.md §4), and nothing before that needs it.
        return
    session = await run.services.love.login()
    if not session.execute_commands:
        problems.append(f"LOVE account {run.site.love.username!r} may not execute commands")


async def _kafka(run: UpgradeRun, problems: list[str], *, prefixes: bool = False) -> None:
    groups = await run.services.lag.list_groups()
    if not prefixes or run.memory.actions:
        # A resumed run's lag wait, if still to come, reads the groups there are now.
        return
    site = run.site
    for field, family in (("telegraf", site.telegraf), ("love_producers", site.love_producers)):
        if not any(group.startswith(family.group_prefix) for group in groups):
            problems.append(
                f"Kafka has no consumer group whose id starts with {family.group_prefix!r} "
                f"(site file: {field}.group_prefix): the wait for their lag to drain would "
                "have nothing to wait for"
            )


async def _queues(run: UpgradeRun, problems: list[str]) -> None:
    if run.memory.actions:
        # A resumed run: this upgrade has already changed the site (sent the queues OFFLINE,
        # perhaps); its own steps know what state the queues must be in from here.
        return
    names = [CscName(name="ScriptQueue", index=q) for q in run.site.shutdown.queues]
    for name, state in (await run.services.sal.summary_states(names)).items():
        if state is not State.ENABLED:
            shown = state.name if state is not None else "not running"
            problems.append(f"{name} is {shown}: scripts need it ENABLED")


Check = Callable[[UpgradeRun, list[str]], Awaitable[None]]
_CHECKS: dict[str, Check] = {
    "Kubernetes": _kubernetes,
    "Argo CD": _argocd,
    "schema registry": _registry,
    "LOVE": _love,
    "Kafka": _kafka,
}


async def preflight(
    run: UpgradeRun,
    *,
    need_queues: bool = True,
    stops_consumers: bool = False,
    only: Collection[str] | None = None,
) -> list[str]:
    """Run every check; raise `PreflightError` listing all failures, else return [].

    ``stops_consumers`` adds, for the flows that scale telegraf to 0 and wait for telegraf and
    the LOVE producers to drain, that the site file's selector and prefixes select something.
    ``only`` names the checks to run (``Kubernetes``, ``Argo CD``...): a recovery runs while
    Kafka and the schema registry are down, and must not fail for that.

    Raises
    ------
    PreflightError
        Some checks failed; it lists every one.
    ValueError
        ``only`` names a check there is not.
    """
    problems: list[str] = []
    checks = dict(_CHECKS)
    if need_queues:
        checks["ScriptQueues"] = _queues
    if stops_consumers:
        # What the flow stops must be there; each service's own check reads it, so a service
        # that does not answer is reported once.
        checks["Kubernetes"] = functools.partial(_kubernetes, telegraf=True)
        checks["Kafka"] = functools.partial(_kafka, prefixes=True)
    if only is not None:
        unknown = sorted(set(only) - set(checks))
        if unknown:
            raise ValueError(f"no preflight check named {', '.join(unknown)}")
        checks = {name: fn for name, fn in checks.items() if name in only}

    async def check(name: str, fn: Check) -> None:
        try:
            await fn(run, problems)
        except Exception as exc:  # noqa: BLE001 - every failure is reported together
            problems.append(f"{name}: {exc}")

    await asyncio.gather(*(check(name, fn) for name, fn in checks.items()))
    if problems:
        raise PreflightError(run.site.name, sorted(problems))
    return []
