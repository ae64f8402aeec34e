"""``rubin-upgrade deploy``: register a site's deployments with its Kubernetes work pool."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser", "deploy_site"]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "deploy",
        help="register <flow>/<site> deployments with a site's Kubernetes work pool",
        description="Register every flow's deployment for one site (full-upgrade/summit, ...) "
        "with the Prefect server in PREFECT_API_URL, to run as Kubernetes Jobs from IMAGE via "
        "the site's work pool. The work pool is created (type kubernetes) if it does not exist; "
        "a worker must run in the site's cluster to pick the runs up.",
    )
    parser.add_argument("--site", required=True, choices=("summit", "tts", "bts"))
    parser.add_argument("--work-pool", required=True, help="the site's Kubernetes work pool")
    parser.add_argument(
        "--image", required=True, help="the image with this package installed (name:tag)"
    )
    parser.add_argument("--namespace", default="rubin-upgrade", help="where the Jobs run")
    parser.add_argument(
        "--flow", action="append", help="only this flow (repeatable; default: every flow)"
    )
    parser.set_defaults(handler=run)


async def deploy_site(
    site: str,
    *,
    work_pool: str,
    image: str,
    namespace: str = "rubin-upgrade",
    flows: list[str] | None = None,
) -> list[str]:
    """Create the work pool if absent and register the site's deployments; return their names.

    Raises
    ------
    ValueError
        An unknown site or flow (nothing is registered).
    """
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    from deployments.catalog import FLOWS, production_deployments

    unknown = sorted(set(flows or []) - set(FLOWS))
    if unknown:
        raise ValueError(f"no flow {', '.join(unknown)}: choose among {', '.join(sorted(FLOWS))}")
    deployments = await production_deployments(
        site, work_pool=work_pool, image=image, namespace=namespace, flows=flows
    )
    async with get_client() as client:
        try:
            await client.read_work_pool(work_pool)
        except ObjectNotFound:
            from prefect_kubernetes.worker import KubernetesWorker

            template = KubernetesWorker.get_default_base_job_template()
            await client.create_work_pool(
                WorkPoolCreate(name=work_pool, type="kubernetes", base_job_template=template)
            )
            print(f"created Kubernetes work pool {work_pool}", file=sys.stderr)
    names: list[str] = []
    for deployment in deployments:
        await deployment.aapply(work_pool_name=work_pool, image=image)
        names.append(f"{deployment.flow_name}/{deployment.name}")
    return names


async def run(args: argparse.Namespace) -> int:
    try:
        names = await deploy_site(
            args.site,
            work_pool=args.work_pool,
            image=args.image,
            namespace=args.namespace,
            flows=args.flow,
        )
    except ValueError as exc:
        print(f"rubin-upgrade deploy: {exc}", file=sys.stderr)
        return 2
    for name in names:
        print(name)
    return 0
