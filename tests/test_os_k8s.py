"""The OS/K8s upgrade flows against simulated sites: shutdown then recovery leaves the site as it
was, Kafka goes down brokers first, and the Summit's sign-offs are where the procedure puts them.

The sites are trimmed to a handful of CSCs (the flows treat every CSC alike): what is tested is
the order of the Kafka shutdown and the restoring of what it changed, not the fleet's size.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from blocks.site import CscName, SiteConfig, State
from sim.model import KubeObject, PodSet
from sim.site import SimulatedSite, load_base_site
from sim.writelog import WriteRecord
from tests.sitekit import FAST, operator_for, run_with_operator, save_site

flow_test = pytest.mark.usefixtures("prefect_server")

IT_CHANNEL = "#rubinobs-it-sim"
PAUSE = "strimzi.io/pause-reconciliation"

TTS_CSCS = {
    "Watcher:0",
    "ScriptQueue:1",
    "ScriptQueue:2",
    "ScriptQueue:3",
    "ATDome:0",
    "ATCamera:0",  # bare metal: the camera team brings it back
    "DSM:1",  # expected ENABLED
    "ESS:104",
    "MTM2:0",
    "MTVMS:1",
    "Test:42",
}
SUMMIT_CSCS = {
    "Watcher:0",
    "ScriptQueue:1",
    "ScriptQueue:2",
    "ScriptQueue:3",
    "MTM1M3:0",
    "MTM1M3TS:0",
    "MTM2:0",
    "MTVMS:1",
    "ATDome:0",
}


def trimmed(site: str, keep: set[str], **timeouts: float) -> SiteConfig:
    """The bundled site with only ``keep`` in its inventory, only the telescope apps that run
    them (and LOVE and control-system-test), six telegraf connectors, and an IT channel."""
    data: dict[str, Any] = load_base_site(site).model_dump(mode="json")
    data["cscs"] = [c for c in data["cscs"] if f"{c['name']['name']}:{c['name']['index']}" in keep]
    assert len(data["cscs"]) == len(keep)
    argocd = data["argocd"]
    apps = {c["kubernetes"]["namespace"] for c in data["cscs"] if c["kubernetes"]}
    apps |= {"love", "control-system-test", argocd["queue_app"]}
    argocd["telescope_apps"] = [a for a in argocd["telescope_apps"] if a in apps]
    argocd["sync_order"] = [a for a in argocd["sync_order"] if a in apps]
    data["telegraf"]["deployments"] = data["telegraf"]["deployments"][:6]
    data["slack"]["it_channel"] = IT_CHANNEL
    data["timeouts"] = {**data["timeouts"], **timeouts}
    return SiteConfig.model_validate(data)


@pytest.fixture
async def tts(tmp_path: Path) -> AsyncIterator[SimulatedSite]:
    # Budgets small enough that a consumer or CSC that never comes back fails the test quickly.
    base = trimmed("tts", TTS_CSCS, bring_up_s=60, lag_drain_s=30)
    async with SimulatedSite(base, workdir=tmp_path, options=FAST) as site:
        yield site


def snapshot(site: SimulatedSite) -> dict[str, Any]:
    """What an operator would check the site against: CSC states, Deployments' replicas,
    the Kafka resource's annotations, the Jobs and the Kafka pods."""
    model, fleet = site.model, site.fleet
    assert fleet is not None
    strimzi = site.base.strimzi
    return {
        "states": {str(e.name): fleet.state_of(e.name) for e in site.base.cscs},
        "running": sorted(map(str, fleet.running)),
        "replicas": {
            f"{d.namespace}/{d.name}": d.replicas
            for d in model.deployments.values()
            if d.namespace == strimzi.namespace
        },
        "annotations": dict(model.kafka_resources[(strimzi.namespace, strimzi.kafka)].annotations),
        "jobs": sorted(f"{ns}/{name} {job.image}" for (ns, name), job in model.jobs.items()),
        "kafka pods": sorted(
            f"{pod.name} ready={pod.ready}"
            for pod in model.pods.values()
            if pod.owner_kind == "StrimziPodSet"
        ),
        "kafka up": model.kafka_up,
    }


