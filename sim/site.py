"""The simulated observatory: every simulated service of one site, started and stopped together.

`SimulatedSite` runs on 127.0.0.1 only. It takes a real site's configuration (its inventory and
rules), runs a Kafka broker with a simulated CSC for every inventory entry, and serves the site's
schema registry, Kubernetes API, Argo CD, LOVE and Slack on free ports over one `SiteModel`, so
that what a flow does has the consequences it would have at the site. It describes itself as a
``sim`` site file whose endpoints point at those ports; its passwords and tokens are made up
afresh for each run and handed out by `credentials` (never written into the site file).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import yaml
from pydantic import SecretStr

from blocks.credentials import ENV_PREFIX, SiteCredentials
from blocks.site import CscName, SiteConfig, load_site_file
from clients.registry import SchemaRegistryClient
from clients.sal import SalClient
from sim.argocd import create_argocd_app
from sim.broker import TansuBroker
from sim.consumers import SimulatedConsumers
from sim.csc import CscFleet
from sim.http import serve_app
from sim.kubernetes import create_kubernetes_app, write_kubeconfig
from sim.love import create_love_app
from sim.model import Application, KubeObject, ModelOptions, PodSet, SiteModel
from sim.observatory import ObservatoryModel, ObservatoryTiming, SiteCapabilities
from sim.registry import create_registry_app
from sim.sal_schemas import indexed_components
from sim.scriptqueue import ScriptQueueSim
from sim.scripts import ScriptTiming
from sim.slack import SlackMessage, create_slack_app
from sim.writelog import WriteLog

__all__ = ["SITES", "SimOptions", "SimulatedSite", "bundled_site_file", "load_base_site"]

SITES = ("summit", "tts", "bts")
_logger = logging.getLogger(__name__)


def bundled_site_file(site: str) -> Path:
    """The reviewed site file shipped in ``deployments/sites``."""
    if site not in SITES:
        raise ValueError(f"unknown site {site!r}: choose one of {', '.join(SITES)}")
    return Path(str(importlib.resources.files("deployments") / "sites" / f"{site}.yaml"))


def load_base_site(site: str) -> SiteConfig:
    return load_site_file(bundled_site_file(site))


@dataclass(frozen=True, kw_only=True)
class SimOptions:
    """How the simulated site behaves; durations in seconds (0 means at once)."""

    registry_compatibility: str = "FORWARD"
    heartbeat_interval_s: float = 1.0
    image_pull_s: float = 2.0
    argocd_sync_s: float = 0.5
    broker_shutdown_s: float = 1.0
    love_commander_timeout_s: float = 10.0
    time_scale: float = 1.0
    """Shrinks the hardware's and the scripts' physical durations (slews, images, loading)."""
    restart_bare_metal_after_sync: bool | None = None
    """Bring the bare-metal CSCs back once every telescope app is synced, as the camera team and
    system principals do at the test stands; None: everywhere but the Summit, whose operator
    starts them at the bare-metal startup sign-off (`SimulatedSite.start_bare_metal`)."""
    start_image_tag: str = "c0044"
    upgrade_image_tag: str = "c0045"
    consumers: bool = True
    command_fetch_wait_ms: int = 100
    """How late the CSCs hear a command at most while commands come (tansu answers a fetch
    shorter than 250 ms only at its wait's end): lower is quicker and costs the broker more
    CPU."""
    command_idle_fetch_wait_ms: int = 200
    """The same once no command has come for 3 s: the first command after a quiet spell is
    heard up to this late."""
    consumer_poll_s: float = 1.0
    """How often the simulated telegraf and LOVE-producer groups fetch and commit: each of the
    ~150 groups costs CPU per fetch, so a busy rehearsal or test may poll less often."""

    def model_options(self) -> ModelOptions:
        return ModelOptions(
            image_pull_s=self.image_pull_s,
            broker_shutdown_s=self.broker_shutdown_s,
            start_image_tag=self.start_image_tag,
            upgrade_image_tag=self.upgrade_image_tag,
        )


class SimulatedSite:
    """All simulated services of one site; ``async with`` starts and stops them.

    Parameters
    ----------
    base
        The real site whose inventory and rules are simulated.
    workdir
        Where the kubeconfig and other files the site needs are written.
    write_log
        Where every state-changing request to any simulated service is recorded.
    options
        Simulation settings (delays, faults).
    credentials
        The passwords and tokens the services accept, for tests that look for them where they
        must not be; those left out (or all, by default) are made up afresh.
    kubernetes_token
        The bearer token the Kubernetes API accepts (made up afresh by default).
    """

    def __init__(
        self,
        base: SiteConfig,
        *,
        workdir: Path,
        write_log: WriteLog | None = None,
        options: SimOptions | None = None,
        credentials: SiteCredentials | None = None,
        kubernetes_token: SecretStr | None = None,
    ) -> None:
        self.base = base
        self.workdir = workdir
        self.write_log = write_log if write_log is not None else WriteLog()
        self.options = options or SimOptions()
        self.broker = TansuBroker()
        self.model = SiteModel(base, options=self.options.model_options())
        self.registry_app = create_registry_app(
            self.write_log, default_compatibility=self.options.registry_compatibility
        )
        self._kubernetes_token = (
            kubernetes_token.get_secret_value() if kubernetes_token else secrets.token_urlsafe(24)
        )
        given = credentials or SiteCredentials()
        self._secrets = SiteCredentials(
            argocd_password=given.argocd_password or SecretStr(secrets.token_urlsafe(12)),
            love_password=given.love_password or SecretStr(secrets.token_urlsafe(12)),
            slack_token=given.slack_token or SecretStr("xoxb-sim-" + secrets.token_hex(12)),
        )
        self.kubernetes_app = create_kubernetes_app(
            self.model, self.write_log, token=self._kubernetes_token
        )
        self.argocd_app = create_argocd_app(
            self.model,
            self.write_log,
            password=_reveal(self._secrets.argocd_password),
            sync_duration_s=self.options.argocd_sync_s,
        )
        self.slack_app = create_slack_app(self.write_log, token=_reveal(self._secrets.slack_token))
        self.urls: dict[str, str] = {}
        self.fleet: CscFleet | None = None
        self.consumers: SimulatedConsumers | None = None
        self.love_app: Any = None
        self.kubeconfig = workdir / "kubeconfig"
        self._stack = contextlib.AsyncExitStack()
        self._kafka_task: asyncio.Task[None] | None = None

    @property
    def heartbeat_window_s(self) -> float:
        """Alive means a heartbeat within five periods (a loaded machine delays a few)."""
        return max(5 * self.options.heartbeat_interval_s, 2.0)

    @property
    def slack_messages(self) -> list[SlackMessage]:
        messages: list[SlackMessage] = self.slack_app.state.messages
        return messages

    def credentials(self) -> SiteCredentials:
        """The made-up passwords and tokens of this run's services."""
        return self._secrets

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        stack = self._stack
        self.workdir.mkdir(parents=True, exist_ok=True)
        await stack.enter_async_context(self.broker)
        stack.push_async_callback(self.model.aclose)
        self.urls["schema_registry"] = await stack.enter_async_context(
            serve_app(self.registry_app, name="schema-registry")
        )
        self.fleet = CscFleet(
            bootstrap_servers=self.broker.bootstrap_servers,
            registry_url=self.urls["schema_registry"],
            sal_subname=self.base.kafka.sal_subname,
            indexed=indexed_components(self.base.cscs),
            write_log=self.write_log,
            heartbeat_interval_s=self.options.heartbeat_interval_s,
            on_exit=self.model.csc_exited,
            registry_transport=httpx.ASGITransport(app=self.registry_app),
            command_fetch_wait_ms=self.options.command_fetch_wait_ms,
            command_idle_fetch_wait_ms=self.options.command_idle_fetch_wait_ms,
        )
        transport = httpx.ASGITransport(app=self.registry_app)
        self.script_queues = ScriptQueueSim(
            self.fleet,
            registry_url=self.urls["schema_registry"],
            registry_transport=transport,
            timing=ScriptTiming(
                time_scale=self.options.time_scale,
                discovery_window_s=self.heartbeat_window_s,
            ),
        )
        self.observatory = ObservatoryModel(
            SiteCapabilities.for_site(self.base.name),
            ObservatoryTiming(time_scale=self.options.time_scale),
        )
        await stack.enter_async_context(self.fleet)
        await stack.enter_async_context(self.script_queues)
        self.observatory.install(self.fleet)
        self.model.attach_runner(self.fleet)
        await self._start_cscs(self.fleet)

        registry = SchemaRegistryClient(self.urls["schema_registry"])
        stack.push_async_callback(registry.aclose)
        commander = SalClient(
            bootstrap_servers=self.broker.bootstrap_servers,
            registry=registry,
            sal_subname=self.base.kafka.sal_subname,
            identity="LOVE",
        )
        stack.push_async_callback(commander.aclose)
        self.love_app = create_love_app(
            self.model,
            self.write_log,
            sal=commander,
            username=self.base.love.username,
            password=_reveal(self._secrets.love_password),
            commander_timeout_s=self.options.love_commander_timeout_s,
        )
        for name, app in (
            ("kubernetes", self.kubernetes_app),
            ("argocd", self.argocd_app),
            ("love", self.love_app),
            ("slack", self.slack_app),
        ):
            self.urls[name] = await stack.enter_async_context(serve_app(app, name=name))
        stack.push_async_callback(self.argocd_app.state.argocd.aclose)
        write_kubeconfig(
            self.kubeconfig, self.urls["kubernetes"], "sim", token=self._kubernetes_token
        )
        if self.options.consumers:
            self.consumers = SimulatedConsumers(
                self.model,
                self.broker.bootstrap_servers,
                self.base.kafka.sal_subname,
                poll_s=self.options.consumer_poll_s,
            )
            await self.consumers.start()
            stack.push_async_callback(self.consumers.stop)
        self.model.add_listener(self._on_model_event)

    async def _start_cscs(self, fleet: CscFleet) -> None:
        """Every CSC of the inventory, each in the state the site expects after bring-up."""
        started = await fleet.start_many(self.base.cscs, image=self.options.start_image_tag)
        refused = [str(name) for name, csc in started.items() if csc is None]
        if refused:
            raise RuntimeError(f"simulated CSCs did not start: {', '.join(refused)}")

    def start_bare_metal(self) -> list[CscName]:
        """Start the bare-metal CSCs that are not running, as the people at the site do."""
        if self.fleet is None:
            return []
        started = []
        for entry in self.base.cscs:
            if entry.bare_metal is not None and entry.name not in self.fleet.running:
                _ = self.fleet.start(entry, image=self.options.upgrade_image_tag)
                started.append(entry.name)
        return started

    def _restarts_bare_metal(self) -> bool:
        option = self.options.restart_bare_metal_after_sync
        return not self.base.is_summit if option is None else option

    def _on_model_event(self, event: str, obj: KubeObject | Application) -> None:
        """Consequences that cross services: the registry and Kafka follow their pods."""
        if event == "app-synced" and self._restarts_bare_metal():
            telescope = self.base.argocd.telescope_apps
            if all(self.model.applications[name].sync_status == "Synced" for name in telescope):
                self.start_bare_metal()
        elif event in ("deployment-scaled", "deployment-deleted", "deployment-created"):
            self.registry_app.state.registry.down = not self.model.registry_up
        elif isinstance(obj, PodSet) and obj.role == "broker":
            if event == "pod-set-terminated" and not self.model.kafka_up:
                self._kafka_task = asyncio.ensure_future(self.broker.stop())
            elif event == "pod-set-created":
                stopping = self._kafka_task
                self._kafka_task = asyncio.ensure_future(self._restart_kafka(stopping))

    async def _restart_kafka(self, stopping: asyncio.Task[None] | None = None) -> None:
        # tansu may take seconds to exit: starting again on its port before it has would fail.
        if stopping is not None:
            await asyncio.gather(stopping, return_exceptions=True)
        await self.broker.start()
        if self.fleet is not None:
            self.fleet.forget_topics()

    async def stop(self) -> None:
        await self._stack.aclose()

    def site_config(self, name: str = "sim") -> SiteConfig:
        """The ``sim`` site: the base site's inventory with endpoints on this simulation."""
        data: dict[str, Any] = self.base.model_dump(mode="json")
        data["name"] = name
        data["title"] = f"Simulated {self.base.title}"
        data["kafka"] = {
            "bootstrap_servers": self.broker.bootstrap_servers,
            "sal_subname": self.base.kafka.sal_subname,
            "security_protocol": "PLAINTEXT",
        }
        data["schema_registry"] = {"url": self.urls["schema_registry"]}
        data["love"] = {"url": self.urls["love"] + "/love", "username": self.base.love.username}
        data["argocd"] = {**data["argocd"], "url": self.urls["argocd"] + "/argo-cd"}
        data["kubernetes"] = {
            "context": "sim",
            "cluster_server": self.urls["kubernetes"],
            "kubeconfig": str(self.kubeconfig),
        }
        data["slack"] = {**data["slack"], "base_url": self.urls["slack"] + "/api/"}
        # Liveness is judged on the simulated heartbeat period, as at the site on salobj's 1 s.
        data["timeouts"] = {
            **data["timeouts"],
            "heartbeat_window_s": self.heartbeat_window_s,
            # Nothing here takes seconds unless the options say so: ask again often.
            "poll_s": min(0.25, data["timeouts"].get("poll_s", 2.0)),
        }
        return SiteConfig.model_validate(data)

    def write_site_file(self, path: Path, name: str = "sim") -> SiteConfig:
        """Write the ``sim`` site file, and beside it (mode 0600) the run's credentials."""
        config = self.site_config(name)
        header = (
            f"# Simulated site written by `rubin-upgrade sim --site {self.base.name}`;"
            " valid while that process runs.\n"
            f"# Its credentials are in {self.secrets_path(path).name} beside this file.\n"
        )
        body = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, width=100)
        path.write_text(header + body, encoding="utf-8")
        secrets_file = self.secrets_path(path)
        secrets_file.touch(mode=0o600)
        secrets_file.chmod(0o600)
        lines = [
            f"{ENV_PREFIX}{field.upper()}={value.get_secret_value()}"
            for field, value in self._secrets
            if isinstance(value, SecretStr)
        ]
        secrets_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return config

    @staticmethod
    def secrets_path(site_file: Path) -> Path:
        return site_file.with_name(site_file.stem + ".secrets.env")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _reveal(secret: SecretStr | None) -> str:
    assert secret is not None
    return secret.get_secret_value()


def running(site: SimulatedSite) -> set[CscName]:
    """The CSCs running in the simulation now."""
    return set(site.fleet.running) if site.fleet is not None else set()
