"""Prefect tasks: thin wrappers over the clients, so that each call shows in the run graph.

Tasks that only read, or whose change is idempotent (scaling to a replica count, setting a
compatibility level, a cleanup), retry transient failures — a connection that failed, a 5xx —
a few times. Tasks that send a command or add a script are never retried by Prefect: a refused
command is an answer, and re-sending one could repeat an action at the site.
"""

from __future__ import annotations

from typing import Any

import prefect.runtime
from prefect import task
from prefect.client.schemas.objects import State, TaskRun

from blocks.site import CscName
from blocks.site import State as CscState
from clients.argocd import ArgoCdUnavailableError, ArgoCdWebError, OutOfSyncReport
from clients.kubernetes import (
    CleanupReport,
    JobInfo,
    KubernetesUnavailableError,
    KubernetesWebError,
    NamespaceCleanup,
    NamespaceDeletion,
    ScaleChange,
)
from clients.lag import ConsumerLagUnavailableError, LagReport
from clients.registry import (
    CompatibilityLevel,
    SchemaRegistryUnavailableError,
    SchemaRegistryWebError,
)
from clients.sal import CscStatus, SalKafkaError
from clients.sal import scripts as sal_scripts
from clients.sal.scripts import ScriptConfig, ScriptResult
from flows.affected import JobDeletion
from flows.run import current_run

__all__ = [
    "TRANSIENT",
    "consumer_lags",
    "csc_statuses",
    "delete_class_jobs",
    "failed_csc_jobs",
    "get_compatibility",
    "is_transient",
    "k8s_cleanup_all",
    "k8s_cleanup_nublado",
    "out_of_sync_report",
    "resume_queue",
    "run_script",
    "scale_deployments",
    "set_compatibility",
    "set_csc_state",
    "sync_application",
]

_UNAVAILABLE = (
    ArgoCdUnavailableError,
    KubernetesUnavailableError,
    SchemaRegistryUnavailableError,
    ConsumerLagUnavailableError,
    SalKafkaError,
)


def is_transient(exc: BaseException) -> bool:
    """A failure worth trying again: the service could not be reached or answered 5xx."""
    if isinstance(exc, _UNAVAILABLE):
        return True
    if isinstance(exc, KubernetesWebError | ArgoCdWebError | SchemaRegistryWebError):
        status = getattr(exc, "status", None)
        return isinstance(status, int) and status >= 500
    return False


def _retry_transient(_task: Any, _run: TaskRun, state: State[Any]) -> bool:
    return isinstance(state.data, BaseException) and is_transient(state.data)


RETRIES = 3
RETRY_DELAY_S = 2
#: What a task whose failures may be transient (a service restarting) is given.
TRANSIENT: dict[str, Any] = {
    "retries": RETRIES,
    "retry_delay_seconds": RETRY_DELAY_S,
    "retry_condition_fn": _retry_transient,
}


@task(
    name="read CSC states",
    **TRANSIENT,
)
async def csc_statuses(names: list[CscName], window_s: float) -> dict[CscName, CscStatus]:
    return await current_run().services.sal.statuses(names, window_s)


@task(name="run script", task_run_name="{path} on ScriptQueue:{queue}")
async def run_script(queue: int, path: str, config: ScriptConfig, timeout_s: float) -> ScriptResult:
    return await current_run().services.sal.run_script(queue, path, config, timeout_s=timeout_s)


@task(name="resume ScriptQueue", task_run_name="resume ScriptQueue:{queue}")
async def resume_queue(queue: int) -> None:
    await sal_scripts.resume_queue(current_run().services.sal, queue)


@task(name="set summary state", task_run_name="{csc} to {state.name}")
async def set_csc_state(csc: CscName, state: CscState, timeout_s: float) -> CscState:
    run = current_run()
    await run.services.sal.set_summary_state(
        csc,
        state,
        board=await run.board(),
        timeout_s=timeout_s,
        heartbeat_window_s=run.site.timeouts.heartbeat_window_s,
    )
    return state


