"""What the flow tests share: fast simulation options, a saved site block, a simulated operator.

A flow test starts a `SimulatedSite`, saves it as a block with `save_site`, and runs the flow
beside a `SimulatedOperator` (`run_with_operator`) that answers every gate of the runs tagged
with the test's own tag, as a person in the Prefect UI would.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from typing import Any

from prefect import tags

from deployments.operator import GateAnswer, SimulatedOperator
from deployments.rehearsal import Rehearsal, save_site_block
from sim.sal_schemas import component_schemas
from sim.site import SimOptions, SimulatedSite
from sim.writelog import WriteRecord

__all__ = [
    "FAST",
    "break_heartbeat_schema",
    "heartbeat_field_type",
    "operator_for",
    "run_with_operator",
    "sal_commands",
    "save_site",
]

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


def break_heartbeat_schema(site: SimulatedSite, component: str, csc_class: str) -> str:
    """Make the upgrade's image of ``csc_class`` send ``component``'s heartbeat's ``heartbeat``
    field as a string: a change FORWARD compatibility refuses. Returns the changed subject."""
    assert site.fleet is not None
    schema = copy.deepcopy(component_schemas(component, indexed=False)["logevent_heartbeat"])
    for field in schema["fields"]:
        if field["name"] == "heartbeat":
            field["type"], field["default"] = "string", ""
    image = f"ts-dockerhub.lsst.org/{csc_class}:{site.options.upgrade_image_tag}"
    site.fleet.image_schemas[image] = {component: {"logevent_heartbeat": schema}}
    return f"lsst.sal.{component}.logevent_heartbeat-value"


def heartbeat_field_type(site: SimulatedSite, subject: str) -> Any:
    """The type of the ``heartbeat`` field in ``subject``'s latest registered schema."""
    registry = site.registry_app.state.registry
    latest = registry.schemas[registry.live_versions(subject)[-1].schema_id]
    return next(f["type"] for f in latest.parsed["fields"] if f["name"] == "heartbeat")
