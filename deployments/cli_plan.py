"""``rubin-upgrade plan``: what a flow would do at a site, read from the site and changing nothing.

The flow runs with ``dry_run=true`` — every read made, every change only written down — in a
private, temporary Prefect (its own ``PREFECT_HOME``; the server in ``PREFECT_API_URL``, if any,
is not touched and no block is saved there). Prints the plan, one numbered action per line,
exactly as the run's plan artifact has it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from blocks.credentials import SiteCredentials
from blocks.site import SiteConfig

__all__ = ["add_parser", "plan_flow"]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="print what a flow would do at a site, changing nothing",
        description="Run FLOW with dry_run=true against the site described by --site-file, in a "
        "private temporary Prefect, and print its plan: the ordered actions it would take. "
        "Credentials come from RUBIN_UPGRADE_* variables and, for a simulated site, from the "
        "secrets file `rubin-upgrade sim` writes beside its site file.",
    )
    parser.add_argument("flow", help="the flow, e.g. full-upgrade")
    parser.add_argument("--site-file", type=Path, required=True)
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a flow parameter (JSON when it parses, else text)",
    )
    parser.set_defaults(handler=run)


async def plan_flow(
    flow: str, site: SiteConfig, credentials: SiteCredentials, parameters: dict[str, Any]
) -> dict[str, Any]:
    """Save ``site`` as its block in the current Prefect and dry-run ``flow``; its summary.

    Raises
    ------
    RuntimeError
        The dry run did not complete (its message says why).
    """
    from blocks.upgrade_site import save_site_block
    from deployments.catalog import flow_named

    await save_site_block(site, credentials, site.name)
    parameters = {"upgrade_id": "plan", **parameters, "dry_run": True}
    run_flow: Any = flow_named(flow)
    state = await run_flow(site=site.name, **parameters, return_state=True)
    if not state.is_completed():
        raise RuntimeError(f"the dry run of {flow} ended {state.name}: {state.message}")
    result: dict[str, Any] = await state.aresult()
    return result


async def run(args: argparse.Namespace) -> int:
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_HOME,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    from blocks.site import SiteConfigError, load_site_file
    from deployments.catalog import ParameterError, flow_named, parse_parameters

    try:
        accepted = flow_named(args.flow).parameters.properties
        site = load_site_file(args.site_file)
        parameters = parse_parameters(
            args.param,
            accepted,
            fixed={"site": "the site is --site-file", "dry_run": "a plan is always a dry run"},
        )
    except (ParameterError, SiteConfigError) as exc:
        print(f"rubin-upgrade plan: {exc}", file=sys.stderr)
        return 2
    secrets_file = args.site_file.with_name(args.site_file.stem + ".secrets.env")
    credentials = SiteCredentials.from_env_file(secrets_file).with_environment()
    with (
        tempfile.TemporaryDirectory(prefix="rubin-upgrade-plan-") as home,
        temporary_settings(
            updates={
                PREFECT_HOME: home,
                PREFECT_SERVER_ANALYTICS_ENABLED: False,
                PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 120,
            },
            restore_defaults={PREFECT_API_URL},
        ),
    ):
        try:
            summary = await plan_flow(args.flow, site, credentials, parameters)
        except RuntimeError as exc:
            print(f"rubin-upgrade plan: {exc}", file=sys.stderr)
            return 1
    for number, action in enumerate(summary["plan"], 1):
        print(f"{number}. {action}")
    return 0
