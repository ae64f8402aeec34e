"""Client of a site's Kubernetes API: the CSC Jobs, Deployments and Strimzi resources it changes.

The procedure deletes CSC Jobs before Argo CD recreates them (``cleanup_all``), deletes the
Nublado user namespaces (``cleanup_nublado``), scales telegraf and the schema registry down and
up, and shuts Kafka down gracefully by pausing Strimzi's reconciliation and deleting the broker
StrimziPodSet. `KubernetesClient` does each of these with kubernetes-asyncio and returns typed
results saying what it did.

The client acts on one cluster only: `KubernetesClient.from_kubeconfig` refuses, before sending
any request, a kubeconfig context whose API server is not the one the site file names
(`WrongClusterError`). Requests that fail on the network or with a 5xx answer are retried a few
times; 4xx answers never are. Errors are this module's exceptions, and never carry the token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar
from urllib.parse import urlsplit

import aiohttp
import yaml
from kubernetes_asyncio.client import (
    ApiClient,
    AppsV1Api,
    AutoscalingV2Api,
    BatchV1Api,
    Configuration,
    CoreV1Api,
    CustomObjectsApi,
)
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException
from kubernetes_asyncio.config.kube_config import (
    KUBE_CONFIG_DEFAULT_LOCATION,
    ConfigNode,
    KubeConfigLoader,
    KubeConfigMerger,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from blocks.site import CleanupConfig, KubernetesConfig

__all__ = [
    "CleanupReport",
    "DeletionResult",
    "DeploymentInfo",
    "JobInfo",
    "KafkaInfo",
    "KubernetesCleanupError",
    "KubernetesClient",
    "KubernetesConfigError",
    "KubernetesConflictError",
    "KubernetesError",
    "KubernetesForbiddenError",
    "KubernetesNotFoundError",
    "KubernetesTimeoutError",
    "KubernetesUnauthorizedError",
    "KubernetesUnavailableError",
    "KubernetesValidationError",
    "KubernetesWebError",
    "NamespaceCleanup",
    "NamespaceDeletion",
    "NamespaceInfo",
    "PodInfo",
    "PodSetInfo",
    "PropagationPolicy",
    "ScaleChange",
    "UnknownContextError",
    "WrongClusterError",
    "normalise_server",
]

_logger = logging.getLogger(__name__)
_T = TypeVar("_T")

PropagationPolicy = Literal["Foreground", "Background", "Orphan"]
"""How dependents (a Job's pods) are deleted: before the owner is gone, after, or never."""

_MERGE_PATCH = "application/merge-patch+json"
_PAUSE_ANNOTATION = "strimzi.io/pause-reconciliation"
_KAFKA = ("kafka.strimzi.io", "v1beta2", "kafkas")
_POD_SETS = ("core.strimzi.io", "v1beta2", "strimzipodsets")
# A label value this client puts into a selector it builds: no commas, spaces or operators.
_LABEL_VALUE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


# --- Errors -------------------------------------------------------------------------------------


class KubernetesError(Exception):
    """Base of every error this module raises."""


class KubernetesConfigError(KubernetesError):
    """The kubeconfig cannot be used: missing, not YAML, or its context is incomplete."""


class UnknownContextError(KubernetesConfigError):
    """The kubeconfig has no context of the name the site file gives."""


class WrongClusterError(KubernetesConfigError):
    """The context points at another API server than the site file's: nothing was sent."""

    def __init__(self, message: str, *, context: str, server: str, expected_server: str) -> None:
        super().__init__(message)
        self.context = context
        self.server = server
        self.expected_server = expected_server


class KubernetesWebError(KubernetesError):
    """The API server answered with an HTTP error.

    ``reason`` is the ``Status`` object's reason (``NotFound``, ``Conflict``, ``InternalError``...)
    and ``detail`` its message, when the answer had one.
    """

    def __init__(
        self, message: str, *, operation: str, status: int, reason: str, detail: str
    ) -> None:
        super().__init__(message)
        self.operation = operation
        self.status = status
        self.reason = reason
        self.detail = detail


class KubernetesNotFoundError(KubernetesWebError):
    """The object (or its namespace) does not exist (HTTP 404)."""


class KubernetesConflictError(KubernetesWebError):
    """The object changed meanwhile or is in a state that refuses the change (HTTP 409)."""


class KubernetesUnauthorizedError(KubernetesWebError):
    """The API server refused the credentials: the token is missing, wrong or expired (401)."""


class KubernetesForbiddenError(KubernetesWebError):
    """The credentials are valid but not allowed to do this (HTTP 403, RBAC)."""


class KubernetesValidationError(KubernetesError):
    """The API server answered with a body this client cannot understand."""


class KubernetesUnavailableError(KubernetesError):
    """The API server could not be reached, even after retrying."""


class KubernetesTimeoutError(KubernetesError):
    """Something waited for did not happen in time (pods still there, say)."""


class KubernetesCleanupError(KubernetesError):
    """``cleanup_all`` left something behind or failed in a namespace; ``report`` says where."""

    def __init__(self, message: str, *, report: CleanupReport) -> None:
        super().__init__(message)
        self.report = report


# --- Results ------------------------------------------------------------------------------------


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True)


class NamespaceInfo(_Result):
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    phase: str = Field(description="Active or Terminating.")
    terminating: bool


class JobInfo(_Result):
    """A Job and, for a CSC's Job, its CSC labels."""

    namespace: str
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    phase: Literal["Pending", "Running", "Succeeded", "Failed"] = Field(
        description="Pending while the pod is not ready (image pull), Running once it is, "
        "Succeeded or Failed once complete."
    )
    active: int = 0
    ready: int = 0
    succeeded: int = 0
    failed: int = 0
    failure_message: str | None = Field(None, description="The Failed condition's message.")
    terminating: bool = False
    image: str | None = None

    @property
    def csc(self) -> str | None:
        """The ``csc`` label: the chart alias, such as ``atdome-sim``."""
        return self.labels.get("csc")

    @property
    def csc_name(self) -> str | None:
        return self.labels.get("csc-name")

    @property
    def csc_class(self) -> str | None:
        return self.labels.get("csc-class")


