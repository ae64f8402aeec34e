"""The simulated site's Kubernetes API server: the REST paths kubernetes-asyncio and kubectl use.

It serves the part of the Kubernetes API the upgrade touches — namespaces, pods, Jobs,
Deployments (and their scale subresource), HorizontalPodAutoscalers, Strimzi's ``Kafka`` and
``StrimziPodSet`` custom resources — over the shared `sim.model.SiteModel`, so that deleting a
Job kills its CSC and deleting the broker pod set takes the brokers down after the simulated
shutdown delay. Objects are rendered with the fields the real API server returns (metadata,
Job ``status.active/succeeded/failed/conditions``, Deployment ``spec.replicas`` and
``status.readyReplicas``, pod phase, conditions and ``deletionTimestamp``); errors are ``Status``
objects with the real ``reason`` values (``NotFound``, ``Conflict``, ``Unauthorized``...).

As on a real API server, listing or delete-collecting in a namespace that does not exist answers
an empty list, while reading, deleting or patching a named object that does not exist (the
namespace itself included) answers 404.

Every state-changing request is recorded in the write log as service ``kubernetes`` with a target
such as ``batch/v1/namespaces/obssys/jobs?labelSelector=csc-class=scriptqueue``. Tests reach the
fault switches and the request log through ``app.state.kubernetes`` (`KubernetesApiState`).
`write_kubeconfig` writes a kubeconfig file that points a context at the simulated server.
"""

from __future__ import annotations

import copy
import hmac
import itertools
import json
import os
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sim.model import (
    Deployment,
    Job,
    KubeObject,
    Namespace,
    Pod,
    PodSet,
    SiteModel,
    matches_selector,
)
from sim.writelog import WriteLog

__all__ = [
    "SERVICE",
    "KubernetesApiState",
    "StatusError",
    "create_kubernetes_app",
    "write_kubeconfig",
]

SERVICE = "kubernetes"

Handler = Callable[[Request], Awaitable[Response]]

