"""The simulated site's LOVE: the manager's token and command endpoints, and its commander.

The flows send ScriptQueue commands through LOVE's HTTP API as operators' tools do. This app
serves ``POST <base>/manager/api/get-token/`` and ``POST <base>/manager/api/cmd/`` with LOVE's
bodies and status codes, and forwards each command to SAL the way LOVE-commander does: the
``cmd_`` prefix is dropped and the command is sent by a SAL client acting as LOVE, waiting up to
the commander's timeout for a final ack (200 on success, 500 on a failed command, 504 without a
final ack).

LOVE runs only while its manager Deployment exists in the site model (`SiteModel.love_up`):
``cleanup_all`` deletes it and a sync of the ``love`` app recreates it, so in between every
request is refused with 503, as the site's ingress answers for a service without pods. Every
forwarded command is recorded in the write log as service ``love``. Tests reach the state
through ``app.state.love`` to add users, read the forwarded commands or inject faults.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from blocks.site import CscName
from clients.sal.enums import FINAL_ACKS, SalRetCode

if TYPE_CHECKING:
    from starlette.requests import Request

    from sim.model import SiteModel
    from sim.writelog import WriteLog

__all__ = [
    "DEFAULT_COMMANDER_TIMEOUT_S",
    "SERVICE",
    "AckLike",
    "ForwardedCommand",
    "LoveState",
    "LoveUser",
    "SalCommander",
    "create_love_app",
]

SERVICE = "love"
DEFAULT_COMMANDER_TIMEOUT_S = 10.0
_SUMMARY_CHARS = 80


_NO_CREDENTIALS = "Authentication credentials were not provided."
_UNKNOWN_KEY = "Invalid token."
_FORBIDDEN = "You do not have permission to perform this action."
_BAD_LOGIN = "Unable to log in with provided credentials."
_REQUIRED = "This field is required."


class AckLike(Protocol):
    """The final ``ackcmd`` of a command: its SalRetCode and its result text."""

    @property
    def ack(self) -> int: ...

    @property
    def result(self) -> str: ...


class SalCommander(Protocol):
    """What LOVE's commander needs of SAL: send one command and wait for its final ack.

    ``command`` returns the final ack (a failed one may be returned or raised); it raises
    `TimeoutError` when no final ack arrives within ``timeout_s`` (extended, as salobj does, by
    ``CMD_INPROGRESS`` acks). Any other exception is a failed command whose reason is its text.
    The client sends with LOVE's identity: create it that way.
    """

    async def command(
        self, csc: CscName, name: str, params: dict[str, Any] | None = ..., *, timeout_s: float
    ) -> AckLike: ...


@dataclass
class LoveUser:
    """A LOVE account; ``execute_commands`` is the permission the command endpoint checks."""

    username: str
    password: str = field(repr=False)
    execute_commands: bool = True
    email: str = ""


@dataclass(frozen=True)
class ForwardedCommand:
    """A command LOVE sent to SAL, and what LOVE answered."""

    user: str
    csc: CscName
    cmd: str
    params: dict[str, Any]
    status: int
    ack: str


@dataclass
class LoveState:
    """LOVE's accounts, issued tokens and forwarded commands, plus the fault switches tests use.

    `fail_next` makes the next requests answer an error status before LOVE looks at them, as a
    flaky ingress or a restarting manager pod does. ``requests`` lists every request's path,
    refused ones included, so tests can count retries.
    """

    users: dict[str, LoveUser] = field(default_factory=dict)
    commands: list[ForwardedCommand] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    _tokens: dict[str, str] = field(default_factory=dict, repr=False)
    _failures: list[int] = field(default_factory=list)

    def add_user(self, username: str, password: str, *, execute_commands: bool = True) -> LoveUser:
        user = LoveUser(username, password, execute_commands, email=f"{username}@lsst.org")
        self.users[username] = user
        return user

    def issue_token(self, user: LoveUser) -> str:
        token = secrets.token_hex(20)
        self._tokens[token] = user.username
        return token

    def user_for_token(self, token: str) -> LoveUser | None:
        username = self._tokens.get(token)
        return self.users.get(username) if username is not None else None

    def revoke_tokens(self) -> None:
        """Forget every issued token, as an expiry or a database reset does."""
        self._tokens.clear()

    def fail_next(self, count: int = 1, status: int = 503) -> None:
        """Answer the next ``count`` requests with HTTP ``status``."""
        self._failures.extend([status] * count)

    def take_fault(self) -> int | None:
        return self._failures.pop(0) if self._failures else None


def _detail(status: int, message: str, **headers: str) -> JSONResponse:
    # Django REST framework's error shape, which LOVE-manager answers with.
    return JSONResponse({"detail": message}, status_code=status, headers=headers or None)


def _unavailable() -> Response:
    return PlainTextResponse("503 Service Temporarily Unavailable", status_code=503)


class _LoveApi:
    def __init__(
        self,
        model: SiteModel,
        state: LoveState,
        write_log: WriteLog | None,
        *,
        sal: SalCommander,
        base_path: str,
        commander_timeout_s: float,
    ) -> None:
        self.model = model
        self.state = state
        self.write_log = write_log
        self.sal = sal
        self.base_path = base_path.rstrip("/")
        self.commander_timeout_s = commander_timeout_s

    def routes(self) -> list[Route]:
        api = f"{self.base_path}/manager/api"
        return [
            Route(f"{api}/get-token/", self.get_token, methods=["POST"]),
            Route(f"{api}/cmd/", self.cmd, methods=["POST"]),
            Route("/{path:path}", self.not_found, methods=["GET", "POST", "PUT", "DELETE"]),
        ]

    def _refusal(self, request: Request) -> Response | None:
        """The answer a request gets before LOVE sees it: LOVE is down or a fault is injected."""
        self.state.requests.append(request.url.path)
        if not self.model.love_up:
            return _unavailable()
        status = self.state.take_fault()
        if status is None:
            return None
        if status == 503:
            return _unavailable()
        return PlainTextResponse(f"HTTP {status}", status_code=status)

    async def get_token(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        body = await _json_object(request)
        if body is None:
            return _detail(400, "JSON parse error.")
        missing = {
            name: [_REQUIRED]
            for name in ("username", "password")
            if not isinstance(body.get(name), str) or not body[name]
        }
        if missing:
            return JSONResponse(missing, status_code=400)
        user = self.state.users.get(body["username"])
        if user is None or not secrets.compare_digest(user.password, body["password"]):
            return JSONResponse({"non_field_errors": [_BAD_LOGIN]}, status_code=400)
        return JSONResponse(
            {
                "token": self.state.issue_token(user),
                "user": {"username": user.username, "email": user.email},
                "permissions": {"execute_commands": user.execute_commands},
            }
        )

    def _authenticate(self, request: Request) -> LoveUser | Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme != "Token" or not token.strip():
            return _detail(401, _NO_CREDENTIALS, **{"WWW-Authenticate": "Token"})
        user = self.state.user_for_token(token.strip())
        if user is None:
            return _detail(401, _UNKNOWN_KEY, **{"WWW-Authenticate": "Token"})
        return user

    async def cmd(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        user = self._authenticate(request)
        if isinstance(user, Response):
            return user
        if not user.execute_commands:
            return _detail(403, _FORBIDDEN)
        body = await _json_object(request)
        problem = _command_problem(body)
        if problem is not None or body is None:
            return JSONResponse({"ack": problem}, status_code=400)
        csc = CscName(name=body["csc"], index=body["salindex"])
        cmd: str = body["cmd"]
        params: dict[str, Any] = body["params"]
        if self.write_log is not None:
            self.write_log.record(
                SERVICE,
                "cmd",
                str(csc),
                {"cmd": cmd, "user": user.username, "params": summarize_params(params)},
            )
        status, ack = await self._forward(csc, cmd.removeprefix("cmd_"), params)
        self.state.commands.append(ForwardedCommand(user.username, csc, cmd, params, status, ack))
        return JSONResponse({"ack": ack}, status_code=status)

    async def _forward(self, csc: CscName, name: str, params: dict[str, Any]) -> tuple[int, str]:
        """LOVE-commander's status and ack text for one command sent to SAL."""
        try:
            final = await self.sal.command(csc, name, params, timeout_s=self.commander_timeout_s)
        except TimeoutError as exc:
            return 504, f"Command time out. {_last_ack_text(getattr(exc, 'last', None))}"
        except Exception as exc:  # noqa: BLE001 - any SAL failure is a failed command to LOVE
            return 500, _failure_text(exc)
        if final.ack == SalRetCode.CMD_COMPLETE:
            return 200, final.result
        if final.ack not in FINAL_ACKS:
            return 504, f"Command time out. {_last_ack_text(final)}"
        return 500, final.result or f"Command failed with ack {_ack_name(final.ack)}."

    async def not_found(self, request: Request) -> Response:
        refusal = self._refusal(request)
        return refusal if refusal is not None else _detail(404, "Not found.")


