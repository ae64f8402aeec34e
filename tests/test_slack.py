"""Slack notices through the project's notifier against the simulated Slack Web API."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from pydantic import SecretStr
from slack_sdk.web.async_client import AsyncWebClient
from starlette.applications import Starlette

from blocks.site import SlackConfig
from clients.slack import Audience, SlackNotifier
from sim.http import serve_app
from sim.slack import SlackState, create_slack_app
from sim.writelog import WriteLog

TOKEN = "xoxb-sim-0123456789-secret"
SITE_CHANNEL = "#summit-control-room"
CAMERA_CHANNEL = "#lsstcam-ops"


@dataclass
class SlackSim:
    app: Starlette
    url: str
    write_log: WriteLog

    @property
    def state(self) -> SlackState:
        state: SlackState = self.app.state.slack
        return state

    def config(self, **overrides: str | None) -> SlackConfig:
        values: dict[str, str | None] = {
            "channel": SITE_CHANNEL,
            "camera_channel": CAMERA_CHANNEL,
            "base_url": f"{self.url}/api/",
        }
        values.update(overrides)
        return SlackConfig.model_validate(values)

    def notifier(self, token: str | None = TOKEN, **options: float) -> SlackNotifier:
        return SlackNotifier(
            self.config(),
            token=SecretStr(token) if token is not None else None,
            timeout_s=5.0,
            **options,  # type: ignore[arg-type]
        )


@pytest.fixture(scope="module")
async def slack_server() -> AsyncIterator[SlackSim]:
    write_log = WriteLog()
    app = create_slack_app(
        write_log, token=TOKEN, channels=[SITE_CHANNEL, CAMERA_CHANNEL, "#rubinobs-it"]
    )
    async with serve_app(app, name="slack") as url:
        yield SlackSim(app, url, write_log)


@pytest.fixture
def slack(slack_server: SlackSim) -> SlackSim:
    """The module's Slack, with no messages, no records and no faults."""
    slack_server.state.reset()
    slack_server.write_log.clear()
    return slack_server


async def test_notices_go_to_the_audiences_channels_and_are_recorded(slack: SlackSim) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Cycle 45* begins"}}]
    async with slack.notifier() as notifier:
        assert await notifier.notify("Upgrade to c0045 begins", blocks=blocks)
        assert await notifier.notify("Camera: stop taking images", audience=Audience.CAMERA)
        # The site names no IT channel: IT is told in the site's channel.
        assert await notifier.notify("Kafka is going down", audience=Audience.IT)
        assert await notifier.notify("Directly", channel="#rubinobs-it")

    messages = slack.state.messages
    assert [(m.channel, m.text) for m in messages] == [
        (SITE_CHANNEL, "Upgrade to c0045 begins"),
        (CAMERA_CHANNEL, "Camera: stop taking images"),
        (SITE_CHANNEL, "Kafka is going down"),
        ("#rubinobs-it", "Directly"),
    ]
    assert messages[0].blocks == blocks
    assert slack.app.state.messages == messages
    assert len({m.ts for m in messages}) == 4
    records = slack.write_log.records
    assert [(r.service, r.method, r.target) for r in records][:2] == [
        ("slack", "chat.postMessage", SITE_CHANNEL),
        ("slack", "chat.postMessage", CAMERA_CHANNEL),
    ]
    assert records[0].body == {"text": "Upgrade to c0045 begins"}


async def test_long_messages_are_summarised_in_the_write_log(slack: SlackSim) -> None:
    text = "x" * 500
    assert await slack.notifier().notify(text)
    assert slack.state.messages[0].text == text
    assert slack.write_log.records[0].body == {"text": "x" * 200}


async def test_slack_down_logs_a_warning_and_returns_false(
    slack: SlackSim, caplog: pytest.LogCaptureFixture
) -> None:
    slack.state.down = True
    with caplog.at_level(logging.WARNING, logger="clients.slack"):
        assert not await slack.notifier().notify("Upgrade begins")
    assert slack.state.messages == []
    assert len(slack.write_log) == 0
    warning = next(r for r in caplog.records if r.name == "clients.slack")
    assert warning.levelno == logging.WARNING
    assert "HTTP 503" in warning.getMessage()
    assert "Upgrade begins" in warning.getMessage()