def pod_set_deletes(records: list[WriteRecord]) -> list[WriteRecord]:
    return [
        r
        for r in records
        if r.service == "kubernetes" and r.method == "DELETE" and "/strimzipodsets/" in r.target
    ]


@flow_test
@pytest.mark.slow
async def test_shutdown_then_recovery_leaves_the_site_as_it_was(tts: SimulatedSite) -> None:
    from flows.os_k8s import os_k8s_recovery, os_k8s_shutdown

    name = f"sim-{uuid.uuid4().hex[:6]}"
    await save_site(tts, name)
    before = snapshot(tts)
    assert before["kafka up"]
    assert PAUSE not in before["annotations"]
    strimzi = tts.base.strimzi

    # Watch Strimzi's pods as the model changes them: when each pod set is deleted, and how
    # many broker pods exist at that moment.
    events: list[tuple[float, str, str, int]] = []

    def watch(event: str, obj: KubeObject | Any) -> None:
        if isinstance(obj, PodSet):
            events.append((time.time(), event, obj.role, len(tts.model.broker_pods())))

    tts.model.add_listener(watch)

    operator = operator_for(tts, name, name)
    down = await run_with_operator(
        operator, lambda: os_k8s_shutdown(site=name, upgrade_id="os-2025-06")
    )
    assert down["message"] == "Control system and Kafka down; IT told they can upgrade.", down
    outcomes = {step["step"]: step["outcome"] for step in down["steps"]}
    assert outcomes["lag-drained"] == outcomes["controllers-down"] == "done", outcomes

    # Kafka went down as the Sasquatch runbook says, in this order.
    records = tts.write_log.records
    kube = [r for r in records if r.service == "kubernetes" and r.method in ("PATCH", "DELETE")]
    registry_down = next(
        i for i, r in enumerate(kube) if strimzi.schema_registry_deployment in r.target
    )
    telegraf_down = [i for i, r in enumerate(kube) if "sasquatch-telegraf-" in r.target]
    pause = next(i for i, r in enumerate(kube) if "/kafkas/" in r.target)
    assert kube[pause].body == {"annotations": {PAUSE: "true"}}
    deletes = [kube.index(r) for r in pod_set_deletes(records)]
    assert registry_down < min(telegraf_down) < max(telegraf_down) < pause < deletes[0]
    assert [r.target.rsplit("/", 1)[1] for r in pod_set_deletes(records)] == [
        strimzi.broker_pod_set,
        strimzi.controller_pod_set,
    ]
    # No controller pod set was deleted while a broker pod remained: at the model's own
    # moment of deletion, and by the clock against the brokers' termination.
    deleted = [
        (t, role, brokers) for t, event, role, brokers in events if event == "pod-set-deleted"
    ]
    assert [role for _, role, _ in deleted] == ["broker", "controller"]
    assert deleted[1][2] == 0
    brokers_gone = next(
        t for t, e, role, _ in events if e == "pod-set-terminated" and role == "broker"
    )
    controller_delete = pod_set_deletes(records)[1]
    assert controller_delete.time >= brokers_gone
    # The Jobs were cleaned up once the consumers had drained; the site is down.
    first_job_delete = next(
        i for i, r in enumerate(records) if r.method == "DELETE" and "/jobs" in r.target
    )
    assert first_job_delete < records.index(kube[registry_down])
    assert not tts.model.jobs
    assert tts.model.reconciliation_paused
    assert not tts.model.kafka_up
    assert tts.model.broker_pods() == []
    assert not tts.broker.running
    assert all(
        d.replicas == 0 for d in tts.model.deployments.values() if d.namespace == "sasquatch"
    )
    # IT was told, on their own channel.
    it = [m.text for m in tts.slack_messages if m.channel == IT_CHANNEL]
    assert any("control system is down" in text for text in it), it

    # Run again with the same id, as after a stop: nothing is repeated, and with Kafka down
    # nothing needs it (no CSC state is read).
    writes = len(tts.write_log)
    again = await run_with_operator(
        operator, lambda: os_k8s_shutdown(site=name, upgrade_id="os-2025-06")
    )
    assert again["message"] == down["message"], again
    assert [r for r in tts.write_log.records[writes:] if r.service != "slack"] == []

    recovered = await run_with_operator(
        operator, lambda: os_k8s_recovery(site=name, upgrade_id="os-2025-06")
    )
    assert recovered["message"] == "Recovered: every CSC is in its expected state.", recovered
    after = snapshot(tts)
    assert after == before

    records = tts.write_log.records
    # The annotation was put back as it was (absent), not set to "false".
    patches = [r.body for r in records if r.service == "kubernetes" and "/kafkas/" in r.target]
    assert patches[-1] == {"annotations": {PAUSE: None}}
    # Telescope apps in the site's order, nothing else synced.
    synced = [r.target for r in records if r.service == "argocd" and r.method == "sync"]
    assert synced == tts.base.argocd.sync_order
    texts = [m.text for m in tts.slack_messages]
    assert not [t for t in texts if ":warning:" in t], texts
    assert any(
        "back after the OS/K8s upgrade" in m.text
        for m in tts.slack_messages
        if m.channel == IT_CHANNEL
    )
    # No Summit gate at a test stand.
    assert [gate for gate, _ in operator.answered] == []


