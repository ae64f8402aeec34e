"""The Kubernetes client against the simulated API server, through a kubeconfig as at the sites.

Each test gets a fresh Summit model and API server; the client is built from a kubeconfig file
exactly as the flows build it, so the cluster check, the token and kubernetes-asyncio's own
request encoding are all exercised.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from blocks.site import SiteConfig, load_site_file
from clients.kubernetes import (
    KubernetesCleanupError,
    KubernetesClient,
    KubernetesConflictError,
    KubernetesNotFoundError,
    KubernetesTimeoutError,
    KubernetesUnauthorizedError,
    KubernetesUnavailableError,
    KubernetesWebError,
    UnknownContextError,
    WrongClusterError,
    normalise_server,
)
from sim.http import serve_app
from sim.kubernetes import KubernetesApiState, create_kubernetes_app, write_kubeconfig
from sim.model import Job, ModelOptions, SiteModel
from sim.writelog import WriteLog
from tests.conftest import SITES

TOKEN = "sim-token-6f1c9e"
BROKER_SHUTDOWN_S = 0.3


@dataclass
class Cluster:
    """One simulated API server and what a test needs to drive and inspect it."""

    config: SiteConfig
    model: SiteModel
    write_log: WriteLog
    app: Starlette
    url: str
    kubeconfig: Path

    @property
    def state(self) -> KubernetesApiState:
        state: KubernetesApiState = self.app.state.kubernetes
        return state

    def records(self, method: str | None = None) -> list[tuple[str, str, dict[str, object]]]:
        return [
            (r.method, r.target, r.body)
            for r in self.write_log.records
            if method is None or r.method == method
        ]


class _Plug:
    """The module's one HTTP server; each test plugs in its own fresh app (a uvicorn start and
    stop per test would cost more than the tests themselves)."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def summit() -> SiteConfig:
    return load_site_file(SITES / "summit.yaml")


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[tuple[_Plug, str]]:
    plug = _Plug()
    async with serve_app(plug, name="kubernetes") as url:
        yield plug, url


@pytest.fixture
async def cluster(
    summit: SiteConfig, server: tuple[_Plug, str], tmp_path: Path
) -> AsyncIterator[Cluster]:
    plug, url = server
    options = ModelOptions(
        image_pull_s=0, broker_shutdown_s=BROKER_SHUTDOWN_S, namespace_termination_s=0.05
    )
    model = SiteModel(summit, options=options, runner=None)
    write_log = WriteLog()
    plug.app = create_kubernetes_app(model, write_log, token=TOKEN)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url, "summit", TOKEN)
    try:
        yield Cluster(summit, model, write_log, plug.app, url, kubeconfig)
    finally:
        plug.app = None
        await model.aclose()


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[KubernetesClient]:
    async with await KubernetesClient.from_kubeconfig(
        cluster.kubeconfig, context="summit", expected_server=cluster.url, retry_delay_s=0.01
    ) as client:
        yield client


# --- Jobs ---------------------------------------------------------------------------------------


async def test_lists_csc_jobs_by_class(client: KubernetesClient, cluster: Cluster) -> None:
    jobs = await client.list_jobs(selector="csc-class=scriptqueue")

    expected = {
        (e.kubernetes.namespace, f"{e.kubernetes.csc}-job")
        for e in cluster.config.kubernetes_cscs()
        if e.kubernetes is not None and e.kubernetes.csc_class == "scriptqueue"
    }
    assert {(job.namespace, job.name) for job in jobs} == expected
    assert len(jobs) == 3
    assert all(job.phase == "Running" and job.active == 1 for job in jobs)
    assert {job.csc_class for job in jobs} == {"scriptqueue"}
    assert all(job.image and job.image.endswith(":c0044") for job in jobs)
    assert cluster.records() == []  # reading changes nothing


