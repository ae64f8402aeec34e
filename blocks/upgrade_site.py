"""The Prefect block that holds a site: flows load it by name, operators see it in the UI."""

from __future__ import annotations

from typing import ClassVar

from prefect.blocks.core import Block
from prefect_slack import SlackCredentials
from pydantic import Field, SecretStr

from blocks.credentials import SiteCredentials
from blocks.site import SiteConfig

__all__ = ["UpgradeSite", "load_site_block", "save_site_block"]


class UpgradeSite(Block):
    """A site's reviewed configuration and, in secret fields, its credentials.

    The configuration comes from ``deployments/sites/<site>.yaml`` (``rubin-upgrade site save``);
    the secrets are set in the UI or from ``RUBIN_UPGRADE_*`` variables, never from the YAML.
    """

    _block_type_name: ClassVar[str] = "Rubin Upgrade Site"
    _block_type_slug: ClassVar[str] = "rubin-upgrade-site"
    _description: ClassVar[str] = (
        "A Rubin Observatory site (Summit, TTS, BTS or a simulated one) as the upgrade flows "
        "see it: service endpoints, CSC inventory, ordering rules, time budgets and credentials."
    )

    site: SiteConfig
    argocd_password: SecretStr | None = Field(None, description="Argo CD admin password.")
    love_password: SecretStr | None = Field(None, description="LOVE manager password.")
    kafka_sasl_password: SecretStr | None = Field(None, description="Kafka SCRAM password.")
    slack: SlackCredentials | None = Field(None, description="Slack bot credentials.")

    def credentials(self) -> SiteCredentials:
        """The secrets, with ``RUBIN_UPGRADE_*`` environment variables taking precedence."""
        return SiteCredentials(
            argocd_password=self.argocd_password,
            love_password=self.love_password,
            kafka_sasl_password=self.kafka_sasl_password,
            slack_token=self.slack.token if self.slack is not None else None,
        ).with_environment()

    @classmethod
    def of(cls, site: SiteConfig, credentials: SiteCredentials) -> UpgradeSite:
        """The block for ``site`` holding ``credentials`` in its secret fields."""
        return cls(
            site=site,
            argocd_password=credentials.argocd_password,
            love_password=credentials.love_password,
            kafka_sasl_password=credentials.kafka_sasl_password,
            slack=SlackCredentials(token=credentials.slack_token)
            if credentials.slack_token
            else None,
        )


async def save_site_block(site: SiteConfig, credentials: SiteCredentials, name: str) -> None:
    """Save ``site`` with ``credentials`` as the `Rubin Upgrade Site` block ``name``."""
    await UpgradeSite.of(site, credentials).asave(name, overwrite=True)


async def load_site_block(name: str) -> UpgradeSite:
    """Load a saved site by block name; `ValueError` when there is none of that name."""
    block = await UpgradeSite.aload(name)
    if not isinstance(block, UpgradeSite):  # pragma: no cover - Prefect returns the class asked
        raise TypeError(f"block {name!r} is not a Rubin Upgrade Site")
    return block
