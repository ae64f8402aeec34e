"""The simulated site's Kafka consumers: telegraf connectors and LOVE producers as real groups.

Consumer lag at the simulated site is real lag on the broker: while a telegraf connector's
Deployment has replicas, its group ``<telegraf.group_prefix>-<connector>`` consumes its share of
the SAL topics and commits what it has read; scaled to 0 or deleted, it stops, and the lag grows
as SAL traffic continues; scaled back, it resumes from its committed offsets and drains. A LOVE
producer runs one salobj-style group per component it shows, named
``<love_producers.group_prefix>-<n>-<Component>-<random hex>`` with a new random part at every
start, so the groups of stopped producers linger with growing lag, as they do at the sites.

Which consumer reads which topics is decided here rather than by each consumer's own pattern
subscription: one topic listing every ``topic_refresh_s`` instead of a full-metadata refresh per
consumer (about 80 consumers at Summit scale), and every SAL topic read by exactly one connector.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Self

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from clients.kafkawire import AllTopicsMetadata, unasked_topics_skipped
from sim.model import Application, Deployment, KubeObject, SiteModel, matches_selector

__all__ = ["SimulatedConsumers", "telegraf_connector_for"]

_logger = logging.getLogger(__name__)

_TELEGRAF_DEPLOYMENT_PREFIX = "sasquatch-telegraf-"
_LOVE_DEPLOYMENT_PREFIX = "love-producer"
# Connectors named after a subsystem rather than a component take the components of that prefix.
_TELEGRAF_PREFIXES = {"auxtel": "AT", "maintel": "MT", "comcam": "CC"}


def telegraf_connector_for(component: str, connectors: Sequence[str]) -> str:
    """The telegraf connector (of ``connectors``, in site order) that writes ``component``.

    The connector whose name is the longest part of the component's name (``MTM1M3TS`` →
    ``m1m3ts``, ``ATCamera`` → ``atcamera``); else the subsystem connector of its prefix
    (``ATDome`` → ``auxtel``); else one chosen by a stable hash, so each component has exactly
    one connector at every site.
    """
    if not connectors:
        raise ValueError("the site has no telegraf connectors")
    lowered = component.lower()
    named = [key for key in connectors if key.lower() in lowered]
    if named:
        return max(named, key=len)
    for key in connectors:
        prefix = _TELEGRAF_PREFIXES.get(key)
        if prefix is not None and component.startswith(prefix):
            return key
    return connectors[zlib.crc32(component.encode()) % len(connectors)]


@dataclass(frozen=True)
class _Wanted:
    """A consumer group member that should be running."""

    group: str | None  # None: salobj-style, a new random name at each start
    group_prefix: str
    topics: frozenset[str]
    offset_reset: Literal["earliest", "latest"]


@dataclass
class _Member:
    group: str
    topics: frozenset[str]
    task: asyncio.Task[None] | None = None
    committed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the group has committed offsets: from then on it is listed, as at a site."""