async def test_failed_job_reports_its_message(client: KubernetesClient, cluster: Cluster) -> None:
    queue = cluster.config.csc("ScriptQueue:1")
    assert queue.kubernetes is not None
    cluster.model.csc_exited(queue.name, failed=True, message="schema registration refused")

    [job] = await client.list_jobs("obssys", selector=f"csc={queue.kubernetes.csc}")

    assert job.phase == "Failed"
    assert job.failed == 1
    assert job.failure_message == "schema registration refused"


async def test_deletes_obssys_jobs(client: KubernetesClient, cluster: Cluster) -> None:
    before = sorted(name for ns, name in cluster.model.jobs if ns == "obssys")
    assert before

    result = await client.delete_jobs("obssys", propagation_policy="Foreground")

    assert result.namespace_found
    assert sorted(result.deleted) == before
    assert not [key for key in cluster.model.jobs if key[0] == "obssys"]
    assert not [
        pod for (ns, _), pod in cluster.model.pods.items() if ns == "obssys" and pod.owner_kind
    ]
    assert cluster.records() == [
        (
            "DELETE",
            "batch/v1/namespaces/obssys/jobs",
            {"deleted": before, "propagationPolicy": "Foreground"},
        )
    ]
    assert await client.list_jobs("obssys") == []


async def test_missing_namespace_is_nothing_to_clean(
    client: KubernetesClient, cluster: Cluster
) -> None:
    result = await client.delete_jobs("dm-legacy")

    assert not result.namespace_found
    assert result.deleted == []
    assert result.nothing_to_clean
    assert cluster.records() == []


async def test_deletes_only_one_csc_class(client: KubernetesClient, cluster: Cluster) -> None:
    others = sorted(
        name
        for (ns, name), job in cluster.model.jobs.items()
        if ns == "obssys" and job.labels["csc-class"] != "scheduler"
    )

    entry = await client.delete_class_jobs("obssys", "scheduler")

    assert entry.ok
    assert entry.job_selector == "csc-class=scheduler"
    assert sorted(entry.jobs_deleted) == ["atscheduler-job", "mtscheduler-job", "ocsscheduler-job"]
    assert sorted(name for ns, name in cluster.model.jobs if ns == "obssys") == others
    assert [target for _, target, _ in cluster.records("DELETE")] == [
        "batch/v1/namespaces/obssys/jobs?labelSelector=csc-class=scheduler"
    ]


async def test_deletes_some_instances_of_a_class(
    client: KubernetesClient, cluster: Cluster
) -> None:
    entry = await client.delete_class_jobs("obssys", "scriptqueue", cscs=["atqueue"])

    assert entry.jobs_deleted == ["atqueue-job"]
    assert ("obssys", "mtqueue-job") in cluster.model.jobs
    assert ("obssys", "ocsqueue-job") in cluster.model.jobs


async def test_class_deletion_refuses_a_selector_in_disguise(
    client: KubernetesClient, cluster: Cluster
) -> None:
    with pytest.raises(ValueError, match="not a csc label value"):
        await client.delete_class_jobs("obssys", "scheduler,csc!=x")
    with pytest.raises(ValueError, match="cscs is empty"):
        await client.delete_class_jobs("obssys", "scheduler", cscs=[])
    assert cluster.records() == []


# --- k8s-admin ----------------------------------------------------------------------------------


