"""The simulated site's Slack: the Web API methods the upgrade's notifications use.

It answers ``chat.postMessage`` and ``auth.test`` the way Slack does (HTTP 200 with ``"ok":
false`` and an error code for bad tokens and channels; 429 with ``Retry-After`` when rate
limited) so that slack-sdk's own ``AsyncWebClient`` can be pointed at it with
``base_url="http://127.0.0.1:PORT/api/"``. Every accepted message is kept in
``app.state.messages`` and recorded in the write log as service ``slack``. Tests reach the rest
of the state through ``app.state.slack`` to make Slack fail (``down``, `SlackState.rate_limit`,
`SlackState.remove_bot`); to refuse connections, stop the server.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from starlette.requests import Request

    from sim.writelog import WriteLog

__all__ = ["SERVICE", "SlackMessage", "SlackState", "create_slack_app"]

SERVICE = "slack"
_LOGGED_TEXT_CHARS = 200
_TEAM = {"team": "Rubin Observatory (simulated)", "team_id": "T0SIMRUBIN"}
_BOT = {"user": "rubin-upgrade", "user_id": "U0SIMBOT", "bot_id": "B0SIMBOT"}


@dataclass(frozen=True)
class SlackMessage:
    """One message Slack accepted."""

    channel: str
    text: str
    blocks: list[dict[str, Any]] | None
    ts: str
    time: float


@dataclass
class SlackState:
    """The messages posted so far, plus the fault switches tests use.

    ``channels`` is the workspace's channel list when given (names such as ``#summit`` or IDs);
    any other channel is ``channel_not_found``. ``None`` accepts every channel. ``down`` makes
    every request answer 503, as Slack does during an outage.
    """

    token: str | None = field(default=None, repr=False)
    channels: set[str] | None = None
    down: bool = False
    messages: list[SlackMessage] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    _not_member: set[str] = field(default_factory=set)
    _rate_limited: int = 0
    _retry_after_s: int = 1
    _ts: itertools.count[int] = field(default_factory=itertools.count)

    def reset(self) -> None:
        """Forget the messages and requests and clear every fault (the channel list stays)."""
        self.down = False
        self.messages.clear()
        self.requests.clear()
        self._not_member.clear()
        self._rate_limited = 0

    def rate_limit(self, count: int = 1, *, retry_after_s: int = 1) -> None:
        """Answer the next ``count`` requests 429 with ``Retry-After: retry_after_s``."""
        self._rate_limited = count
        self._retry_after_s = retry_after_s

    def remove_bot(self, channel: str) -> None:
        """The bot leaves ``channel``: posting there answers ``not_in_channel``."""
        self._not_member.add(_channel_key(channel))

    def is_member(self, channel: str) -> bool:
        return _channel_key(channel) not in self._not_member

    def messages_in(self, channel: str) -> list[SlackMessage]:
        key = _channel_key(channel)
        return [m for m in self.messages if _channel_key(m.channel) == key]

    def take_fault(self) -> Response | None:
        """The answer the current request must get instead of being served, if any."""
        if self.down:
            return PlainTextResponse("Service Unavailable", status_code=503)
        if self._rate_limited > 0:
            self._rate_limited -= 1
            return JSONResponse(
                {"ok": False, "error": "ratelimited"},
                status_code=429,
                headers={"Retry-After": str(self._retry_after_s)},
            )
        return None

    def next_ts(self) -> str:
        # Slack's ts is the message id within a channel: unique, ordered, seconds.micro.
        return f"{int(time.time())}.{next(self._ts):06d}"


def _channel_key(channel: str) -> str:
    return channel.removeprefix("#")


class _SlackApiError(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _error(code: str) -> JSONResponse:
    # Slack reports API-level failures with HTTP 200 and ok: false.
    return JSONResponse({"ok": False, "error": code})


class _SlackApi:
    def __init__(self, state: SlackState, write_log: WriteLog | None) -> None:
        self.state = state
        self.write_log = write_log

    def routes(self) -> list[Route]:
        return [
            Route("/api/chat.postMessage", self.post_message, methods=["POST"]),
            Route("/api/auth.test", self.auth_test, methods=["POST", "GET"]),
            Route("/api/{method:str}", self.unknown_method, methods=["POST", "GET"]),
        ]

    async def _begin(self, request: Request) -> tuple[dict[str, Any], Response | None]:
        """The request's arguments, or the answer that ends it (a fault or a bad token)."""
        self.state.requests.append(request.url.path.rsplit("/", 1)[-1])
        fault = self.state.take_fault()
        if fault is not None:
            return {}, fault
        try:
            args = await _arguments(request)
        except ValueError:
            return {}, _error("invalid_json")
        token = _token(request, args)
        if token is None:
            return args, _error("not_authed")
        if self.state.token is not None and token != self.state.token:
            return args, _error("invalid_auth")
        return args, None

    async def auth_test(self, request: Request) -> Response:
        _, answer = await self._begin(request)
        if answer is not None:
            return answer
        return JSONResponse({"ok": True, "url": "https://rubin-obs.slack.com/", **_TEAM, **_BOT})

    async def post_message(self, request: Request) -> Response:
        args, answer = await self._begin(request)
        if answer is not None:
            return answer
        try:
            channel, text, blocks = self._message(args)
        except _SlackApiError as exc:
            return _error(exc.code)
        ts = self.state.next_ts()
        self.state.messages.append(
            SlackMessage(channel=channel, text=text, blocks=blocks, ts=ts, time=time.time())
        )
        if self.write_log is not None:
            self.write_log.record(
                SERVICE, "chat.postMessage", channel, {"text": text[:_LOGGED_TEXT_CHARS]}
            )
        message: dict[str, Any] = {
            "type": "message",
            "text": text,
            "user": _BOT["user_id"],
            "bot_id": _BOT["bot_id"],
            "ts": ts,
        }
        if blocks:
            message["blocks"] = blocks
        return JSONResponse({"ok": True, "channel": channel, "ts": ts, "message": message})

    def _message(self, args: dict[str, Any]) -> tuple[str, str, list[dict[str, Any]] | None]:
        """The channel, text and blocks of a postable message; `_SlackApiError` otherwise."""
        channel = args.get("channel")
        if not isinstance(channel, str) or not channel:
            raise _SlackApiError("channel_not_found")
        known = self.state.channels
        if known is not None and _channel_key(channel) not in {_channel_key(c) for c in known}:
            raise _SlackApiError("channel_not_found")
        if not self.state.is_member(channel):
            raise _SlackApiError("not_in_channel")
        text = args.get("text")
        text = text if isinstance(text, str) else ""
        blocks = args.get("blocks")
        if isinstance(blocks, str):
            # Form-encoded requests carry blocks as JSON text.
            try:
                blocks = json.loads(blocks)
            except ValueError:
                raise _SlackApiError("invalid_blocks") from None
        if blocks is not None and not isinstance(blocks, list):
            raise _SlackApiError("invalid_blocks")
        if not text and not blocks:
            raise _SlackApiError("no_text")
        return channel, text, blocks

    async def unknown_method(self, request: Request) -> Response:
        _, answer = await self._begin(request)
        return answer if answer is not None else _error("unknown_method")


