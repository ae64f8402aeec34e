"""Client of LOVE's HTTP API: send SAL commands (mostly to the ScriptQueues) as an operator does.

LOVE answers a command only once the commander has its final ack, so the HTTP status is the
command's outcome: 200 done, 500 failed, 504 no final ack in time (the command may or may not
have acted). Those outcomes are never retried, since sending the command again could repeat an
action such as adding a script. Only failures that prove the command never reached LOVE are
retried: refused connections, 503 from the ingress while LOVE is down and other 5xx gateway
errors. A token is obtained at the first command, and once more if LOVE stops accepting it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from enum import IntEnum
from types import TracebackType
from typing import Any, Self

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

__all__ = [
    "LoveAck",
    "LoveAuthError",
    "LoveClient",
    "LoveCommandFailedError",
    "LoveError",
    "LoveNoAckError",
    "LovePermissionError",
    "LoveSession",
    "LoveUnavailableError",
    "LoveValidationError",
    "LoveWebError",
    "ScriptLocation",
]

_logger = logging.getLogger(__name__)
_DETAIL_CHARS = 300
# These errors prove the request was never sent, so even a command may be sent again.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Command outcomes reported by LOVE-commander, not failures of the way to it.
_OUTCOMES = frozenset({500, 504})


class ScriptLocation(IntEnum):
    """Where ``ScriptQueue.cmd_add`` puts a script (ts_xml ``ScriptQueue.Location``)."""

    FIRST = 1
    LAST = 2
    BEFORE = 3
    AFTER = 4


class LoveAck(BaseModel):
    """A command LOVE reports done, with the final ack's result text."""

    model_config = ConfigDict(frozen=True)

    csc: str
    salindex: int
    cmd: str
    result: str = Field(description="The final ackcmd's result, such as a new script's index.")


class LoveSession(BaseModel):
    """Who the client is logged in as and whether LOVE lets that account send commands."""

    model_config = ConfigDict(frozen=True)

    username: str
    execute_commands: bool


class LoveError(Exception):
    """Base of every error this module raises."""


class LoveWebError(LoveError):
    """LOVE answered with an HTTP error; ``detail`` is its explanation when it gave one."""

    def __init__(self, message: str, *, method: str, url: str, status: int, detail: str) -> None:
        super().__init__(f"{method} {url}: HTTP {status}: {message}")
        self.method = method
        self.url = url
        self.status = status
        self.detail = detail


class LoveAuthError(LoveWebError):
    """LOVE refused the account's credentials or token (HTTP 400/401)."""


class LovePermissionError(LoveWebError):
    """The account may not execute commands (HTTP 403)."""


class LoveCommandFailedError(LoveWebError):
    """The command reached the CSC and failed (HTTP 500); ``reason`` says why."""

    def __init__(
        self, reason: str, *, method: str, url: str, status: int, csc: str, cmd: str
    ) -> None:
        super().__init__(
            f"{cmd} to {csc} failed: {reason}",
            method=method,
            url=url,
            status=status,
            detail=reason,
        )
        self.reason = reason
        self.csc = csc
        self.cmd = cmd


class LoveNoAckError(LoveError):
    """No final ack came back (HTTP 504 or no answer): the state is unknown, re-check it.

    The command may have acted; do not blindly send it again. ``status`` is None when LOVE
    gave no answer at all.
    """

    def __init__(self, message: str, *, csc: str, cmd: str, status: int | None) -> None:
        super().__init__(f"{cmd} to {csc}: {message} (state unknown: re-check before retrying)")
        self.csc = csc
        self.cmd = cmd
        self.status = status
        self.detail = message


class LoveUnavailableError(LoveError):
    """LOVE could not be reached or was down (503), even after retrying."""


class LoveValidationError(LoveError):
    """LOVE answered with a body this client cannot understand."""


class _TokenBody(BaseModel):
    token: SecretStr
    permissions: dict[str, Any] = Field(default_factory=dict)


class _AckBody(BaseModel):
    ack: str


