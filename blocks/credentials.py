"""The secrets a site needs, kept apart from the reviewed site file.

Secrets never appear in a site file, a log line, an artifact or an exception. They come from a
saved `blocks.upgrade_site.UpgradeSite` block or from ``RUBIN_UPGRADE_*`` environment variables
(which win), and stay `SecretStr` until the one call that sends them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr

__all__ = ["ENV_PREFIX", "SiteCredentials"]

ENV_PREFIX = "RUBIN_UPGRADE_"


class SiteCredentials(BaseModel):
    """Passwords and tokens for one site's services; any may be absent where not needed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    argocd_password: SecretStr | None = None
    love_password: SecretStr | None = None
    kafka_sasl_password: SecretStr | None = None
    slack_token: SecretStr | None = None

    def with_environment(self, environ: Mapping[str, str] | None = None) -> SiteCredentials:
        """These credentials with ``RUBIN_UPGRADE_<FIELD>`` variables taking precedence."""
        environ = os.environ if environ is None else environ
        updates: dict[str, SecretStr] = {}
        for field in type(self).model_fields:
            value = environ.get(ENV_PREFIX + field.upper())
            if value:
                updates[field] = SecretStr(value)
        return self.model_copy(update=updates)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> SiteCredentials:
        return cls().with_environment(environ)

    @classmethod
    def from_env_file(cls, path: Path) -> SiteCredentials:
        """The ``RUBIN_UPGRADE_<FIELD>=value`` lines of a file (as `rubin-upgrade sim` writes
        beside its site file); other lines are ignored, and an absent file gives none."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls()
        values = dict(
            line.strip().split("=", 1) for line in text.splitlines() if "=" in line.strip()
        )
        return cls().with_environment(values)
