"""``rubin-upgrade registry``: read or set the site schema registry's compatibility level."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from clients.registry import CompatibilityLevel

__all__ = ["add_parser", "parse_level", "run_compatibility"]

_VALID_LEVELS = ", ".join(level.value for level in CompatibilityLevel)


def parse_level(text: str) -> CompatibilityLevel:
    """A level from its name in any case; `argparse.ArgumentTypeError` listing the valid ones."""
    try:
        return CompatibilityLevel(text.strip().upper())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a compatibility level; valid levels: {_VALID_LEVELS}"
        ) from None


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("registry", help="inspect or configure the schema registry")
    parser.add_argument(
        "--site-file",
        type=Path,
        required=True,
        metavar="PATH",
        help="the site file (deployments/sites/<site>.yaml) naming the registry",
    )
    actions = parser.add_subparsers(metavar="ACTION", required=True)
    compatibility = actions.add_parser(
        "compatibility",
        help="print the compatibility level (setting it first with --set)",
        description="Print the registry's compatibility level: the global one, or the one that "
        f"applies to --subject. Levels: {_VALID_LEVELS}.",
    )
    compatibility.add_argument(
        "--set", dest="level", type=parse_level, metavar="LEVEL", help="set this level first"
    )
    compatibility.add_argument("--subject", help="a subject such as lsst.sal.ATDome.ackcmd-value")
    compatibility.set_defaults(handler=run_compatibility)


async def run_compatibility(args: argparse.Namespace) -> int:
    """Set (with ``--set``) and print the level; 2 for a bad site file or level, 1 on failure."""
    from blocks.site import SiteConfigError, load_site_file
    from clients.registry import SchemaRegistryClient, SchemaRegistryError

    level = args.level
    if level is not None and not isinstance(level, CompatibilityLevel):
        # A namespace built without the parser still gets the parser's check, before any request.
        try:
            level = parse_level(str(level))
        except argparse.ArgumentTypeError as exc:
            print(f"rubin-upgrade registry: {exc}", file=sys.stderr)
            return 2
    try:
        config = load_site_file(args.site_file)
    except SiteConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    url = config.schema_registry.url
    try:
        async with SchemaRegistryClient(url) as registry:
            if level is not None:
                await registry.set_compatibility(level, args.subject)
            current = await registry.get_compatibility(args.subject)
    except SchemaRegistryError as exc:
        print(f"schema registry {url}: {exc}", file=sys.stderr)
        return 1
    print(current.value)
    return 0
