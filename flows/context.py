"""The services of one site, opened once per run and handed to every step that needs them.

`open_services` builds every client from the site configuration and its credentials, and closes
what it opened when the run ends. The Kubernetes client is the one that can be refused at
construction (the kubeconfig's context does not point at the site's cluster); that refusal is
kept and reported by the preflight together with every other problem, instead of failing first.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pydantic import SecretStr

from blocks.credentials import SiteCredentials
from blocks.site import SiteConfig
from clients.argocd import ArgoCdClient
from clients.kubernetes import KubernetesClient, KubernetesError
from clients.lag import ConsumerLagClient
from clients.love import LoveClient
from clients.registry import SchemaRegistryClient
from clients.sal import SalClient
from clients.slack import Audience, SlackNotifier

__all__ = ["SiteServices", "open_services"]


@dataclass(frozen=True, kw_only=True)
class SiteServices:
    """Every client a flow uses, for one site."""

    site: SiteConfig
    registry: SchemaRegistryClient
    sal: SalClient
    argocd: ArgoCdClient
    love: LoveClient
    slack: SlackNotifier
    lag: ConsumerLagClient
    kubernetes_client: KubernetesClient | None
    kubernetes_error: KubernetesError | None = None

    @property
    def kubernetes(self) -> KubernetesClient:
        """The Kubernetes client; raises the refusal when the context is not the site's."""
        if self.kubernetes_client is None:
            assert self.kubernetes_error is not None
            raise self.kubernetes_error
        return self.kubernetes_client

    async def notify(self, text: str, *, audience: Audience = Audience.SITE) -> bool:
        """Post to the site's Slack; never raises (a failed post is logged)."""
        return await self.slack.notify(text, audience=audience)


@contextlib.asynccontextmanager
async def open_services(
    site: SiteConfig, credentials: SiteCredentials
) -> AsyncIterator[SiteServices]:
    """Open every client for ``site``; close them all on exit."""
    kafka = site.kafka
    sasl_password = credentials.kafka_sasl_password
    async with contextlib.AsyncExitStack() as stack:
        registry = SchemaRegistryClient(site.schema_registry.url)
        stack.push_async_callback(registry.aclose)
        sal = SalClient(
            bootstrap_servers=kafka.bootstrap_servers,
            registry=registry,
            sal_subname=kafka.sal_subname,
            security_protocol=kafka.security_protocol,
            sasl_mechanism=kafka.sasl_mechanism,
            sasl_username=kafka.sasl_username,
            sasl_password=sasl_password.get_secret_value() if sasl_password else None,
        )
        stack.push_async_callback(sal.aclose)
        argocd = ArgoCdClient(
            site.argocd.url,
            username=site.argocd.username,
            password=_secret(credentials.argocd_password),
        )
        stack.push_async_callback(argocd.aclose)
        love = LoveClient(
            site.love.url,
            username=site.love.username,
            password=_secret(credentials.love_password),
        )
        stack.push_async_callback(love.aclose)
        slack = SlackNotifier(site.slack, token=credentials.slack_token)
        stack.push_async_callback(slack.aclose)
        lag = ConsumerLagClient(
            bootstrap_servers=kafka.bootstrap_servers,
            security_protocol=kafka.security_protocol,
            sasl_mechanism=kafka.sasl_mechanism,
            sasl_username=kafka.sasl_username,
            sasl_password=sasl_password,
        )
        stack.push_async_callback(lag.aclose)
        kubernetes: KubernetesClient | None = None
        refusal: KubernetesError | None = None
        try:
            kubernetes = await KubernetesClient.from_site(site.kubernetes)
            stack.push_async_callback(kubernetes.aclose)
        except KubernetesError as exc:
            refusal = exc
        yield SiteServices(
            site=site,
            registry=registry,
            sal=sal,
            argocd=argocd,
            love=love,
            slack=slack,
            lag=lag,
            kubernetes_client=kubernetes,
            kubernetes_error=refusal,
        )


def _secret(value: SecretStr | None) -> SecretStr:
    # A missing password fails at login, where the preflight reports it with the rest.
    return value if value is not None else SecretStr("")
