"""``os-k8s-shutdown`` and ``os-k8s-recovery``: the procedure's "Providing support during an
OS/K8s upgrade".

IT upgrades the operating systems and Kubernetes; the control system must be brought down
before and back after. Run ``prefect deployment run os-k8s-shutdown/<site>`` before IT starts
and ``os-k8s-recovery/<site>`` with the same upgrade id once IT is done.

The shutdown brings the CSCs down as a full upgrade does (at the Summit M2 in closed loop first,
MTM1M3TS and MTM1M3 left running), deletes the stopped Jobs once telegraf and the LOVE producers
have read what was in the topics, then shuts Kafka down gracefully as the Sasquatch runbook says
(rubin-systems.md §6): schema registry to 0, telegraf to 0, Strimzi reconciliation paused, the
broker pod set deleted and every broker pod gone *before* the controller pod set is deleted. IT
is then told on Slack that the system is down.

The recovery puts back exactly what the shutdown recorded under the upgrade id (the
reconciliation annotation, the registry's and telegraf's replicas), waits for the brokers and
controllers, syncs the telescope apps in the site's order, takes the Summit's sign-offs (cRIOs,
the CSCs on azar03, M2's CSC ENABLED before the Hexrot VM is rebooted) and waits for every CSC.
Nothing reads SAL while Kafka is down: CSC states are read only once Kafka answers again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import anyio
from prefect import flow, task
from prefect.client.schemas.objects import State as PrefectState
from prefect.states import Cancelled

from blocks.memory import UpgradeMemory
from blocks.site import CscEntry, CscName, SiteConfig, State
from clients.kubernetes import (
    KafkaInfo,
    KubernetesError,
    KubernetesNotFoundError,
    PodInfo,
    PodSetInfo,
    ScaleChange,
)
from clients.lag import ConsumerLagError
from clients.registry import SchemaRegistryError
from clients.sal import StateWaitTimeout, alive
from clients.slack import Audience
from flows.common import upgrade_run
from flows.journal import StepHandle
from flows.minimal_testing import planned_steps, run_minimal_testing
from flows.preflight import preflight
from flows.run import RunMemory, UpgradeRun, artifact_key, current_run
from flows.sections import (
    record_states,
    shut_down_control_system,
    sync_app,
    telegraf_back,
    telegraf_to_zero,
    wait_for_bring_up,
    wait_for_lag_drained,
)
from flows.signoff import UpgradeAborted
from flows.tagging import section
from flows.tasks import (
    TRANSIENT,
    csc_statuses,
    is_transient,
    k8s_cleanup_all,
    set_csc_state,
)

__all__ = ["os_k8s_recovery", "os_k8s_shutdown"]

SHUTDOWN_FLOW = "os-k8s-shutdown"
RECOVERY_FLOW = "os-k8s-recovery"

PAUSE_ANNOTATION = "strimzi.io/pause-reconciliation"
# Strimzi gives a broker 180 s to shut down (rubin-systems.md §6); a pod still there after
# twice that is stuck, and the controllers must not go before it.
POD_SET_SHUTDOWN_S = 360.0

# The shutdown's first change to Kafka: once done, a re-run resumes at Kafka's shutdown.
KAFKA_GOING_DOWN = "registry-to-0"

# What the shutdown records (in its run memory) and the recovery puts back.
FACT_TELEGRAF = "telegraf replicas before"  # the name `sections.telegraf_back` reads
FACT_REGISTRY = "schema registry replicas before"
FACT_ANNOTATION = f"Kafka {PAUSE_ANNOTATION} before"
FACT_BROKER_PODS = "broker pods"
FACT_CONTROLLER_PODS = "controller pods"
# What the recovery restores, as it decided from the shutdown's record.
FACT_RESTORE_REGISTRY = "schema registry replicas to restore"
FACT_RESTORE_ANNOTATION = f"Kafka {PAUSE_ANNOTATION} to restore"

M1M3 = CscName(name="MTM1M3")
M1M3TS = CscName(name="MTM1M3TS")
M2 = CscName(name="MTM2")
# The procedure: MTM1M3TS stays ENABLED and MTM1M3 DISABLED through an OS/K8s upgrade.
KEPT_STATES = {M1M3TS: State.ENABLED, M1M3: State.DISABLED}
CRIOS = "MTM1M3, MTVMS:1, MTVMS:2, MTVMS:3 and MTM1M3TS"
AZAR03 = "azar03.cp.lsst.org"

# Steps each flow records, for the progress bar (the Summit's sign-offs included).
_SHUTDOWN_STEPS = 17
_RECOVERY_STEPS = 26


# --- flows ---------------------------------------------------------------------------------------


@flow(name=SHUTDOWN_FLOW, log_prints=True)
async def os_k8s_shutdown(
    site: str, upgrade_id: str, *, dry_run: bool = False
) -> dict[str, Any] | PrefectState[Any]:
    """Bring the control system and Kafka down gracefully before IT's OS/K8s upgrade.

    Parameters
    ----------
    site
        The name of the site's `Rubin Upgrade Site` block (summit, tts, bts, sim).
    upgrade_id
        The OS/K8s upgrade this run supports (e.g. ``os-2025-06``); re-running with the same id
        resumes, and ``os-k8s-recovery`` with the same id puts back what this run changed.
    dry_run
        Read everything, change nothing, and produce the plan.
    """
    try:
        async with upgrade_run(
            SHUTDOWN_FLOW, site, upgrade_id, dry_run=dry_run, planned_steps=_SHUTDOWN_STEPS
        ) as run:
            await _os_k8s_shutdown(run)
    except UpgradeAborted as exc:
        return Cancelled(name="Aborted", message=str(exc))
    return run.summary()


@flow(name=RECOVERY_FLOW, log_prints=True)
async def os_k8s_recovery(
    site: str, upgrade_id: str, *, minimal_testing: bool = False, dry_run: bool = False
) -> dict[str, Any] | PrefectState[Any]:
    """Bring Kafka and the control system back after IT's OS/K8s upgrade.

    Parameters
    ----------
    site
        The name of the site's `Rubin Upgrade Site` block (summit, tts, bts, sim).
    upgrade_id
        The id ``os-k8s-shutdown`` ran with: what it recorded is put back exactly. Without such
        a record (IT shut the system down themselves) the runbook's values are used: the
        reconciliation annotation "false", the site file's registry replicas, telegraf at 1.
    minimal_testing
        Test that both telescopes track and take images afterwards (required at test stands).
    dry_run
        Read everything, change nothing, and produce the plan.
    """
    try:
        async with upgrade_run(
            RECOVERY_FLOW, site, upgrade_id, dry_run=dry_run, planned_steps=_RECOVERY_STEPS
        ) as run:
            await _os_k8s_recovery(run, minimal_testing=minimal_testing)
    except UpgradeAborted as exc:
        return Cancelled(name="Aborted", message=str(exc))
    return run.summary()


async def _os_k8s_shutdown(run: UpgradeRun) -> None:
    try:
        await prepare_shutdown()
        if run.already_done(KAFKA_GOING_DOWN):
            # A re-run after Kafka began going down: everything before was done, and reading
            # the CSCs' states now would need the Kafka that is going away.
            async with run.step("shut down", "resumed", "CSCs down, Jobs cleaned up") as step:
                step.skip("done by an earlier run of this upgrade id; Kafka's shutdown resumes")
        else:
            await shut_down_control_system(reason=f"{run.upgrade_id} OS/K8s upgrade")
            await clean_up_before_kafka()
        await shut_down_kafka()
        async with run.step("tell IT", "it-told", "IT told the system is down"):
            await run.notify(
                f"{run.site.title}: the control system is down and Kafka was shut down "
                "gracefully (brokers first, then controllers; Strimzi reconciliation paused). "
                f"The OS/K8s upgrade can go ahead. Afterwards: os-k8s-recovery, upgrade id "
                f"{run.upgrade_id}.",
                audience=Audience.IT,
            )
    except BaseException:
        if not run.dry_run and run.memory.actions:
            run.journal.left_to_restore.append(
                "To bring the control system back instead of finishing the shutdown, run "
                f"os-k8s-recovery with upgrade_id {run.upgrade_id!r}: it puts back what this "
                "run recorded (reconciliation, registry and telegraf replicas)."
            )
        raise
    run.journal.final_message = (
        "Plan complete: nothing was changed."
        if run.dry_run
        else "Control system and Kafka down; IT told they can upgrade."
    )


async def _os_k8s_recovery(run: UpgradeRun, *, minimal_testing: bool) -> None:
    await prepare_recovery()
    await bring_kafka_back()
    await bring_control_system_back()
    if minimal_testing:
        # After an OS/K8s upgrade *both* telescopes must track and take images (procedure,
        # "Minimal Testing"): None tests every telescope the site tests.
        run.journal.planned_steps += planned_steps(run.site)
        await run_minimal_testing(run, None)
    short = run.journal.facts.get("CSCs short of their expected state")
    async with run.step("tell people", "recovered-told", "Site and IT told the system is back"):
        text = f"{run.site.title}: the control system is back after the OS/K8s upgrade" + (
            f"; {len(short)} CSC(s) short of their state: {', '.join(short)}." if short else "."
        )
        await run.notify(text)
        await run.notify(text, audience=Audience.IT)
    if run.dry_run:
        run.journal.final_message = "Plan complete: nothing was changed."
    elif short:
        run.journal.final_message = f"Recovered; {len(short)} CSC(s) short of their state."
    else:
        run.journal.final_message = "Recovered: every CSC is in its expected state."


# --- tasks ---------------------------------------------------------------------------------------


@task(name="read Kafka resource", **TRANSIENT)
async def read_kafka() -> KafkaInfo:
    strimzi = current_run().site.strimzi
    return await current_run().services.kubernetes.get_kafka(strimzi.namespace, strimzi.kafka)


@task(name="annotate Kafka resource", task_run_name="annotate Kafka {annotations}", **TRANSIENT)
async def annotate_kafka(annotations: dict[str, str | None]) -> KafkaInfo:
    strimzi = current_run().site.strimzi
    return await current_run().services.kubernetes.annotate_kafka(
        strimzi.namespace, strimzi.kafka, annotations
    )


@task(name="read pod set", task_run_name="read pod set {name}", **TRANSIENT)
async def read_pod_set(name: str) -> PodSetInfo | None:
    """The StrimziPodSet, or None when it does not exist."""
    namespace = current_run().site.strimzi.namespace
    try:
        return await current_run().services.kubernetes.get_pod_set(namespace, name)
    except KubernetesNotFoundError:
        return None


# Not retried: a deletion is done once, and a re-run with the same upgrade id skips it.
@task(name="delete pod set", task_run_name="delete pod set {name}")
async def delete_pod_set(name: str) -> PodSetInfo:
    namespace = current_run().site.strimzi.namespace
    return await current_run().services.kubernetes.delete_pod_set(namespace, name)


@task(name="scale deployment", task_run_name="scale {namespace}/{name} to {replicas}", **TRANSIENT)
async def scale_deployment(namespace: str, name: str, replicas: int) -> ScaleChange:
    return await current_run().services.kubernetes.scale_deployment(namespace, name, replicas)


async def _strimzi_pods(run: UpgradeRun, pod_set: str, names: Iterable[str]) -> list[PodInfo]:
    """The pods of ``pod_set`` that still exist (terminating ones included): those its record
    named, and any the API says it owns."""
    strimzi = run.site.strimzi
    wanted = set(names)
    pods = await run.services.kubernetes.list_pods(
        strimzi.namespace, selector=f"strimzi.io/cluster={strimzi.kafka}"
    )
    return [
        pod
        for pod in pods
        if pod.name in wanted or (pod.owner_kind == "StrimziPodSet" and pod.owner_name == pod_set)
    ]


# --- os-k8s-shutdown -----------------------------------------------------------------------------


def annotation_shown(value: str | None) -> str:
    """An annotation's value as the report shows it (None: the annotation is absent)."""
    return f'"{value}"' if value is not None else "absent"


