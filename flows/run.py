"""One run of an upgrade flow: its site, services, journal, sign-offs, and what must be restored.

`UpgradeRun` is what every step of every flow works through:

- `act` performs one change to the site, or — in a dry run — only writes it into the plan; it
  records completed changes under the upgrade id, so a re-run with the same id never repeats a
  destructive action that already happened.
- `gate` is the single sign-off helper: the answer is journalled, and a gate already answered
  for this upgrade id is not asked again.
- `step` times a step and keeps the progress artifact current.
- `on_failure_restore` registers what to put back if the run fails, is aborted or cancelled
  (the registry's compatibility, telegraf's replicas); `restore` runs them, and whatever could
  not be restored is written into the report as what is left to do, and how.

The run is reached through a context variable, so that sections and tasks need no parameters
that Prefect would have to serialise.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import UUID

import anyio
import httpx
from prefect import get_client
from prefect.artifacts import (
    acreate_markdown_artifact,
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)
from prefect.client.schemas.actions import BlockDocumentUpdate
from prefect.logging import get_run_logger
from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings
from pydantic import BaseModel, Field

from blocks.memory import UpgradeMemory
from blocks.site import SiteConfig
from clients.sal import StateBoard
from clients.slack import Audience
from flows.context import SiteServices
from flows.journal import RunJournal, StepHandle
from flows.signoff import (
    POLL_INTERVAL_S,
    NotifyFn,
    SignOff,
    SignOffRecord,
    UpgradeAborted,
    sign_off,
)

__all__ = ["Restore", "RunMemory", "UpgradeRun", "artifact_key", "current_run"]

T = TypeVar("T")
_current: contextvars.ContextVar[UpgradeRun] = contextvars.ContextVar("upgrade_run")
_logger = logging.getLogger(__name__)


def current_run() -> UpgradeRun:
    """The run of the flow being executed (set by `UpgradeRun.activate`)."""
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError("no upgrade run is active: steps run inside an upgrade flow") from None


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    text = "-".join(parts).lower()
    return "".join(c if c.isalnum() or c == "-" else "-" for c in text).strip("-")


class RunMemory(BaseModel):
    """What an upgrade id remembers across runs (`UpgradeMemory`): done actions, answers."""

    actions: list[str] = Field(default_factory=list)
    sign_offs: dict[str, SignOffRecord] = Field(default_factory=dict)
    facts: dict[str, Any] = Field(default_factory=dict)
    told: list[str] = Field(default_factory=list)
    """The `UpgradeRun.notify` ``once`` keys of the messages already posted."""


@dataclass
class Restore:
    """Something to put back when the run does not finish, and how an operator does it by hand."""

    key: str
    description: str
    manual: str
    action: Callable[[], Awaitable[object]]
    undoes: tuple[str, ...] = ()
    """The `UpgradeRun.act` keys this puts back: once restored, a re-run must do them again."""


@dataclass
class UpgradeRun:
    """The state of one flow run: see the module docstring."""

    flow: str
    site: SiteConfig
    services: SiteServices
    upgrade_id: str
    dry_run: bool = False
    journal: RunJournal = field(init=False)
    memory: RunMemory = field(default_factory=RunMemory)
    restores: dict[str, Restore] = field(default_factory=dict)
    _progress_id: Any = None
    _memory_id: UUID | None = None
    _board: StateBoard | None = None
    # Changes made in parallel each save the memory: one save at a time, so that the last one
    # stored holds every change (concurrent saves could land out of order).
    _saving: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    # Parallel transitions may ask for the board first together: one board, not one each.
    _board_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    def __post_init__(self) -> None:
        self.journal = RunJournal(
            flow=self.flow, site=self.site.name, upgrade_id=self.upgrade_id, dry_run=self.dry_run
        )

    # --- life cycle ---------------------------------------------------------------------------

    @property
    def memory_name(self) -> str:
        return artifact_key("rubin-upgrade", self.flow, self.site.name, self.upgrade_id)[:255]

    @contextlib.asynccontextmanager
    async def activate(self, planned_steps: int) -> AsyncIterator[UpgradeRun]:
        """Make this the current run; load what the upgrade id remembers; publish progress."""
        self.journal.planned_steps = planned_steps
        if not self.dry_run:
            with contextlib.suppress(ValueError):  # nothing remembered yet
                stored: object = await UpgradeMemory.aload(self.memory_name)
                if isinstance(stored, UpgradeMemory):
                    self.memory = RunMemory.model_validate(stored.value)
                    self._memory_id = stored._block_document_id  # noqa: SLF001 (Prefect's own)
        with contextlib.suppress(Exception):
            self._progress_id = await acreate_progress_artifact(
                progress=0.0,
                key=artifact_key(self.flow, self.site.name, "progress"),
                description=f"{self.flow} at {self.site.name} ({self.upgrade_id})",
            )
        token = _current.set(self)
        try:
            yield self
        finally:
            _current.reset(token)
            if self._board is not None:
                await self._board.stop()
                self._board = None

    async def board(self) -> StateBoard:
        """One live view of every inventory CSC for the whole run: waits and transitions share
        it instead of each starting a consumer of their own."""
        async with self._board_lock:
            if self._board is None:
                board = self.services.sal.state_board([entry.name for entry in self.site.cscs])
                await board.start()
                self._board = board
            return self._board

    async def _remember(self) -> None:
        if self.dry_run:
            return
        # A block, not a Variable: variables hold at most 5,000 characters.
        value = self.memory.model_dump(mode="json")
        async with self._saving:
            if self._memory_id is None:
                # Saving a block registers its type and schema and may first fail to create
                # it: once per run. Each later change is one update of the document.
                self._memory_id = await UpgradeMemory(value=value).asave(
                    self.memory_name, overwrite=True
                )
                return
            await _update_memory(self._memory_id, value)

    async def progress(self, percent: float, _title: str) -> None:
        if self._progress_id is None:
            return
        with contextlib.suppress(Exception):
            await aupdate_progress_artifact(self._progress_id, progress=percent)

    @contextlib.asynccontextmanager
    async def step(self, section: str, key: str, title: str) -> AsyncIterator[StepHandle]:
        """Run one step of ``section``; its time and outcome go into the journal."""
        get_run_logger().info("%s: %s", section, title)
        async with self.journal.step(section, key, title, progress=self.progress) as handle:
            yield handle

    def operator_name(self) -> str:
        """Who runs this upgrade, as scripts' ``user`` fields want it: the last operator who
        signed off, else the tool itself."""
        for record in reversed(self.journal.sign_offs):
            if record.operator and not record.operator.startswith("("):
                return record.operator
        return f"rubin-upgrade {self.upgrade_id}"

    # --- changes to the site -------------------------------------------------------------------

    def already_done(self, key: str) -> bool:
        return key in self.memory.actions

    async def act(self, key: str, description: str, change: Callable[[], Awaitable[T]]) -> T | None:
        """Make one change to the site, once per upgrade id; in a dry run only plan it.

        Returns the change's result, or None when it was planned or had been done before.
        """
        if self.dry_run:
            self.journal.planned(description)
            return None
        if self.already_done(key):
            get_run_logger().info(
                "already done in an earlier run of %s: %s", self.upgrade_id, description
            )
            return None
        result = await change()
        self.memory.actions.append(key)
        await self._remember()
        return result

    async def remember_fact(self, name: str, value: Any) -> Any:
        """Keep a fact (e.g. the registry's level before the upgrade) for later runs; the first
        value recorded for an upgrade id wins, so a re-run restores what was there originally."""
        if name not in self.memory.facts:
            self.memory.facts[name] = value
            await self._remember()
        self.journal.facts[name] = self.memory.facts[name]
        return self.memory.facts[name]

    # --- sign-offs -----------------------------------------------------------------------------

    async def gate(
        self,
        key: str,
        title: str,
        next_steps_md: str,
        *,
        input_model: type[SignOff] = SignOff,
        initial: dict[str, Any] | None = None,
    ) -> SignOffRecord:
        """Stop for an operator's sign-off (see `flows.signoff.sign_off`), once per upgrade id.

        Raises
        ------
        UpgradeAborted
            The operator chose to abort.
        """
        if self.dry_run:
            self.journal.planned(f"Sign-off: {title}")
            return SignOffRecord.dry_run(key, title)
        previous = self.memory.sign_offs.get(key)
        if previous is not None:
            self.journal.sign_offs.append(previous)
            return previous
        record = await sign_off(
            key=key,
            title=title,
            next_steps_md=next_steps_md,
            site_name=self.site.name,
            timeout_s=self.site.timeout_for_sign_off(key),
            notify=self._notifier(Audience.SITE),
            input_model=input_model,
            initial=initial,
            poll_interval_s=min(POLL_INTERVAL_S, self.site.timeouts.poll_s),
        )
        self.journal.sign_offs.append(record)
        self.memory.sign_offs[key] = record
        await self._remember()
        return record

    def _notifier(self, audience: Audience) -> NotifyFn:
        async def notify(text: str) -> bool:
            return await self.services.slack.notify(text, audience=audience)

        return notify

    async def notify(
        self, text: str, *, audience: Audience = Audience.SITE, once: str | None = None
    ) -> None:
        """Tell people on Slack (never raises); in a dry run only plan it.

        A message given a ``once`` key is posted once per upgrade id: a re-run after a crash
        does not tell the camera team again that they may start a stage they are already past.
        """
        if self.dry_run:
            self.journal.planned(f"Slack ({audience.value}): {text}")
            return
        if once is not None and once in self.memory.told:
            get_run_logger().info("already told in an earlier run of %s: %s", self.upgrade_id, text)
            return
        posted = await self.services.slack.notify(text, audience=audience)
        self.journal.facts.setdefault("slack messages", 0)
        self.journal.facts["slack messages"] += 1 if posted else 0
        if once is not None and posted:
            self.memory.told.append(once)
            await self._remember()

    # --- restores ------------------------------------------------------------------------------

    def on_failure_restore(self, restore: Restore) -> None:
        self.restores[restore.key] = restore

    def restored(self, key: str) -> None:
        """The flow put this back itself: nothing to restore for it any more."""
        self.restores.pop(key, None)

    async def restore(self, why: str) -> None:
        """Put back everything registered, after a failure, abort or cancellation."""
        logger = get_run_logger()
        for key, restore in list(self.restores.items()):
            try:
                await restore.action()
            except Exception as exc:  # noqa: BLE001 - each restore is tried, and reported
                logger.warning("could not restore %s: %s", restore.description, exc)
                self.journal.left_to_restore.append(
                    f"{restore.description}: restoring it failed ({exc}); by hand: {restore.manual}"
                )
            else:
                logger.warning("restored %s (%s)", restore.description, why)
                self.journal.facts[f"restored: {restore.description}"] = why
                undone = [action for action in self.memory.actions if action in restore.undoes]
                if undone:
                    self.memory.actions = [a for a in self.memory.actions if a not in undone]
                    with contextlib.suppress(Exception):
                        await self._remember()
            self.restores.pop(key, None)

    def explain_stop(self) -> None:
        """After a stop: what had been changed, and how to carry on."""
        if self.dry_run or not self.memory.actions:
            return
        self.journal.left_to_restore.append(
            "Changes made before the stop: " + ", ".join(self.memory.actions) + ". Run the flow "
            f"again with upgrade_id {self.upgrade_id!r} to carry on from here: changes already "
            "made and sign-offs already given are not repeated."
        )

    def summary(self) -> dict[str, Any]:
        """The run's result, as the flow returns it."""
        return {
            "site": self.site.name,
            "upgrade_id": self.upgrade_id,
            "dry_run": self.dry_run,
            "message": self.journal.final_message,
            "short": self.journal.facts.get("CSCs short of their expected state", []),
            "plan": self.journal.plan,
            "left_to_restore": self.journal.left_to_restore,
            "steps": [
                {
                    "step": s.key,
                    "outcome": str(s.outcome),
                    "started_at": s.started_at.isoformat(),
                    "duration_s": round(s.duration_s, 2),
                }
                for s in self.journal.steps
            ],
        }

    # --- reports -------------------------------------------------------------------------------

    async def table(self, name: str, rows: list[dict[str, Any]], description: str = "") -> None:
        """Record a table in the report and publish it as a table artifact."""
        self.journal.tables[name] = rows
        with contextlib.suppress(Exception):
            await acreate_table_artifact(
                table=rows,
                key=artifact_key(self.flow, self.site.name, name),
                description=description or name,
            )

    async def publish_report(self) -> str:
        markdown = self.journal.render_markdown()
        with contextlib.suppress(Exception):
            await acreate_markdown_artifact(
                markdown=markdown,
                key=artifact_key(self.flow, self.site.name, "report"),
                description=f"{self.flow} at {self.site.name}: the upgrade report",
            )
        with contextlib.suppress(Exception):
            await self.progress(100.0, "done")
        return markdown


def aborted_message(exc: UpgradeAborted) -> str:
    return f"Aborted by {exc.record.operator} at '{exc.record.title}'"


#: Quick retries of a memory update refused as busy, before the client's own (2 s, 4 s, ...).
_BUSY_RETRIES_S = (0.05, 0.1, 0.2, 0.4, 0.8)


async def _update_memory(document_id: UUID, value: dict[str, Any]) -> None:
    """Replace the memory block's data, in one request.

    On SQLite, the Prefect server refuses a block update as busy (503) whenever another write
    committed while it read, which right after a task run's end is nearly always; the client
    would wait 2 s before its retry, on every change the flow makes. Retried here quickly
    first, then with the client's own back-off.
    """
    update = BlockDocumentUpdate(data={"value": value}, merge_existing_data=False)
    async with get_client() as client:
        for delay_s in _BUSY_RETRIES_S:
            try:
                with temporary_settings(updates={PREFECT_CLIENT_MAX_RETRIES: 0}):
                    await client.update_block_document(document_id, update)
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != httpx.codes.SERVICE_UNAVAILABLE:
                    raise
                await anyio.sleep(delay_s)
            else:
                return
        await client.update_block_document(document_id, update)
