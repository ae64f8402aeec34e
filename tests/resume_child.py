"""A ``full-upgrade`` in a process of its own, for `tests.test_resume_after_kill` to kill.

Run as ``python -m tests.resume_child SITE UPGRADE_ID TAG...`` with ``PREFECT_API_URL`` set to
the test server. The run is tagged with each ``TAG``. Every step's start — the line
``<section>: <title>`` that `flows.run.UpgradeRun.step` logs — is echoed to stdout as
``STEP <line>``.

``RESUME_STOP`` (JSON) says where the process stops: ``{"at": [lines]}`` at the first step whose
line is listed, ``{"except": [lines]}`` at the first step whose line is not. There the process
prints ``STOPPED <line>`` and freezes itself (SIGSTOP) inside the logging call, before the step
does anything, for the test to SIGKILL it: the kill lands on the step boundary itself, not
some milliseconds into the step after it. A run that ends prints ``RESULT <json>`` (its final
state's name and the flow's message).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from typing import Any

from prefect import tags

from flows.full_upgrade import full_upgrade

#: The format `UpgradeRun.step` logs a step's start with.
STEP_FORMAT = "%s: %s"


def _say(text: str) -> None:
    # Straight to the pipe: the test reads it line by line, and the process may freeze next.
    os.write(sys.stdout.fileno(), (text + "\n").encode())


class StepWatch(logging.Handler):
    """Echo each step's start; freeze the process at the step ``RESUME_STOP`` names."""

    def __init__(self, stop: dict[str, list[str]]) -> None:
        super().__init__(logging.INFO)
        self.at = set(stop.get("at", []))
        self.passing = set(stop["except"]) if "except" in stop else None

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg != STEP_FORMAT or not isinstance(record.args, tuple):
            return
        line = record.getMessage()
        _say(f"STEP {line}")
        if line in self.at or (self.passing is not None and line not in self.passing):
            _say(f"STOPPED {line}")
            os.kill(os.getpid(), signal.SIGSTOP)


async def main(site: str, upgrade_id: str, run_tags: list[str]) -> None:
    stop: dict[str, list[str]] = json.loads(os.environ.get("RESUME_STOP", "{}"))
    logging.getLogger("prefect.flow_runs").addHandler(StepWatch(stop))
    with tags(*run_tags):
        state = await full_upgrade(
            site=site, upgrade_id=upgrade_id, breaks_schema_compatibility=True, return_state=True
        )
    result: Any = await state.aresult(raise_on_failure=False) if state.is_completed() else None
    message = result.get("message") if isinstance(result, dict) else state.message
    _say("RESULT " + json.dumps({"state": state.name, "message": message}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
