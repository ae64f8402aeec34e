"""Which flows are deployed, and where: one deployment per flow and site.

Operators run ``prefect deployment run <flow>/<site>``: ``full-upgrade/summit``,
``os-k8s-shutdown/tts``, ``minimal-testing/sim``. The ``summit``, ``tts`` and ``bts``
deployments go to a Kubernetes work pool at their site (see deployments/README.md); the ``sim``
deployments are served by ``rubin-upgrade demo`` next to the simulated site. Each deployment
passes its site's block name as the ``site`` parameter, so a run cannot pick up another site.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prefect import Flow
from prefect.deployments.runner import RunnerDeployment
from prefect.types.entrypoint import EntrypointType

__all__ = [
    "FLOWS",
    "PRODUCTION_SITES",
    "SITES",
    "FlowEntry",
    "ParameterError",
    "flow_named",
    "parse_parameters",
    "production_deployments",
    "sim_deployments",
]

PRODUCTION_SITES = ("summit", "tts", "bts")
SITES = (*PRODUCTION_SITES, "sim")


@dataclass(frozen=True)
class FlowEntry:
    """A deployable flow: its module path and what its deployments say about it."""

    entrypoint: str
    description: str

    def load(self) -> Flow[..., Any]:
        module, _, name = self.entrypoint.rpartition(".")
        found = getattr(importlib.import_module(module), name)
        if not isinstance(found, Flow):
            raise TypeError(f"{self.entrypoint} is not a Prefect flow")
        return found


#: Every flow operators run, by its Prefect name.
FLOWS: Mapping[str, FlowEntry] = {
    "full-upgrade": FlowEntry(
        "flows.full_upgrade.full_upgrade",
        "Deploying the Upgrade: shut down, clean up, update configurations, deploy.",
    ),
    "incremental-upgrade": FlowEntry(
        "flows.incremental_upgrade.incremental_upgrade",
        "Deploying an Incremental Upgrade: only the affected CSCs and the ScriptQueues.",
    ),
    "os-k8s-shutdown": FlowEntry(
        "flows.os_k8s.os_k8s_shutdown",
        "Before IT's OS/K8s upgrade: the control system down, Kafka shut down gracefully.",
    ),
    "os-k8s-recovery": FlowEntry(
        "flows.os_k8s.os_k8s_recovery",
        "After IT's OS/K8s upgrade: Kafka back, the telescope apps synced, CSCs back.",
    ),
    "minimal-testing": FlowEntry(
        "flows.minimal_testing.minimal_testing",
        "Minimal Testing: the telescopes track (and take images where the site can).",
    ),
}


def flow_named(name: str) -> Flow[..., Any]:
    """The flow called ``name``.

    Raises
    ------
    ParameterError
        No such flow; the message lists the flows there are.
    """
    entry = FLOWS.get(name)
    if entry is None:
        raise ParameterError(f"no flow {name!r}: choose one of {', '.join(sorted(FLOWS))}")
    return entry.load()


async def _deployment(name: str, site: str, *, tags: list[str], **options: Any) -> RunnerDeployment:
    flow = flow_named(name)
    return await flow.ato_deployment(
        name=site,
        parameters={"site": site},
        description=f"{FLOWS[name].description} Site: {site}.",
        tags=["rubin-upgrade", f"site:{site}", *tags],
        entrypoint_type=EntrypointType.MODULE_PATH,
        **options,
    )


async def sim_deployments(flows: list[str] | None = None) -> list[RunnerDeployment]:
    """The ``<flow>/sim`` deployments, to be served in-process next to the simulated site."""
    return [await _deployment(name, "sim", tags=["simulated"]) for name in flows or list(FLOWS)]


async def production_deployments(
    site: str,
    *,
    work_pool: str,
    image: str,
    namespace: str = "rubin-upgrade",
    flows: list[str] | None = None,
) -> list[RunnerDeployment]:
    """The ``<flow>/<site>`` deployments for a site's Kubernetes work pool.

    The flow runs as a Kubernetes Job from ``image`` (this package installed) in ``namespace``;
    its credentials come from the site's block, never from the deployment.

    Raises
    ------
    ValueError
        ``site`` is not one of the observatory's sites.
    """
    if site not in PRODUCTION_SITES:
        raise ValueError(
            f"{site!r} is not a site: choose one of {', '.join(PRODUCTION_SITES)} "
            "(the sim deployments are served by `rubin-upgrade demo`)"
        )
    return [
        await _deployment(
            name,
            site,
            tags=[],
            work_pool_name=work_pool,
            job_variables={"image": image, "namespace": namespace},
        )
        for name in flows or list(FLOWS)
    ]


class ParameterError(ValueError):
    """A ``KEY=VALUE`` flow parameter is wrong; the message says what to fix."""


def parse_parameters(
    pairs: list[str], accepted: Mapping[str, Any], *, fixed: Mapping[str, str]
) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as flow parameters, checked against the flow's parameter schema.

    A VALUE is read as JSON when it parses (``true``, ``3``, ``["a"]``), else as text.
    ``fixed`` names the parameters the command sets itself, each with why.

    Raises
    ------
    ParameterError
        A pair is malformed, names no parameter of the flow, or sets a fixed one.
    """
    parameters: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ParameterError(f"-p {pair!r}: write it as KEY=VALUE")
        if key in fixed:
            raise ParameterError(f"-p {key}=...: {fixed[key]}")
        if key not in accepted:
            raise ParameterError(
                f"-p {key}: not a parameter of this flow; it takes "
                + ", ".join(sorted(k for k in accepted if k not in fixed))
            )
        try:
            parameters[key] = json.loads(text)
        except json.JSONDecodeError:
            parameters[key] = text
    return parameters