def check_kept_cscs(site: SiteConfig) -> None:
    """At the Summit the shutdown must leave MTM1M3 and MTM1M3TS running.

    Raises
    ------
    ValueError
        The site file's ``shutdown.ignore`` does not name both (checked before any change).
    """
    if not site.is_summit:
        return
    present = {entry.name for entry in site.cscs}
    needed = sorted(csc.name for csc in KEPT_STATES if csc in present)
    missing = [name for name in needed if name not in site.shutdown.ignore]
    if missing:
        raise ValueError(
            f"site {site.name}: shutdown.ignore must name {', '.join(missing)}: MTM1M3TS stays "
            "ENABLED and MTM1M3 DISABLED through an OS/K8s upgrade (it names "
            f"{site.shutdown.ignore or 'nothing'})"
        )


@section("prepare the OS-K8s shutdown")
async def prepare_shutdown() -> None:
    """Services answer, the site's Strimzi names exist, what Kafka's shutdown will change is
    recorded for the recovery; at the Summit, M2 in closed loop and M1M3's states."""
    run = current_run()
    section = "prepare"
    check_kept_cscs(run.site)
    resumed = bool(run.memory.actions)
    async with run.step(section, "preflight", "Services answer; right cluster") as step:
        if resumed:
            # The CSCs (the ScriptQueues too), perhaps Kafka and the registry are down by now.
            await preflight(run, need_queues=False, only=("Kubernetes", "Argo CD"))
            step.note("resumed: Kubernetes and Argo CD answer")
        else:
            await preflight(run, stops_consumers=True)
            step.note("all services answer")
    async with run.step(section, "kafka-record", "Kafka as it is, recorded for the recovery") as s:
        await _record_kafka(run, s)
    if run.site.is_summit:
        async with run.step(section, "m2-closed-loop", "M2 in closed loop"):
            await run.gate(
                "m2-closed-loop",
                "M2 switched to closed-loop control from its EUI",
                "Ask in #summit-simonyitel or #summit-control-room for M2 to be switched to "
                "closed-loop control from the EUI. **Next:** the Watcher goes OFFLINE and "
                "`system_wide_shutdown.py` runs, leaving MTM1M3 and MTM1M3TS running.",
            )
        async with run.step(section, "m1m3-kept", "MTM1M3TS ENABLED, MTM1M3 DISABLED") as step:
            if resumed:
                step.skip("checked before this upgrade id's first change")
            else:
                await _check_m1m3(run, step)