async def _arguments(request: Request) -> dict[str, Any]:
    """The method's arguments from the query string and a form or JSON body, as Slack reads them."""
    args: dict[str, Any] = dict(request.query_params)
    body = await request.body()
    if not body:
        return args
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        parsed = json.loads(body)
        if not isinstance(parsed, dict):
            raise ValueError("not a JSON object")
        args.update(parsed)
    else:
        form = parse_qs(body.decode(), keep_blank_values=True)
        args.update({key: values[-1] for key, values in form.items()})
    return args


def _token(request: Request, args: dict[str, Any]) -> str | None:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials:
        return credentials
    token = args.get("token")
    return token if isinstance(token, str) and token else None


def create_slack_app(
    write_log: WriteLog | None = None,
    *,
    token: str | None = None,
    channels: Iterable[str] | None = None,
) -> Starlette:
    """Slack's Web API under ``/api/`` as an ASGI app, its state at ``app.state.slack``.

    ``token`` is the one bot token accepted (``None`` accepts any); ``channels`` the
    workspace's channels (``None`` accepts any channel).
    """
    state = SlackState(token=token, channels=set(channels) if channels is not None else None)
    app = Starlette(routes=_SlackApi(state, write_log).routes())
    app.state.slack = state
    # The message list itself, for readers that want only what was posted.
    app.state.messages = state.messages
    return app
