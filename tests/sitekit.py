"""What the flow tests share: fast simulation options, a saved site block, a simulated operator.

A flow test starts a `SimulatedSite`, saves it as a block with `save_site`, and runs the flow
beside a `SimulatedOperator` (`run_with_operator`) that answers every gate of the runs tagged
with the test's own tag, as a person in the Prefect UI would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from prefect import tags

from deployments.operator import GateAnswer, SimulatedOperator
from deployments.rehearsal import Rehearsal, save_site_block
from sim.site import SimOptions, SimulatedSite
from sim.writelog import WriteRecord

__all__ = ["FAST", "operator_for", "run_with_operator", "sal_commands", "save_site"]

FAST = SimOptions(
    heartbeat_interval_s=0.5,
    image_pull_s=0.2,
    argocd_sync_s=0.05,
    broker_shutdown_s=0.2,
    time_scale=0.01,
    command_fetch_wait_ms=50,
    consumer_poll_s=2.0,
)


async def save_site(site: SimulatedSite, name: str) -> None:
    await save_site_block(site, name)


def operator_for(
    site: SimulatedSite, tag: str, name: str, **answers: GateAnswer
) -> SimulatedOperator:
    """An operator answering ``tag``'s gates, doing the people's work at the site first."""
    defaults = Rehearsal(site).answers()
    return SimulatedOperator(tag=tag, confirm_site=name, answers={**defaults, **answers})


async def run_with_operator(
    operator: SimulatedOperator, flow_call: Callable[[], Awaitable[Any]]
) -> Any:
    stop = asyncio.Event()
    answering = asyncio.create_task(operator.run(stop))
    try:
        with tags(operator.tag):
            return await flow_call()
    finally:
        stop.set()
        await answering


def sal_commands(records: list[WriteRecord], command: str) -> list[str]:
    return [r.target for r in records if r.service == "sal" and r.method == command]
