"""``rubin-upgrade``: the operators' command line, one subcommand per job.

Subcommands live in their own modules and register themselves through ``add_parser``; heavy
imports (Prefect, Kafka) happen inside the handlers so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

__all__ = ["main"]

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]

# Modules that provide ``add_parser(subparsers)``; each sets ``handler`` on its parser.
_COMMAND_MODULES = (
    "deployments.cli_sim",
    "deployments.cli_site",
    "deployments.cli_registry",
    "deployments.cli_status",
    "deployments.cli_lag",
    "deployments.cli_signoff",
    "deployments.cli_demo",
    "deployments.cli_deploy",
    "deployments.cli_plan",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rubin-upgrade",
        description="Run Rubin Observatory control-system upgrades, and rehearse them on a "
        "simulated site.",
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        module = importlib.import_module(name)
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return asyncio.run(handler(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
