"""The simulated site's Argo CD API server: the part of Argo CD's REST API the upgrade uses.

It serves the sites' ``/argo-cd`` prefix and answers in Argo CD v3.3's own shapes (its OpenAPI
spec, ``argocd-v3.3.14-swagger.json``): sessions, the application list, one application, sync,
terminating an operation and the managed resources' diff. Errors are grpc-gateway bodies
(``{"error", "code", "message"}``) with the HTTP status grpc-gateway gives their gRPC code.

The applications are the shared `SiteModel`'s. A sync runs as an operation, as in Argo CD: the
request only sets ``operation``; a moment later the operation is Running, and after
``sync_duration_s`` it calls `SiteModel.sync_application` (which recreates deleted CSC Jobs, LOVE's
Deployments and Sasquatch's replicas) and ends Succeeded, or Failed when a fault says so.

A sync request's ``resources`` (a partial sync) and ``strategy`` are recorded and echoed in the
operation, but the model always applies the whole app. ``revision`` must be the app's target
(its commit, its branch or ``HEAD``); any other fails the operation as an unknown commit would.

What Argo CD would report is derived from the model: a deleted Job is a Missing, OutOfSync
resource (so its app is OutOfSync), a Sasquatch Deployment scaled away from its chart's replicas
is OutOfSync, and a published upgrade shows as image changes on the app's workloads.

Syncs and terminations are recorded in the write log as service ``argocd``; logins are not state
changes and are not recorded. Tests reach the state through ``app.state.argocd`` to inject faults
(`ArgoCdState.fail_first_sync`, `fail_every_sync`, `fail_next`, `expire_tokens`); call
`ArgoCdState.aclose` to stop operations still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from sim.model import Application, Deployment, Job, SiteModel, matches_selector

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from starlette.requests import Request

    from sim.writelog import WriteLog

    Handler = Callable[[Request], Awaitable[Response]]

__all__ = ["SERVICE", "ArgoCdApiError", "ArgoCdState", "create_argocd_app"]

SERVICE = "argocd"
ARGOCD_NAMESPACE = "argocd"
_IN_CLUSTER = "https://kubernetes.default.svc"

# gRPC status codes and the HTTP status grpc-gateway v1 (which Argo CD uses) gives each.
_INVALID_ARGUMENT = 3
_NOT_FOUND = 5
_PERMISSION_DENIED = 7
_FAILED_PRECONDITION = 9
_INTERNAL = 13
_UNAVAILABLE = 14
_UNAUTHENTICATED = 16
_HTTP_STATUS = {
    _INVALID_ARGUMENT: 400,
    _NOT_FOUND: 404,
    _PERMISSION_DENIED: 403,
    _FAILED_PRECONDITION: 400,  # grpc-gateway deliberately does not use 412 here
    _INTERNAL: 500,
    _UNAVAILABLE: 503,
    _UNAUTHENTICATED: 401,
}

# Argo CD's own messages, so that what an operator reads in a rehearsal is what the site says.
SYNC_SUCCEEDED = "successfully synced (all tasks run)"
SYNC_FAILED = "one or more synchronization tasks completed unsuccessfully"
OPERATION_TERMINATED = "Operation terminated"
_IN_PROGRESS = "another operation is already in progress"
_NOTHING_TO_TERMINATE = "Unable to terminate operation. No operation is in progress"
_BAD_CREDENTIALS = "Invalid username or password"
_NO_SESSION = "no session information"
_TOKEN_EXPIRED = "invalid session: token has invalid claims: token is expired"  # noqa: S105
_TOKEN_INVALID = "invalid session: token signature is invalid"  # noqa: S105

_WORKLOAD_GROUPS = {"Deployment": "apps", "StatefulSet": "apps", "Job": "batch", "CronJob": "batch"}
_PENDING_RESOURCE = re.compile(r"^(?P<kind>[A-Z][A-Za-z]*)/(?P<name>[^:\s]+):\s*(?P<text>.*)$")
# gitops-engine's order, best first: an app is as healthy as its least healthy resource.
_HEALTH_ORDER = ("Healthy", "Suspended", "Progressing", "Missing", "Degraded", "Unknown")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ArgoCdApiError(Exception):
    """An error answer in grpc-gateway's shape; the HTTP status follows from the gRPC code."""

    def __init__(self, code: int, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or _HTTP_STATUS.get(code, 500)

    def response(self) -> JSONResponse:
        body = {"error": self.message, "code": self.code, "message": self.message}
        return JSONResponse(body, status_code=self.status)


def _not_found(name: str) -> ArgoCdApiError:
    return ArgoCdApiError(_NOT_FOUND, f'applications.argoproj.io "{name}" not found')


@dataclass
class _SyncFault:
    message: str
    remaining: int | None  # None: every sync fails


@dataclass(kw_only=True)
class _Resource:
    """One resource an application manages, with its live and desired manifests."""

    group: str
    version: str
    kind: str
    namespace: str
    name: str
    live: dict[str, Any] | None
    target: dict[str, Any] | None
    health: str | None = None

    @property
    def out_of_sync(self) -> bool:
        return _normalized(self.live) != _normalized(self.target)

    def key(self) -> tuple[str, str, str, str]:
        return (self.group, self.kind, self.namespace, self.name)


def _normalized(manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    """A manifest without what the cluster adds (status, uid...), as Argo CD compares them."""
    if manifest is None:
        return None
    result = {k: v for k, v in manifest.items() if k != "status"}
    metadata = dict(result.get("metadata", {}))
    for runtime_field in ("uid", "resourceVersion", "creationTimestamp"):
        metadata.pop(runtime_field, None)
    result["metadata"] = metadata
    return result


class ArgoCdState:
    """Sessions, running operations and the fault switches of one simulated Argo CD.

    ``requests`` lists every request's method and path, faulted ones included, so tests can
    count retries. ``sync_duration_s`` may be changed between syncs.
    """

    def __init__(
        self,
        model: SiteModel,
        write_log: WriteLog | None,
        *,
        username: str,
        password: SecretStr,
        sync_duration_s: float,
    ) -> None:
        self.model = model
        self.write_log = write_log
        self.username = username
        self._password = password
        self.sync_duration_s = sync_duration_s
        self.requests: list[tuple[str, str]] = []
        self._tokens: dict[str, bool] = {}  # token -> still valid
        self._failures: list[int] = []
        self._sync_faults: dict[str, _SyncFault] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._versions: dict[str, int] = {}
        self._reconciled_at: dict[str, str] = {}
        for app in model.applications.values():
            if not app.history:
                # Every app has been deployed once: its history says which revision is live.
                app.history.append(
                    {
                        "id": 0,
                        "revision": app.synced_revision,
                        "deployedAt": app.created_at,
                        "deployStartedAt": app.created_at,
                        "source": _source(app),
                    }
                )

    # --- Faults ---------------------------------------------------------------------------------

    def fail_next(self, count: int = 1, status: int = 503) -> None:
        """Answer the next ``count`` requests (logins included) with HTTP ``status``."""
        self._failures.extend([status] * count)

    def take_fault(self) -> int | None:
        return self._failures.pop(0) if self._failures else None

    @property
    def pending_failures(self) -> int:
        return len(self._failures)

    def fail_first_sync(self, app: str, message: str = SYNC_FAILED) -> None:
        """The next sync of ``app`` fails with ``message``; later ones succeed (a spurious failure).

        Dry runs neither fail nor use the fault up.
        """
        self._sync_faults[app] = _SyncFault(message, 1)

    def fail_every_sync(self, app: str, message: str = SYNC_FAILED) -> None:
        """Every sync of ``app`` fails with ``message`` until `clear_faults`."""
        self._sync_faults[app] = _SyncFault(message, None)

    def clear_faults(self) -> None:
        self._failures.clear()
        self._sync_faults.clear()

    def expire_tokens(self) -> None:
        """Every session issued so far expires: requests carrying one answer 401."""
        for token in self._tokens:
            self._tokens[token] = False

    # --- Sessions -------------------------------------------------------------------------------

    def login(self, username: Any, password: Any) -> str:
        valid = (
            isinstance(username, str)
            and isinstance(password, str)
            and secrets.compare_digest(username.encode(), self.username.encode())
            and secrets.compare_digest(
                password.encode(), self._password.get_secret_value().encode()
            )
        )
        if not valid:
            raise ArgoCdApiError(_UNAUTHENTICATED, _BAD_CREDENTIALS)
        token = secrets.token_urlsafe(32)
        self._tokens[token] = True
        return token

    def authenticate(self, request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            token = request.cookies.get("argocd.token", "")
        if not token:
            raise ArgoCdApiError(_UNAUTHENTICATED, _NO_SESSION)
        valid = self._tokens.get(token.strip())
        if valid is None:
            raise ArgoCdApiError(_UNAUTHENTICATED, _TOKEN_INVALID)
        if not valid:
            raise ArgoCdApiError(_UNAUTHENTICATED, _TOKEN_EXPIRED)

    # --- Applications ---------------------------------------------------------------------------

    def application(self, name: str) -> Application:
        app = self.model.applications.get(name)
        if app is None:
            raise _not_found(name)
        return app

    def refresh(self, app: Application) -> None:
        self._reconciled_at[app.name] = _now()

    def _touch(self, app: Application) -> None:
        self._versions[app.name] = self._versions.get(app.name, 0) + 1

    def sync(self, app: Application, request: dict[str, Any]) -> None:
        """Start a sync operation, as Argo CD's API server does; the controller runs it."""
        if app.operation is not None:
            raise ArgoCdApiError(_FAILED_PRECONDITION, _IN_PROGRESS)
        requested = request.get("revision") or ""
        # Argo CD resolves a branch to its commit; this one knows only the app's target commit.
        revision = app.revision if requested in ("", app.target_revision, "HEAD") else requested
        sync: dict[str, Any] = {
            "revision": revision,
            "prune": bool(request.get("prune", False)),
            "dryRun": bool(request.get("dryRun", False)),
        }
        if request.get("resources"):
            sync["resources"] = request["resources"]
        if request.get("strategy"):
            sync["syncStrategy"] = request["strategy"]
        operation = {"sync": sync, "initiatedBy": {"username": self.username}}
        app.operation = operation
        # Argo CD clears the last result when it accepts an operation; the controller then
        # reports the new one as Running.
        app.operation_state = None
        self._touch(app)
        if self.write_log is not None:
            summary: dict[str, Any] = {
                "revision": sync["revision"],
                "prune": sync["prune"],
                "dryRun": sync["dryRun"],
            }
            if "resources" in sync:
                summary["resources"] = [
                    f"{r.get('kind', '')}/{r.get('name', '')}" for r in sync["resources"]
                ]
            self.write_log.record(SERVICE, "sync", app.name, summary)
        task = asyncio.get_running_loop().create_task(
            self._run_operation(app, operation), name=f"argocd-sync-{app.name}"
        )
        self._tasks[app.name] = task
        task.add_done_callback(lambda done: self._forget(app.name, done))

    def _forget(self, name: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(name) is task:
            del self._tasks[name]

    async def _run_operation(self, app: Application, operation: dict[str, Any]) -> None:
        started = _now()
        app.operation_state = {"operation": operation, "phase": "Running", "startedAt": started}
        self._touch(app)
        await asyncio.sleep(max(self.sync_duration_s, 0.0))
        if app.operation is not operation:
            return  # terminated meanwhile
        sync = operation["sync"]
        revision = sync["revision"]
        fault = None if sync["dryRun"] else self._sync_faults.get(app.name)
        results: list[dict[str, Any]] = []
        if revision != app.revision:
            phase, message = "Failed", f"unable to resolve '{revision}' to a commit SHA"
        elif fault is not None:
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del self._sync_faults[app.name]
            phase, message = "Failed", fault.message
        elif sync["dryRun"]:
            results = [
                _result(r, "Synced", f"{_change(r, r)} (dry run)")
                for r in self.resources(app)
                if r.out_of_sync
            ]
            phase, message = "Succeeded", f"{SYNC_SUCCEEDED} (dry run)"
        else:
            before = {r.key(): r for r in self.resources(app)}
            self.model.sync_application(app)
            results = [
                _result(r, "Synced", _change(before.get(r.key()), r)) for r in self.resources(app)
            ]
            phase, message = "Succeeded", SYNC_SUCCEEDED
            finished = _now()
            app.history.append(
                {
                    "id": max((h.get("id", 0) for h in app.history), default=-1) + 1,
                    "revision": revision,
                    "deployStartedAt": started,
                    "deployedAt": finished,
                    "source": _source(app),
                    "initiatedBy": operation.get("initiatedBy", {}),
                }
            )
        app.operation = None
        app.operation_state = {
            "operation": operation,
            "phase": phase,
            "message": message,
            "startedAt": started,
            "finishedAt": _now(),
            "syncResult": {"revision": revision, "resources": results, "source": _source(app)},
        }
        self._touch(app)

    def terminate(self, app: Application) -> None:
        """Terminate the running operation: Terminating now, Failed once the controller stops."""
        state = app.operation_state
        if app.operation is None or state is None:
            raise ArgoCdApiError(_INVALID_ARGUMENT, _NOTHING_TO_TERMINATE)
        state["phase"] = "Terminating"
        self._touch(app)
        if self.write_log is not None:
            self.write_log.record(SERVICE, "terminate", app.name, {})
        task = self._tasks.pop(app.name, None)
        if task is not None:
            task.cancel()

        async def stop() -> None:
            await asyncio.sleep(0)
            app.operation = None
            app.operation_state = {
                **state,
                "phase": "Failed",
                "message": OPERATION_TERMINATED,
                "finishedAt": _now(),
            }
            self._touch(app)

        stopping = asyncio.get_running_loop().create_task(stop(), name=f"argocd-stop-{app.name}")
        self._tasks[app.name] = stopping
        stopping.add_done_callback(lambda done: self._forget(app.name, done))

    async def aclose(self) -> None:
        """Cancel operations still running (they never complete)."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- What Argo CD would report --------------------------------------------------------------

    def resources(self, app: Application) -> list[_Resource]:
        """The resources ``app`` manages, live and desired, derived from the site model."""
        model, config = self.model, self.model.config
        resources: list[_Resource] = []
        if app.name == config.argocd.sasquatch_app:
            resources += self._sasquatch_resources()
        else:
            resources += self._job_resources(app)
            if (
                app.project == config.argocd.telescope_project
                and app.name == config.cleanup.love_namespace
            ):
                resources += self._love_resources(app)
        generic: list[str] = []
        for change in app.pending_changes:
            match = _PENDING_RESOURCE.match(change)
            if match is None:
                generic.append(change)
                continue
            kind, pattern = match["kind"], match["name"]
            names = sorted(
                d.name
                for (ns, name), d in model.deployments.items()
                if ns == app.namespace and fnmatch.fnmatchcase(name, pattern)
            ) or [pattern]
            resources += [_config_map(app, kind, name, match["text"]) for name in names]
        if generic and not any(r.out_of_sync for r in resources):
            # An app without workloads (csc-versions) still shows what a published change moves.
            resources.append(_config_map(app, "ConfigMap", app.name, "; ".join(generic)))
        return resources

    def _target_image(self, app: Application, live_image: str | None, image: str) -> str:
        # The model is the authority on whether an app is in sync: only an OutOfSync app wants
        # a new image on the workloads that still exist.
        if live_image is not None and app.sync_status != "OutOfSync":
            return live_image
        return image

    def _job_resources(self, app: Application) -> list[_Resource]:
        resources = []
        for entry in self.model.config.kubernetes_cscs():
            placement = entry.kubernetes
            if placement is None or placement.namespace != app.name:
                continue
            name = f"{placement.csc}-job"
            job = self.model.jobs.get((placement.namespace, name))
            image = f"ts-dockerhub.lsst.org/{placement.csc_class}:{app.target_image_tag}"
            target_image = self._target_image(app, job.image if job else None, image)
            labels: dict[str, str] = {"csc": placement.csc, "csc-class": placement.csc_class}
            resources.append(
                _Resource(
                    group="batch",
                    version="v1",
                    kind="Job",
                    namespace=placement.namespace,
                    name=name,
                    live=None if job is None else _job_manifest(job),
                    target=_workload(
                        "Job", placement.namespace, name, labels=labels, image=target_image
                    ),
                    health="Missing" if job is None else _job_health(job),
                )
            )
        return resources

    def _love_resources(self, app: Application) -> list[_Resource]:
        namespace = self.model.config.cleanup.love_namespace
        live = {n: d for (ns, n), d in self.model.deployments.items() if ns == namespace}
        names = sorted(live) or [
            "love-manager-frontend",
            "love-nginx",
            *(f"love-producer-{n}" for n in range(1, self.model.options.love_producers + 1)),
        ]
        resources = []
        for name in names:
            deployment = live.get(name)
            target_image = self._target_image(
                app, deployment.image if deployment else None, app.target_image_tag
            )
            labels = dict(deployment.labels) if deployment else {}
            resources.append(
                _Resource(
                    group="apps",
                    version="v1",
                    kind="Deployment",
                    namespace=namespace,
                    name=name,
                    live=None if deployment is None else _deployment_manifest(deployment),
                    target=_workload(
                        "Deployment", namespace, name, labels=labels, image=target_image, replicas=1
                    ),
                    health="Missing" if deployment is None else "Healthy",
                )
            )
        return resources

    def _sasquatch_resources(self) -> list[_Resource]:
        strimzi = self.model.config.strimzi
        resources = []
        for (namespace, name), deployment in sorted(self.model.deployments.items()):
            if namespace != strimzi.namespace:
                continue
            # Sasquatch's chart: the registry at its replicas, every telegraf connector at 1.
            replicas = (
                strimzi.schema_registry_replicas
                if name == strimzi.schema_registry_deployment
                else 1
            )
            resources.append(
                _Resource(
                    group="apps",
                    version="v1",
                    kind="Deployment",
                    namespace=namespace,
                    name=name,
                    live=_deployment_manifest(deployment),
                    target=_workload(
                        "Deployment",
                        namespace,
                        name,
                        labels=dict(deployment.labels),
                        image=deployment.image,
                        replicas=replicas,
                    ),
                    health="Healthy",
                )
            )
        return resources

    def sync_status(self, app: Application, resources: list[_Resource]) -> str:
        if app.sync_status == "Synced" and any(r.out_of_sync for r in resources):
            return "OutOfSync"
        return app.sync_status

    def health_status(self, app: Application, resources: list[_Resource]) -> str:
        worst = app.health_status
        for resource in resources:
            health = resource.health
            if (
                health in _HEALTH_ORDER
                and worst in _HEALTH_ORDER
                and _HEALTH_ORDER.index(health) > _HEALTH_ORDER.index(worst)
            ):
                worst = health
        return worst

    def render(self, app: Application) -> dict[str, Any]:
        """``app`` as a ``v1alpha1Application``."""
        resources = self.resources(app)
        source = _source(app)
        destination = {"server": _IN_CLUSTER, "namespace": app.namespace}
        images = sorted(
            {
                container["image"]
                for r in resources
                if r.live is not None and r.kind in _WORKLOAD_GROUPS
                for container in r.live["spec"]["template"]["spec"]["containers"]
            }
        )
        status: dict[str, Any] = {
            "sync": {
                "status": self.sync_status(app, resources),
                "revision": app.revision,
                "comparedTo": {"source": source, "destination": destination},
            },
            "health": {"status": self.health_status(app, resources)},
            "resources": [_resource_status(r) for r in resources],
            "history": list(app.history),
            "reconciledAt": self._reconciled_at.get(app.name, app.created_at),
            "sourceType": "Helm",
            "controllerNamespace": ARGOCD_NAMESPACE,
            "summary": {"images": images} if images else {},
        }
        if app.operation_state is not None:
            status["operationState"] = app.operation_state
        body: dict[str, Any] = {
            "metadata": {
                "name": app.name,
                "namespace": ARGOCD_NAMESPACE,
                "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"argocd/{app.name}")),
                "resourceVersion": str(self._versions.get(app.name, 0) + 1000),
                "generation": self._versions.get(app.name, 0) + 1,
                "creationTimestamp": app.created_at,
            },
            "spec": {"project": app.project, "source": source, "destination": destination},
            "status": status,
        }
        if app.operation is not None:
            body["operation"] = app.operation
        return body

    def managed_resources(self, app: Application) -> list[dict[str, Any]]:
        """``app``'s resources as ``v1alpha1ResourceDiff`` items."""
        items = []
        for resource in self.resources(app):
            item: dict[str, Any] = {
                "group": resource.group,
                "kind": resource.kind,
                "namespace": resource.namespace,
                "name": resource.name,
                "targetState": json.dumps(resource.target),
                "liveState": json.dumps(resource.live),
                "normalizedLiveState": json.dumps(_normalized(resource.live)),
                "predictedLiveState": json.dumps(_normalized(resource.target)),
                "modified": resource.out_of_sync,
                "hook": False,
            }
            if resource.live is not None:
                item["resourceVersion"] = resource.live["metadata"].get("resourceVersion", "")
            items.append(item)
        return items


def _source(app: Application) -> dict[str, Any]:
    return {"repoURL": app.repo_url, "path": app.path, "targetRevision": app.target_revision}


def _workload(
    kind: str,
    namespace: str,
    name: str,
    *,
    labels: dict[str, str],
    image: str,
    replicas: int | None = None,
) -> dict[str, Any]:
    """The part of a Job's or Deployment's manifest that the upgrade changes."""
    spec: dict[str, Any] = {
        "template": {"spec": {"containers": [{"name": name.removesuffix("-job"), "image": image}]}}
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": f"{_WORKLOAD_GROUPS[kind]}/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": spec,
    }


def _job_manifest(job: Job) -> dict[str, Any]:
    assert job.namespace is not None
    labels: dict[str, str] = {k: v for k, v in job.labels.items() if k in ("csc", "csc-class")}
    manifest = _workload("Job", job.namespace, job.name, labels=labels, image=job.image)
    manifest["metadata"].update(uid=job.uid, resourceVersion=job.resource_version)
    manifest["status"] = {"phase": job.phase}
    return manifest


def _job_health(job: Job) -> str:
    return {"Succeeded": "Healthy", "Failed": "Degraded"}.get(job.phase, "Progressing")


def _deployment_manifest(deployment: Deployment) -> dict[str, Any]:
    assert deployment.namespace is not None
    manifest = _workload(
        "Deployment",
        deployment.namespace,
        deployment.name,
        labels=dict(deployment.labels),
        image=deployment.image,
        replicas=deployment.replicas,
    )
    manifest["metadata"].update(uid=deployment.uid, resourceVersion=deployment.resource_version)
    manifest["status"] = {"readyReplicas": deployment.ready_replicas}
    return manifest


def _config_map(app: Application, kind: str, name: str, change: str) -> _Resource:
    """A resource that a published change touches but that the model does not simulate."""

    def manifest(data: dict[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": kind,
            "metadata": {"name": name, "namespace": app.namespace},
            "data": data,
        }

    return _Resource(
        group=_WORKLOAD_GROUPS.get(kind, ""),
        version="v1",
        kind=kind,
        namespace=app.namespace,
        name=name,
        live=manifest({"revision": app.synced_revision}),
        target=manifest({"revision": app.revision, "change": change}),
    )


def _resource_status(resource: _Resource) -> dict[str, Any]:
    status: dict[str, Any] = {
        "group": resource.group,
        "version": resource.version,
        "kind": resource.kind,
        "namespace": resource.namespace,
        "name": resource.name,
        "status": "OutOfSync" if resource.out_of_sync else "Synced",
    }
    if resource.health is not None:
        status["health"] = {"status": resource.health}
    return status


def _kind_ref(resource: _Resource) -> str:
    kind = resource.kind.lower()
    return (
        f"{kind}.{resource.group}/{resource.name}" if resource.group else f"{kind}/{resource.name}"
    )


def _change(before: _Resource | None, after: _Resource) -> str:
    if before is None or before.live is None:
        return f"{_kind_ref(after)} created"
    if before.out_of_sync:
        return f"{_kind_ref(after)} configured"
    return f"{_kind_ref(after)} unchanged"


def _result(resource: _Resource, status: str, message: str) -> dict[str, Any]:
    return {
        "group": resource.group,
        "version": resource.version,
        "kind": resource.kind,
        "namespace": resource.namespace,
        "name": resource.name,
        "status": status,
        "message": message,
        "syncPhase": "Sync",
        "hookPhase": "Running" if resource.kind == "Job" else "Succeeded",
    }


def _multi(request: Request, *names: str) -> list[str]:
    return [value for name in names for value in request.query_params.getlist(name) if value]


class _ArgoCdApi:
    def __init__(self, state: ArgoCdState) -> None:
        self.state = state

    def routes(self) -> list[BaseRoute]:
        def route(path: str, handler: Handler, method: str, *, auth: bool = True) -> Route:
            return Route(path, self._endpoint(handler, auth=auth), methods=[method])

        return [
            route("/api/v1/session", self.create_session, "POST", auth=False),
            route("/api/v1/applications", self.list_applications, "GET"),
            route("/api/v1/applications/{name}", self.get_application, "GET"),
            route("/api/v1/applications/{name}/sync", self.sync, "POST"),
            route("/api/v1/applications/{name}/operation", self.terminate_operation, "DELETE"),
            route(
                "/api/v1/applications/{applicationName}/managed-resources",
                self.managed_resources,
                "GET",
            ),
        ]

    def _endpoint(self, handler: Handler, *, auth: bool) -> Handler:
        async def endpoint(request: Request) -> Response:
            self.state.requests.append((request.method, request.url.path))
            fault = self.state.take_fault()
            if fault is not None:
                return ArgoCdApiError(
                    _UNAVAILABLE if fault != 500 else _INTERNAL,
                    "the Argo CD API server is unavailable (simulated fault)",
                    status=fault,
                ).response()
            try:
                if auth:
                    self.state.authenticate(request)
                return await handler(request)
            except ArgoCdApiError as exc:
                return exc.response()

        return endpoint

    async def create_session(self, request: Request) -> Response:
        body = await _json_object(request)
        token = self.state.login(body.get("username"), body.get("password"))
        return JSONResponse({"token": token})

    async def list_applications(self, request: Request) -> Response:
        projects = set(_multi(request, "projects", "project"))
        name = request.query_params.get("name")
        selector = request.query_params.get("selector")
        items = [
            self.state.render(app)
            for app in sorted(self.state.model.applications.values(), key=lambda a: a.name)
            if (not projects or app.project in projects)
            and (not name or app.name == name)
            and matches_selector({}, selector)
        ]
        return JSONResponse({"metadata": {}, "items": items})

    async def get_application(self, request: Request) -> Response:
        name = request.path_params["name"]
        app = self.state.application(name)
        projects = _multi(request, "projects", "project")
        if projects and app.project not in projects:
            raise _not_found(name)
        if request.query_params.get("refresh"):
            self.state.refresh(app)
        return JSONResponse(self.state.render(app))

    async def sync(self, request: Request) -> Response:
        app = self.state.application(request.path_params["name"])
        body = await _json_object(request)
        _check_types(
            body,
            {"revision": str, "prune": bool, "dryRun": bool, "resources": list, "strategy": dict},
        )
        for resource in body.get("resources") or []:
            if (
                not isinstance(resource, dict)
                or not resource.get("kind")
                or not resource.get("name")
            ):
                raise ArgoCdApiError(
                    _INVALID_ARGUMENT, "each resource to sync needs at least a kind and a name"
                )
        self.state.sync(app, body)
        return JSONResponse(self.state.render(app))

    async def terminate_operation(self, request: Request) -> Response:
        self.state.terminate(self.state.application(request.path_params["name"]))
        return JSONResponse({})

    async def managed_resources(self, request: Request) -> Response:
        app = self.state.application(request.path_params["applicationName"])
        filters = {
            key: request.query_params.get(key)
            for key in ("namespace", "name", "group", "kind")
            if request.query_params.get(key)
        }
        items = [
            item
            for item in self.state.managed_resources(app)
            if all(item.get(key) == value for key, value in filters.items())
        ]
        return JSONResponse({"items": items})


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError as exc:
        raise ArgoCdApiError(_INVALID_ARGUMENT, f"invalid JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise ArgoCdApiError(_INVALID_ARGUMENT, "the request body must be a JSON object")
    return body


def _check_types(body: dict[str, Any], types: dict[str, type]) -> None:
    for key, expected in types.items():
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            raise ArgoCdApiError(
                _INVALID_ARGUMENT,
                f"json: cannot unmarshal {type(value).__name__} into field {key} "
                f"of type {expected.__name__}",
            )


def create_argocd_app(
    model: SiteModel,
    write_log: WriteLog | None = None,
    *,
    username: str = "admin",
    password: str,
    base_path: str = "/argo-cd",
    sync_duration_s: float = 0.0,
) -> Starlette:
    """Argo CD's API for ``model``'s applications under ``base_path``, state ``app.state.argocd``.

    ``username`` and ``password`` are the only credentials `POST /api/v1/session` accepts. A sync
    operation stays Running for ``sync_duration_s`` before it applies the app's target state.
    """
    state = ArgoCdState(
        model,
        write_log,
        username=username,
        password=SecretStr(password),
        sync_duration_s=sync_duration_s,
    )
    routes = _ArgoCdApi(state).routes()
    prefix = base_path.rstrip("/")
    app = Starlette(routes=[Mount(prefix, routes=routes)] if prefix else routes)
    app.state.argocd = state
    return app