class DeploymentInfo(_Result):
    namespace: str
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    replicas: int
    ready_replicas: int
    available_replicas: int
    terminating: bool = False


class ScaleChange(_Result):
    """One Deployment's replicas before and after a scale request."""

    namespace: str
    name: str
    before: int
    after: int

    @property
    def changed(self) -> bool:
        return self.before != self.after


class PodInfo(_Result):
    namespace: str
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    phase: str
    ready: bool
    terminating: bool = Field(description="Deleted and shutting down (deletionTimestamp set).")
    owner_kind: str | None = None
    owner_name: str | None = None


class DeletionResult(_Result):
    """What one delete-by-selector in one namespace removed.

    ``namespace_found`` is False when the namespace does not exist: nothing to clean there.
    """

    kind: str
    namespace: str
    selector: str | None = Field(description="The label selector; None means every object.")
    namespace_found: bool = True
    deleted: list[str] = Field(default_factory=list)

    @property
    def nothing_to_clean(self) -> bool:
        return not self.deleted


class NamespaceDeletion(_Result):
    """The namespaces a selector matched: deleted now, or already being deleted."""

    selector: str
    deleted: list[str] = Field(default_factory=list)
    already_terminating: list[str] = Field(default_factory=list)


class KafkaInfo(_Result):
    """Strimzi's ``Kafka`` resource: its annotations and the operator's conditions."""

    namespace: str
    name: str
    annotations: dict[str, str] = Field(default_factory=dict)
    conditions: dict[str, str] = Field(
        default_factory=dict, description="Condition type → status (Ready → True, ...)."
    )

    @property
    def reconciliation_paused(self) -> bool:
        return self.annotations.get(_PAUSE_ANNOTATION) == "true"

    @property
    def ready(self) -> bool:
        return self.conditions.get("Ready") == "True"


class PodSetInfo(_Result):
    """A StrimziPodSet and the pods it owns."""

    namespace: str
    name: str
    pods: list[str] = Field(default_factory=list)
    ready_pods: int = 0
    terminating: bool = False


class NamespaceCleanup(_Result):
    """What ``cleanup_all`` did in one namespace, and what it found left afterwards."""

    namespace: str
    legacy: bool = False
    namespace_found: bool = True
    job_selector: str | None = None
    jobs_deleted: list[str] = Field(default_factory=list)
    deployments_deleted: list[str] = Field(default_factory=list)
    hpas_deleted: list[str] = Field(default_factory=list)
    remaining: list[str] = Field(
        default_factory=list, description="kind/name of objects still there and not terminating."
    )
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.remaining


class CleanupReport(_Result):
    """``cleanup_all``'s result, one entry per namespace in the order they were cleaned."""

    namespaces: list[NamespaceCleanup]

    @property
    def ok(self) -> bool:
        return all(entry.ok for entry in self.namespaces)

    @property
    def failed(self) -> list[NamespaceCleanup]:
        return [entry for entry in self.namespaces if not entry.ok]

    @property
    def jobs_deleted(self) -> int:
        return sum(len(entry.jobs_deleted) for entry in self.namespaces)

    def namespace(self, name: str) -> NamespaceCleanup:
        """The entry for namespace ``name``; `KeyError` if it was not cleaned."""
        for entry in self.namespaces:
            if entry.namespace == name:
                return entry
        raise KeyError(name)


# --- Bodies of custom resources and raw answers -------------------------------------------------


class _Meta(BaseModel):
    name: str
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    deletion_timestamp: str | None = Field(None, alias="deletionTimestamp")


class _Condition(BaseModel):
    type: str
    status: str


class _KafkaStatus(BaseModel):
    conditions: list[_Condition] = Field(default_factory=list)


class _Kafka(BaseModel):
    metadata: _Meta
    status: _KafkaStatus | None = None


class _PodRef(BaseModel):
    metadata: _Meta


class _PodSetSpec(BaseModel):
    pods: list[_PodRef] = Field(default_factory=list)


class _PodSetStatus(BaseModel):
    ready_pods: int = Field(0, alias="readyPods")


class _PodSet(BaseModel):
    metadata: _Meta
    spec: _PodSetSpec | None = None
    status: _PodSetStatus | None = None


class _Item(BaseModel):
    metadata: _Meta


class _ItemList(BaseModel):
    items: list[_Item] | None = None


class _StatusBody(BaseModel):
    kind: str | None = None
    reason: str | None = None
    message: str | None = None


_ModelT = TypeVar("_ModelT", bound=BaseModel)


def _parse(model: type[_ModelT], body: Any, operation: str) -> _ModelT:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise KubernetesValidationError(
            f"{operation}: unexpected answer from the API server: {exc}"
        ) from None


# --- Kubeconfig ---------------------------------------------------------------------------------


def normalise_server(url: str) -> str:
    """An API server URL in a form fit for comparison.

    Lowercase scheme and host, no default port, no trailing slash: ``https://X:443/`` and
    ``https://x`` are the same server.
    """
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return text.rstrip("/")
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    default_port = {"https": 443, "http": 80}.get(scheme)
    netloc = host if port in (None, default_port) else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


def _kubeconfig_paths(path: Path | str | None) -> str:
    """The kubeconfig files to read, joined as ``$KUBECONFIG`` joins them."""
    if path is not None:
        candidates = [str(Path(path).expanduser())]
    else:
        variable = os.environ.get("KUBECONFIG", "")
        candidates = [p for p in variable.split(os.pathsep) if p] or [
            str(Path(KUBE_CONFIG_DEFAULT_LOCATION).expanduser())
        ]
    if not any(Path(candidate).expanduser().is_file() for candidate in candidates):
        raise KubernetesConfigError(f"no kubeconfig file found at {os.pathsep.join(candidates)}")
    return os.pathsep.join(candidates)


