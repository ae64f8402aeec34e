"""``rubin-upgrade status``: every CSC of a site with its summary state and heartbeat age."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "status_rows"]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status",
        help="show each CSC's summary state and heartbeat, and those short of expected",
        description="Read every inventory CSC's last summaryState and heartbeat from Kafka (one "
        "sweep), and list the CSCs that are not in the state the site file expects. Exits 1 "
        "when any CSC is short of its expected state.",
    )
    parser.add_argument("--site-file", type=Path, required=True)
    parser.add_argument("--json", action="store_true", help="print a JSON list instead")
    parser.add_argument(
        "--window",
        type=float,
        default=None,
        help="a CSC is alive if it beat within this many seconds (default: the site's)",
    )
    parser.set_defaults(handler=run)


def status_rows(site: Any, statuses: Any, window_s: float) -> list[dict[str, Any]]:
    """One row per inventory CSC: state, heartbeat age, expected state, and whether it is short."""
    rows = []
    for entry in site.cscs:
        status = statuses[entry.name]
        alive = status.alive(window_s)
        short = status.state is not entry.expected_state or not alive
        rows.append(
            {
                "name": entry.name.name,
                "index": entry.name.index,
                "state": status.state.name if status.state is not None else None,
                "heartbeat_age_s": (
                    round(status.heartbeat_age_s, 3) if status.heartbeat_age_s is not None else None
                ),
                "alive": alive,
                "expected_state": entry.expected_state.name,
                "short": short,
            }
        )
    return rows


async def run(args: argparse.Namespace) -> int:
    from blocks.credentials import SiteCredentials
    from blocks.site import SiteConfigError, load_site_file
    from clients.registry import SchemaRegistryClient
    from clients.sal import SalClient, SalError

    try:
        site = load_site_file(args.site_file)
    except SiteConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    window_s = args.window if args.window is not None else site.timeouts.heartbeat_window_s
    password = SiteCredentials.from_environment().kafka_sasl_password
    async with (
        SchemaRegistryClient(site.schema_registry.url) as registry,
        SalClient(
            bootstrap_servers=site.kafka.bootstrap_servers,
            registry=registry,
            sal_subname=site.kafka.sal_subname,
            security_protocol=site.kafka.security_protocol,
            sasl_mechanism=site.kafka.sasl_mechanism,
            sasl_username=site.kafka.sasl_username,
            sasl_password=password.get_secret_value() if password else None,
        ) as sal,
    ):
        try:
            statuses = await sal.statuses([e.name for e in site.cscs], window_s)
        except SalError as exc:
            print(
                f"cannot read CSC states from {site.kafka.bootstrap_servers}: {exc}",
                file=sys.stderr,
            )
            return 2
    rows = status_rows(site, statuses, window_s)
    short = [row for row in rows if row["short"]]
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(f"{'CSC':<24} {'state':<10} {'heartbeat':>10}  expected")
        for row in rows:
            age = row["heartbeat_age_s"]
            beat = f"{age:.1f} s" if age is not None else "none"
            mark = "  <- short" if row["short"] else ""
            print(
                f"{row['name']}:{row['index']:<{23 - len(row['name'])}} {row['state'] or '-':<10} "
                f"{beat:>10}  {row['expected_state']}{mark}"
            )
        print(
            f"\n{len(rows)} CSCs; {len(short)} short of their expected state"
            + (": " + ", ".join(f"{r['name']}:{r['index']}" for r in short) if short else "")
        )
    return 1 if short else 0
