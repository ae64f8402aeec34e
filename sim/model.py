"""The simulated site's one shared model: what Kubernetes, Argo CD and LOVE would each report.

Every simulated server (Kubernetes API, Argo CD, LOVE, the schema registry's Deployment) reads
and changes this model, so that an action has the consequences it would have at the site: an Argo
CD sync recreates CSC Jobs, which start simulated CSCs after an image-pull delay; deleting a Job
kills its CSC; a CSC's ``exitControl`` completes its Job; scaling telegraf to 0 stops its
consumers. Mutations are recorded in the write log by the server that receives the request; the
model records only what happens by itself (Jobs completing, pods terminating).

The model is single-threaded: everything runs in the simulation's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from blocks.site import CscEntry, CscName, SiteConfig

__all__ = [
    "Application",
    "CscRunner",
    "Deployment",
    "Job",
    "KubeObject",
    "ModelOptions",
    "Namespace",
    "Pod",
    "PodSet",
    "SiteModel",
    "matches_selector",
]

_versions = itertools.count(1000)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def matches_selector(labels: dict[str, str], selector: str | None) -> bool:
    """Kubernetes label-selector matching: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``,
    ``k in (a,b)`` and ``k notin (a,b)``, comma-separated (commas inside parentheses kept)."""
    if not selector:
        return True
    terms: list[str] = []
    depth, start = 0, 0
    for position, char in enumerate(selector):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            terms.append(selector[start:position])
            start = position + 1
    terms.append(selector[start:])
    return all(_matches_term(labels, term.strip()) for term in terms if term.strip())


def _matches_term(labels: dict[str, str], term: str) -> bool:
    for keyword, negate in ((" notin ", True), (" in ", False)):
        if keyword in term:
            key, _, values = term.partition(keyword)
            allowed = {v.strip() for v in values.strip().strip("()").split(",")}
            present = labels.get(key.strip()) in allowed
            return not present if negate else present
    if "!=" in term:
        key, _, value = term.partition("!=")
        return labels.get(key.strip()) != value.strip()
    if "=" in term:
        key, _, value = term.partition("==" if "==" in term else "=")
        return labels.get(key.strip()) == value.strip().lstrip("=")
    if term.startswith("!"):
        return term[1:].strip() not in labels
    return term in labels


@dataclass(kw_only=True)
class KubeObject:
    """Metadata every simulated Kubernetes object has."""

    namespace: str | None
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    resource_version: str = field(default_factory=lambda: str(next(_versions)))
    creation_timestamp: str = field(default_factory=_now)

    def touch(self) -> None:
        self.resource_version = str(next(_versions))

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": self.name,
            "uid": self.uid,
            "resourceVersion": self.resource_version,
            "creationTimestamp": self.creation_timestamp,
            "labels": dict(self.labels),
        }
        if self.namespace is not None:
            meta["namespace"] = self.namespace
        if self.annotations:
            meta["annotations"] = dict(self.annotations)
        return meta


@dataclass(kw_only=True)
class Namespace(KubeObject):
    namespace: str | None = None
    phase: Literal["Active", "Terminating"] = "Active"
    deletion_timestamp: str | None = None


@dataclass(kw_only=True)
class Job(KubeObject):
    """A CSC's Job: one pod, complete when the CSC exits (``exitControl``)."""

    image: str
    csc: CscName | None = None
    phase: Literal["Pulling", "Running", "Succeeded", "Failed"] = "Pulling"
    message: str = ""
    start_time: str | None = None
    completion_time: str | None = None


@dataclass(kw_only=True)
class Deployment(KubeObject):
    replicas: int = 1
    image: str = ""

    @property
    def ready_replicas(self) -> int:
        return self.replicas


@dataclass(kw_only=True)
class Pod(KubeObject):
    phase: Literal["Pending", "Running", "Succeeded", "Failed"] = "Running"
    ready: bool = True
    owner_kind: str = ""
    owner_name: str = ""
    deletion_timestamp: str | None = None


