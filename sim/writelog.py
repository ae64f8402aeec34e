"""The simulated site's write log: every state-changing request, in the order it arrived.

Tests and operators read it to see what a flow did and in what order. Each record is one JSON
line: ``time`` (Unix seconds), ``service``, ``method``, ``target`` and ``body`` (a summary).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["WriteLog", "WriteRecord"]


@dataclass(frozen=True)
class WriteRecord:
    time: float
    service: str
    method: str
    target: str
    body: dict[str, Any] = field(default_factory=dict)


class WriteLog:
    """Records kept in memory and, when ``path`` is given, appended to it as JSON lines."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._records: list[WriteRecord] = []
        self._lock = threading.Lock()

    def record(
        self, service: str, method: str, target: str, body: dict[str, Any] | None = None
    ) -> WriteRecord:
        entry = WriteRecord(time.time(), service, method, target, dict(body or {}))
        with self._lock:
            self._records.append(entry)
            if self.path is not None:
                with self.path.open("a", encoding="utf-8") as stream:
                    stream.write(json.dumps(asdict(entry), default=str) + "\n")
        return entry

    @property
    def records(self) -> list[WriteRecord]:
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    @staticmethod
    def read(path: Path) -> list[WriteRecord]:
        """Read a write log file back."""
        lines = path.read_text(encoding="utf-8").splitlines()
        return [WriteRecord(**json.loads(line)) for line in lines if line.strip()]