_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PROPAGATION_POLICIES = frozenset({"Foreground", "Background", "Orphan"})
_STRATEGIC = "application/strategic-merge-patch+json"
_MERGE = "application/merge-patch+json"
_JSON_PATCH = "application/json-patch+json"
_APPLY = "application/apply-patch+yaml"
_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
_FAULT_MESSAGES = {
    500: "Internal error occurred: simulated failure",
    503: "the server is currently unable to handle the request",
    504: "the server was unable to return a response in the time allotted",
}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _uid_for(*parts: str) -> str:
    """A stable uid for objects the model does not keep (ReplicaSets, owners)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(parts)))


class StatusError(Exception):
    """An error answer in the API server's shape: a ``Status`` object with ``code`` and
    ``reason``."""

    def __init__(
        self, code: int, message: str, *, reason: str | None = None, details: dict[str, Any]
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason or _REASONS.get(code, "Unknown")
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            status["details"] = self.details
        return status


def _status_response(error: StatusError) -> Response:
    return JSONResponse(error.body(), status_code=error.code)


class KubernetesApiState:
    """The simulated API server's switches, plus the log of every request it received.

    ``token`` is the bearer token required (None: no authentication); change it to make the
    token the clients hold expire. `fail_next` makes the next requests answer an error status
    before being served; `conflict_next_writes` makes the next writes answer 409 Conflict.
    ``requests`` lists every request's method and path with its query, faulted and refused
    ones included, so tests can count retries or prove that nothing was sent.
    """

    def __init__(self, *, token: str | None) -> None:
        self.token = token
        self.requests: list[tuple[str, str]] = []
        self._failures: list[int] = []
        self._conflicts = 0

    def __repr__(self) -> str:
        # The token never appears, even in a test's failure output.
        return f"KubernetesApiState(requests={len(self.requests)}, faults={len(self._failures)})"

    def fail_next(self, count: int = 1, status: int = 503) -> None:
        """Answer the next ``count`` requests with HTTP ``status`` (a 5xx, usually)."""
        self._failures.extend([status] * count)

    def conflict_next_writes(self, count: int = 1) -> None:
        """Answer the next ``count`` writes (DELETE, PATCH, PUT, POST) with 409 Conflict."""
        self._conflicts += count

    def take_fault(self, method: str) -> int | None:
        if self._failures:
            return self._failures.pop(0)
        if method in _WRITE_METHODS and self._conflicts > 0:
            self._conflicts -= 1
            return 409
        return None

    def authorized(self, header: str | None) -> bool:
        if self.token is None:
            return True
        return header is not None and hmac.compare_digest(
            header.encode(), f"Bearer {self.token}".encode()
        )


# --- Rendering ----------------------------------------------------------------------------------


def _metadata(obj: KubeObject, **extra: Any) -> dict[str, Any]:
    meta = obj.metadata()
    meta.update({key: value for key, value in extra.items() if value is not None})
    return meta


def _selector_text(labels: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def _condition(kind: str, status: bool, **extra: Any) -> dict[str, Any]:
    now = _now()
    condition = {
        "type": kind,
        "status": "True" if status else "False",
        "lastProbeTime": None,
        "lastTransitionTime": now,
    }
    condition.update(extra)
    return condition


def render_namespace(namespace: Namespace) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": _metadata(namespace, deletionTimestamp=namespace.deletion_timestamp),
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": namespace.phase},
    }


def render_job(job: Job, *, deleting: str | None = None) -> dict[str, Any]:
    controller_uid = job.uid
    pod_labels = {**job.labels, "job-name": job.name, "controller-uid": controller_uid}
    status: dict[str, Any] = {}
    if job.start_time is not None:
        status["startTime"] = job.start_time
    if job.phase in ("Pulling", "Running"):
        status["active"] = 1
        status["ready"] = 1 if job.phase == "Running" else 0
    elif job.phase == "Succeeded":
        status["succeeded"] = 1
        status["ready"] = 0
        status["completionTime"] = job.completion_time
        status["conditions"] = [_condition("Complete", True)]
    else:
        status["failed"] = 1
        status["ready"] = 0
        status["conditions"] = [
            _condition(
                "Failed",
                True,
                reason="BackoffLimitExceeded",
                message=job.message or "Job has reached the specified backoff limit",
            )
        ]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(job, deletionTimestamp=deleting, generation=1),
        "spec": {
            "parallelism": 1,
            "completions": 1,
            "backoffLimit": 0,
            "selector": {"matchLabels": {"controller-uid": controller_uid}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "containers": [
                        {
                            "name": job.labels.get("csc", job.name),
                            "image": job.image,
                            "imagePullPolicy": "Always",
                        }
                    ],
                    "restartPolicy": "Never",
                },
            },
        },
        "status": status,
    }


def _pod_selector(deployment: Deployment) -> dict[str, str]:
    return {
        key: value
        for key, value in deployment.labels.items()
        if key in ("app.kubernetes.io/name", "app.kubernetes.io/instance")
    }


def render_deployment(deployment: Deployment, *, deleting: str | None = None) -> dict[str, Any]:
    replicas = deployment.replicas
    status: dict[str, Any] = {"observedGeneration": 1}
    # The real API server leaves zero counts out rather than sending 0.
    if replicas:
        status.update(
            replicas=replicas,
            readyReplicas=deployment.ready_replicas,
            availableReplicas=deployment.ready_replicas,
            updatedReplicas=replicas,
        )
    status["conditions"] = [
        _condition(
            "Available",
            deployment.ready_replicas >= replicas,
            reason="MinimumReplicasAvailable",
            message="Deployment has minimum availability.",
        ),
        _condition(
            "Progressing",
            True,
            reason="NewReplicaSetAvailable",
            message=f'ReplicaSet "{deployment.name}" has successfully progressed.',
        ),
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(
            deployment,
            deletionTimestamp=deleting,
            generation=1,
        ),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": _pod_selector(deployment)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
            "template": {
                "metadata": {"labels": dict(deployment.labels)},
                "spec": {"containers": [{"name": deployment.name, "image": deployment.image}]},
            },
        },
        "status": status,
    }


def render_scale(deployment: Deployment) -> dict[str, Any]:
    meta = deployment.metadata()
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            key: meta[key]
            for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
        },
        "spec": {"replicas": deployment.replicas},
        "status": {
            "replicas": deployment.replicas,
            "selector": _selector_text(_pod_selector(deployment)),
        },
    }


def render_pod(pod: Pod, model: SiteModel) -> dict[str, Any]:
    assert pod.namespace is not None
    owner_api, owner_kind, owner_name = "v1", pod.owner_kind, pod.owner_name
    image = ""
    if pod.owner_kind == "Job":
        owner_api = "batch/v1"
        job = model.jobs.get((pod.namespace, pod.owner_name))
        image = job.image if job is not None else ""
    elif pod.owner_kind == "Deployment":
        # Deployments own their pods through a ReplicaSet.
        owner_api, owner_kind, owner_name = "apps/v1", "ReplicaSet", f"{pod.owner_name}-5d8f9c7b6"
        deployment = model.deployments.get((pod.namespace, pod.owner_name))
        image = deployment.image if deployment is not None else ""
    elif pod.owner_kind == "StrimziPodSet":
        owner_api = "core.strimzi.io/v1beta2"
        image = "quay.io/strimzi/kafka:0.45.0-kafka-3.9.0"
    owners = []
    if owner_kind:
        owners.append(
            {
                "apiVersion": owner_api,
                "kind": owner_kind,
                "name": owner_name,
                "uid": _uid_for(pod.namespace, owner_kind, owner_name),
                "controller": True,
                "blockOwnerDeletion": True,
            }
        )
    running = pod.phase == "Running"
    extra: dict[str, Any] = {"deletionTimestamp": pod.deletion_timestamp}
    if pod.deletion_timestamp is not None:
        extra["deletionGracePeriodSeconds"] = 180
    meta = _metadata(pod, **extra)
    if owners:
        meta["ownerReferences"] = owners
    container_status: dict[str, Any] = {
        "name": "main",
        "image": image,
        "imageID": "",
        "ready": pod.ready,
        "restartCount": 0,
        "started": running,
    }
    if pod.phase == "Pending":
        container_status["state"] = {"waiting": {"reason": "ContainerCreating"}}
    elif running:
        container_status["state"] = {"running": {"startedAt": pod.creation_timestamp}}
    else:
        container_status["state"] = {
            "terminated": {
                "exitCode": 0 if pod.phase == "Succeeded" else 1,
                "reason": "Completed" if pod.phase == "Succeeded" else "Error",
            }
        }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            "containers": [{"name": "main", "image": image}],
            "restartPolicy": "Never" if pod.owner_kind == "Job" else "Always",
            "nodeName": "yagan01",
        },
        "status": {
            "phase": pod.phase,
            "conditions": [
                _condition("PodScheduled", True),
                _condition("Initialized", True),
                _condition("ContainersReady", pod.ready),
                _condition("Ready", pod.ready),
            ],
            "containerStatuses": [container_status],
            "startTime": pod.creation_timestamp,
        },
    }


def render_hpa(hpa: KubeObject, *, deleting: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(hpa, deletionTimestamp=deleting),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": hpa.name},
            "minReplicas": 1,
            "maxReplicas": 3,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 50},
                    },
                }
            ],
        },
        "status": {"currentReplicas": 1, "desiredReplicas": 1},
    }


def render_kafka(kafka: KubeObject, model: SiteModel) -> dict[str, Any]:
    paused = kafka.annotations.get("strimzi.io/pause-reconciliation") == "true"
    if paused:
        condition = _condition("ReconciliationPaused", True)
    else:
        condition = _condition("Ready", model.kafka_up)
    condition.pop("lastProbeTime")
    return {
        "apiVersion": "kafka.strimzi.io/v1beta2",
        "kind": "Kafka",
        "metadata": _metadata(kafka, generation=1),
        "spec": {
            "kafka": {
                "version": "3.9.0",
                "metadataVersion": "3.9-IV0",
                "listeners": [{"name": "tls", "port": 9093, "type": "internal", "tls": True}],
            },
            "entityOperator": {"topicOperator": {}, "userOperator": {}},
        },
        "status": {
            "conditions": [condition],
            "kafkaVersion": "3.9.0",
            "observedGeneration": 1,
        },
    }


def render_pod_set(
    pod_set: PodSet, model: SiteModel, *, deleting: str | None = None
) -> dict[str, Any]:
    assert pod_set.namespace is not None
    pods = [model.pods.get((pod_set.namespace, name)) for name in pod_set.pod_names]
    current = [pod for pod in pods if pod is not None]
    return {
        "apiVersion": "core.strimzi.io/v1beta2",
        "kind": "StrimziPodSet",
        "metadata": _metadata(pod_set, deletionTimestamp=deleting, generation=1),
        "spec": {
            "selector": {"matchLabels": dict(pod_set.labels)},
            "pods": [
                {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}}
                for name in pod_set.pod_names
            ],
        },
        "status": {
            "observedGeneration": 1,
            "pods": len(pod_set.pod_names),
            "currentPods": len(current),
            "readyPods": sum(1 for pod in current if pod.ready),
        },
    }


# --- Resources ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Resource:
    """One kind of object the API serves: where it lives and how it is listed and rendered."""

    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    objects: Callable[[], Iterable[KubeObject]]
    render: Callable[[Any], dict[str, Any]]

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def prefix(self) -> str:
        return f"/apis/{self.group_version}" if self.group else f"/api/{self.version}"

    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def not_found(self, name: str) -> StatusError:
        details = {"name": name, "kind": self.plural}
        if self.group:
            details["group"] = self.group
        return StatusError(404, f'{self.qualified()} "{name}" not found', details=details)

    def find(self, namespace: str | None, name: str) -> Any:
        for obj in self.objects():
            if obj.name == name and (not self.namespaced or obj.namespace == namespace):
                return obj
        raise self.not_found(name)

    def select(self, namespace: str | None, selector: str | None) -> list[Any]:
        found = [
            obj
            for obj in self.objects()
            if (namespace is None or obj.namespace == namespace)
            and matches_selector(obj.labels, selector)
        ]
        return sorted(found, key=lambda obj: (obj.namespace or "", obj.name))

    def render_list(self, objects: Iterable[Any]) -> dict[str, Any]:
        items = []
        for obj in objects:
            item = self.render(obj)
            # Items of a typed list carry no kind or apiVersion of their own.
            item.pop("kind", None)
            item.pop("apiVersion", None)
            items.append(item)
        return {
            "kind": f"{self.kind}List",
            "apiVersion": self.group_version,
            "metadata": {"resourceVersion": str(next(_list_versions))},
            "items": items,
        }


_list_versions = itertools.count(900_000)


# --- Patches ------------------------------------------------------------------------------------


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch; strategic merge patch behaves the same on maps and scalars."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise StatusError(422, f"invalid JSON pointer {path!r}", details={})
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _json_patch(target: dict[str, Any], operations: Any) -> dict[str, Any]:
    """RFC 6902 JSON patch (add, replace, remove, test) on maps."""
    if not isinstance(operations, list):
        raise StatusError(
            400,
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch",
            details={},
        )
    result = copy.deepcopy(target)
    for operation in operations:
        if not isinstance(operation, dict):
            raise StatusError(400, "a JSON patch operation must be an object", details={})
        _apply_operation(result, operation)
    return result


def _apply_operation(document: dict[str, Any], operation: dict[str, Any]) -> None:
    op, path = operation.get("op"), str(operation.get("path", ""))
    *parents, leaf = _pointer(path)
    node: Any = document
    for part in parents:
        if not isinstance(node, dict):
            break
        node = node.setdefault(part, {}) if op == "add" else node.get(part)
    if not isinstance(node, dict):
        raise StatusError(
            422, f"{op} operation does not apply: doc is missing path: {path}", details={}
        )
    if op in ("replace", "remove") and leaf not in node:
        raise StatusError(
            422, f"{op} operation does not apply: doc is missing path: {path}", details={}
        )
    if op in ("add", "replace"):
        node[leaf] = operation.get("value")
    elif op == "remove":
        del node[leaf]
    elif op == "test":
        if node.get(leaf) != operation.get("value"):
            raise StatusError(422, f"testing value {path} failed", details={})
    else:
        raise StatusError(422, f"Unexpected kind: {op}", details={})


async def _read_json(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StatusError(400, f"the body of the request is not JSON: {exc}", details={}) from None


async def _apply_patch(
    request: Request, current: dict[str, Any], *, strategic: bool
) -> tuple[dict[str, Any], Any]:
    """Apply the request's patch to ``current``; return the patched object and the patch."""
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    accepted = [_JSON_PATCH, _MERGE] + ([_STRATEGIC] if strategic else [])
    if content_type not in accepted:
        raise StatusError(
            415,
            "the body of the request was in an unknown format - accepted media types include: "
            + ", ".join([*accepted, _APPLY]),
            details={},
        )
    patch = await _read_json(request)
    if content_type == _JSON_PATCH:
        return _json_patch(current, patch), patch
    if not isinstance(patch, dict):
        raise StatusError(400, "a merge patch must be a JSON object", details={})
    return _merge_patch(current, patch), patch


