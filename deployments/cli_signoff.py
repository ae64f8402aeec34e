"""``rubin-upgrade sign-off``: answer a paused upgrade's sign-off from a terminal."""

from __future__ import annotations

import argparse
import sys
from typing import Any
from uuid import UUID

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sign-off",
        help="answer the sign-off a paused upgrade run waits for",
        description="Resume a flow run paused at a sign-off, as the Prefect UI's form does, and "
        "say whether the server took the answer (Prefect's API answers 200 even when it refuses "
        "an input). Exit 0 when taken, 1 when refused.",
    )
    parser.add_argument("run", help="the flow run's id or name (e.g. 'sarcastic-turtle')")
    parser.add_argument("--gate", help="refuse unless the run waits at this gate")
    parser.add_argument("--operator", required=True, help="your name, for the report")
    parser.add_argument("--decision", required=True, choices=("proceed", "abort"))
    parser.add_argument("--confirm-site", required=True, help="the site's name, typed again")
    parser.add_argument("--notes", default="")
    parser.add_argument("--phalanx-pr-url", help="at the Phalanx gate: the merged PR's URL")
    parser.set_defaults(handler=run)


async def _flow_run_id(run: str) -> UUID:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    try:
        return UUID(run)
    except ValueError:
        pass
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[run]))
        )
    if len(runs) != 1:
        raise LookupError(f"{len(runs)} flow runs are named {run!r}: give the run's id")
    return runs[0].id


async def run(args: argparse.Namespace) -> int:
    from deployments.operator import SignOffRejectedError, answer_sign_off

    extra = {"phalanx_pr_url": args.phalanx_pr_url} if args.phalanx_pr_url else None
    try:
        flow_run_id = await _flow_run_id(args.run)
        gate = await answer_sign_off(
            flow_run_id,
            operator=args.operator,
            decision=args.decision,
            confirm_site=args.confirm_site,
            notes=args.notes,
            gate=args.gate,
            extra=extra,
        )
    except (LookupError, SignOffRejectedError) as exc:
        print(f"not signed off: {exc}", file=sys.stderr)
        return 1
    print(f"signed off {gate!r}: {args.decision} (taken by the server)")
    return 0