async def test_cleanup_all_on_the_summit(client: KubernetesClient, cluster: Cluster) -> None:
    model, cleanup = cluster.model, cluster.config.cleanup
    # A job of the UWS server's own (not an OCPS CSC) must survive.
    model.jobs[("uws", "uws-job-3f2a")] = Job(
        namespace="uws", name="uws-job-3f2a", labels={"app": "uws"}, image="uws:1"
    )
    csc_jobs = len(model.jobs) - 1

    report = await client.cleanup_all(cleanup)

    assert report.ok
    assert list(model.jobs) == [("uws", "uws-job-3f2a")]
    assert report.jobs_deleted == csc_jobs
    assert not [key for key in model.deployments if key[0] == "love"]
    assert not [key for key in model.hpas if key[0] == "love"]
    assert not model.love_up
    uws = report.namespace("uws")
    assert uws.job_selector == "csc in (atocps,raocps,ccocps,mtocps)"
    assert sorted(uws.jobs_deleted) == ["atocps-job", "ccocps-job", "mtocps-job", "raocps-job"]
    love = report.namespace("love")
    assert "love-manager-frontend" in love.deployments_deleted
    assert love.hpas_deleted == ["love-manager-frontend"]
    assert [entry.namespace for entry in report.namespaces] == [
        *cleanup.job_namespaces,
        "uws",
        "love",
    ]
    deletes = cluster.records("DELETE")
    assert (
        "DELETE",
        "batch/v1/namespaces/uws/jobs?labelSelector=csc in (atocps,raocps,ccocps,mtocps)",
    ) in [(method, target) for method, target, _ in deletes]
    assert ("DELETE", "autoscaling/v2/namespaces/love/horizontalpodautoscalers") in [
        (method, target) for method, target, _ in deletes
    ]
    # Telegraf and the registry are not k8s-admin's business.
    assert all(d.replicas > 0 for (ns, _), d in model.deployments.items() if ns == "sasquatch")


async def test_cleanup_all_skips_a_missing_legacy_namespace(
    client: KubernetesClient, cluster: Cluster
) -> None:
    cleanup = cluster.config.cleanup.model_copy(update={"legacy_namespaces": ["maintel"]})

    report = await client.cleanup_all(cleanup)

    legacy = report.namespace("maintel")
    assert legacy.legacy
    assert not legacy.namespace_found
    assert legacy.ok
    assert not [target for _, target, _ in cluster.records() if "/maintel/" in target]


async def test_cleanup_all_fails_when_a_namespace_fails(
    client: KubernetesClient, cluster: Cluster
) -> None:
    cleanup = cluster.config.cleanup.model_copy(update={"job_namespaces": ["auxtel", "obssys"]})
    # auxtel's delete-collection is refused; obssys must still be cleaned.
    cluster.state.conflict_next_writes(1)

    with pytest.raises(KubernetesCleanupError) as caught:
        await client.cleanup_all(cleanup)

    report = caught.value.report
    assert report.namespace("auxtel").error is not None
    assert "auxtel" in str(caught.value)
    assert report.namespace("obssys").ok
    assert not [key for key in cluster.model.jobs if key[0] == "obssys"]
    assert [key for key in cluster.model.jobs if key[0] == "auxtel"]


async def test_cleanup_nublado_deletes_only_labelled_namespaces(
    client: KubernetesClient, cluster: Cluster
) -> None:
    model = cluster.model
    active_before = {name for name, ns in model.namespaces.items() if ns.phase == "Active"}

    result = await client.cleanup_nublado(cluster.config.cleanup)

    assert sorted(result.deleted) == ["nb-alice", "nb-bob"]
    assert all(model.namespaces[name].phase == "Terminating" for name in result.deleted)
    untouched = active_before - set(result.deleted)
    assert all(model.namespaces[name].phase == "Active" for name in untouched)
    assert sorted(target for _, target, _ in cluster.records("DELETE")) == [
        "v1/namespaces/nb-alice",
        "v1/namespaces/nb-bob",
    ]
    # A second run finds them terminating and leaves them to finish.
    again = await client.cleanup_nublado(cluster.config.cleanup)
    assert again.deleted == []
    assert sorted(again.already_terminating) == ["nb-alice", "nb-bob"]
    assert len(cluster.records("DELETE")) == 2


async def test_delete_namespaces_refuses_an_empty_selector(client: KubernetesClient) -> None:
    with pytest.raises(ValueError, match="without a label selector"):
        await client.delete_namespaces(" ")


# --- Deployments --------------------------------------------------------------------------------