class SimulatedConsumers:
    """Runs the site's telegraf connectors and LOVE producers as Kafka consumer groups.

    Parameters
    ----------
    model
        The site model whose Deployments say which consumers run.
    bootstrap_servers
        The simulated site's broker.
    sal_subname
        SAL topics are ``lsst.<sal_subname>.<Component>.<name>``.
    topic_refresh_s
        How often the broker's topics are listed to give new topics to their consumers.
    poll_s
        How often each consumer reads what has come and commits it. In between its partitions
        are paused, so that it asks the broker nothing: tansu reads every partition of a
        waiting fetch at its start and end, and an idle consumer that kept a fetch waiting
        would cost it (and this process, decoding the empty answers) CPU all the time, about
        0.5 of a core for the Summit's ~80 consumers.
    """

    def __init__(
        self,
        model: SiteModel,
        bootstrap_servers: str,
        sal_subname: str = "sal",
        *,
        topic_refresh_s: float = 2.0,
        poll_s: float = 1.0,
    ) -> None:
        self.model = model
        self.bootstrap_servers = bootstrap_servers
        self._topic_pattern = re.compile(
            rf"^lsst\.{re.escape(sal_subname)}\.(?P<component>[A-Za-z0-9]+)\.[^.]+$"
        )
        self._topic_refresh_s = topic_refresh_s
        self._poll_s = poll_s
        self._components: dict[str, frozenset[str]] = {}
        self._members: dict[tuple[str, ...], _Member] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._client: AIOKafkaClient | None = None
        self._refresh_task: asyncio.Task[None] | None = None
        self._running = False
        self._listening = False
        self.stalled: set[str] = set()
        """Group-name prefixes whose members stay in their group but stop committing (a fault
        switch: a connector that is stuck, so its lag never drains)."""

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, *, settle_s: float = 60.0) -> None:
        """Start the consumers of every Deployment with replicas, and follow the model.

        Returns once every group has committed offsets. At a site these groups are always
        there (a stopped LOVE producer's lingers for a week): a flow started right after the
        simulation must find them, as its preflight does.

        Raises
        ------
        TimeoutError
            Some group has not committed within ``settle_s``; it names them, and every consumer
            started has been stopped.
        """
        if self._running:
            return
        client = AIOKafkaClient(bootstrap_servers=self.bootstrap_servers, client_id="sim-consumers")
        try:
            await client.bootstrap()
        except BaseException:
            await client.close()
            raise
        self._client = client
        self._running = True
        if not self._listening:
            self.model.add_listener(self._on_model_event)
            self._listening = True
        await self.refresh_topics()
        self._refresh_task = asyncio.get_running_loop().create_task(self._refresh_loop())
        members = list(self._members.values())
        try:
            async with asyncio.timeout(settle_s):
                await asyncio.gather(*(member.committed.wait() for member in members))
        except TimeoutError:
            late = sorted(member.group for member in members if not member.committed.is_set())
            await self.stop()  # nothing left running: the caller never got a started object
            raise TimeoutError(
                f"simulated consumer groups did not commit within {settle_s:.0f} s: "
                + ", ".join(late)
            ) from None

    async def stop(self) -> None:
        """Stop every consumer (each leaves its group) and the topic refresh; idempotent."""
        self._running = False
        refresh, self._refresh_task = self._refresh_task, None
        if refresh is not None:
            refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresh
        for key in list(self._members):
            self._stop_member(key)
        while self._stopping:
            await asyncio.gather(*list(self._stopping), return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- what runs ---------------------------------------------------------------------------

    def groups(self) -> dict[str, frozenset[str]]:
        """The groups consuming now, with the topics each reads."""
        return {member.group: member.topics for member in self._members.values()}

    async def refresh_topics(self) -> None:
        """List the broker's SAL topics and hand new ones to their consumers now."""
        if self._client is None:
            return
        # Read by the struct codec: `AIOKafkaAdminClient.list_topics` converts the ~950 topics
        # with aiokafka's generic `to_object`, about twice the CPU of this.
        node = self._client.get_random_node()
        if node is None:
            raise KafkaError("no broker is known")
        metadata = await self._client.send(node, AllTopicsMetadata())
        names = [entry[1] for entry in metadata.topics]
        components: dict[str, set[str]] = {}
        for name in names:
            match = self._topic_pattern.match(name)
            if match is not None:
                components.setdefault(match.group("component"), set()).add(name)
        frozen = {component: frozenset(topics) for component, topics in components.items()}
        if frozen != self._components:
            self._components = frozen
            self._reconcile()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._topic_refresh_s)
            try:
                await self.refresh_topics()
            except KafkaError as exc:
                _logger.warning("listing topics failed, trying again: %s", exc)

    def _on_model_event(self, event: str, obj: KubeObject | Application) -> None:
        if isinstance(obj, Deployment) and event.startswith("deployment-"):
            self._reconcile()

    def _reconcile(self) -> None:
        if not self._running:
            return
        wanted = self._wanted()
        for key in list(self._members):
            if key not in wanted:
                self._stop_member(key)
        for key, want in wanted.items():
            member = self._members.get(key)
            if member is None:
                self._start_member(key, want)
            else:
                member.topics = want.topics

    def _wanted(self) -> dict[tuple[str, ...], _Wanted]:
        config = self.model.config
        telegraf, love = config.telegraf, config.love_producers
        deployments = sorted(self.model.deployments.values(), key=lambda d: d.name)
        telegraf_deployments = [
            d
            for d in deployments
            if d.namespace == telegraf.namespace and matches_selector(d.labels, telegraf.selector)
        ]
        producers = [
            d
            for d in deployments
            if d.namespace == love.namespace and matches_selector(d.labels, love.selector)
        ]
        connectors = [_connector_key(name) for name in telegraf.deployments] or [
            _connector_key(d.name) for d in telegraf_deployments
        ]
        wanted: dict[tuple[str, ...], _Wanted] = {}
        by_connector: dict[str, set[str]] = {}
        if connectors:
            for component, topics in self._components.items():
                owner = telegraf_connector_for(component, connectors)
                by_connector.setdefault(owner, set()).update(topics)
        for deployment in telegraf_deployments:
            key = _connector_key(deployment.name)
            owned = by_connector.get(key)
            if deployment.replicas > 0 and owned:
                wanted[("telegraf", deployment.name)] = _Wanted(
                    group=f"{telegraf.group_prefix}-{key}",
                    group_prefix=telegraf.group_prefix,
                    topics=frozenset(owned),
                    offset_reset="earliest",  # telegraf writes everything to the EFD
                )
        for index, deployment in enumerate(producers):
            if deployment.replicas <= 0:
                continue
            identity = love.group_prefix + _producer_suffix(deployment.name)
            for component, topics in sorted(self._components.items()):
                if zlib.crc32(component.encode()) % len(producers) != index:
                    continue
                wanted[("love", deployment.name, component)] = _Wanted(
                    group=None,
                    group_prefix=f"{identity}-{component}",
                    topics=topics,
                    offset_reset="latest",  # salobj reads from now on
                )
        return wanted

    def _start_member(self, key: tuple[str, ...], want: _Wanted) -> None:
        group = want.group or f"{want.group_prefix}-{secrets.token_hex(4)}"
        member = _Member(group=group, topics=want.topics)
        member.task = asyncio.get_running_loop().create_task(
            self._run_member(member, want.offset_reset), name=f"sim-consumer {group}"
        )
        self._members[key] = member

    def _stop_member(self, key: tuple[str, ...]) -> None:
        member = self._members.pop(key)
        task = member.task
        if task is None or task.done():
            return
        task.cancel()
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    # -- one consumer ------------------------------------------------------------------------

    async def _run_member(self, member: _Member, offset_reset: str) -> None:
        # A member asks for its subscription's topics after its bootstrap: the every-topic answer
        # tansu gives the bootstrap is of no use to it. In a simulated Summit upgrade these
        # answers were ~2/3 of the site's time on Metadata (py-spy: ~7 s of samples).
        with unasked_topics_skipped():
            await self._run_member_consumers(member, offset_reset)

    async def _run_member_consumers(self, member: _Member, offset_reset: str) -> None:
        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap_servers,
                group_id=member.group,
                client_id=member.group,
                enable_auto_commit=False,
                auto_offset_reset=offset_reset,
                session_timeout_ms=2000,
                heartbeat_interval_ms=500,
                metadata_max_age_ms=5000,
                fetch_max_wait_ms=_FETCH_WAIT_MS,
                # Paused between rounds, a consumer's fetcher still looks over its partitions
                # every consumer_timeout_ms (200 by default): the ~80 of an idle Summit spent
                # 0.12 of a core on it. Resuming wakes it at once.
                consumer_timeout_ms=_IDLE_LOOK_MS,
            )
            try:
                await consumer.start()
                await self._consume(consumer, member)
            except KafkaError as exc:
                _logger.warning("consumer %s failed, restarting: %s", member.group, exc)
            finally:
                await consumer.stop()
            await asyncio.sleep(1.0)

    async def _consume(self, consumer: AIOKafkaConsumer, member: _Member) -> None:
        subscribed: frozenset[str] = frozenset()
        committed: dict[TopicPartition, int] = {}
        while True:
            if member.topics != subscribed:
                subscribed = member.topics
                consumer.subscribe(topics=sorted(subscribed))
            # Read to the end of what has come (an answer may end before the end of a topic:
            # the rest is read at the next round), then ask nothing until the next round.
            consumer.resume(*consumer.assignment())
            await consumer.getmany(timeout_ms=_FETCH_WAIT_MS * 2)
            consumer.pause(*consumer.assignment())
            # Commit every assigned partition's position, read or not, as Kafka's own
            # auto-commit does: a partition the connector owns never shows as of unknown lag.
            positions: dict[TopicPartition, int] = {}
            for partition in consumer.assignment():
                with contextlib.suppress(KafkaError):
                    positions[partition] = await consumer.position(partition)
            changed = {tp: pos for tp, pos in positions.items() if committed.get(tp) != pos}
            if changed and not member.group.startswith(tuple(self.stalled)):
                try:
                    await consumer.commit(changed)
                except KafkaError as exc:  # a rebalance took partitions: commit the rest later
                    _logger.debug("commit of %s failed: %s", member.group, exc)
                else:
                    committed = {
                        tp: pos for tp, pos in {**committed, **changed}.items() if tp in positions
                    }
                    member.committed.set()
            await asyncio.sleep(self._poll_s)


#: The fetch wait of one round's read: tansu answers a wait under 250 ms at its end.
_FETCH_WAIT_MS = 100
#: How often a paused consumer's fetcher looks at its partitions anyway.
_IDLE_LOOK_MS = 5000


def _connector_key(deployment_name: str) -> str:
    return deployment_name.removeprefix(_TELEGRAF_DEPLOYMENT_PREFIX)


def _producer_suffix(deployment_name: str) -> str:
    """``love-producer-3`` → ``-3``: salobj's identity is ``user@host`` and the pod is the host."""
    if deployment_name.startswith(_LOVE_DEPLOYMENT_PREFIX):
        return deployment_name.removeprefix(_LOVE_DEPLOYMENT_PREFIX)
    return f"-{deployment_name}"