def _ack_name(code: int) -> str:
    try:
        return SalRetCode(code).name
    except ValueError:
        return str(code)


def _last_ack_text(last: AckLike | None) -> str:
    # LOVE-commander's words for a command without a final ack.
    if last is None:
        return "No ack received from component."
    return f"Last ack received {_ack_name(last.ack)}: {last.result or '-'}."


def _failure_text(exc: Exception) -> str:
    # A SAL client's failed-command error may carry the final ack; its result is the reason.
    ack = getattr(exc, "ack", None)
    result = getattr(ack, "result", None)
    if isinstance(result, str) and result:
        return result
    return str(exc) or type(exc).__name__


def _command_problem(body: dict[str, Any] | None) -> str | None:
    """What is wrong with a cmd/ body, in LOVE-commander's words; None when it is usable."""
    if body is None:
        return "Request must be a JSON object."
    missing = [key for key in ("csc", "salindex", "cmd", "params") if key not in body]
    if missing:
        return (
            "Request must have JSON data with the following keys: csc, salindex, cmd, params. "
            f"Missing: {', '.join(missing)}"
        )
    csc, salindex, cmd = body["csc"], body["salindex"], body["cmd"]
    checks = (
        (isinstance(csc, str) and bool(csc), "csc must be a SAL component name."),
        (isinstance(salindex, int) and not isinstance(salindex, bool), "salindex must be an int."),
        (
            isinstance(cmd, str) and cmd.startswith("cmd_"),
            f"cmd must name a command such as cmd_add, not {cmd!r}.",
        ),
        (isinstance(body["params"], dict), "params must be an object."),
    )
    return next((message for ok, message in checks if not ok), None)