def _load_kubeconfig(paths: str) -> ConfigNode:
    try:
        merged = KubeConfigMerger(paths).config
    except (OSError, yaml.YAMLError, ConfigException) as exc:
        raise KubernetesConfigError(f"cannot read kubeconfig {paths}: {exc}") from None
    except (AttributeError, KeyError, TypeError):
        # The merger indexes the YAML without checking its shape.
        raise KubernetesConfigError(
            f"cannot read kubeconfig {paths}: not a kubeconfig (clusters, contexts, users)"
        ) from None
    if merged is None:
        raise KubernetesConfigError(f"cannot read kubeconfig {paths}")
    return merged


def _context_server(config: ConfigNode, context: str, paths: str) -> str:
    """The API server URL that ``context`` points at."""
    try:
        contexts = config["contexts"]
        entry = contexts.get_with_name(context, safe=True)
        if entry is None:
            known = sorted(str(item["name"]) for item in contexts.value)
            raise UnknownContextError(
                f"kubeconfig {paths} has no context {context!r} "
                f"(it has: {', '.join(known) or 'none'})"
            )
        cluster_name = entry["context"]["cluster"]
        cluster = config["clusters"].get_with_name(cluster_name, safe=True)
        if cluster is None:
            raise KubernetesConfigError(
                f"kubeconfig {paths}: context {context!r} names cluster {cluster_name!r}, "
                "which is not defined"
            )
        server = cluster["cluster"]["server"]
    except ConfigException as exc:
        raise KubernetesConfigError(f"kubeconfig {paths}: {exc}") from None
    if not isinstance(server, str):
        raise KubernetesConfigError(f"kubeconfig {paths}: cluster {cluster_name!r} has no server")
    return server


def _status_body(body: bytes | str | None) -> _StatusBody:
    if not body:
        return _StatusBody()
    try:
        parsed = json.loads(body)
        return _StatusBody.model_validate(parsed)
    except (ValueError, ValidationError):
        return _StatusBody()


_ERRORS: dict[int, type[KubernetesWebError]] = {
    401: KubernetesUnauthorizedError,
    403: KubernetesForbiddenError,
    404: KubernetesNotFoundError,
    409: KubernetesConflictError,
}


def _selector_kwargs(selector: str | None) -> dict[str, Any]:
    return {"label_selector": selector} if selector else {}


def _job_info(job: Any) -> JobInfo:
    status = job.status
    conditions = {
        condition.type: condition
        for condition in (status.conditions or [])
        if status is not None and condition.status == "True"
    }
    active = (status.active or 0) if status else 0
    ready = (status.ready or 0) if status else 0
    phase: Literal["Pending", "Running", "Succeeded", "Failed"]
    if "Failed" in conditions:
        phase = "Failed"
    elif "Complete" in conditions:
        phase = "Succeeded"
    elif active and ready:
        phase = "Running"
    else:
        phase = "Pending"
    containers = job.spec.template.spec.containers if job.spec and job.spec.template else []
    failed = conditions.get("Failed")
    return JobInfo(
        namespace=job.metadata.namespace,
        name=job.metadata.name,
        labels=job.metadata.labels or {},
        phase=phase,
        active=active,
        ready=ready,
        succeeded=(status.succeeded or 0) if status else 0,
        failed=(status.failed or 0) if status else 0,
        failure_message=failed.message if failed is not None else None,
        terminating=job.metadata.deletion_timestamp is not None,
        image=containers[0].image if containers else None,
    )


def _deployment_info(deployment: Any) -> DeploymentInfo:
    status = deployment.status
    return DeploymentInfo(
        namespace=deployment.metadata.namespace,
        name=deployment.metadata.name,
        labels=deployment.metadata.labels or {},
        replicas=deployment.spec.replicas or 0,
        # The API server leaves zero counts out.
        ready_replicas=(status.ready_replicas or 0) if status else 0,
        available_replicas=(status.available_replicas or 0) if status else 0,
        terminating=deployment.metadata.deletion_timestamp is not None,
    )


def _pod_info(pod: Any) -> PodInfo:
    status = pod.status
    ready = any(
        condition.type == "Ready" and condition.status == "True"
        for condition in ((status.conditions or []) if status else [])
    )
    owner = next(
        (ref for ref in (pod.metadata.owner_references or []) if ref.controller),
        None,
    )
    return PodInfo(
        namespace=pod.metadata.namespace,
        name=pod.metadata.name,
        labels=pod.metadata.labels or {},
        phase=(status.phase or "Unknown") if status else "Unknown",
        ready=ready,
        terminating=pod.metadata.deletion_timestamp is not None,
        owner_kind=owner.kind if owner else None,
        owner_name=owner.name if owner else None,
    )


def _scale_replicas(scale: Any) -> int:
    spec = scale.spec
    return (spec.replicas if spec is not None else None) or 0


def _namespace_info(namespace: Any) -> NamespaceInfo:
    phase = (namespace.status.phase if namespace.status else None) or "Active"
    return NamespaceInfo(
        name=namespace.metadata.name,
        labels=namespace.metadata.labels or {},
        phase=phase,
        terminating=phase == "Terminating" or namespace.metadata.deletion_timestamp is not None,
    )


# --- The client ---------------------------------------------------------------------------------