async def _record_kafka(run: UpgradeRun, step: StepHandle) -> None:
    """Read the Kafka resource, the registry and the pod sets; fail before any change if the
    site file names something that is not there."""
    strimzi = run.site.strimzi
    try:
        kafka = await read_kafka()
    except KubernetesNotFoundError:
        raise ValueError(
            f"no Kafka resource {strimzi.namespace}/{strimzi.kafka}: check the site file's "
            "strimzi.namespace and strimzi.kafka"
        ) from None
    annotation = await run.remember_fact(FACT_ANNOTATION, kafka.annotations.get(PAUSE_ANNOTATION))
    run.journal.facts[FACT_ANNOTATION] = annotation_shown(annotation)
    deployments = await run.services.kubernetes.list_deployments(strimzi.namespace)
    registry = next((d for d in deployments if d.name == strimzi.schema_registry_deployment), None)
    if registry is None:
        raise ValueError(
            f"no Deployment {strimzi.namespace}/{strimzi.schema_registry_deployment}: check the "
            "site file's strimzi.schema_registry_deployment"
        )
    replicas = await run.remember_fact(FACT_REGISTRY, registry.replicas)
    for name, fact, action in (
        (strimzi.broker_pod_set, FACT_BROKER_PODS, "delete-broker-pod-set"),
        (strimzi.controller_pod_set, FACT_CONTROLLER_PODS, "delete-controller-pod-set"),
    ):
        pod_set = await read_pod_set(name)
        if pod_set is not None:
            await run.remember_fact(fact, pod_set.pods)
        elif not run.already_done(action):
            raise ValueError(
                f"no StrimziPodSet {strimzi.namespace}/{name}: check the site file's strimzi "
                "pod set names (the brokers' is sasquatch-kafka-local-storage at the Summit and "
                "BTS, sasquatch-kafka at TTS)"
            )
    step.note(
        f"{PAUSE_ANNOTATION}: {annotation_shown(annotation)}; "
        f"registry {replicas} replica(s); brokers "
        + ", ".join(run.memory.facts.get(FACT_BROKER_PODS, []))
    )