async def test_slack_unreachable_returns_false(caplog: pytest.LogCaptureFixture) -> None:
    async with serve_app(create_slack_app(token=TOKEN), name="slack") as url:
        pass  # the port is closed again: connections are refused
    config = SlackConfig(channel=SITE_CHANNEL, base_url=f"{url}/api/")
    notifier = SlackNotifier(config, token=SecretStr(TOKEN), connect_retries=0)
    with caplog.at_level(logging.WARNING, logger="clients.slack"):
        assert not await notifier.notify("Upgrade begins")
    assert "not posted" in caplog.text
    assert TOKEN not in caplog.text


async def test_invalid_token_returns_false_without_logging_the_token(
    slack: SlackSim, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "xoxb-wrong-token-987654321"
    notifier = slack.notifier(token=wrong)
    # Everything any logger says, slack-sdk's own debug output included.
    with caplog.at_level(logging.DEBUG):
        assert not await notifier.notify("Upgrade begins")
    assert "invalid_auth" in caplog.text
    assert wrong not in caplog.text
    assert TOKEN not in caplog.text
    assert wrong not in repr(notifier)
    assert slack.state.messages == []


async def test_unknown_channel_and_missing_membership_return_false(
    slack: SlackSim, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = slack.notifier()
    slack.state.remove_bot(CAMERA_CHANNEL)
    with caplog.at_level(logging.WARNING, logger="clients.slack"):
        assert not await notifier.notify("Hello", channel="#no-such-channel")
        assert not await notifier.notify("Hello", audience=Audience.CAMERA)
    assert "channel_not_found" in caplog.text
    assert "not_in_channel" in caplog.text
    assert slack.state.messages == []


async def test_a_short_rate_limit_is_waited_out_once(slack: SlackSim) -> None:
    slack.state.rate_limit(1, retry_after_s=0)
    assert await slack.notifier().notify("Upgrade begins")
    assert slack.state.requests == ["chat.postMessage", "chat.postMessage"]
    assert len(slack.state.messages) == 1


async def test_a_long_rate_limit_gives_up_at_once(
    slack: SlackSim, caplog: pytest.LogCaptureFixture
) -> None:
    slack.state.rate_limit(5, retry_after_s=30)
    with caplog.at_level(logging.WARNING, logger="clients.slack"):
        assert not await slack.notifier(max_retry_after_s=5.0).notify("Upgrade begins")
    assert slack.state.requests == ["chat.postMessage"]
    assert "rate limited" in caplog.text
    assert "Retry-After 30" in caplog.text


async def test_without_a_token_notices_are_only_logged(
    slack: SlackSim, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = slack.notifier(token=None)
    assert notifier.is_null
    with caplog.at_level(logging.INFO, logger="clients.slack"):
        assert not await notifier.notify("Upgrade begins", audience=Audience.CAMERA)
    assert slack.state.requests == []
    assert f"would have posted to {CAMERA_CHANNEL}: Upgrade begins" in caplog.text


async def test_the_simulated_api_answers_slack_sdk_directly(slack: SlackSim) -> None:
    """The sim speaks the Web API itself: auth.test, form-encoded posts and unknown methods."""
    client = AsyncWebClient(token=TOKEN, base_url=f"{slack.url}/api/")
    identity = await client.auth_test()
    assert identity["ok"]
    assert identity["bot_id"]
    answer = await client.api_call(
        "chat.postMessage", data={"channel": SITE_CHANNEL, "text": "form-encoded"}
    )
    assert answer["channel"] == SITE_CHANNEL
    assert answer["message"]["text"] == "form-encoded"
    assert slack.state.messages_in("summit-control-room")[0].text == "form-encoded"
