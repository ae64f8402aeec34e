"""``rubin-upgrade lag``: consumer lag of the telegraf connectors or the LOVE producers.

Prints what ``kt consumers <site> lag --telegraf|--love-producer [--summary]`` prints, plus the
partitions whose lag is unknown (no committed offset) and which groups are stale (no members).
The Kafka SASL password comes from ``RUBIN_UPGRADE_KAFKA_SASL_PASSWORD`` when the site needs one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run_lag"]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "lag",
        help="show Kafka consumer lag (as `kt consumers <site> lag`)",
        description="Show the lag of every consumer group of the telegraf connectors or of the "
        "LOVE producers, per partition and per group, and the combined lag. Partitions without a "
        "committed offset are listed as of unknown lag; groups without members as stale.",
    )
    parser.add_argument("--site-file", type=Path, required=True)
    family = parser.add_mutually_exclusive_group(required=True)
    family.add_argument(
        "--telegraf",
        dest="family",
        action="store_const",
        const="telegraf",
        help="groups starting with the site's telegraf group prefix",
    )
    family.add_argument(
        "--love-producer",
        dest="family",
        action="store_const",
        const="love-producer",
        help="groups starting with the site's LOVE producer group prefix",
    )
    parser.add_argument(
        "--summary", action="store_true", help="only per-group totals and the combined lag"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=run_lag)


async def run_lag(args: argparse.Namespace) -> int:
    """Print the report; 2 for a bad site file or a missing password, 1 when Kafka fails."""
    from blocks.credentials import SiteCredentials
    from blocks.site import SiteConfigError, load_site_file
    from clients.lag import ConsumerLagClient, ConsumerLagError, render_lag_table

    try:
        config = load_site_file(args.site_file)
    except SiteConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    selector = config.telegraf if args.family == "telegraf" else config.love_producers
    kafka = config.kafka
    credentials = SiteCredentials.from_environment()
    if kafka.security_protocol.startswith("SASL") and credentials.kafka_sasl_password is None:
        print(
            f"{args.site_file}: Kafka at {config.name} uses {kafka.security_protocol}: set "
            "RUBIN_UPGRADE_KAFKA_SASL_PASSWORD to the password of "
            f"{kafka.sasl_username or 'the SASL user'}",
            file=sys.stderr,
        )
        return 2
    try:
        async with ConsumerLagClient(
            bootstrap_servers=kafka.bootstrap_servers,
            security_protocol=kafka.security_protocol,
            sasl_mechanism=kafka.sasl_mechanism,
            sasl_username=kafka.sasl_username,
            sasl_password=credentials.kafka_sasl_password,
        ) as client:
            report = await client.consumer_lag(selector.group_prefix)
    except ConsumerLagError as exc:
        print(f"consumer lag at {config.name}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.as_json(summary=args.summary), indent=2))
    else:
        print(render_lag_table(report, summary=args.summary))
    return 0