async def _check_m1m3(run: UpgradeRun, step: StepHandle) -> None:
    present = {entry.name for entry in run.site.cscs}
    kept = {csc: state for csc, state in KEPT_STATES.items() if csc in present}
    if not kept:
        step.skip("the site has neither MTM1M3 nor MTM1M3TS")
        return
    statuses = await csc_statuses(list(kept), run.site.timeouts.heartbeat_window_s)
    found = {csc: _state_name(statuses[csc].state) for csc in kept}
    step.note(", ".join(f"{csc} {state}" for csc, state in found.items()))
    wrong = {csc: found[csc] for csc, state in kept.items() if statuses[csc].state is not state}
    if not wrong:
        return
    await run.gate(
        "m1m3-states",
        "MTM1M3TS ENABLED and MTM1M3 DISABLED",
        "Through an OS/K8s upgrade MTM1M3TS stays ENABLED and MTM1M3 DISABLED; the shutdown "
        "leaves both running. Now: "
        + ", ".join(f"{csc} is {state}" for csc, state in wrong.items())
        + ". Put them in those states (ask the M1M3 experts), then proceed.",
    )


def _state_name(state: State | None) -> str:
    return state.name if state is not None else "never reported"


@section("clean up before Kafka goes down")
async def clean_up_before_kafka() -> None:
    """The consumers drained, then the stopped CSC Jobs deleted (cleanup_all)."""
    run = current_run()
    site = run.site
    section = "clean up"
    async with run.step(section, "lag-drained", "telegraf and LOVE producers drained") as step:
        await wait_for_lag_drained(run, step, "lag before Kafka goes down")
    async with run.step(section, "cleanup-all", "Stopped CSC Jobs deleted (cleanup_all)") as step:
        report = await run.act(
            "cleanup-all",
            "Delete the CSC Jobs as cleanup_all does: "
            + ", ".join(site.cleanup.job_namespaces)
            + f"; OCPS jobs in {site.cleanup.uws_namespace}; LOVE's deployments, jobs and HPAs",
            k8s_cleanup_all,
        )
        if report is not None:
            step.note(f"{report.jobs_deleted} jobs deleted")