async def test_scales_telegraf_down_and_back(client: KubernetesClient, cluster: Cluster) -> None:
    telegraf = cluster.config.telegraf
    model = cluster.model

    down = await client.scale_deployments(
        telegraf.namespace, selector=telegraf.selector, replicas=0
    )

    assert sorted(change.name for change in down) == sorted(telegraf.deployments)
    assert len(down) == 27
    assert all(change.before == 1 and change.after == 0 for change in down)
    assert all(
        model.deployments[(telegraf.namespace, name)].replicas == 0 for name in telegraf.deployments
    )
    assert model.registry_up  # only telegraf was selected
    method, target, body = cluster.records()[0]
    assert method == "PATCH"
    assert target.startswith("apps/v1/namespaces/sasquatch/deployments/sasquatch-telegraf-")
    assert target.endswith("/scale")
    assert body == {"replicas": 0, "before": 1}

    listed = await client.list_deployments(telegraf.namespace, selector=telegraf.selector)
    assert all(d.replicas == 0 and d.ready_replicas == 0 for d in listed)

    up = await client.scale_deployments(telegraf.namespace, selector=telegraf.selector, replicas=1)
    assert all(change.before == 0 and change.after == 1 for change in up)
    assert all(
        model.deployments[(telegraf.namespace, name)].replicas == 1 for name in telegraf.deployments
    )
    # Scaling to the replicas a Deployment already has writes nothing.
    writes = len(cluster.write_log)
    again = await client.scale_deployments(
        telegraf.namespace, selector=telegraf.selector, replicas=1
    )
    assert not any(change.changed for change in again)
    assert len(cluster.write_log) == writes


async def test_scales_the_schema_registry(client: KubernetesClient, cluster: Cluster) -> None:
    strimzi = cluster.config.strimzi

    change = await client.scale_deployment(strimzi.namespace, strimzi.schema_registry_deployment, 0)

    assert (change.before, change.after) == (3, 0)
    assert not cluster.model.registry_up
    with pytest.raises(KubernetesNotFoundError, match="not found"):
        await client.scale_deployment(strimzi.namespace, "no-such-deployment", 0)


# --- Strimzi ------------------------------------------------------------------------------------


async def test_graceful_kafka_shutdown(client: KubernetesClient, cluster: Cluster) -> None:
    strimzi, model = cluster.config.strimzi, cluster.model
    brokers = f"strimzi.io/pool-name={strimzi.broker_pod_set}"
    assert (await client.get_kafka(strimzi.namespace, strimzi.kafka)).ready

    kafka = await client.pause_kafka_reconciliation(strimzi.namespace, strimzi.kafka)
    assert kafka.reconciliation_paused
    assert kafka.conditions == {"ReconciliationPaused": "True"}
    assert model.reconciliation_paused

    pod_set = await client.delete_pod_set(strimzi.namespace, strimzi.broker_pod_set)
    assert len(pod_set.pods) == 3
    pods = await client.list_pods(strimzi.namespace, selector=brokers)
    assert len(pods) == 3
    assert all(pod.terminating and not pod.ready for pod in pods)
    assert {pod.owner_kind for pod in pods} == {"StrimziPodSet"}
    assert not model.kafka_up

    waited = await client.wait_for_no_pods(
        strimzi.namespace, selector=brokers, timeout_s=5, poll_interval_s=0.05
    )

    assert waited >= BROKER_SHUTDOWN_S * 0.8
    assert model.broker_pods() == []
    # Paused: Strimzi does not bring the brokers back.
    with pytest.raises(KubernetesNotFoundError):
        await client.get_pod_set(strimzi.namespace, strimzi.broker_pod_set)
    assert cluster.records() == [
        (
            "PATCH",
            f"kafka.strimzi.io/v1beta2/namespaces/sasquatch/kafkas/{strimzi.kafka}",
            {"annotations": {"strimzi.io/pause-reconciliation": "true"}},
        ),
        (
            "DELETE",
            f"core.strimzi.io/v1beta2/namespaces/sasquatch/strimzipodsets/{strimzi.broker_pod_set}",
            {"deleted": [strimzi.broker_pod_set]},
        ),
    ]

    # Recovery: unpaused, Strimzi recreates the pod set and its brokers.
    resumed = await client.pause_kafka_reconciliation(
        strimzi.namespace, strimzi.kafka, paused=False
    )
    assert not resumed.reconciliation_paused
    assert len(await client.list_pods(strimzi.namespace, selector=brokers)) == 3
    assert (await client.get_kafka(strimzi.namespace, strimzi.kafka)).ready


