"""`rubin-upgrade sim` runs the simulated site, describes it, and leaves nothing behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from blocks.site import load_site_file


def _children(pid: int) -> set[int]:
    """Every descendant of ``pid``, from /proc."""
    found: set[int] = set()
    pending = [pid]
    while pending:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = (task / "children").read_text().split()
            except OSError:
                continue
            for kid in map(int, kids):
                if kid not in found:
                    found.add(kid)
                    pending.append(kid)
    return found


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


def test_sim_prints_ready_and_stops_everything(tmp_path: Path) -> None:
    site_out = tmp_path / "sim.yaml"
    command = [sys.executable, "-m", "deployments", "sim", "--site", "summit"]
    command += ["--site-out", str(site_out), "--write-log", str(tmp_path / "writes.jsonl")]
    with (
        (tmp_path / "stderr").open("w") as stderr,
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True) as process,
    ):
        try:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == f"ready {site_out}"
            children = _children(process.pid)
            assert children, "the broker runs as a child process"
            site = load_site_file(site_out)
            assert site.name == "sim"
            assert len(site.cscs) == 122
            assert site.kafka.bootstrap_servers.startswith("127.0.0.1:")
            assert site.schema_registry.url.startswith("http://127.0.0.1:")
        except BaseException:
            process.kill()
            raise
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in children if _alive(pid)], "a child outlived the simulated site"
    assert "stopping" in (tmp_path / "stderr").read_text()