@section("shut Kafka down gracefully")
async def shut_down_kafka() -> None:
    """The Sasquatch runbook: registry and telegraf to 0, reconciliation paused, brokers gone,
    then the controllers."""
    run = current_run()
    strimzi = run.site.strimzi
    section = "Kafka shutdown"
    registry = f"{strimzi.namespace}/{strimzi.schema_registry_deployment}"
    async with run.step(section, "registry-down", "Schema registry scaled to 0") as step:
        change = await run.act(
            KAFKA_GOING_DOWN,
            f"Scale the schema registry {registry} to 0",
            lambda: scale_deployment(strimzi.namespace, strimzi.schema_registry_deployment, 0),
        )
        if change is not None:
            step.note(f"{change.before} -> {change.after}")
    async with run.step(section, "telegraf-down", "telegraf scaled to 0") as step:
        # A stopped shutdown is resumed, or undone by the recovery: not put back here.
        await telegraf_to_zero(run, step, restore_on_failure=False)
    kafka = f"{strimzi.namespace}/{strimzi.kafka}"
    async with run.step(section, "pause-reconciliation", "Strimzi reconciliation paused") as step:
        await run.act(
            "pause-reconciliation",
            f'Annotate the Kafka resource {kafka} {PAUSE_ANNOTATION}="true"',
            lambda: annotate_kafka({PAUSE_ANNOTATION: "true"}),
        )
        await _confirm_paused(run, step)
    async with run.step(section, "brokers-down", "Broker pods gone") as step:
        await run.act(
            "delete-broker-pod-set",
            f"Delete the broker StrimziPodSet {strimzi.namespace}/{strimzi.broker_pod_set}",
            lambda: delete_pod_set(strimzi.broker_pod_set),
        )
        await _wait_for_pods_gone(run, step, strimzi.broker_pod_set, FACT_BROKER_PODS)
    async with run.step(section, "controllers-down", "Controller pods gone") as step:
        await run.act(
            "delete-controller-pod-set",
            f"Delete the controller StrimziPodSet {strimzi.namespace}/"
            f"{strimzi.controller_pod_set} (only once no broker pod is left)",
            lambda: _delete_controllers(run),
        )
        await _wait_for_pods_gone(run, step, strimzi.controller_pod_set, FACT_CONTROLLER_PODS)


async def _confirm_paused(run: UpgradeRun, step: StepHandle) -> None:
    if run.dry_run:
        return
    kafka = await read_kafka()
    if not kafka.reconciliation_paused:
        raise RuntimeError(
            f"Strimzi reconciliation of {kafka.namespace}/{kafka.name} is not paused "
            f"({PAUSE_ANNOTATION}={kafka.annotations.get(PAUSE_ANNOTATION)!r}): deleting the "
            "pod sets now would have them recreated at once. Nothing was deleted."
        )
    step.note(f'{PAUSE_ANNOTATION}="true"')


