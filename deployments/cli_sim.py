"""``rubin-upgrade sim``: run the simulated site in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sim",
        help="run a simulated site on 127.0.0.1 until interrupted",
        description="Run a simulated site (Kafka broker, schema registry, and the site's other "
        "services) on 127.0.0.1 in the foreground. Writes a site file describing it, prints "
        "'ready PATH' once every service answers and its consumer groups have committed, and "
        "stops everything on SIGINT or SIGTERM.",
    )
    parser.add_argument("--site", choices=("summit", "tts", "bts"), default="summit")
    parser.add_argument(
        "--site-out", type=Path, default=Path(".sim/sim.yaml"), help="where to write the site file"
    )
    parser.add_argument(
        "--write-log", type=Path, help="append every state-changing request here (JSON lines)"
    )
    parser.set_defaults(handler=run)


async def run(args: argparse.Namespace) -> int:
    from sim.site import SimulatedSite, load_base_site
    from sim.writelog import WriteLog

    base = load_base_site(args.site)
    site_out: Path = args.site_out
    site_out.parent.mkdir(parents=True, exist_ok=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    workdir = site_out.parent / f"{site_out.stem}.d"
    async with SimulatedSite(base, workdir=workdir, write_log=WriteLog(args.write_log)) as site:
        config = site.write_site_file(site_out)
        print(f"simulated {base.title}: {len(config.cscs)} CSCs", file=sys.stderr)
        for service, url in sorted(site.urls.items()):
            print(f"  {service:<16} {url}", file=sys.stderr)
        print(f"  {'kafka':<16} {site.broker.bootstrap_servers}", file=sys.stderr)
        print(f"  credentials in {site.secrets_path(site_out)}", file=sys.stderr)
        print(f"ready {site_out}", flush=True)
        await stop.wait()
        print("stopping", file=sys.stderr)
    return 0