async def test_annotation_removed_with_none(client: KubernetesClient, cluster: Cluster) -> None:
    strimzi = cluster.config.strimzi
    await client.annotate_kafka(strimzi.namespace, strimzi.kafka, {"example.org/note": "x"})

    kafka = await client.annotate_kafka(
        strimzi.namespace, strimzi.kafka, {"example.org/note": None}
    )

    assert "example.org/note" not in kafka.annotations
    assert cluster.records()[-1][2] == {"annotations": {"example.org/note": None}}


async def test_wait_for_no_pods_times_out(client: KubernetesClient, cluster: Cluster) -> None:
    with pytest.raises(KubernetesTimeoutError, match="still there") as caught:
        await client.wait_for_no_pods(
            "sasquatch", selector="strimzi.io/role=broker", timeout_s=0.1, poll_interval_s=0.05
        )
    assert "sasquatch-kafka-local-storage-0" in str(caught.value)


# --- Refusing the wrong cluster -----------------------------------------------------------------


async def test_refuses_another_cluster_before_any_request(
    cluster: Cluster, summit: SiteConfig
) -> None:
    # The site file names the Summit's API server; this kubeconfig points at the simulation.
    with pytest.raises(WrongClusterError) as caught:
        await KubernetesClient.from_site(summit.kubernetes, kubeconfig=cluster.kubeconfig)

    assert caught.value.expected_server == "https://summit-lsp.lsst.codes:6443"
    assert caught.value.server == cluster.url
    assert "refusing" in str(caught.value)
    assert cluster.state.requests == []
    assert len(cluster.write_log) == 0


async def test_accepts_the_same_server_spelt_differently(cluster: Cluster) -> None:
    async with await KubernetesClient.from_kubeconfig(
        cluster.kubeconfig, context="summit", expected_server=cluster.url.upper() + "/"
    ) as client:
        assert await client.namespace_exists("obssys")
    assert normalise_server("https://Summit-LSP.lsst.codes:443/") == normalise_server(
        "https://summit-lsp.lsst.codes"
    )
    assert normalise_server("https://x:6443") != normalise_server("https://x:6444")


async def test_refuses_an_unknown_context(cluster: Cluster) -> None:
    with pytest.raises(UnknownContextError, match=r"'tts'.*summit"):
        await KubernetesClient.from_kubeconfig(
            cluster.kubeconfig, context="tts", expected_server=cluster.url
        )
    assert cluster.state.requests == []


# --- Faults -------------------------------------------------------------------------------------


async def test_wrong_token_is_a_clear_error(cluster: Cluster, tmp_path: Path) -> None:
    wrong = "wrong-token-77aa"
    path = write_kubeconfig(tmp_path / "wrong", cluster.url, "summit", wrong)

    async with await KubernetesClient.from_kubeconfig(
        path, context="summit", expected_server=cluster.url, retry_delay_s=0.01
    ) as client:
        with pytest.raises(KubernetesUnauthorizedError) as caught:
            await client.list_jobs("obssys")

    assert caught.value.status == 401
    assert "expired" in str(caught.value)
    assert wrong not in str(caught.value)
    assert wrong not in repr(client)
    assert len(cluster.state.requests) == 1  # a 401 is not retried


async def test_expired_token_mid_run(client: KubernetesClient, cluster: Cluster) -> None:
    cluster.state.token = "rotated-token"

    with pytest.raises(KubernetesUnauthorizedError) as caught:
        await client.delete_jobs("obssys")

    assert TOKEN not in str(caught.value)
    assert cluster.records() == []
    assert len(cluster.model.jobs) > 0


async def test_5xx_is_retried_then_succeeds(client: KubernetesClient, cluster: Cluster) -> None:
    cluster.state.fail_next(2, 503)

    result = await client.delete_jobs("calsys")

    assert len(result.deleted) == 14
    methods = [method for method, _ in cluster.state.requests]
    # Namespace check failed twice, then succeeded; then one delete-collection.
    assert methods == ["GET", "GET", "GET", "DELETE"]