async def _wait_for_pods_gone(run: UpgradeRun, step: StepHandle, pod_set: str, fact: str) -> None:
    """Wait until every pod of ``pod_set`` is gone, terminating ones included."""
    if run.dry_run:
        run.journal.planned(f"Wait until every pod of {pod_set} is gone (not only terminating)")
        return
    names = run.memory.facts.get(fact, [])
    start = anyio.current_time()
    while True:
        try:
            left = [pod.name for pod in await _strimzi_pods(run, pod_set, names)]
        except KubernetesError as exc:
            if not is_transient(exc):
                raise
            left = [f"(unknown: the Kubernetes API did not answer: {exc})"]
        waited = anyio.current_time() - start
        if not left:
            step.note(f"{len(names)} pod(s) of {pod_set} gone after {waited:.1f} s")
            return
        if waited >= POD_SET_SHUTDOWN_S:
            raise RuntimeError(
                f"pods of {pod_set} still there after {POD_SET_SHUTDOWN_S:.0f} s: "
                + ", ".join(left)
                + ". Check their logs for a clean shutdown; run again with the same upgrade id "
                "once they are gone (nothing after this step was done)."
            )
        await asyncio.sleep(run.site.timeouts.poll_s)


async def _delete_controllers(run: UpgradeRun) -> PodSetInfo:
    """Delete the controller pod set — after checking, right before, that no broker is left.

    Raises
    ------
    RuntimeError
        A broker pod remains: the controllers must outlive every broker.
    """
    strimzi = run.site.strimzi
    brokers = await _strimzi_pods(
        run, strimzi.broker_pod_set, run.memory.facts.get(FACT_BROKER_PODS, [])
    )
    if brokers:
        raise RuntimeError(
            "broker pods remain ("
            + ", ".join(pod.name for pod in brokers)
            + "): the controller pod set is not deleted before every broker is gone"
        )
    return await delete_pod_set(strimzi.controller_pod_set)


# --- os-k8s-recovery -----------------------------------------------------------------------------


def memory_name(flow_name: str, site: str, upgrade_id: str) -> str:
    """The `UpgradeMemory` block a flow's run keeps for an upgrade id (as `UpgradeRun` names
    it): the recovery reads the shutdown's."""
    return artifact_key("rubin-upgrade", flow_name, site, upgrade_id)[:255]


async def shutdown_facts(site: str, upgrade_id: str) -> dict[str, Any] | None:
    """What ``os-k8s-shutdown`` recorded for ``upgrade_id`` at ``site``; None if it never ran."""
    try:
        stored: object = await UpgradeMemory.aload(memory_name(SHUTDOWN_FLOW, site, upgrade_id))
    except ValueError:
        return None
    if not isinstance(stored, UpgradeMemory):
        return None
    return RunMemory.model_validate(stored.value).facts


@section("prepare the OS-K8s recovery")
async def prepare_recovery() -> None:
    """Kubernetes and Argo CD answer (Kafka and the registry are down); what to put back."""
    run = current_run()
    section = "prepare"
    async with run.step(section, "preflight", "Kubernetes and Argo CD answer") as step:
        await preflight(run, need_queues=False, only=("Kubernetes", "Argo CD"))
        step.note("Kubernetes and Argo CD answer; Kafka is not needed until it is back")
    async with run.step(section, "shutdown-record", "What os-k8s-shutdown changed") as step:
        await _what_to_restore(run, step)


async def _what_to_restore(run: UpgradeRun, step: StepHandle) -> None:
    site = run.site
    facts = await shutdown_facts(site.name, run.upgrade_id)
    if facts is None:
        step.note(
            f"no os-k8s-shutdown record for {run.upgrade_id}: the runbook's values are used "
            f'({PAUSE_ANNOTATION}="false", registry {site.strimzi.schema_registry_replicas} '
            "replicas, telegraf 1)"
        )
        facts = {}
    annotation: str | None = "false"
    if FACT_ANNOTATION in facts:
        annotation = facts[FACT_ANNOTATION]
        if annotation == "true":
            # Paused before the shutdown too: the brokers only come back with it resumed.
            annotation = "false"
            step.note("reconciliation was already paused before the shutdown: resumed anyway")
    annotation = await run.remember_fact(FACT_RESTORE_ANNOTATION, annotation)
    run.journal.facts[FACT_RESTORE_ANNOTATION] = annotation_shown(annotation)
    replicas = facts.get(FACT_REGISTRY)
    if not isinstance(replicas, int) or replicas < 1:
        replicas = site.strimzi.schema_registry_replicas
    replicas = await run.remember_fact(FACT_RESTORE_REGISTRY, replicas)
    telegraf = facts.get(FACT_TELEGRAF)
    if isinstance(telegraf, dict) and telegraf:
        await run.remember_fact(FACT_TELEGRAF, telegraf)
    step.note(
        f"{PAUSE_ANNOTATION} back to "
        + annotation_shown(annotation)
        + f"; registry to {replicas}; telegraf to "
        + str(max(run.memory.facts.get(FACT_TELEGRAF, {}).values(), default=1) or 1)
    )