def summarize_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Command parameters shortened for the write log (a script's YAML config can be long)."""
    summary: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, str) and len(value) > _SUMMARY_CHARS:
            summary[key] = value[:_SUMMARY_CHARS] + "..."
        elif isinstance(value, (str, int, float, bool)) or value is None:
            summary[key] = value
        else:
            text = repr(value)
            summary[key] = text if len(text) <= _SUMMARY_CHARS else text[:_SUMMARY_CHARS] + "..."
    return summary


async def _json_object(request: Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def create_love_app(
    model: SiteModel,
    write_log: WriteLog | None = None,
    *,
    sal: SalCommander,
    username: str = "admin",
    password: str,
    base_path: str = "/love",
    commander_timeout_s: float = DEFAULT_COMMANDER_TIMEOUT_S,
) -> Starlette:
    """LOVE under ``base_path`` as an ASGI app, its state at ``app.state.love``.

    ``username``/``password`` is the account the flows use, with permission to execute
    commands; add others with ``app.state.love.add_user``. ``sal`` sends the commands (see
    `SalCommander`); ``commander_timeout_s`` is how long the commander waits for a final ack.
    """
    state = LoveState()
    state.add_user(username, password, execute_commands=True)
    api = _LoveApi(
        model,
        state,
        write_log,
        sal=sal,
        base_path=base_path,
        commander_timeout_s=commander_timeout_s,
    )
    app = Starlette(routes=api.routes())
    app.state.love = state
    return app