async def test_persistent_5xx_gives_up(client: KubernetesClient, cluster: Cluster) -> None:
    cluster.state.fail_next(10, 500)

    with pytest.raises(KubernetesWebError) as caught:
        await client.list_jobs("obssys")

    assert caught.value.status == 500
    assert caught.value.reason == "InternalError"
    assert len(cluster.state.requests) == 4  # one try and three retries


async def test_conflict_is_not_retried(client: KubernetesClient, cluster: Cluster) -> None:
    telegraf = cluster.config.telegraf
    name = telegraf.deployments[0]
    cluster.state.conflict_next_writes(1)

    with pytest.raises(KubernetesConflictError) as caught:
        await client.scale_deployment(telegraf.namespace, name, 0)

    assert caught.value.status == 409
    assert "modified" in caught.value.detail
    assert cluster.model.deployments[(telegraf.namespace, name)].replicas == 1
    assert [method for method, _ in cluster.state.requests] == ["GET", "PATCH"]


async def test_unreachable_server(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    path = write_kubeconfig(tmp_path / "kubeconfig", url, "summit", TOKEN)

    async with await KubernetesClient.from_kubeconfig(
        path, context="summit", expected_server=url, retries=2, retry_delay_s=0.01
    ) as client:
        with pytest.raises(KubernetesUnavailableError, match="after 3 attempts"):
            await client.list_pods("sasquatch")


# --- The simulated server's own fidelity --------------------------------------------------------


async def test_server_speaks_like_kube_apiserver(cluster: Cluster) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    kafka = "/apis/kafka.strimzi.io/v1beta2/namespaces/sasquatch/kafkas/sasquatch"
    async with httpx.AsyncClient(base_url=cluster.url, headers=headers) as http:
        missing = await http.get("/apis/batch/v1/namespaces/obssys/jobs/nope")
        assert missing.status_code == 404
        assert missing.json()["kind"] == "Status"
        assert missing.json()["reason"] == "NotFound"
        assert missing.json()["message"] == 'jobs.batch "nope" not found'

        # Listing in a namespace that does not exist is an empty list, as on a real server.
        empty = await http.get("/apis/batch/v1/namespaces/nowhere/jobs")
        assert empty.status_code == 200
        assert empty.json()["items"] == []

        # Custom resources take no strategic merge patch.
        strategic = await http.patch(
            kafka,
            content=b'{"metadata": {"annotations": {"a": "b"}}}',
            headers={"Content-Type": "application/strategic-merge-patch+json"},
        )
        assert strategic.status_code == 415
        json_patch = await http.patch(
            kafka,
            json=[{"op": "add", "path": "/metadata/annotations/a~1b", "value": "c"}],
            headers={"Content-Type": "application/json-patch+json"},
        )
        assert json_patch.status_code == 200
        assert json_patch.json()["metadata"]["annotations"] == {"a/b": "c"}

        policy = await http.delete(
            "/apis/batch/v1/namespaces/obssys/jobs", params={"propagationPolicy": "Sideways"}
        )
        assert policy.status_code == 400

        # kubectl sends the policy in a DeleteOptions body rather than the query.
        kubectl = await http.request(
            "DELETE",
            "/apis/batch/v1/namespaces/auxtel/jobs",
            params={"labelSelector": "csc-class=atdome"},
            json={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
        )
        assert kubectl.status_code == 200
        assert kubectl.json()["kind"] == "JobList"
        assert [item["metadata"]["name"] for item in kubectl.json()["items"]] == ["atdome-job"]
        assert cluster.records()[-1] == (
            "DELETE",
            "batch/v1/namespaces/auxtel/jobs?labelSelector=csc-class=atdome",
            {"deleted": ["atdome-job"], "propagationPolicy": "Background"},
        )

        unauthenticated = await http.get("/api/v1/namespaces", headers={"Authorization": ""})
        assert unauthenticated.status_code == 401
        assert unauthenticated.json()["reason"] == "Unauthorized"