def _families_run_name() -> str:
    prefixes = prefect.runtime.task_run.parameters.get("prefixes", ())
    return "lag of " + " and ".join(f"{prefix}*" for prefix in prefixes)


@task(
    name="consumer lags",
    task_run_name=_families_run_name,
    **TRANSIENT,
)
async def consumer_lags(prefixes: tuple[str, ...]) -> list[LagReport]:
    """Several families' lag in one measurement (`ConsumerLagClient.consumer_lags`)."""
    return await current_run().services.lag.consumer_lags(prefixes)


@task(
    name="clean up CSC jobs (cleanup_all)",
    **TRANSIENT,
)
async def k8s_cleanup_all() -> CleanupReport:
    run = current_run()
    return await run.services.kubernetes.cleanup_all(run.site.cleanup)


@task(
    name="clean up Nublado (cleanup_nublado)",
    **TRANSIENT,
)
async def k8s_cleanup_nublado() -> NamespaceDeletion:
    run = current_run()
    return await run.services.kubernetes.cleanup_nublado(run.site.cleanup)


@task(
    name="delete CSC jobs by class",
    task_run_name="delete jobs {deletion.namespace}/{deletion.selector}",
    **TRANSIENT,
)
async def delete_class_jobs(deletion: JobDeletion) -> NamespaceCleanup:
    return await current_run().services.kubernetes.delete_class_jobs(
        deletion.namespace,
        deletion.csc_class,
        cscs=list(deletion.cscs) if deletion.cscs else None,
    )


@task(
    name="failed CSC jobs",
    task_run_name="failed CSC jobs in {namespace}",
    **TRANSIENT,
)
async def failed_csc_jobs(namespace: str) -> list[JobInfo]:
    """The CSC Jobs of ``namespace`` that have failed (and are not being deleted)."""
    jobs = await current_run().services.kubernetes.list_jobs(namespace, selector="csc")
    return [job for job in jobs if job.phase == "Failed" and not job.terminating]


@task(
    name="scale deployments",
    task_run_name="scale {namespace}/{selector} to {replicas}",
    **TRANSIENT,
)
async def scale_deployments(namespace: str, selector: str, replicas: int) -> list[ScaleChange]:
    return await current_run().services.kubernetes.scale_deployments(
        namespace, selector=selector, replicas=replicas
    )


@task(
    name="read registry compatibility",
    **TRANSIENT,
)
async def get_compatibility() -> CompatibilityLevel:
    return await current_run().services.registry.get_compatibility()


@task(
    name="set registry compatibility",
    task_run_name="registry compatibility {level}",
    **TRANSIENT,
)
async def set_compatibility(level: CompatibilityLevel) -> CompatibilityLevel:
    return await current_run().services.registry.set_compatibility(level)


@task(name="sync application", task_run_name="sync {name}")
async def sync_application(name: str) -> str:
    """Sync and wait for operation Succeeded + Synced (one spurious failure is retried)."""
    run = current_run()
    app = await run.services.argocd.sync_and_wait(
        name,
        timeout_s=run.site.timeouts.argocd_sync_s,
        poll_interval_s=run.site.timeouts.poll_s,
    )
    operation = app.status.operation_state
    return operation.sync_result.revision if operation and operation.sync_result else ""


@task(
    name="what is out of sync",
    task_run_name="diff {name}",
    **TRANSIENT,
)
async def out_of_sync_report(name: str) -> OutOfSyncReport:
    return await current_run().services.argocd.diff_report(name)


def state_rows(
    statuses: dict[CscName, CscStatus], expected: dict[CscName, CscState]
) -> list[dict[str, Any]]:
    """Rows of a CSC state table artifact."""
    rows = []
    for csc, status in statuses.items():
        rows.append(
            {
                "csc": str(csc),
                "state": status.state.name if status.state is not None else "-",
                "heartbeat_age_s": (
                    round(status.heartbeat_age_s, 1) if status.heartbeat_age_s is not None else "-"
                ),
                "expected": expected[csc].name if csc in expected else "-",
            }
        )
    return rows
