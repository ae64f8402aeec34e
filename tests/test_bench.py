"""`python -m bench` stopped by SIGTERM (a CI timeout, a closed session) leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.test_sim_cli import _alive, _children

ROOT = Path(__file__).resolve().parent.parent


def test_sigterm_stops_the_broker_and_workers_it_started(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "bench", "--only", "lag", "--quick", "--verbose"]
    with subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stderr is not None
            assert any("lag: broker up" in line for line in process.stderr), (
                "the benchmark ended before its broker was up"
            )
            children = _children(process.pid)
            # tansu runs in a session of its own: a Ctrl-C at the terminal does not reach it.
            brokers = [
                pid for pid in children if "tansu" in Path(f"/proc/{pid}/cmdline").read_text()
            ]
            assert brokers, "the lag figure runs its own broker"
        except BaseException:
            process.kill()
            raise
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    try:
        assert process.returncode == 143
        assert "stopped after" in out
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in children if _alive(pid)], "a process outlived the benchmark"
    finally:
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
