"""The simulated observatory: every simulated service of one site, started and stopped together.

`SimulatedSite` runs on 127.0.0.1 only. It takes a real site's configuration (its inventory and
rules), serves the site's services on free ports and describes itself as a ``sim`` site file
whose endpoints point at those ports, so the flows and the CLI use it exactly like a real site.
"""

from __future__ import annotations

import contextlib
import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from blocks.site import SiteConfig, load_site_file
from sim.broker import TansuBroker
from sim.http import serve_app
from sim.registry import create_registry_app
from sim.writelog import WriteLog

__all__ = ["SITES", "SimOptions", "SimulatedSite", "bundled_site_file"]

SITES = ("summit", "tts", "bts")


def bundled_site_file(site: str) -> Path:
    """The reviewed site file shipped in ``deployments/sites``."""
    if site not in SITES:
        raise ValueError(f"unknown site {site!r}: choose one of {', '.join(SITES)}")
    return Path(str(importlib.resources.files("deployments") / "sites" / f"{site}.yaml"))


@dataclass(frozen=True, kw_only=True)
class SimOptions:
    """How the simulated site behaves; durations in seconds."""

    registry_compatibility: str = "FORWARD"


class SimulatedSite:
    """All simulated services of one site; ``async with`` starts and stops them.

    Parameters
    ----------
    base
        The real site whose inventory and rules are simulated.
    write_log
        Where every state-changing request to any simulated service is recorded.
    options
        Simulation settings (delays, faults).
    """

    def __init__(
        self,
        base: SiteConfig,
        *,
        write_log: WriteLog | None = None,
        options: SimOptions | None = None,
    ) -> None:
        self.base = base
        self.write_log = write_log if write_log is not None else WriteLog()
        self.options = options or SimOptions()
        self.broker = TansuBroker()
        self.registry_app = create_registry_app(
            self.write_log, default_compatibility=self.options.registry_compatibility
        )
        self.urls: dict[str, str] = {}
        self._stack = contextlib.AsyncExitStack()

    async def start(self) -> None:
        try:
            await self._stack.enter_async_context(self.broker)
            self.urls["schema_registry"] = await self._stack.enter_async_context(
                serve_app(self.registry_app, name="schema-registry")
            )
        except BaseException:
            await self.stop()
            raise

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
        return SiteConfig.model_validate(data)

    def write_site_file(self, path: Path, name: str = "sim") -> SiteConfig:
        config = self.site_config(name)
        header = (
            f"# Simulated site written by `rubin-upgrade sim --site {self.base.name}`;"
            " valid while that process runs.\n"
        )
        body = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, width=100)
        path.write_text(header + body, encoding="utf-8")
        return config

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


def load_base_site(site: str) -> SiteConfig:
    return load_site_file(bundled_site_file(site))