def _check_resource_version(body: Any, obj: KubeObject, resource: _Resource) -> None:
    wanted = body.get("metadata", {}).get("resourceVersion") if isinstance(body, dict) else None
    if wanted is not None and str(wanted) != obj.resource_version:
        raise StatusError(
            409,
            f'Operation cannot be fulfilled on {resource.qualified()} "{obj.name}": the object '
            "has been modified; please apply your changes to the latest version and try again",
            details={"name": obj.name, "kind": resource.plural, "group": resource.group},
        )


def _replicas(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StatusError(
            422,
            f"spec.replicas: Invalid value: {value!r}: must be greater than or equal to 0",
            details={},
        )
    return value


def _string_map(value: Any, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise StatusError(422, f"{field}: Invalid value: must be a map of strings", details={})
    return {str(k): v for k, v in value.items()}


# --- The API ------------------------------------------------------------------------------------


class _KubernetesApi:
    """The HTTP endpoints over one `SiteModel`; each method answers one route."""

    def __init__(
        self, model: SiteModel, write_log: WriteLog | None, state: KubernetesApiState
    ) -> None:
        self.model = model
        self.write_log = write_log
        self.state = state
        self.namespaces = _Resource(
            "",
            "v1",
            "namespaces",
            "Namespace",
            False,
            model.namespaces.values,
            render_namespace,
        )
        self.pods = _Resource(
            "",
            "v1",
            "pods",
            "Pod",
            True,
            model.pods.values,
            lambda pod: render_pod(pod, model),
        )
        self.jobs = _Resource("batch", "v1", "jobs", "Job", True, model.jobs.values, render_job)
        self.deployments = _Resource(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            True,
            model.deployments.values,
            render_deployment,
        )
        self.hpas = _Resource(
            "autoscaling",
            "v2",
            "horizontalpodautoscalers",
            "HorizontalPodAutoscaler",
            True,
            model.hpas.values,
            render_hpa,
        )
        self.kafkas = _Resource(
            "kafka.strimzi.io",
            "v1beta2",
            "kafkas",
            "Kafka",
            True,
            model.kafka_resources.values,
            lambda obj: render_kafka(obj, model),
        )
        self.pod_sets = _Resource(
            "core.strimzi.io",
            "v1beta2",
            "strimzipodsets",
            "StrimziPodSet",
            True,
            model.pod_sets.values,
            lambda obj: render_pod_set(obj, model),
        )

    # --- Routing --------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        table: list[tuple[str, Handler, str]] = [("/version", self.version, "GET")]
        namespaced = "/namespaces/{namespace}/"
        for resource in (self.pods, self.jobs, self.deployments, self.hpas):
            base = resource.prefix
            table += [
                (f"{base}/{resource.plural}", self._lister(resource), "GET"),
                (f"{base}{namespaced}{resource.plural}", self._lister(resource), "GET"),
                (f"{base}{namespaced}{resource.plural}/{{name}}", self._getter(resource), "GET"),
            ]
        for resource in (self.kafkas, self.pod_sets):
            base = resource.prefix
            table += [
                (f"{base}/{resource.plural}", self._lister(resource), "GET"),
                (f"{base}{namespaced}{resource.plural}", self._lister(resource), "GET"),
                (f"{base}{namespaced}{resource.plural}/{{name}}", self._getter(resource), "GET"),
            ]
        for resource, delete in (
            (self.jobs, self._delete_job),
            (self.deployments, self._delete_deployment),
            (self.hpas, self._delete_hpa),
        ):
            base = f"{resource.prefix}{namespaced}{resource.plural}"
            table += [
                (base, self._collection_deleter(resource, delete), "DELETE"),
                (f"{base}/{{name}}", self._deleter(resource, delete), "DELETE"),
            ]
        pod_sets = f"{self.pod_sets.prefix}{namespaced}{self.pod_sets.plural}/{{name}}"
        table.append((pod_sets, self._deleter(self.pod_sets, self._delete_pod_set), "DELETE"))
        namespaces = "/api/v1/namespaces"
        table += [
            (namespaces, self._lister(self.namespaces), "GET"),
            (namespaces + "/{name}", self._getter(self.namespaces), "GET"),
            (namespaces + "/{name}", self.delete_namespace, "DELETE"),
        ]
        deployment = f"{self.deployments.prefix}{namespaced}deployments/{{name}}"
        table += [
            (deployment, self.patch_deployment, "PATCH"),
            (deployment + "/scale", self.get_scale, "GET"),
            (deployment + "/scale", self.replace_scale, "PUT"),
            (deployment + "/scale", self.patch_scale, "PATCH"),
            (f"{self.kafkas.prefix}{namespaced}kafkas/{{name}}", self.patch_kafka, "PATCH"),
        ]
        return [Route(path, self._endpoint(handler), methods=[m]) for path, handler, m in table]

    def _endpoint(self, handler: Handler) -> Handler:
        async def run(request: Request) -> Response:
            query = f"?{request.url.query}" if request.url.query else ""
            self.state.requests.append((request.method, request.url.path + query))
            if not self.state.authorized(request.headers.get("authorization")):
                return _status_response(StatusError(401, "Unauthorized", details={}))
            status = self.state.take_fault(request.method)
            if status is not None:
                return _status_response(self._fault(status, request))
            try:
                return await handler(request)
            except StatusError as exc:
                return _status_response(exc)

        return run

    @staticmethod
    def _fault(status: int, request: Request) -> StatusError:
        if status == 409:
            return StatusError(
                409,
                f"Operation cannot be fulfilled on {_target(request)}: the object has been "
                "modified; please apply your changes to the latest version and try again",
                details={},
            )
        return StatusError(
            status, _FAULT_MESSAGES.get(status, f"simulated failure (HTTP {status})"), details={}
        )

    def _record(self, request: Request, body: dict[str, Any], *, selector: bool = False) -> None:
        if self.write_log is None:
            return
        target = _target(request)
        label_selector = request.query_params.get("labelSelector")
        if selector and label_selector:
            target += f"?labelSelector={label_selector}"
        self.write_log.record(SERVICE, request.method, target, body)

    @staticmethod
    def _check_query(request: Request) -> None:
        if request.query_params.get("watch") in ("true", "1"):
            raise StatusError(400, "watch is not supported by the simulated API server", details={})
        if "dryRun" in request.query_params:
            # Refused rather than ignored: an ignored dry run would really delete.
            raise StatusError(
                400, "dryRun is not supported by the simulated API server", details={}
            )

    # --- Generic reads and deletes --------------------------------------------------------------

    async def version(self, _: Request) -> Response:
        return JSONResponse(
            {
                "major": "1",
                "minor": "32",
                "gitVersion": "v1.32.4",
                "gitCommit": "59526cd4867447956156ae3a602fcbac10a2c335",
                "gitTreeState": "clean",
                "buildDate": "2025-04-22T16:02:27Z",
                "goVersion": "go1.23.8",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        )

    def _lister(self, resource: _Resource) -> Handler:
        async def handler(request: Request) -> Response:
            self._check_query(request)
            namespace = request.path_params.get("namespace")
            objects = resource.select(namespace, request.query_params.get("labelSelector"))
            return JSONResponse(resource.render_list(objects))

        return handler

    def _getter(self, resource: _Resource) -> Handler:
        async def handler(request: Request) -> Response:
            obj = resource.find(request.path_params.get("namespace"), request.path_params["name"])
            return JSONResponse(resource.render(obj))

        return handler

    async def _propagation(self, request: Request) -> str | None:
        """The propagation policy, from the query or (as kubectl sends it) a DeleteOptions body."""
        policy = request.query_params.get("propagationPolicy")
        if policy is None and await request.body():
            options = await _read_json(request)
            if isinstance(options, dict) and options.get("propagationPolicy") is not None:
                policy = str(options["propagationPolicy"])
        if policy is not None and policy not in _PROPAGATION_POLICIES:
            raise StatusError(
                400,
                f'propagationPolicy: Unsupported value: "{policy}": supported values: '
                '"Foreground", "Background", "Orphan"',
                details={},
            )
        return policy

    def _deleter(
        self,
        resource: _Resource,
        delete: Callable[[KubeObject, str | None], dict[str, Any]],
    ) -> Handler:
        async def handler(request: Request) -> Response:
            self._check_query(request)
            policy = await self._propagation(request)
            obj = resource.find(request.path_params["namespace"], request.path_params["name"])
            rendered = delete(obj, policy)
            body: dict[str, Any] = {"deleted": [obj.name]}
            if policy:
                body["propagationPolicy"] = policy
            self._record(request, body)
            return JSONResponse(rendered)

        return handler

    def _collection_deleter(
        self,
        resource: _Resource,
        delete: Callable[[KubeObject, str | None], dict[str, Any]],
    ) -> Handler:
        async def handler(request: Request) -> Response:
            self._check_query(request)
            policy = await self._propagation(request)
            namespace = request.path_params["namespace"]
            objects = resource.select(namespace, request.query_params.get("labelSelector"))
            rendered = [delete(obj, policy) for obj in objects]
            body: dict[str, Any] = {"deleted": [obj.name for obj in objects]}
            if policy:
                body["propagationPolicy"] = policy
            self._record(request, body, selector=True)
            answer = resource.render_list([])
            answer["items"] = rendered
            return JSONResponse(answer)

        return handler

    def _delete_job(self, obj: KubeObject, policy: str | None) -> dict[str, Any]:
        assert isinstance(obj, Job)
        assert obj.namespace is not None
        rendered = render_job(obj, deleting=_now())
        if policy == "Foreground":
            rendered["metadata"]["finalizers"] = ["foregroundDeletion"]
        self.model.delete_job(obj.namespace, obj.name)
        return rendered

    def _delete_deployment(self, obj: KubeObject, policy: str | None) -> dict[str, Any]:
        assert isinstance(obj, Deployment)
        assert obj.namespace is not None
        rendered = render_deployment(obj, deleting=_now())
        if policy == "Foreground":
            rendered["metadata"]["finalizers"] = ["foregroundDeletion"]
        self.model.delete_deployment(obj.namespace, obj.name)
        return rendered

    def _delete_hpa(self, obj: KubeObject, _: str | None) -> dict[str, Any]:
        assert obj.namespace is not None
        rendered = render_hpa(obj, deleting=_now())
        self.model.hpas.pop((obj.namespace, obj.name), None)
        return rendered

    def _delete_pod_set(self, obj: KubeObject, _: str | None) -> dict[str, Any]:
        assert isinstance(obj, PodSet)
        if obj.namespace != self.model.config.strimzi.namespace:
            raise self.pod_sets.not_found(obj.name)
        rendered = render_pod_set(obj, self.model, deleting=_now())
        self.model.delete_pod_set(obj.name)
        return rendered

    # --- Namespaces -----------------------------------------------------------------------------

    async def delete_namespace(self, request: Request) -> Response:
        self._check_query(request)
        name = request.path_params["name"]
        namespace = self.namespaces.find(None, name)
        assert isinstance(namespace, Namespace)
        if namespace.phase == "Terminating":
            raise StatusError(
                409,
                f'Operation cannot be fulfilled on namespaces "{name}": The system is ensuring '
                "all content is removed from this namespace.  Upon completion, this namespace "
                "will automatically be purged by the system.",
                details={"name": name, "kind": "namespaces"},
            )
        self.model.delete_namespace(name)
        self._record(request, {"deleted": [name]})
        return JSONResponse(render_namespace(namespace))

    # --- Deployments and their scale ------------------------------------------------------------

    def _deployment(self, request: Request) -> Deployment:
        found = self.deployments.find(request.path_params["namespace"], request.path_params["name"])
        assert isinstance(found, Deployment)
        return found

    def _apply_replicas(self, deployment: Deployment, replicas: int) -> dict[str, Any]:
        before = deployment.replicas
        self.model.scale_deployment(deployment, replicas)
        return {"replicas": replicas, "before": before}

    async def patch_deployment(self, request: Request) -> Response:
        self._check_query(request)
        deployment = self._deployment(request)
        current = render_deployment(deployment)
        patched, patch = await _apply_patch(request, current, strategic=True)
        _check_resource_version(patch, deployment, self.deployments)
        metadata = patched.get("metadata") or {}
        labels = _string_map(metadata.get("labels"), "metadata.labels")
        annotations = _string_map(metadata.get("annotations"), "metadata.annotations")
        replicas = _replicas((patched.get("spec") or {}).get("replicas", deployment.replicas))
        summary: dict[str, Any] = {}
        if labels != deployment.labels:
            deployment.labels = labels
            summary["labels"] = labels
        if annotations != deployment.annotations:
            deployment.annotations = annotations
            summary["annotations"] = annotations
        if summary:
            deployment.touch()
        if replicas != deployment.replicas:
            summary.update(self._apply_replicas(deployment, replicas))
        self._record(request, summary)
        return JSONResponse(render_deployment(deployment))

    async def get_scale(self, request: Request) -> Response:
        return JSONResponse(render_scale(self._deployment(request)))

    async def replace_scale(self, request: Request) -> Response:
        self._check_query(request)
        deployment = self._deployment(request)
        body = await _read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("spec"), dict):
            raise StatusError(422, "Scale.spec: Required value", details={})
        _check_resource_version(body, deployment, self.deployments)
        summary = self._apply_replicas(deployment, _replicas(body["spec"].get("replicas", 0)))
        self._record(request, summary)
        return JSONResponse(render_scale(deployment))

    async def patch_scale(self, request: Request) -> Response:
        self._check_query(request)
        deployment = self._deployment(request)
        patched, patch = await _apply_patch(request, render_scale(deployment), strategic=True)
        _check_resource_version(patch, deployment, self.deployments)
        replicas = _replicas((patched.get("spec") or {}).get("replicas"))
        summary = self._apply_replicas(deployment, replicas)
        self._record(request, summary)
        return JSONResponse(render_scale(deployment))

    # --- Strimzi --------------------------------------------------------------------------------

    async def patch_kafka(self, request: Request) -> Response:
        self._check_query(request)
        kafka = self.kafkas.find(request.path_params["namespace"], request.path_params["name"])
        assert isinstance(kafka, KubeObject)
        # Custom resources take no strategic merge patch, as on a real API server.
        patched, patch = await _apply_patch(
            request, render_kafka(kafka, self.model), strategic=False
        )
        _check_resource_version(patch, kafka, self.kafkas)
        wanted = _string_map((patched.get("metadata") or {}).get("annotations"), "annotations")
        changes: dict[str, str | None] = {
            key: None for key in kafka.annotations if key not in wanted
        }
        changes.update(
            {key: value for key, value in wanted.items() if kafka.annotations.get(key) != value}
        )
        if changes:
            self.model.annotate_kafka(kafka.name, changes)
        self._record(request, {"annotations": changes})
        return JSONResponse(render_kafka(kafka, self.model))


def _target(request: Request) -> str:
    path = request.url.path
    for prefix in ("/apis/", "/api/"):
        if path.startswith(prefix):
            return path[len(prefix) :]
    return path.lstrip("/")


async def _http_error(_: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    message = {
        404: "the server could not find the requested resource",
        405: "the server does not allow this method on the requested resource",
    }.get(status, "Internal error occurred")
    return _status_response(StatusError(status, message, details={}))


def create_kubernetes_app(
    model: SiteModel, write_log: WriteLog | None = None, *, token: str | None = None
) -> Starlette:
    """The simulated Kubernetes API server over ``model``; its switches at
    ``app.state.kubernetes``.

    With ``token`` set, every request must carry ``Authorization: Bearer <token>`` (401
    otherwise), as the sites' API servers require a credential.
    """
    state = KubernetesApiState(token=token)
    api = _KubernetesApi(model, write_log, state)
    app = Starlette(routes=api.routes(), exception_handlers={HTTPException: _http_error})
    app.state.kubernetes = state
    return app


def write_kubeconfig(
    path: Path, server: str, context: str, token: str | None = None, *, namespace: str = "default"
) -> Path:
    """Write a kubeconfig whose ``context`` (also the current one) points at ``server``.

    The file is readable by its owner only, as kubectl leaves it: it holds the token.
    """
    user: dict[str, Any] = {"token": token} if token is not None else {}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": server}}],
        "users": [{"name": f"{context}-user", "user": user}],
        "contexts": [
            {
                "name": context,
                "context": {"cluster": context, "user": f"{context}-user", "namespace": namespace},
            }
        ],
        "current-context": context,
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        yaml.safe_dump(config, stream, sort_keys=False)
    path.chmod(0o600)
    return path