@flow_test
async def test_summit_sign_offs_in_the_dry_runs(tmp_path: Path) -> None:
    from flows.os_k8s import expected_after_recovery, os_k8s_recovery, os_k8s_shutdown

    base = trimmed("summit", SUMMIT_CSCS)
    async with SimulatedSite(base, workdir=tmp_path, options=FAST) as summit:
        name = f"sim-{uuid.uuid4().hex[:6]}"
        await save_site(summit, name)
        started = len(summit.write_log)
        down = await os_k8s_shutdown(site=name, upgrade_id="os-dry", dry_run=True)
        up = await os_k8s_recovery(site=name, upgrade_id="os-dry", dry_run=True)
        changes = [
            r
            for r in summit.write_log.records[started:]
            if r.service in ("kubernetes", "argocd", "schema-registry", "sal", "slack")
        ]
        assert changes == []
    assert isinstance(down, dict)
    assert isinstance(up, dict)

    plan: list[str] = down["plan"]
    assert plan[0] == "Sign-off: M2 switched to closed-loop control from its EUI"
    # MTM1M3 and MTM1M3TS start STANDBY here: the operator is asked to set them.
    assert plan[1] == "Sign-off: MTM1M3TS ENABLED and MTM1M3 DISABLED"
    shutdown = next(i for i, p in enumerate(plan) if "system_wide_shutdown.py" in p)
    assert "'ignore': ['MTM1M3', 'MTM1M3TS']" in plan[shutdown]
    assert not any("ESS controller" in p for p in plan)
    broker = next(i for i, p in enumerate(plan) if p.startswith("Delete the broker"))
    controller = next(i for i, p in enumerate(plan) if p.startswith("Delete the controller"))
    assert broker < controller
    assert plan[-1].startswith("Slack (it): ")

    plan = up["plan"]
    order = [
        next(i for i, p in enumerate(plan) if p.startswith(prefix))
        for prefix in (
            "Annotate the Kafka resource",
            "Scale the schema registry",
            "Sync control-system-test",
            "Sign-off: cRIOs started: MTM1M3, MTVMS:1, MTVMS:2, MTVMS:3 and MTM1M3TS",
            "Sign-off: CSCs on azar03.cp.lsst.org restarted",
            "Send MTM2 ENABLED",
            "Slack (it): ",
            "Sign-off: Hexrot VM rebooted",
            "Wait up to",
            "Scale the telegraf connectors back to 1",
        )
    ]
    assert order == sorted(order), plan
    # No shutdown recorded for this id: the runbook's value, "false".
    assert '"false"' in plan[order[0]]
    # M2's CSC is waited for ENABLED, as it was left for the Hexrot VM's reboot.
    assert State.ENABLED is next(
        e.expected_state for e in expected_after_recovery(base) if e.name == CscName(name="MTM2")
    )


def test_summit_site_must_keep_m1m3_running() -> None:
    from flows.os_k8s import check_kept_cscs

    summit = trimmed("summit", SUMMIT_CSCS)
    check_kept_cscs(summit)
    data = summit.model_dump(mode="json")
    data["shutdown"]["ignore"] = ["MTM1M3"]
    with pytest.raises(ValueError, match=r"shutdown.ignore must name MTM1M3TS"):
        check_kept_cscs(SiteConfig.model_validate(data))