@dataclass(kw_only=True)
class PodSet(KubeObject):
    """A StrimziPodSet: the broker or controller pods of the Kafka cluster."""

    role: Literal["broker", "controller"]
    pod_names: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class Application:
    """An Argo CD application and its sync state."""

    name: str
    project: str
    namespace: str
    repo_url: str = "https://github.com/lsst-sqre/phalanx.git"
    path: str = ""
    target_revision: str = "main"
    synced_revision: str = "0000000"
    revision: str = "0000000"
    image_tag: str = "c0044"
    target_image_tag: str = "c0044"
    sync_status: Literal["Synced", "OutOfSync", "Unknown"] = "Synced"
    health_status: str = "Healthy"
    operation: dict[str, Any] | None = None
    # Argo CD's ``status.operationState``: what the last (or the running) operation did.
    operation_state: dict[str, Any] | None = None
    pending_changes: list[str] = field(default_factory=list)
    created_at: str = field(default_factory=_now)
    history: list[dict[str, Any]] = field(default_factory=list)


class CscRunner(Protocol):
    """What the model needs of the simulated CSC fleet."""

    def start(self, entry: CscEntry, *, image: str) -> Any:
        """Start a CSC as its Job's container would (registering schemas first)."""

    def kill(self, name: CscName) -> Any:
        """Stop a CSC abruptly, as deleting its pod does: no OFFLINE is published."""


@dataclass(frozen=True, kw_only=True)
class ModelOptions:
    """Simulated delays, in seconds (scaled down in tests; 0 means at once)."""

    image_pull_s: float = 2.0
    broker_shutdown_s: float = 1.0
    namespace_termination_s: float = 0.2
    start_image_tag: str = "c0044"
    upgrade_image_tag: str = "c0045"
    nublado_users: tuple[str, ...] = ("nb-alice", "nb-bob")
    broker_pods: int = 3
    controller_pods: int = 3
    love_producers: int = 4


Listener = Callable[[str, "KubeObject | Application"], None]