@section("bring Kafka back")
async def bring_kafka_back() -> None:
    """Reconciliation resumed; brokers and controllers ready and answering; registry back."""
    run = current_run()
    strimzi = run.site.strimzi
    section = "Kafka recovery"
    annotation: str | None = run.memory.facts[FACT_RESTORE_ANNOTATION]
    shown = annotation_shown(annotation).replace("absent", "removed (absent before the shutdown)")
    async with run.step(section, "resume-reconciliation", "Strimzi reconciliation resumed"):
        await run.act(
            "resume-reconciliation",
            f"Annotate the Kafka resource {strimzi.namespace}/{strimzi.kafka} "
            f"{PAUSE_ANNOTATION} {shown}",
            lambda: annotate_kafka({PAUSE_ANNOTATION: annotation}),
        )
    async with run.step(section, "kafka-ready", "Brokers and controllers ready") as step:
        await _wait_for_kafka(run, step)
    replicas: int = run.memory.facts[FACT_RESTORE_REGISTRY]
    registry = f"{strimzi.namespace}/{strimzi.schema_registry_deployment}"
    async with run.step(section, "registry-up", "Schema registry back") as step:
        await run.act(
            "registry-back",
            f"Scale the schema registry {registry} back to {replicas}",
            lambda: scale_deployment(
                strimzi.namespace, strimzi.schema_registry_deployment, replicas
            ),
        )
        await _wait_for_registry(run, step)


async def _wait_for_kafka(run: UpgradeRun, step: StepHandle) -> None:
    """Both pod sets back with every pod ready, the Kafka resource Ready, and the brokers
    answering: only then is SAL read again."""
    strimzi = run.site.strimzi
    if run.dry_run:
        run.journal.planned(
            f"Wait for {strimzi.controller_pod_set} and {strimzi.broker_pod_set} to be back "
            "with every pod ready, and for Kafka to answer"
        )
        return
    budget = run.site.timeouts.bring_up_s
    start = anyio.current_time()
    waiting = "nothing yet"
    while anyio.current_time() - start < budget:
        waiting = await _kafka_not_ready(run, strimzi.controller_pod_set, strimzi.broker_pod_set)
        if not waiting:
            step.note(f"Kafka answers after {anyio.current_time() - start:.1f} s")
            return
        await asyncio.sleep(run.site.timeouts.poll_s)
    raise RuntimeError(f"Kafka not back after {budget:.0f} s: {waiting}")


async def _kafka_not_ready(run: UpgradeRun, *pod_sets: str) -> str:
    """What Kafka still waits for ("" when it is back and answers). Read straight from the
    clients, not as tasks: this is polled for as long as the brokers take to start."""
    strimzi = run.site.strimzi
    kubernetes = run.services.kubernetes
    try:
        for name in pod_sets:
            try:
                pod_set = await kubernetes.get_pod_set(strimzi.namespace, name)
            except KubernetesNotFoundError:
                return f"StrimziPodSet {name} not recreated yet"
            if not pod_set.pods or pod_set.ready_pods < len(pod_set.pods):
                return f"{name}: {pod_set.ready_pods} of {len(pod_set.pods)} pods ready"
        kafka = await kubernetes.get_kafka(strimzi.namespace, strimzi.kafka)
    except KubernetesError as exc:
        if not is_transient(exc):
            raise
        return f"the Kubernetes API did not answer: {exc}"
    if not kafka.ready:
        return f"Kafka resource not Ready ({kafka.conditions or 'no conditions'})"
    try:
        await run.services.lag.list_groups()
    except ConsumerLagError as exc:
        return f"the brokers do not answer yet: {exc}"
    return ""


