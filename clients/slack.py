"""Slack notices for the upgrade: the site's channel, and the camera and IT teams' channels.

A notice is a courtesy, not a step: Slack being down, a revoked token or a rate limit must never
stop an upgrade. `SlackNotifier.notify` therefore never raises; it logs what could not be posted
(with the `logging` module, never the token) and returns False. Without a token it runs in null
mode and logs each notice it would have posted, so rehearsals and sites without a bot still work.
"""

from __future__ import annotations

import asyncio
import logging
import math
from enum import StrEnum
from types import TracebackType
from typing import Any, Self

from pydantic import SecretStr
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from blocks.site import SlackConfig

__all__ = ["Audience", "SlackNotifier"]

_logger = logging.getLogger(__name__)
_PREVIEW_CHARS = 200
_SLACK_API = "https://slack.com/api/"


class Audience(StrEnum):
    """Who a notice is for; each maps to a channel of the site's ``slack`` configuration."""

    SITE = "site"
    CAMERA = "camera"
    IT = "it"


class SlackNotifier:
    """Posts notices to one site's Slack channels with slack-sdk's ``AsyncWebClient``.

    Parameters
    ----------
    config
        The site's channels and, for the simulated site, the Web API base URL.
    token
        The bot token; ``None`` (and no ``client``) means null mode: notices are only logged.
    client
        A ready ``AsyncWebClient`` to use instead of making one (its token is then used).
    timeout_s
        How long one request may take.
    connect_retries
        How many times a request that could not connect is tried again.
    max_retry_after_s
        The longest ``Retry-After`` a rate-limited notice waits out (once); a longer one gives
        up, since holding an upgrade step back for a notice is worse than missing it.
    """

    def __init__(
        self,
        config: SlackConfig,
        *,
        token: SecretStr | None = None,
        client: AsyncWebClient | None = None,
        timeout_s: float = 10.0,
        connect_retries: int = 1,
        max_retry_after_s: float = 5.0,
    ) -> None:
        self.config = config
        self._max_retry_after_s = max_retry_after_s
        # Kept only to scrub it from any error text that might echo it back.
        self._token = token
        if client is None and token is not None:
            base_url = config.base_url or _SLACK_API
            client = AsyncWebClient(
                token=token.get_secret_value(),
                # slack-sdk joins method names onto the base URL: it must end with a slash.
                base_url=base_url if base_url.endswith("/") else base_url + "/",
                timeout=max(1, math.ceil(timeout_s)),
                retry_handlers=[AsyncConnectionErrorRetryHandler(max_retry_count=connect_retries)],
            )
        self._client = client

    def __repr__(self) -> str:
        mode = "null" if self._client is None else "live"
        return f"SlackNotifier(channel={self.config.channel!r}, mode={mode})"

    @property
    def is_null(self) -> bool:
        """True when no token is configured and notices are only logged."""
        return self._client is None

    async def aclose(self) -> None:
        """Nothing to release: slack-sdk opens and closes a session per request by default."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def channel_for(self, audience: Audience = Audience.SITE) -> str:
        """The channel for ``audience``: its own if the site names one, else the site's."""
        own = {
            Audience.SITE: None,
            Audience.CAMERA: self.config.camera_channel,
            Audience.IT: self.config.it_channel,
        }[Audience(audience)]
        return own or self.config.channel

    async def notify(
        self,
        text: str,
        *,
        channel: str | None = None,
        audience: Audience = Audience.SITE,
        blocks: list[dict[str, Any]] | None = None,
    ) -> bool:
        """Post ``text`` (and optional Block Kit ``blocks``) to Slack; True if Slack took it.

        ``channel`` names the channel outright; otherwise ``audience`` picks it from the site's
        configuration. ``text`` is also the fallback Slack shows where blocks cannot be.

        Never raises (cancellation excepted): any failure is logged as a warning and the answer
        is False. In null mode the notice is logged and the answer is False.
        """
        target = channel or self.channel_for(audience)
        if self._client is None:
            _logger.info("Slack not configured; would have posted to %s: %s", target, text)
            return False
        try:
            return await self._post(target, text, blocks)
        except Exception as exc:  # noqa: BLE001 - a notice must never break the upgrade
            self._warn(target, text, f"{type(exc).__name__}: {exc}")
            return False

    async def _post(self, channel: str, text: str, blocks: list[dict[str, Any]] | None) -> bool:
        assert self._client is not None
        waited = False
        while True:
            try:
                await self._client.chat_postMessage(channel=channel, text=text, blocks=blocks)
            except SlackApiError as exc:
                retry_after_s = _retry_after_s(exc)
                if (
                    not waited
                    and retry_after_s is not None
                    and retry_after_s <= self._max_retry_after_s
                ):
                    _logger.info(
                        "Slack rate-limited the notice to %s; retrying in %.0f s",
                        channel,
                        retry_after_s,
                    )
                    waited = True
                    await asyncio.sleep(retry_after_s)
                    continue
                self._warn(channel, text, _describe(exc))
                return False
            _logger.debug("Posted a notice to Slack channel %s", channel)
            return True

    def _warn(self, channel: str, text: str, reason: str) -> None:
        if self._token is not None:
            secret = self._token.get_secret_value()
            if secret:
                reason = reason.replace(secret, "**********")
        preview = text if len(text) <= _PREVIEW_CHARS else text[:_PREVIEW_CHARS] + "..."
        _logger.warning("Slack notice to %s not posted (%s): %s", channel, reason, preview)


def _describe(exc: SlackApiError) -> str:
    """Slack's error code and HTTP status, without the request (whose headers hold the token)."""
    response = exc.response
    data = response.data if isinstance(response.data, dict) else {}
    code = data.get("error")
    status = response.status_code
    if status == 429:
        return f"rate limited, HTTP 429, Retry-After {response.headers.get('Retry-After', '?')}"
    if code:
        return f"{code}, HTTP {status}"
    return f"HTTP {status}"


def _retry_after_s(exc: SlackApiError) -> float | None:
    """How long a rate-limited (429) answer asks to wait; None for any other answer."""
    if exc.response.status_code != 429:
        return None
    value = exc.response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