class KubernetesClient:
    """The upgrade's operations on one cluster, through a kubernetes-asyncio ``ApiClient``.

    Build it with `from_kubeconfig` (or `from_site`), which checks the cluster before anything
    is sent and closes the ``ApiClient`` it made in `aclose`. Given an ``api_client`` directly,
    the caller owns it and `aclose` leaves it open.

    ``retries`` is how many times a request that failed on the network or with a 5xx answer is
    tried again, waiting ``retry_delay_s``, then twice that, and so on; ``timeout_s`` bounds
    each request.
    """

    def __init__(
        self,
        api_client: ApiClient,
        *,
        server: str,
        context: str | None = None,
        retries: int = 3,
        retry_delay_s: float = 0.5,
        timeout_s: float = 30.0,
        owns_api_client: bool = False,
    ) -> None:
        self.server = server
        self.context = context
        self._api = api_client
        self._owns_api = owns_api_client
        self._retries = retries
        self._retry_delay_s = retry_delay_s
        self._timeout_s = timeout_s
        self._core = CoreV1Api(api_client)
        self._batch = BatchV1Api(api_client)
        self._apps = AppsV1Api(api_client)
        self._autoscaling = AutoscalingV2Api(api_client)
        self._custom = CustomObjectsApi(api_client)

    def __repr__(self) -> str:
        return f"KubernetesClient(context={self.context!r}, server={self.server!r})"

    @classmethod
    async def from_kubeconfig(
        cls,
        path: Path | str | None = None,
        *,
        context: str,
        expected_server: str,
        retries: int = 3,
        retry_delay_s: float = 0.5,
        timeout_s: float = 30.0,
    ) -> Self:
        """A client for ``context`` of the kubeconfig at ``path`` ($KUBECONFIG or
        ~/.kube/config when None), refusing any cluster but ``expected_server``.

        Raises
        ------
        KubernetesConfigError
            The kubeconfig is missing or unreadable, or the context is incomplete.
        UnknownContextError
            The kubeconfig has no such context.
        WrongClusterError
            The context's cluster server is not ``expected_server`` (trailing slashes, case
            and default ports aside). Nothing has been sent to either server.
        """
        paths = _kubeconfig_paths(path)
        config = _load_kubeconfig(paths)
        server = _context_server(config, context, paths)
        if normalise_server(server) != normalise_server(expected_server):
            raise WrongClusterError(
                f"kubeconfig context {context!r} points at {server}, but the site file expects "
                f"{expected_server}: refusing to act on another cluster",
                context=context,
                server=server,
                expected_server=expected_server,
            )
        configuration = Configuration()
        try:
            loader = KubeConfigLoader(
                config_dict=config, config_base_path=None, active_context=context
            )
            await loader.load_and_set(configuration)
        except ConfigException as exc:
            raise KubernetesConfigError(
                f"cannot load the credentials of kubeconfig context {context!r}: {exc}"
            ) from None
        return cls(
            ApiClient(configuration=configuration),
            server=server,
            context=context,
            retries=retries,
            retry_delay_s=retry_delay_s,
            timeout_s=timeout_s,
            owns_api_client=True,
        )

    @classmethod
    async def from_site(
        cls,
        config: KubernetesConfig,
        *,
        kubeconfig: Path | str | None = None,
        retries: int = 3,
        retry_delay_s: float = 0.5,
        timeout_s: float = 30.0,
    ) -> Self:
        """A client for the site file's ``kubernetes`` section (see `from_kubeconfig`).

        ``kubeconfig`` overrides the site file's kubeconfig path.

        Raises
        ------
        KubernetesConfigError, UnknownContextError, WrongClusterError
            As `from_kubeconfig`.
        """
        return await cls.from_kubeconfig(
            kubeconfig if kubeconfig is not None else config.kubeconfig,
            context=config.context,
            expected_server=config.cluster_server,
            retries=retries,
            retry_delay_s=retry_delay_s,
            timeout_s=timeout_s,
        )

    async def aclose(self) -> None:
        """Close the ``ApiClient`` if this object created it."""
        if self._owns_api:
            await self._api.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- Namespaces -----------------------------------------------------------------------------

    async def list_namespaces(self, selector: str | None = None) -> list[NamespaceInfo]:
        """The namespaces matching the label ``selector`` (every namespace when None).

        Raises
        ------
        KubernetesWebError
            The API server answered with an HTTP error (a subclass for 401, 403).
        KubernetesValidationError
            The answer could not be understood.
        KubernetesUnavailableError
            The API server could not be reached.
        """
        answer = await self._call(
            f"list namespaces ({selector or 'all'})",
            lambda: self._core.list_namespace(
                _request_timeout=self._timeout_s, **_selector_kwargs(selector)
            ),
        )
        return [_namespace_info(item) for item in answer.items or []]

    async def namespace_exists(self, namespace: str) -> bool:
        """Whether ``namespace`` exists (terminating or not).

        Raises
        ------
        KubernetesWebError
            The API server answered with an HTTP error other than 404.
        KubernetesUnavailableError
            The API server could not be reached.
        """
        try:
            await self._call(
                f"read namespace {namespace}",
                lambda: self._core.read_namespace(namespace, _request_timeout=self._timeout_s),
            )
        except KubernetesNotFoundError:
            return False
        return True

    async def delete_namespaces(self, selector: str) -> NamespaceDeletion:
        """Delete every namespace matching the label ``selector`` (``cleanup_nublado``).

        Namespaces already terminating are left to finish and listed as such; one that
        disappears meanwhile is not an error.

        Raises
        ------
        ValueError
            ``selector`` is empty: that would delete every namespace of the cluster.
        KubernetesWebError
            The API server refused a listing or a deletion.
        KubernetesUnavailableError
            The API server could not be reached.
        """
        if not selector.strip():
            raise ValueError("refusing to delete namespaces without a label selector")
        deleted: list[str] = []
        terminating: list[str] = []
        for namespace in await self.list_namespaces(selector):
            if namespace.terminating:
                terminating.append(namespace.name)
                continue
            try:
                await self._delete_namespace(namespace.name)
            except KubernetesNotFoundError:
                continue
            except KubernetesConflictError:
                # Refused because it started terminating after the listing: that is the goal.
                if not await self._namespace_terminating(namespace.name):
                    raise
                terminating.append(namespace.name)
                continue
            deleted.append(namespace.name)
        return NamespaceDeletion(
            selector=selector, deleted=deleted, already_terminating=terminating
        )

    async def _delete_namespace(self, name: str) -> None:
        await self._call(
            f"delete namespace {name}",
            lambda: self._core.delete_namespace(name, _request_timeout=self._timeout_s),
        )

    async def _namespace_terminating(self, name: str) -> bool:
        try:
            answer = await self._call(
                f"read namespace {name}",
                lambda: self._core.read_namespace(name, _request_timeout=self._timeout_s),
            )
        except KubernetesNotFoundError:
            return True
        return _namespace_info(answer).terminating

    async def cleanup_nublado(self, cleanup: CleanupConfig) -> NamespaceDeletion:
        """k8s-admin's ``cleanup_nublado``: delete the Nublado users' namespaces.

        Raises
        ------
        KubernetesWebError
            The API server refused a listing or a deletion.
        KubernetesUnavailableError
            The API server could not be reached.
        """
        return await self.delete_namespaces(cleanup.nublado_selector)

    # --- Jobs -----------------------------------------------------------------------------------

    async def list_jobs(
        self, namespace: str | None = None, *, selector: str | None = None
    ) -> list[JobInfo]:
        """The Jobs in ``namespace`` (every namespace when None) matching ``selector``.

        A namespace that does not exist has no Jobs.

        Raises
        ------
        KubernetesWebError
            The API server answered with an HTTP error.
        KubernetesValidationError
            The answer could not be understood.
        KubernetesUnavailableError
            The API server could not be reached.
        """
        kwargs = {"_request_timeout": self._timeout_s, **_selector_kwargs(selector)}
        if namespace is None:
            answer = await self._call(
                f"list jobs in all namespaces ({selector or 'all'})",
                lambda: self._batch.list_job_for_all_namespaces(**kwargs),
            )
        else:
            answer = await self._call(
                f"list jobs in {namespace} ({selector or 'all'})",
                lambda: self._batch.list_namespaced_job(namespace, **kwargs),
            )
        return [_job_info(item) for item in answer.items or []]

    async def delete_jobs(
        self,
        namespace: str,
        *,
        selector: str | None = None,
        propagation_policy: PropagationPolicy = "Foreground",
    ) -> DeletionResult:
        """Delete the Jobs of ``namespace`` matching ``selector`` (all of them when None), as
        ``kubectl delete job --all`` does, and say which were deleted.

        A namespace that does not exist is nothing to clean: the result says so
        (``namespace_found`` False) rather than failing.

        Raises
        ------
        KubernetesWebError
            The API server refused the deletion.
        KubernetesValidationError
            The answer could not be understood.
        KubernetesUnavailableError
            The API server could not be reached.
        """
        return await self._delete_collection(
            "jobs",
            namespace,
            selector,
            lambda **kwargs: self._batch.delete_collection_namespaced_job(
                namespace, propagation_policy=propagation_policy, **kwargs
            ),
        )

    async def delete_class_jobs(
        self,
        namespace: str,
        csc_class: str,
        *,
        cscs: list[str] | None = None,
        propagation_policy: PropagationPolicy = "Foreground",
    ) -> NamespaceCleanup:
        """Delete the CSC Jobs of one ``csc-class`` in ``namespace``, as the procedure's
        ``kubectl delete job -n <namespace> -l csc-class=<csc-class>`` does, then check that none
        is left.

        ``cscs`` narrows the deletion to those ``csc`` labels (chart aliases) of the class, so
        that instances of the class that were not sent OFFLINE keep running. A namespace that
        does not exist is nothing to clean (``namespace_found`` False).

        Raises
        ------
        ValueError
            ``csc_class`` or one of ``cscs`` is not a label value (a Kubernetes name).
        KubernetesCleanupError
            Jobs of the selector are still there and not terminating; ``report`` says which.
        KubernetesWebError
            The API server refused the deletion or the listing.
        KubernetesUnavailableError
            The API server could not be reached.
        """
        for value in [csc_class, *(cscs or [])]:
            if not _LABEL_VALUE.match(value):
                raise ValueError(f"{value!r} is not a csc label value (lowercase, digits, '-')")
        if cscs is not None and not cscs:
            raise ValueError("cscs is empty: give None for the whole class")
        selector = f"csc-class={csc_class}"
        if cscs:
            selector += f",csc in ({','.join(cscs)})"
        jobs = await self.delete_jobs(
            namespace, selector=selector, propagation_policy=propagation_policy
        )
        remaining = (
            [
                f"job/{job.name}"
                for job in await self.list_jobs(namespace, selector=selector)
                if not job.terminating
            ]
            if jobs.namespace_found
            else []
        )
        entry = NamespaceCleanup(
            namespace=namespace,
            namespace_found=jobs.namespace_found,
            job_selector=selector,
            jobs_deleted=jobs.deleted,
            remaining=remaining,
        )
        if remaining:
            raise KubernetesCleanupError(
                f"deleting the Jobs {selector} in {namespace} left {', '.join(remaining)}",
                report=CleanupReport(namespaces=[entry]),
            )
        return entry

    # --- Deployments and HPAs -------------------------------------------------------------------

    async def list_deployments(
        self, namespace: str, *, selector: str | None = None
    ) -> list[DeploymentInfo]:
        """The Deployments of ``namespace`` matching ``selector``.

        Raises
        ------
        KubernetesWebError
            The API server answered with an HTTP error.
        KubernetesValidationError
            The answer could not be understood.
        KubernetesUnavailableError
            The API server could not be reached.
        """
        answer = await self._call(
            f"list deployments in {namespace} ({selector or 'all'})",
            lambda: self._apps.list_namespaced_deployment(
                namespace, _request_timeout=self._timeout_s, **_selector_kwargs(selector)
            ),
        )
        return [_deployment_info(item) for item in answer.items or []]

    async def scale_deployment(self, namespace: str, name: str, replicas: int) -> ScaleChange:
        """Set Deployment ``name``'s replicas through its scale subresource.

        Raises
        ------
        KubernetesNotFoundError
            There is no such Deployment.
        KubernetesConflictError
            The API server refused the change (409).
        KubernetesWebError
            Another HTTP error.
        KubernetesUnavailableError
            The API server could not be reached.
        """
        scale = await self._call(
            f"read scale of deployment {namespace}/{name}",
            lambda: self._apps.read_namespaced_deployment_scale(
                name, namespace, _request_timeout=self._timeout_s
            ),
        )
        before = _scale_replicas(scale)
        return await self._scale(namespace, name, before, replicas)

    async def scale_deployments(
        self,
        namespace: str,
        *,
        selector: str | None = None,
        replicas: int,
    ) -> list[ScaleChange]:
        """Scale every Deployment of ``namespace`` matching ``selector`` to ``replicas``.

        Deployments already at ``replicas`` are not written to; each is reported with its
        replicas before and after.

        Raises
        ------
        KubernetesConflictError
            The API server refused a change (409).
        KubernetesWebError
            Another HTTP error.
        KubernetesUnavailableError
            The API server could not be reached.
        """
        deployments = await self.list_deployments(namespace, selector=selector)
        # One at a time, so that the write log reads in a stable order.
        return [
            await self._scale(namespace, deployment.name, deployment.replicas, replicas)
            for deployment in deployments
        ]

    async def _scale(self, namespace: str, name: str, before: int, replicas: int) -> ScaleChange:
        if replicas < 0:
            raise ValueError(f"replicas must be 0 or more, not {replicas}")
        if before != replicas:
            scale = await self._call(
                f"scale deployment {namespace}/{name} to {replicas}",
                lambda: self._apps.patch_namespaced_deployment_scale(
                    name,
                    namespace,
                    {"spec": {"replicas": replicas}},
                    _request_timeout=self._timeout_s,
                ),
            )
            after = _scale_replicas(scale)
        else:
            after = before
        return ScaleChange(namespace=namespace, name=name, before=before, after=after)

    async def delete_deployments(
        self,
        namespace: str,
        *,
        selector: str | None = None,
        propagation_policy: PropagationPolicy = "Foreground",
    ) -> DeletionResult:
        """Delete the Deployments of ``namespace`` matching ``selector`` (all when None).

        Raises
        ------
        KubernetesWebError
            The API server refused the deletion.
        KubernetesValidationError
            The answer could not be understood.
        KubernetesUnavailableError
            The API server could not be reached.
        """
        return await self._delete_collection(
            "deployments",
            namespace,
            selector,
            lambda **kwargs: self._apps.delete_collection_namespaced_deployment(
                namespace, propagation_policy=propagation_policy, **kwargs
            ),
        )

    async def delete_hpas(self, namespace: str, *, selector: str | None = None) -> DeletionResult:
        """Delete the HorizontalPodAutoscalers of ``namespace`` matching ``selector``.

        Raises
        ------
        KubernetesWebError
            The API server refused the deletion.
        KubernetesValidationError
            The answer could not be understood.
        KubernetesUnavailableError
            The API server could not be reached.
        """
        return await self._delete_collection(
            "horizontalpodautoscalers",
            namespace,
            selector,
            lambda **kwargs: (
                self._autoscaling.delete_collection_namespaced_horizontal_pod_autoscaler(
                    namespace, **kwargs
                )
            ),
        )

    async def _list_hpas(self, namespace: str, selector: str | None) -> list[tuple[str, bool]]:
        answer = await self._call(
            f"list horizontalpodautoscalers in {namespace}",
            lambda: self._autoscaling.list_namespaced_horizontal_pod_autoscaler(
                namespace, _request_timeout=self._timeout_s, **_selector_kwargs(selector)
            ),
        )
        return [
            (item.metadata.name, item.metadata.deletion_timestamp is not None)
            for item in answer.items or []
        ]

    # --- Pods -----------------------------------------------------------------------------------

    async def list_pods(
        self, namespace: str | None = None, *, selector: str | None = None
    ) -> list[PodInfo]:
        """The pods in ``namespace`` (every namespace when None) matching ``selector``.

        Raises
        ------
        KubernetesWebError
            The API server answered with an HTTP error.
        KubernetesValidationError
            The answer could not be understood.
        KubernetesUnavailableError
            The API server could not be reached.
        """
        kwargs = {"_request_timeout": self._timeout_s, **_selector_kwargs(selector)}
        if namespace is None:
            answer = await self._call(
                f"list pods in all namespaces ({selector or 'all'})",
                lambda: self._core.list_pod_for_all_namespaces(**kwargs),
            )
        else:
            answer = await self._call(
                f"list pods in {namespace} ({selector or 'all'})",
                lambda: self._core.list_namespaced_pod(namespace, **kwargs),
            )
        return [_pod_info(item) for item in answer.items or []]

    async def wait_for_no_pods(
        self,
        namespace: str,
        *,
        selector: str,
        timeout_s: float,
        poll_interval_s: float = 2.0,
    ) -> float:
        """Wait until no pod of ``namespace`` matches ``selector``; return the seconds waited.

        Terminating pods still count: a broker is down only once its pod is gone.

        Raises
        ------
        KubernetesTimeoutError
            Pods were still there after ``timeout_s``; the message names them.
        KubernetesWebError
            The API server answered with an HTTP error.
        KubernetesUnavailableError
            The API server could not be reached.
        """
        start = time.monotonic()
        while True:
            pods = await self.list_pods(namespace, selector=selector)
            waited = time.monotonic() - start
            if not pods:
                return waited
            if waited >= timeout_s:
                names = ", ".join(pod.name for pod in pods)
                raise KubernetesTimeoutError(
                    f"pods of {namespace} matching {selector} still there after "
                    f"{timeout_s:.0f} s: {names}"
                )
            await asyncio.sleep(min(poll_interval_s, max(timeout_s - waited, 0.0)))

    # --- Strimzi --------------------------------------------------------------------------------

    async def get_kafka(self, namespace: str, name: str) -> KafkaInfo:
        """Strimzi's ``Kafka`` resource ``name``.

        Raises
        ------
        KubernetesNotFoundError
            There is no such Kafka resource.
        KubernetesWebError
            Another HTTP error.
        KubernetesValidationError
            The answer is not a Kafka resource.
        KubernetesUnavailableError
            The API server could not be reached.
        """
        operation = f"read kafka {namespace}/{name}"
        body = await self._call(
            operation,
            lambda: self._custom.get_namespaced_custom_object(
                *_KAFKA[:2], namespace, _KAFKA[2], name, _request_timeout=self._timeout_s
            ),
        )
        return _kafka_info(_parse(_Kafka, body, operation), namespace)

    async def annotate_kafka(
        self, namespace: str, name: str, annotations: Mapping[str, str | None]
    ) -> KafkaInfo:
        """Set (or, with None, remove) annotations of the ``Kafka`` resource, such as
        ``strimzi.io/pause-reconciliation``, with a JSON merge patch.

        Raises
        ------
        KubernetesNotFoundError
            There is no such Kafka resource.
        KubernetesConflictError
            The API server refused the change (409).
        KubernetesWebError
            Another HTTP error.
        KubernetesValidationError
            The answer is not a Kafka resource.
        KubernetesUnavailableError
            The API server could not be reached.
        """
        operation = f"annotate kafka {namespace}/{name}"
        # Custom resources take no strategic merge patch, which the library would send for a
        # dict body; a merge patch is what `kubectl annotate` sends.
        options: dict[str, Any] = {
            "_content_type": _MERGE_PATCH,
            "_request_timeout": self._timeout_s,
        }
        body = await self._call(
            operation,
            lambda: self._custom.patch_namespaced_custom_object(
                *_KAFKA[:2],
                namespace,
                _KAFKA[2],
                name,
                {"metadata": {"annotations": dict(annotations)}},
                **options,
            ),
        )
        return _kafka_info(_parse(_Kafka, body, operation), namespace)

    async def pause_kafka_reconciliation(
        self, namespace: str, name: str, *, paused: bool = True
    ) -> KafkaInfo:
        """Annotate ``strimzi.io/pause-reconciliation`` "true" (or "false" to resume).

        Raises
        ------
        KubernetesError
            As `annotate_kafka`.
        """
        return await self.annotate_kafka(
            namespace, name, {_PAUSE_ANNOTATION: "true" if paused else "false"}
        )

    async def get_pod_set(self, namespace: str, name: str) -> PodSetInfo:
        """The StrimziPodSet ``name`` and its pods.

        Raises
        ------
        KubernetesNotFoundError
            There is no such pod set.
        KubernetesWebError
            Another HTTP error.
        KubernetesValidationError
            The answer is not a StrimziPodSet.
        KubernetesUnavailableError
            The API server could not be reached.
        """
        operation = f"read strimzipodset {namespace}/{name}"
        body = await self._call(
            operation,
            lambda: self._custom.get_namespaced_custom_object(
                *_POD_SETS[:2], namespace, _POD_SETS[2], name, _request_timeout=self._timeout_s
            ),
        )
        return _pod_set_info(_parse(_PodSet, body, operation), namespace)

    async def list_pod_sets(self, namespace: str) -> list[PodSetInfo]:
        """The StrimziPodSets of ``namespace``.

        Raises
        ------
        KubernetesWebError
            The API server answered with an HTTP error.
        KubernetesValidationError
            The answer is not a list of StrimziPodSets.
        KubernetesUnavailableError
            The API server could not be reached.
        """
        operation = f"list strimzipodsets in {namespace}"
        body = await self._call(
            operation,
            lambda: self._custom.list_namespaced_custom_object(
                *_POD_SETS[:2], namespace, _POD_SETS[2], _request_timeout=self._timeout_s
            ),
        )
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise KubernetesValidationError(f"{operation}: the answer has no items")
        return [_pod_set_info(_parse(_PodSet, item, operation), namespace) for item in items]

    async def delete_pod_set(self, namespace: str, name: str) -> PodSetInfo:
        """Delete the StrimziPodSet ``name``; its pods then shut down (gracefully, for brokers).

        Returns the pod set as it was deleted, with the pods that are now terminating.

        Raises
        ------
        KubernetesNotFoundError
            There is no such pod set.
        KubernetesWebError
            Another HTTP error.
        KubernetesValidationError
            The answer is not a StrimziPodSet.
        KubernetesUnavailableError
            The API server could not be reached.
        """
        operation = f"delete strimzipodset {namespace}/{name}"
        body = await self._call(
            operation,
            lambda: self._custom.delete_namespaced_custom_object(
                *_POD_SETS[:2], namespace, _POD_SETS[2], name, _request_timeout=self._timeout_s
            ),
        )
        info = _pod_set_info(_parse(_PodSet, body, operation), namespace)
        return info.model_copy(update={"terminating": True})

    # --- k8s-admin ------------------------------------------------------------------------------

    async def cleanup_all(
        self, cleanup: CleanupConfig, *, propagation_policy: PropagationPolicy = "Foreground"
    ) -> CleanupReport:
        """k8s-admin's ``cleanup_all``, checking every step.

        Deletes every Job in each of ``job_namespaces`` and ``legacy_namespaces`` (a missing
        namespace is nothing to clean), only the Jobs whose ``csc`` label is one of ``uws_cscs``
        in ``uws_namespace`` (the UWS server stays), and every Deployment, Job and HPA in
        ``love_namespace``. Afterwards it lists each namespace again: anything left that is not
        terminating is a failure. Every namespace is attempted even when one fails.

        Raises
        ------
        KubernetesCleanupError
            A namespace failed or still has objects; ``report`` holds every namespace's result.
        KubernetesUnauthorizedError
            The credentials were refused (nothing further is attempted).
        """
        plan: list[tuple[str, str | None, bool, bool]] = [
            (namespace, None, False, False) for namespace in cleanup.job_namespaces
        ]
        plan += [(namespace, None, True, False) for namespace in cleanup.legacy_namespaces]
        if cleanup.uws_cscs:
            uws_selector = f"csc in ({','.join(cleanup.uws_cscs)})"
            plan.append((cleanup.uws_namespace, uws_selector, False, False))
        plan.append((cleanup.love_namespace, None, False, True))
        entries = []
        for namespace, selector, legacy, love in plan:
            try:
                entry = await self._clean_namespace(
                    namespace,
                    job_selector=selector,
                    legacy=legacy,
                    love=love,
                    propagation_policy=propagation_policy,
                )
            except (KubernetesUnauthorizedError, KubernetesConfigError):
                raise
            except KubernetesError as exc:
                entry = NamespaceCleanup(
                    namespace=namespace, legacy=legacy, job_selector=selector, error=str(exc)
                )
            entries.append(entry)
            _logger.info(
                "cleanup_all %s: %d jobs, %d deployments, %d HPAs deleted%s",
                namespace,
                len(entry.jobs_deleted),
                len(entry.deployments_deleted),
                len(entry.hpas_deleted),
                "" if entry.namespace_found else " (namespace not found)",
            )
        report = CleanupReport(namespaces=entries)
        if not report.ok:
            problems = "; ".join(
                f"{entry.namespace}: {entry.error or 'left ' + ', '.join(entry.remaining)}"
                for entry in report.failed
            )
            raise KubernetesCleanupError(f"cleanup_all incomplete: {problems}", report=report)
        return report

    async def _clean_namespace(
        self,
        namespace: str,
        *,
        job_selector: str | None,
        legacy: bool,
        love: bool,
        propagation_policy: PropagationPolicy,
    ) -> NamespaceCleanup:
        if not await self.namespace_exists(namespace):
            return NamespaceCleanup(
                namespace=namespace, legacy=legacy, namespace_found=False, job_selector=job_selector
            )
        deployments: list[str] = []
        hpas: list[str] = []
        if love:
            result = await self.delete_deployments(namespace, propagation_policy=propagation_policy)
            deployments = result.deleted
        jobs = await self.delete_jobs(
            namespace, selector=job_selector, propagation_policy=propagation_policy
        )
        if love:
            hpas = (await self.delete_hpas(namespace)).deleted
        # Checked, unlike k8s-admin's script: anything still there and not going is a failure.
        remaining = [
            f"job/{job.name}"
            for job in await self.list_jobs(namespace, selector=job_selector)
            if not job.terminating
        ]
        if love:
            remaining += [
                f"deployment/{deployment.name}"
                for deployment in await self.list_deployments(namespace)
                if not deployment.terminating
            ]
            remaining += [
                f"horizontalpodautoscaler/{name}"
                for name, terminating in await self._list_hpas(namespace, None)
                if not terminating
            ]
        return NamespaceCleanup(
            namespace=namespace,
            legacy=legacy,
            namespace_found=jobs.namespace_found,
            job_selector=job_selector,
            jobs_deleted=jobs.deleted,
            deployments_deleted=deployments,
            hpas_deleted=hpas,
            remaining=remaining,
        )

    # --- Requests -------------------------------------------------------------------------------

    async def _delete_collection(
        self,
        kind: str,
        namespace: str,
        selector: str | None,
        call: Callable[..., Awaitable[Any]],
    ) -> DeletionResult:
        """Delete-collection in ``namespace``; the answer lists what was deleted.

        The library reads that answer as a ``Status``, which would drop the list, so it is read
        raw here.
        """
        result = DeletionResult(kind=kind, namespace=namespace, selector=selector)
        if not await self.namespace_exists(namespace):
            return result.model_copy(update={"namespace_found": False})
        operation = f"delete {kind} in {namespace} ({selector or 'all'})"

        async def delete() -> Any:
            response = await call(
                _preload_content=False,
                _request_timeout=self._timeout_s,
                **_selector_kwargs(selector),
            )
            try:
                data = await response.read()
            finally:
                response.release()
            if not 200 <= response.status <= 299:
                error = ApiException(status=response.status, reason=response.reason)
                error.body = data
                raise error
            return json.loads(data)

        try:
            body = await self._call(operation, delete)
        except KubernetesNotFoundError:
            # The namespace went away between the check and the deletion.
            return result.model_copy(update={"namespace_found": False})
        listing = _parse(_ItemList, body, operation)
        deleted = [item.metadata.name for item in listing.items or []]
        return result.model_copy(update={"deleted": deleted})

    async def _call(self, operation: str, call: Callable[[], Awaitable[_T]]) -> _T:
        """Run one request, retrying network failures and 5xx answers, translating errors."""
        delay = self._retry_delay_s
        for attempt in range(self._retries + 1):
            last = attempt == self._retries
            try:
                return await call()
            except ApiException as exc:
                if exc.status >= 500 and not last:
                    _logger.warning("%s: HTTP %d; retrying in %.1f s", operation, exc.status, delay)
                else:
                    raise self._web_error(operation, exc) from None
            except (
                aiohttp.ClientConnectionError,
                aiohttp.ClientPayloadError,
                TimeoutError,
            ) as exc:
                if last:
                    raise KubernetesUnavailableError(
                        f"{operation}: cannot reach the Kubernetes API at {self.server} "
                        f"after {self._retries + 1} attempts: {type(exc).__name__}: {exc}"
                    ) from None
                _logger.warning("%s: %s; retrying in %.1f s", operation, type(exc).__name__, delay)
            except json.JSONDecodeError as exc:
                raise KubernetesValidationError(f"{operation}: answer is not JSON: {exc}") from None
            except ValueError as exc:
                # The library's models refuse objects that lack required fields.
                raise KubernetesValidationError(
                    f"{operation}: unexpected answer from the API server: {exc}"
                ) from None
            await asyncio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def _web_error(self, operation: str, exc: ApiException) -> KubernetesWebError:
        status = _status_body(exc.body)
        reason = status.reason or exc.reason or "Unknown"
        detail = status.message or exc.reason or ""
        if exc.status == 401:
            message = (
                f"{operation}: HTTP 401 {reason}: the Kubernetes API at {self.server} refused the "
                f"credentials of context {self.context!r} (missing, wrong or expired token)"
            )
        else:
            message = f"{operation}: HTTP {exc.status} {reason}: {detail}"
        error_type = _ERRORS.get(exc.status, KubernetesWebError)
        return error_type(
            message, operation=operation, status=exc.status, reason=reason, detail=detail
        )


def _kafka_info(kafka: _Kafka, namespace: str) -> KafkaInfo:
    conditions = kafka.status.conditions if kafka.status else []
    return KafkaInfo(
        namespace=kafka.metadata.namespace or namespace,
        name=kafka.metadata.name,
        annotations=kafka.metadata.annotations or {},
        conditions={condition.type: condition.status for condition in conditions},
    )


def _pod_set_info(pod_set: _PodSet, namespace: str) -> PodSetInfo:
    return PodSetInfo(
        namespace=pod_set.metadata.namespace or namespace,
        name=pod_set.metadata.name,
        pods=[pod.metadata.name for pod in pod_set.spec.pods] if pod_set.spec else [],
        ready_pods=pod_set.status.ready_pods if pod_set.status else 0,
        terminating=pod_set.metadata.deletion_timestamp is not None,
    )