async def _wait_for_registry(run: UpgradeRun, step: StepHandle) -> None:
    if run.dry_run:
        run.journal.planned("Wait for the schema registry to answer")
        return
    budget = run.site.timeouts.bring_up_s
    start = anyio.current_time()
    while True:
        try:
            level = await run.services.registry.get_compatibility()
        except SchemaRegistryError as exc:
            if anyio.current_time() - start >= budget:
                raise RuntimeError(
                    f"the schema registry not back after {budget:.0f} s: {exc}"
                ) from None
            await asyncio.sleep(run.site.timeouts.poll_s)
            continue
        step.note(f"answers (compatibility {level.value})")
        return


@section("bring the control system back")
async def bring_control_system_back() -> None:
    """Telescope apps synced in the site's order; the Summit's sign-offs; every CSC waited
    for; telegraf back."""
    run = current_run()
    site = run.site
    section = "bring-up"
    for app in site.argocd.sync_order:
        await sync_app(run, section, app)
    if site.is_summit:
        await _summit_startup(run, section)
    await wait_for_bring_up(run, section, expected_after_recovery(site))
    async with run.step(section, "telegraf-up", "telegraf back and consuming") as step:
        await telegraf_back(run, step)
    if not run.dry_run:
        await record_states(run, "after recovery")


async def _summit_startup(run: UpgradeRun, section: str) -> None:
    async with run.step(section, "crios-started", "cRIOs started"):
        await run.gate(
            "crios-started",
            f"cRIOs started: {CRIOS}",
            f"Start the cRIOs of {CRIOS} (the last step of 'Update cRIOs'). **Next:** the CSCs "
            f"on {AZAR03} are restarted.",
        )
    async with run.step(section, "azar03-restarted", f"CSCs on {AZAR03} restarted"):
        await run.gate(
            "azar03-restarted",
            f"CSCs on {AZAR03} restarted",
            f"Restart the CSCs on {AZAR03}. **Next:** M2's CSC is sent ENABLED, and only then "
            "may the Hexrot VM be rebooted.",
        )
    async with run.step(section, "m2-enabled", "M2's CSC ENABLED") as step:
        await _m2_enabled(run, step)
    async with run.step(section, "hexrot-vm", "Hexrot VM rebooted with M2 ENABLED"):
        await run.notify(
            f"{run.site.title}: M2's CSC is ENABLED — the Hexrot VM (M2's EUI) can be rebooted "
            "now without M2 leaving closed loop.",
            audience=Audience.IT,
        )
        await run.gate(
            "hexrot-vm-rebooted",
            "Hexrot VM rebooted; M2 still in closed loop",
            "M2's CSC is ENABLED. Have the Hexrot VM rebooted (where M2's EUI runs) and check "
            "that M2 is still in closed loop. **Next:** the flow waits for every CSC's state.",
        )


async def _m2_enabled(run: UpgradeRun, step: StepHandle) -> None:
    """M2's CSC ENABLED, confirmed by its own summaryState, before the Hexrot VM reboot."""
    site = run.site
    if M2 not in {entry.name for entry in site.cscs}:
        step.skip("the site has no MTM2")
        return
    window = site.timeouts.heartbeat_window_s
    if not run.dry_run:
        board = await run.board()
        try:
            await board.wait_for(alive(window), [M2], deadline_s=site.timeouts.bring_up_s)
        except StateWaitTimeout as exc:
            raise RuntimeError(
                f"MTM2 did not come back ({exc}): the Hexrot VM must not be rebooted before "
                "M2's CSC is ENABLED"
            ) from None
    await run.act(
        "mtm2-enabled",
        "Send MTM2 ENABLED (before the Hexrot VM is rebooted)",
        lambda: set_csc_state(M2, State.ENABLED, site.timeouts.transition_s),
    )
    if run.dry_run:
        return
    statuses = await (await run.board()).wait_for(
        State.ENABLED, [M2], deadline_s=site.timeouts.transition_s
    )
    step.note(f"MTM2 {statuses[M2].describe()}")


def expected_after_recovery(site: SiteConfig) -> list[CscEntry]:
    """The states the recovery waits for: the site's, with M2's CSC ENABLED at the Summit (it
    stays ENABLED, in closed loop, once the Hexrot VM has been rebooted)."""
    if not site.is_summit:
        return list(site.cscs)
    return [
        e.model_copy(update={"expected_state": State.ENABLED}) if e.name == M2 else e
        for e in site.cscs
    ]
