"""One Prefect API server for a whole test session, shared by the xdist workers.

A fresh server takes ~30 s on these machines (imports, then ~11 s of migrations on a new
SQLite database), and each worker starting its own paid that twice, both at once, at the start
of the run. Instead the controlling pytest process launches one in `pytest_configure`, before
the workers exist, and tells them its URL in ``RUBIN_UPGRADE_TEST_PREFECT_API``; the workers
collect and run their first tests while it starts, and a test that needs it waits for its API
to answer. Everything a test writes there is keyed by names of its own (site block, tags,
artifact keys), so two workers share it safely.

The server is what Prefect's test harness runs (``prefect_test_harness``): the API app under
uvicorn, without the UI, with its database in a temporary directory, on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from deployments.server import free_port, log_tail

__all__ = ["SHARED_API_ENV", "SessionPrefectServer", "wait_for_api"]

#: The API URL of the server the controlling process started, in the workers' environment.
SHARED_API_ENV = "RUBIN_UPGRADE_TEST_PREFECT_API"
_PR_SET_PDEATHSIG = 1
#: ~30 s on an idle machine; a loaded one has taken 80 s.
STARTUP_TIMEOUT_S = 240.0


class SessionPrefectServer:
    """A Prefect API server in a child process (its own session), with its own database."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="rubin-upgrade-tests-prefect-"))
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self._log = self.home / "server.log"
        self._process: subprocess.Popen[bytes] | None = None

    def launch(self) -> None:
        """Start the server without waiting for it (see `wait_for_api`)."""
        env = {
            **os.environ,
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": (
                f"sqlite+aiosqlite:///{self.home / 'prefect.db'}"
            ),
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    "prefect.server.api.server:create_app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "error",
                    "--lifespan",
                    "on",
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # Only a prctl call through a library loaded beforehand runs in the child.
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )

    def wait(self) -> None:
        """Until the API answers; `RuntimeError` with the server's output if it never does."""
        wait_for_api(self.api_url, self._process, self._log)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s) and remove its directory."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        shutil.rmtree(self.home, ignore_errors=True)


def _load_libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    except OSError:
        return None


_LIBC = _load_libc()


def _die_with_parent() -> None:
    """In the child: SIGTERM when pytest dies, even killed (Linux), so no server outlives it."""
    if _LIBC is not None and hasattr(_LIBC, "prctl"):
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def wait_for_api(
    api_url: str,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
    *,
    timeout_s: float = STARTUP_TIMEOUT_S,
) -> None:
    """Return once ``api_url``'s health check answers 200.

    Raises
    ------
    RuntimeError
        The server exited (``process``) or did not answer within ``timeout_s``; the message
        ends with its output (``log``).
    """
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(
                    f"the test Prefect server exited with {process.returncode}: {_output(log)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{api_url}/health").status_code == httpx.codes.OK:
                    return
            time.sleep(0.25)
    raise RuntimeError(
        f"the test Prefect server at {api_url} did not answer within {timeout_s:.0f} s: "
        f"{_output(log)}"
    )


def _output(log: Path | None) -> str:
    return "(its output is with the process that started it)" if log is None else log_tail(log)