class SiteModel:
    """The simulated site's Kubernetes objects and Argo CD applications.

    Parameters
    ----------
    config
        The site being simulated.
    options
        Delays and the image tags before/after the upgrade.
    runner
        The CSC fleet; may be attached later with `attach_runner`.
    """

    def __init__(
        self,
        config: SiteConfig,
        *,
        options: ModelOptions | None = None,
        runner: CscRunner | None = None,
    ) -> None:
        self.config = config
        self.options = options or ModelOptions()
        self.runner = runner
        self.namespaces: dict[str, Namespace] = {}
        self.jobs: dict[tuple[str, str], Job] = {}
        self.deployments: dict[tuple[str, str], Deployment] = {}
        self.pods: dict[tuple[str, str], Pod] = {}
        self.pod_sets: dict[tuple[str, str], PodSet] = {}
        self.kafka_resources: dict[tuple[str, str], KubeObject] = {}
        self.hpas: dict[tuple[str, str], KubeObject] = {}
        self.applications: dict[str, Application] = {}
        self._listeners: list[Listener] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._populate()

    # -- construction ---------------------------------------------------------------------

    def _populate(self) -> None:
        config, options = self.config, self.options
        tag = options.start_image_tag
        namespaces = {
            *config.argocd.telescope_apps,
            config.telegraf.namespace,
            config.strimzi.namespace,
            config.love_producers.namespace,
            config.cleanup.uws_namespace,
            "nublado",
            "argocd",
        }
        for name in sorted(namespaces):
            self.namespaces[name] = Namespace(name=name)
        for user in options.nublado_users:
            key, _, value = config.cleanup.nublado_selector.partition("=")
            self.namespaces[user] = Namespace(name=user, labels={key: value})
        for entry in config.kubernetes_cscs():
            self._new_job(entry, tag, phase="Running")
        self._populate_deployments(tag)
        strimzi = config.strimzi
        self.kafka_resources[(strimzi.namespace, strimzi.kafka)] = KubeObject(
            namespace=strimzi.namespace, name=strimzi.kafka, labels={"app": "sasquatch"}
        )
        self._new_pod_set(strimzi.broker_pod_set, "broker", options.broker_pods)
        self._new_pod_set(strimzi.controller_pod_set, "controller", options.controller_pods)
        self._populate_applications(tag)

    def _populate_deployments(self, tag: str) -> None:
        config = self.config
        for name in config.telegraf.deployments:
            self._new_deployment(
                config.telegraf.namespace, name, config.telegraf.selector, replicas=1, image=tag
            )
        self._new_deployment(
            config.strimzi.namespace,
            config.strimzi.schema_registry_deployment,
            "app.kubernetes.io/name=schema-registry",
            replicas=config.strimzi.schema_registry_replicas,
            image="confluentinc/cp-schema-registry:7.6.0",
        )
        self.create_love_deployments(tag)

    def create_love_deployments(self, tag: str) -> None:
        """LOVE's manager, frontend and producers, as a sync of the ``love`` app makes them."""
        namespace = self.config.cleanup.love_namespace
        self._new_deployment(
            namespace, "love-manager-frontend", "app.kubernetes.io/name=love-manager", image=tag
        )
        self._new_deployment(
            namespace, "love-nginx", "app.kubernetes.io/name=love-nginx", image=tag
        )
        for number in range(1, self.options.love_producers + 1):
            self._new_deployment(
                namespace,
                f"love-producer-{number}",
                self.config.love_producers.selector,
                image=tag,
            )
        self.hpas[(namespace, "love-manager-frontend")] = KubeObject(
            namespace=namespace, name="love-manager-frontend"
        )

    def _populate_applications(self, tag: str) -> None:
        argocd = self.config.argocd
        for name in argocd.platform_apps:
            project = "default"
            self.applications[name] = Application(
                name=name,
                project=project,
                namespace="argocd" if name == "science-platform" else name,
                path=f"applications/{name}",
                image_tag=tag,
                target_image_tag=tag,
            )
        self.applications[argocd.sasquatch_app] = Application(
            name=argocd.sasquatch_app,
            project="default",
            namespace=self.config.strimzi.namespace,
            path=f"applications/{argocd.sasquatch_app}",
            image_tag=tag,
            target_image_tag=tag,
        )
        for name in argocd.telescope_apps:
            self.applications[name] = Application(
                name=name,
                project=argocd.telescope_project,
                namespace=name,
                path=f"applications/{name}",
                image_tag=tag,
                target_image_tag=tag,
                health_status="Progressing" if self._app_entries(name) else "Healthy",
            )

    def _new_job(self, entry: CscEntry, tag: str, *, phase: Literal["Pulling", "Running"]) -> Job:
        placement = entry.kubernetes
        assert placement is not None
        labels = {
            "csc": placement.csc,
            "csc-name": placement.csc.removesuffix("-sim"),
            "csc-class": placement.csc_class,
            "csc-is-primary": "true",
            "argocd.argoproj.io/instance": placement.namespace,
        }
        job = Job(
            namespace=placement.namespace,
            name=f"{placement.csc}-job",
            labels=labels,
            image=f"ts-dockerhub.lsst.org/{placement.csc_class}:{tag}",
            csc=entry.name,
            phase=phase,
            start_time=_now() if phase == "Running" else None,
        )
        self.jobs[(placement.namespace, job.name)] = job
        self._sync_job_pod(job)
        return job

    def _new_deployment(
        self, namespace: str, name: str, selector: str, *, replicas: int = 1, image: str = ""
    ) -> Deployment:
        key, _, value = selector.partition("=")
        deployment = Deployment(
            namespace=namespace,
            name=name,
            labels={key: value, "app.kubernetes.io/instance": name},
            replicas=replicas,
            image=image,
        )
        self.deployments[(namespace, name)] = deployment
        self._sync_deployment_pods(deployment)
        return deployment

    def _new_pod_set(self, name: str, role: Literal["broker", "controller"], count: int) -> PodSet:
        namespace = self.config.strimzi.namespace
        pod_set = PodSet(
            namespace=namespace,
            name=name,
            role=role,
            labels={"strimzi.io/cluster": self.config.strimzi.kafka, "strimzi.io/kind": "Kafka"},
            pod_names=[f"{name}-{n}" for n in range(count)],
        )
        self.pod_sets[(namespace, name)] = pod_set
        for pod_name in pod_set.pod_names:
            self.pods[(namespace, pod_name)] = Pod(
                namespace=namespace,
                name=pod_name,
                labels={**pod_set.labels, "strimzi.io/pool-name": name, "strimzi.io/role": role},
                owner_kind="StrimziPodSet",
                owner_name=name,
            )
        return pod_set

    # -- listeners --------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event, obj)`` on model events such as ``deployment-scaled``."""
        self._listeners.append(listener)

    def _emit(self, event: str, obj: KubeObject | Application) -> None:
        for listener in list(self._listeners):
            listener(event, obj)

    def attach_runner(self, runner: CscRunner) -> None:
        self.runner = runner

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- Jobs and their CSCs ---------------------------------------------------------------

    def _app_entries(self, app: str) -> list[CscEntry]:
        return [
            e
            for e in self.config.kubernetes_cscs()
            if e.kubernetes and e.kubernetes.namespace == app
        ]

    def _sync_job_pod(self, job: Job) -> None:
        assert job.namespace is not None
        key = (job.namespace, f"{job.name}-pod")
        phase: Literal["Pending", "Running", "Succeeded", "Failed"] = {
            "Pulling": "Pending",
            "Running": "Running",
            "Succeeded": "Succeeded",
            "Failed": "Failed",
        }[job.phase]  # type: ignore[assignment]
        pod = self.pods.get(key)
        if pod is None:
            pod = Pod(
                namespace=job.namespace,
                name=key[1],
                labels={**job.labels, "job-name": job.name},
                owner_kind="Job",
                owner_name=job.name,
            )
            self.pods[key] = pod
        pod.phase = phase
        pod.ready = phase == "Running"
        pod.touch()

    def delete_job(self, namespace: str, name: str) -> Job | None:
        """Delete a Job and its pod; a running CSC dies with it (no OFFLINE)."""
        job = self.jobs.pop((namespace, name), None)
        if job is None:
            return None
        self.pods.pop((namespace, f"{name}-pod"), None)
        if job.csc is not None and job.phase in ("Running", "Pulling") and self.runner is not None:
            self.runner.kill(job.csc)
        self._emit("job-deleted", job)
        return job

    def job_for(self, name: CscName) -> Job | None:
        for job in self.jobs.values():
            if job.csc == name:
                return job
        return None

    def csc_exited(self, name: CscName, *, failed: bool = False, message: str = "") -> None:
        """The CSC's process ended (``exitControl``, or refused at start): complete its Job."""
        job = self.job_for(name)
        if job is None or job.phase in ("Succeeded", "Failed"):
            return
        job.phase = "Failed" if failed else "Succeeded"
        job.message = message
        job.completion_time = _now()
        job.touch()
        self._sync_job_pod(job)
        self._emit("job-finished", job)

    def _start_job(self, job: Job, entry: CscEntry) -> None:
        async def pull_then_start() -> None:
            if self.options.image_pull_s > 0:
                await asyncio.sleep(self.options.image_pull_s)
            if self.jobs.get((job.namespace or "", job.name)) is not job:
                return  # deleted while pulling
            job.phase = "Running"
            job.start_time = _now()
            job.touch()
            self._sync_job_pod(job)
            if self.runner is not None:
                self.runner.start(entry, image=job.image)

        self._spawn(pull_then_start())

    # -- Argo CD sync consequences ---------------------------------------------------------

    def sync_application(self, app: Application) -> list[str]:
        """Apply an app's target state; return the resources changed (for the sync result)."""
        if app.project == self.config.argocd.telescope_project:
            changed = self._sync_telescope_app(app)
        elif app.name == self.config.argocd.sasquatch_app:
            changed = self._sync_sasquatch()
        else:
            changed = []
        app.image_tag = app.target_image_tag
        app.synced_revision = app.revision
        app.sync_status = "Synced"
        app.pending_changes = []
        # Running Jobs keep a telescope app Progressing: it never turns Healthy.
        app.health_status = "Progressing" if self._app_entries(app.name) else "Healthy"
        self._emit("app-synced", app)
        return changed

    def _sync_telescope_app(self, app: Application) -> list[str]:
        changed: list[str] = []
        tag = app.target_image_tag
        for entry in self._app_entries(app.name):
            placement = entry.kubernetes
            assert placement is not None
            if (placement.namespace, f"{placement.csc}-job") in self.jobs:
                continue  # a Job's template is immutable: only missing Jobs are recreated
            job = self._new_job(entry, tag, phase="Pulling")
            self._start_job(job, entry)
            changed.append(f"batch/Job/{job.namespace}/{job.name}")
        love = self.config.cleanup.love_namespace
        if app.name == love and not any(ns == love for ns, _ in self.deployments):
            self.create_love_deployments(tag)
            changed.append(f"apps/Deployment/{love}/*")
            for deployment in self.deployments.values():
                if deployment.namespace == love:
                    self._emit("deployment-created", deployment)
        return changed

    def _sync_sasquatch(self) -> list[str]:
        """Sasquatch's chart wants the registry at its replicas and each connector at 1."""
        changed: list[str] = []
        strimzi = self.config.strimzi
        for deployment in self.deployments.values():
            if deployment.namespace != strimzi.namespace:
                continue
            desired = (
                strimzi.schema_registry_replicas
                if deployment.name == strimzi.schema_registry_deployment
                else 1
            )
            if deployment.replicas != desired:
                self.scale_deployment(deployment, desired)
                changed.append(f"apps/Deployment/{deployment.namespace}/{deployment.name}")
        return changed

    def publish_upgrade(
        self,
        *,
        revision: str,
        image_tag: str,
        apps: Iterable[str] | None = None,
        sasquatch_changes: bool = False,
    ) -> None:
        """The Phalanx PR is merged: the telescope apps (and optionally sasquatch) go OutOfSync."""
        names = list(apps) if apps is not None else list(self.config.argocd.telescope_apps)
        for name in names:
            app = self.applications[name]
            app.revision = revision
            app.target_image_tag = image_tag
            app.sync_status = "OutOfSync"
            app.pending_changes = [f"image tag {app.image_tag} -> {image_tag}"]
        if sasquatch_changes:
            sasquatch = self.applications[self.config.argocd.sasquatch_app]
            sasquatch.revision = revision
            sasquatch.sync_status = "OutOfSync"
            sasquatch.pending_changes = ["ConfigMap/sasquatch-telegraf-*: new topics"]

    # -- Deployments -----------------------------------------------------------------------

    def _sync_deployment_pods(self, deployment: Deployment) -> None:
        assert deployment.namespace is not None
        prefix = f"{deployment.name}-"
        existing = sorted(
            key
            for key, pod in self.pods.items()
            if pod.owner_kind == "Deployment"
            and pod.owner_name == deployment.name
            and key[0] == deployment.namespace
        )
        for key in existing[deployment.replicas :]:
            del self.pods[key]
        for number in range(len(existing), deployment.replicas):
            name = f"{prefix}{uuid.uuid4().hex[:5]}{number}"
            self.pods[(deployment.namespace, name)] = Pod(
                namespace=deployment.namespace,
                name=name,
                labels=dict(deployment.labels),
                owner_kind="Deployment",
                owner_name=deployment.name,
            )

    def scale_deployment(self, deployment: Deployment, replicas: int) -> None:
        if deployment.replicas == replicas:
            return
        deployment.replicas = replicas
        deployment.touch()
        self._sync_deployment_pods(deployment)
        self._emit("deployment-scaled", deployment)

    def delete_deployment(self, namespace: str, name: str) -> Deployment | None:
        deployment = self.deployments.pop((namespace, name), None)
        if deployment is None:
            return None
        deployment.replicas = 0
        self._sync_deployment_pods(deployment)
        self._emit("deployment-deleted", deployment)
        return deployment

    @property
    def love_up(self) -> bool:
        """LOVE answers while its manager Deployment exists with a replica."""
        manager = self.deployments.get(
            (self.config.cleanup.love_namespace, "love-manager-frontend")
        )
        return manager is not None and manager.replicas > 0

    @property
    def registry_up(self) -> bool:
        strimzi = self.config.strimzi
        registry = self.deployments.get((strimzi.namespace, strimzi.schema_registry_deployment))
        return registry is not None and registry.replicas > 0

    # -- Namespaces ------------------------------------------------------------------------

    def delete_namespace(self, name: str) -> Namespace | None:
        namespace = self.namespaces.get(name)
        if namespace is None:
            return None
        namespace.phase = "Terminating"
        namespace.deletion_timestamp = namespace.deletion_timestamp or _now()
        namespace.touch()

        async def terminate() -> None:
            if self.options.namespace_termination_s > 0:
                await asyncio.sleep(self.options.namespace_termination_s)
            self.namespaces.pop(name, None)
            for key in [k for k in self.pods if k[0] == name]:
                del self.pods[key]

        self._spawn(terminate())
        return namespace

    # -- Strimzi ---------------------------------------------------------------------------

    @property
    def reconciliation_paused(self) -> bool:
        strimzi = self.config.strimzi
        kafka = self.kafka_resources[(strimzi.namespace, strimzi.kafka)]
        return kafka.annotations.get("strimzi.io/pause-reconciliation") == "true"

    def annotate_kafka(self, name: str, annotations: dict[str, str | None]) -> KubeObject | None:
        kafka = self.kafka_resources.get((self.config.strimzi.namespace, name))
        if kafka is None:
            return None
        for key, value in annotations.items():
            if value is None:
                kafka.annotations.pop(key, None)
            else:
                kafka.annotations[key] = value
        kafka.touch()
        if not self.reconciliation_paused:
            self._reconcile_kafka()
        return kafka

    def delete_pod_set(self, name: str) -> PodSet | None:
        """Delete a StrimziPodSet; its pods terminate gracefully (``broker_shutdown_s``).

        Without paused reconciliation Strimzi recreates it at once, as the real operator would.
        """
        namespace = self.config.strimzi.namespace
        pod_set = self.pod_sets.pop((namespace, name), None)
        if pod_set is None:
            return None
        for pod_name in pod_set.pod_names:
            pod = self.pods.get((namespace, pod_name))
            if pod is not None:
                pod.deletion_timestamp = _now()
                pod.ready = False
                pod.touch()

        async def terminate() -> None:
            if self.options.broker_shutdown_s > 0:
                await asyncio.sleep(self.options.broker_shutdown_s)
            for pod_name in pod_set.pod_names:
                pod = self.pods.get((namespace, pod_name))
                if pod is not None and pod.owner_name == name and pod.deletion_timestamp:
                    del self.pods[(namespace, pod_name)]
            self._emit("pod-set-terminated", pod_set)
            if not self.reconciliation_paused:
                self._reconcile_kafka()

        self._spawn(terminate())
        self._emit("pod-set-deleted", pod_set)
        return pod_set

    def _reconcile_kafka(self) -> None:
        """Strimzi recreates missing pod sets (and their pods) of an unpaused Kafka."""
        strimzi, options = self.config.strimzi, self.options
        wanted = (
            (strimzi.controller_pod_set, "controller", options.controller_pods),
            (strimzi.broker_pod_set, "broker", options.broker_pods),
        )
        for name, role, count in wanted:
            if (strimzi.namespace, name) in self.pod_sets:
                continue
            pods = [self.pods.get((strimzi.namespace, f"{name}-{n}")) for n in range(count)]
            if any(pod is not None for pod in pods):
                continue  # still terminating; reconciled again when they are gone
            pod_set = self._new_pod_set(name, role, count)  # type: ignore[arg-type]
            self._emit("pod-set-created", pod_set)

    def broker_pods(self) -> list[Pod]:
        strimzi = self.config.strimzi
        return [
            pod
            for (ns, _), pod in self.pods.items()
            if ns == strimzi.namespace and pod.labels.get("strimzi.io/role") == "broker"
        ]

    @property
    def kafka_up(self) -> bool:
        """Kafka serves while at least one broker pod runs and is not terminating."""
        return any(pod.deletion_timestamp is None for pod in self.broker_pods())
