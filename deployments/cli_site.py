"""``rubin-upgrade site``: check a site file, or save it as the site's Prefect block."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import SecretStr

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("site", help="check or save a site file")
    actions = parser.add_subparsers(metavar="ACTION", required=True)
    check = actions.add_parser("check", help="validate a site file and summarise it")
    check.add_argument("--site-file", type=Path, required=True)
    check.set_defaults(handler=run_check)
    save = actions.add_parser(
        "save",
        help="validate a site file and save it as a 'Rubin Upgrade Site' block",
        description="Save the site file as a block named after the site (or --name). Secrets "
        "come from RUBIN_UPGRADE_ARGOCD_PASSWORD, _LOVE_PASSWORD, _KAFKA_SASL_PASSWORD and "
        "_SLACK_TOKEN when set; existing secret values of the block are kept otherwise.",
    )
    save.add_argument("--site-file", type=Path, required=True)
    save.add_argument("--name", help="block name (default: the site's name)")
    save.set_defaults(handler=run_save)


async def run_check(args: argparse.Namespace) -> int:
    from blocks.site import SiteConfigError, load_site_file

    try:
        config = load_site_file(args.site_file)
    except SiteConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    expected = Counter(entry.expected_state.name for entry in config.cscs)
    print(f"{config.name}: {config.title}")
    print(
        f"  {len(config.cscs)} CSCs ({len(config.kubernetes_cscs())} Kubernetes Jobs); expected "
        + ", ".join(f"{count} {state}" for state, count in sorted(expected.items()))
    )
    print(f"  sync order: {', '.join(config.argocd.sync_order)}")
    print(
        f"  shutdown on ScriptQueue:{config.shutdown.queue}, start_with "
        f"{config.shutdown.start_with}, ignore {config.shutdown.ignore}"
    )
    return 0


async def run_save(args: argparse.Namespace) -> int:
    from prefect_slack import SlackCredentials

    from blocks.credentials import SiteCredentials
    from blocks.site import SiteConfigError, load_site_file
    from blocks.upgrade_site import UpgradeSite, load_site_block

    try:
        config = load_site_file(args.site_file)
    except SiteConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    name = args.name or config.name
    previous: UpgradeSite | None
    try:
        previous = await load_site_block(name)
    except ValueError:
        previous = None
    kept = previous.credentials() if previous is not None else SiteCredentials()
    secrets = kept.with_environment()
    block = UpgradeSite(
        site=config,
        argocd_password=secrets.argocd_password,
        love_password=secrets.love_password,
        kafka_sasl_password=secrets.kafka_sasl_password,
        slack=SlackCredentials(token=secrets.slack_token) if secrets.slack_token else None,
    )
    await block.asave(name, overwrite=True)
    present = [field for field, value in secrets if isinstance(value, SecretStr)]
    print(
        f"saved block rubin-upgrade-site/{name} from {args.site_file} "
        f"({len(config.cscs)} CSCs; secrets set: {', '.join(present) or 'none'})"
    )
    return 0