class LoveClient:
    """Sends commands through one LOVE instance.

    Parameters
    ----------
    base_url
        LOVE's root, including its path prefix (``https://summit-lsp.lsst.codes/love``).
    username, password
        The account to log in with; it needs LOVE's ``execute_commands`` permission.
    http_client
        Share a connection pool; otherwise the client makes its own and closes it in `aclose`.
    timeout_s
        Time limit of a login and of connecting.
    command_timeout_s
        Default time limit of a command request; LOVE holds it open until the final ack, so it
        must exceed the commander's own timeout and the command's expected duration.
    retries, retry_delay_s
        How many times a request that never reached LOVE is tried again, waiting
        ``retry_delay_s``, then twice that, and so on.
    """

    def __init__(
        self,
        base_url: str,
        *,
        username: str,
        password: SecretStr,
        http_client: httpx.AsyncClient | None = None,
        timeout_s: float = 10.0,
        command_timeout_s: float = 60.0,
        retries: int = 3,
        retry_delay_s: float = 0.5,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._password = password
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout_s)
        self._timeout_s = timeout_s
        self._command_timeout_s = command_timeout_s
        self._retries = retries
        self._retry_delay_s = retry_delay_s
        self._token: SecretStr | None = None
        self._login_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"LoveClient({self.base_url!r}, username={self.username!r})"

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- Login ----------------------------------------------------------------------------------

    async def login(self) -> LoveSession:
        """Obtain a fresh token; say whether the account may execute commands.

        Raises
        ------
        LoveAuthError
            LOVE refused the username or password.
        LoveWebError
            LOVE answered with another HTTP error.
        LoveValidationError
            The answer carries no token.
        LoveUnavailableError
            LOVE could not be reached or was down.
        """
        url = f"{self.base_url}/manager/api/get-token/"
        body = {"username": self.username, "password": self._password.get_secret_value()}
        response = await self._send(
            "POST", url, body, headers={}, timeout_s=self._timeout_s, resend_if_unanswered=True
        )
        if response.status_code in (400, 401, 403):
            detail = _error_detail(response)
            raise LoveAuthError(
                f"LOVE refused the credentials of {self.username!r}: {detail}",
                method="POST",
                url=url,
                status=response.status_code,
                detail=detail,
            )
        _raise_for_status("POST", url, response)
        try:
            parsed = _TokenBody.model_validate(response.json())
        except (ValueError, ValidationError):
            raise LoveValidationError(f"POST {url}: the answer carries no token") from None
        self._token = parsed.token
        return LoveSession(
            username=self.username,
            execute_commands=bool(parsed.permissions.get("execute_commands", False)),
        )

    async def _current_token(self, *, replacing: SecretStr | None = None) -> SecretStr:
        """The token to send; log in first if there is none yet or it is ``replacing``."""
        async with self._login_lock:
            # Concurrent commands that all saw the same stale token log in only once.
            if self._token is None or self._token is replacing:
                await self.login()
            assert self._token is not None
            return self._token

    # --- Commands -------------------------------------------------------------------------------

    async def command(
        self,
        csc: str,
        salindex: int,
        cmd: str,
        params: Mapping[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> LoveAck:
        """Send ``cmd`` (``cmd_add`` or ``add``) to ``csc``:``salindex``; wait for its final ack.

        ``timeout_s`` bounds the whole request (default ``command_timeout_s``).

        Raises
        ------
        LoveCommandFailedError
            The command failed (HTTP 500); ``reason`` is the CSC's.
        LoveNoAckError
            No final ack in time (HTTP 504), or the request was sent and no answer came: the
            command may have acted. Re-check the state before sending it again.
        LovePermissionError
            The account may not execute commands (HTTP 403).
        LoveAuthError
            LOVE refused the account's credentials.
        LoveWebError
            LOVE answered with another HTTP error (400: a malformed command).
        LoveValidationError
            The answer carries no ack.
        LoveUnavailableError
            LOVE could not be reached or was down; the command was not sent.
        """
        name = cmd if cmd.startswith("cmd_") else f"cmd_{cmd}"
        target = f"{csc}:{salindex}"
        url = f"{self.base_url}/manager/api/cmd/"
        body = {"csc": csc, "salindex": salindex, "cmd": name, "params": dict(params or {})}
        timeout = self._command_timeout_s if timeout_s is None else timeout_s
        token = await self._current_token()
        try:
            response = await self._send_command(url, body, token, timeout)
            if response.status_code == 401:
                # The token expired or was revoked; LOVE rejected the command unsent.
                token = await self._current_token(replacing=token)
                response = await self._send_command(url, body, token, timeout)
        except _SentButUnansweredError as exc:
            raise LoveNoAckError(
                f"sent, but no answer from LOVE ({exc})", csc=target, cmd=name, status=None
            ) from None
        result = self._command_result(url, target, name, response)
        return LoveAck(csc=csc, salindex=salindex, cmd=name, result=result)

    async def _send_command(
        self, url: str, body: dict[str, Any], token: SecretStr, timeout_s: float
    ) -> httpx.Response:
        headers = {"Authorization": f"Token {token.get_secret_value()}"}
        return await self._send(
            "POST", url, body, headers=headers, timeout_s=timeout_s, resend_if_unanswered=False
        )

    def _command_result(self, url: str, target: str, name: str, response: httpx.Response) -> str:
        """The final ack's result text of a 200 answer; the module's error for any other."""
        status = response.status_code
        if status == 500:
            raise LoveCommandFailedError(
                _error_detail(response), method="POST", url=url, status=status, csc=target, cmd=name
            )
        if status == 504:
            raise LoveNoAckError(_error_detail(response), csc=target, cmd=name, status=status)
        if status in (401, 403):
            detail = _error_detail(response)
            kind, what = (
                (LovePermissionError, "may not execute commands")
                if status == 403
                else (LoveAuthError, "has a token LOVE refuses")
            )
            raise kind(
                f"{self.username!r} {what}: {detail}",
                method="POST",
                url=url,
                status=status,
                detail=detail,
            )
        _raise_for_status("POST", url, response)
        try:
            return _AckBody.model_validate(response.json()).ack
        except (ValueError, ValidationError):
            raise LoveValidationError(
                f"POST {url}: {name} to {target}: the answer carries no ack: "
                f"{response.text[:_DETAIL_CHARS]!r}"
            ) from None

    async def add_script(
        self,
        queue_index: int,
        path: str,
        config_yaml: str | Mapping[str, Any] = "",
        *,
        is_standard: bool = True,
        location: ScriptLocation = ScriptLocation.LAST,
        location_sal_index: int = 0,
        description: str = "",
        log_level: int = 0,
        pause_checkpoint: str = "",
        stop_checkpoint: str = "",
        timeout_s: float | None = None,
    ) -> int:
        """Add a script to ``ScriptQueue:queue_index``; return the new script's SAL index.

        ``config_yaml`` is the script's configuration as YAML text, or a mapping to be dumped
        as YAML. Success means only that the script was launched: it is configured and run
        later, and its fate must be followed on the queue's ``logevent_script``.

        Raises
        ------
        ValueError
            ``location`` is BEFORE or AFTER without ``location_sal_index``.
        LoveCommandFailedError, LoveNoAckError, LovePermissionError, LoveAuthError,
        LoveWebError, LoveUnavailableError
            As `command`.
        LoveValidationError
            The ack's result is not a script index.
        """
        location = ScriptLocation(location)
        if location in (ScriptLocation.BEFORE, ScriptLocation.AFTER) and not location_sal_index:
            raise ValueError(f"location {location.name} needs location_sal_index")
        config = (
            config_yaml
            if isinstance(config_yaml, str)
            else yaml.safe_dump(dict(config_yaml), sort_keys=False)
        )
        params = {
            "isStandard": is_standard,
            "path": path,
            "config": config,
            "descr": description,
            "location": int(location),
            "locationSalIndex": location_sal_index,
            "logLevel": log_level,
            "pauseCheckpoint": pause_checkpoint,
            "stopCheckpoint": stop_checkpoint,
        }
        ack = await self.command("ScriptQueue", queue_index, "cmd_add", params, timeout_s=timeout_s)
        try:
            return int(ack.result.strip())
        except ValueError:
            raise LoveValidationError(
                f"cmd_add to ScriptQueue:{queue_index} ({path}): the ack's result "
                f"{ack.result!r} is not a script index"
            ) from None

    # --- HTTP -----------------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        url: str,
        body: dict[str, Any],
        *,
        headers: dict[str, str],
        timeout_s: float,
        resend_if_unanswered: bool,
    ) -> httpx.Response:
        """One request, retried while it provably did not reach LOVE.

        A request that went out unanswered is sent again only if ``resend_if_unanswered``
        (a login); otherwise `_SentButUnansweredError` is raised. `LoveUnavailableError` when the
        retries run out.
        """
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    method,
                    url,
                    json=body,
                    headers=headers,
                    # A command's answer may take long; reaching LOVE may not.
                    timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, self._timeout_s)),
                )
            except _NOT_SENT as exc:
                reason = f"{type(exc).__name__}: {exc}"
            except httpx.TransportError as exc:
                if not resend_if_unanswered:
                    raise _SentButUnansweredError(f"{type(exc).__name__}: {exc}") from exc
                reason = f"{type(exc).__name__}: {exc}"
            else:
                if not response.is_server_error or response.status_code in _OUTCOMES:
                    return response
                reason = f"HTTP {response.status_code}"
                if attempt >= self._retries:
                    if response.status_code in (502, 503):
                        raise LoveUnavailableError(
                            f"{method} {url}: LOVE is unavailable ({reason}, "
                            f"tried {attempt + 1} times)"
                        )
                    return response
            if attempt >= self._retries:
                raise LoveUnavailableError(
                    f"{method} {url}: LOVE cannot be reached ({reason}, tried {attempt + 1} times)"
                )
            _logger.warning("%s %s failed (%s), retrying", method, url, reason)
            await asyncio.sleep(self._retry_delay_s * 2**attempt)
            attempt += 1


class _SentButUnansweredError(Exception):
    """A command request went out and no answer came back."""


def _error_detail(response: httpx.Response) -> str:
    """LOVE's explanation from an error body: its ``ack``, ``detail`` or field errors."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:_DETAIL_CHARS] or response.reason_phrase
    if isinstance(body, dict):
        for key in ("ack", "detail"):
            if isinstance(body.get(key), str):
                return str(body[key])[:_DETAIL_CHARS]
        messages = [
            f"{field}: {' '.join(map(str, errors)) if isinstance(errors, list) else errors}"
            for field, errors in body.items()
        ]
        return "; ".join(messages)[:_DETAIL_CHARS]
    return str(body)[:_DETAIL_CHARS]


def _raise_for_status(method: str, url: str, response: httpx.Response) -> None:
    if response.is_success:
        return
    detail = _error_detail(response)
    raise LoveWebError(detail, method=method, url=url, status=response.status_code, detail=detail)
