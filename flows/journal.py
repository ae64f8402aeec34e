"""The run journal: what an upgrade did, step by step, and the report operators read after.

Every step of a flow runs inside `RunJournal.step`, which times it, records its outcome and
keeps the run's progress artifact current. Sign-offs, CSC state tables, lag, the registry's
compatibility and the applications synced are recorded as they happen, so that the final report
(a markdown artifact) says exactly what was done — and, when a run stops early, what is left to
restore and how.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from flows.signoff import SignOffRecord, UpgradeAborted

__all__ = ["Outcome", "RunJournal", "StepRecord"]


class Outcome(StrEnum):
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"
    ABORTED = "aborted"
    PLANNED = "planned"


class StepRecord(BaseModel):
    section: str
    key: str
    title: str
    started_at: datetime
    duration_s: float = 0.0
    outcome: Outcome = Outcome.DONE
    detail: str = ""


class StepHandle:
    """Lets a running step add what it found to its record."""

    def __init__(self, record: StepRecord) -> None:
        self.record = record

    def note(self, detail: str) -> None:
        self.record.detail = detail if not self.record.detail else f"{self.record.detail}; {detail}"

    def skip(self, why: str) -> None:
        self.record.outcome = Outcome.SKIPPED
        self.note(why)


ProgressFn = Callable[[float, str], Awaitable[None]]


class RunJournal(BaseModel):
    """Everything one run did, in order."""

    flow: str
    site: str
    upgrade_id: str
    dry_run: bool = False
    started_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    planned_steps: int = 1
    steps: list[StepRecord] = Field(default_factory=list)
    sign_offs: list[SignOffRecord] = Field(default_factory=list)
    plan: list[str] = Field(default_factory=list)
    facts: dict[str, Any] = Field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    left_to_restore: list[str] = Field(default_factory=list)
    final_message: str = ""

    @contextlib.asynccontextmanager
    async def step(
        self, section: str, key: str, title: str, *, progress: ProgressFn | None = None
    ) -> AsyncIterator[StepHandle]:
        """Run one step: time it, record its outcome (failed steps re-raise)."""
        record = StepRecord(section=section, key=key, title=title, started_at=datetime.now(UTC))
        self.steps.append(record)
        handle = StepHandle(record)
        started = time.monotonic()
        try:
            yield handle
        except BaseException as exc:
            record.outcome = Outcome.ABORTED if isinstance(exc, UpgradeAborted) else Outcome.FAILED
            handle.note(str(exc) or type(exc).__name__)
            raise
        finally:
            record.duration_s = round(time.monotonic() - started, 3)
            if progress is not None:
                finished = sum(1 for s in self.steps if s.outcome is not Outcome.FAILED)
                percent = min(100.0, 100.0 * finished / max(1, self.planned_steps))
                await progress(percent, title)

    def planned(self, action: str) -> None:
        """A dry run's action, in the order it would be taken."""
        self.plan.append(action)

    def render_markdown(self) -> str:
        """The report: steps, sign-offs, tables and what is left to restore."""
        lines = [
            f"# {self.flow} at {self.site} — {self.upgrade_id}",
            "",
            f"Started {self.started_at:%Y-%m-%d %H:%M:%S} UTC."
            + (" **Dry run: nothing was changed.**" if self.dry_run else ""),
        ]
        if self.final_message:
            lines += ["", f"**{self.final_message}**"]
        if self.left_to_restore:
            lines += ["", "## Left to restore", ""]
            lines += [f"- {item}" for item in self.left_to_restore]
        if self.plan:
            lines += ["", "## Plan", ""]
            lines += [f"{n}. {action}" for n, action in enumerate(self.plan, 1)]
        lines += ["", "## Steps", "", "| section | step | outcome | duration | detail |"]
        lines.append("| --- | --- | --- | --- | --- |")
        for step in self.steps:
            detail = step.detail.replace("|", "\\|").replace("\n", " ")
            lines.append(
                f"| {step.section} | {step.title} | {step.outcome} | "
                f"{step.duration_s:.1f} s | {detail} |"
            )
        if self.sign_offs:
            lines += ["", "## Sign-offs", "", "| gate | operator | decision | when | notes |"]
            lines.append("| --- | --- | --- | --- | --- |")
            for answer in self.sign_offs:
                who = answer.operator + (" (simulated)" if answer.simulated_operator else "")
                lines.append(
                    f"| {answer.title} | {who} | {answer.decision} | "
                    f"{answer.answered_at:%Y-%m-%d %H:%M:%S} UTC | {answer.notes} |"
                )
        if self.facts:
            lines += ["", "## Facts", ""]
            lines += [f"- **{name}**: {value}" for name, value in self.facts.items()]
        for name, rows in self.tables.items():
            lines += ["", f"## {name}", ""]
            lines += _markdown_table(rows)
        return "\n".join(lines) + "\n"


def _markdown_table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return ["(none)"]
    columns = list(rows[0])
    out = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    out += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return out
