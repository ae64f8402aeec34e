"""A local Prefect server on 127.0.0.1, started and stopped by ``rubin-upgrade demo``.

It runs ``prefect server start`` as a child process with its own ``PREFECT_HOME`` (its SQLite
database lives there, so a second demo starts in seconds), waits until the API answers, and
stops it — SIGTERM, then SIGKILL after a grace period — however the demo ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

__all__ = ["LocalPrefectServer", "PrefectServerError", "free_port", "log_tail"]


class PrefectServerError(RuntimeError):
    """The local Prefect server did not start; the message has the end of its output."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(log: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a server's output file, for an error message."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


class LocalPrefectServer:
    """``async with LocalPrefectServer(home) as server``: a Prefect server at ``server.api_url``.

    Parameters
    ----------
    home
        The server's ``PREFECT_HOME`` (database, logs).
    port
        0 picks a free port.
    startup_timeout_s
        A fresh database takes ~15 s of migrations on these machines.
    """

    def __init__(self, home: Path, *, port: int = 0, startup_timeout_s: float = 120.0) -> None:
        self.home = home
        self.port = port or free_port()
        self.startup_timeout_s = startup_timeout_s
        self._process: asyncio.subprocess.Process | None = None
        self._log = home / "server.log"

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    def environment(self) -> dict[str, str]:
        """What a process needs in its environment to use this server."""
        return {
            "PREFECT_API_URL": self.api_url,
            "PREFECT_UI_URL": self.url,
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }

    async def start(self) -> None:
        """Start the server and wait until its API answers.

        Raises
        ------
        PrefectServerError
            It exited or did not answer within ``startup_timeout_s``.
        """
        self.home.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            **self.environment(),
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(self.port),
            "PREFECT_UI_API_URL": self.api_url,
        }
        with self._log.open("wb") as log:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        await self._wait_healthy()

    async def _wait_healthy(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.startup_timeout_s
        async with httpx.AsyncClient(timeout=2.0) as client:
            while loop.time() < deadline:
                if self._process is not None and self._process.returncode is not None:
                    raise PrefectServerError(
                        f"the Prefect server exited with {self._process.returncode}: {self._tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    response = await client.get(f"{self.api_url}/health")
                    if response.status_code == httpx.codes.OK:
                        return
                await asyncio.sleep(0.5)
        await self.stop()
        raise PrefectServerError(
            f"the Prefect server did not answer within {self.startup_timeout_s:.0f} s: "
            f"{self._tail()}"
        )

    def _tail(self) -> str:
        return log_tail(self._log)

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop the server and every process it started."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

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
