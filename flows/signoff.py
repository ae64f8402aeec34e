"""Operator sign-off: every gate where a person must act or agree before the flow goes on.

One helper, `sign_off`, serves every gate. It posts to Slack with the run's URL, pauses the flow
run with a typed form (`SignOff`) that says exactly what happens next, and checks the answer: the
site name typed again must match, or the operator is asked again; ``abort`` ends the run with
`UpgradeAborted`. The flow process stays alive while paused (``pause_flow_run``, not suspend), so
nothing already learnt about the site is lost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal, cast

from prefect.flow_runs import apause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SignOff", "SignOffRecord", "UpgradeAborted", "gate_key", "sign_off"]

Decision = Literal["proceed", "abort"]
NotifyFn = Callable[[str], Awaitable[object]]

# Answers given by `rubin-upgrade demo --auto-approve` carry this name, and the report says so.
SIMULATED_OPERATOR = "simulated operator"

# A resume is noticed within this many seconds (unless the site asks more often). Prefect's
# default of 10 s would add up to ten seconds to every gate for no reason.
POLL_INTERVAL_S = 1.0


class SignOff(RunInput):
    """What an operator answers at a gate (the form in the Prefect UI)."""

    operator: str = Field(description="Your name, as it should appear in the upgrade report.")
    decision: Decision = Field(description="proceed, or abort the upgrade here.")
    confirm_site: str = Field(description="Type the site's name again (for example summit).")
    notes: str = Field(default="", description="Anything the report should say about this step.")


class SignOffRecord(BaseModel):
    """A gate as it was answered, for the report."""

    model_config = ConfigDict(frozen=True)

    key: str
    title: str
    operator: str
    decision: Decision
    notes: str
    answered_at: datetime
    attempts: int
    simulated_operator: bool = False
    inputs: dict[str, str] = Field(
        default_factory=dict, description="What a gate's own form asked for (a PR URL...)."
    )

    @classmethod
    def dry_run(cls, key: str, title: str) -> SignOffRecord:
        """The answer a dry run assumes: proceed, asked of nobody."""
        return cls(
            key=key,
            title=title,
            operator="(dry run)",
            decision="proceed",
            notes="",
            answered_at=datetime.now(UTC),
            attempts=0,
        )


class UpgradeAborted(Exception):  # noqa: N818 - an abort is an outcome, not an error
    """An operator chose to abort at a gate."""

    def __init__(self, record: SignOffRecord) -> None:
        super().__init__(
            f"aborted at '{record.title}' by {record.operator}"
            + (f": {record.notes}" if record.notes else "")
        )
        self.record = record


def gate_key(key: str, attempt: int = 1) -> str:
    """The pause key of a gate's n-th asking; Prefect skips a pause whose key it has seen."""
    return key if attempt == 1 else f"{key}-again-{attempt}"


async def sign_off(
    *,
    key: str,
    title: str,
    next_steps_md: str,
    site_name: str,
    timeout_s: float,
    notify: NotifyFn | None = None,
    max_attempts: int = 5,
    input_model: type[SignOff] = SignOff,
    initial: dict[str, Any] | None = None,
    poll_interval_s: float = POLL_INTERVAL_S,
) -> SignOffRecord:
    """Pause the flow run until an operator signs off; return their answer.

    Parameters
    ----------
    key
        The gate's key (lowercase, dashes), unique within the flow.
    title
        One line naming the gate, as operators read it in Slack and the UI.
    next_steps_md
        Markdown shown above the form: exactly what happens once the operator proceeds.
    site_name
        What the operator must type in ``confirm_site``.
    timeout_s
        How long to wait; the run fails with Prefect's ``FlowPauseTimeout`` after.
    notify
        Called with the Slack text once per gate; never raises (see `clients.slack`).
    input_model
        The form: `SignOff` or a subclass asking for more (a PR's URL...).
    initial
        Values the form starts with.

    Raises
    ------
    UpgradeAborted
        The operator chose ``abort``.
    RuntimeError
        No matching confirmation after ``max_attempts`` askings.
    """
    url = flow_run.ui_url
    if notify is not None:
        link = f" <{url}|Open the run>" if url else ""
        await notify(f":raised_hand: Sign-off needed at {site_name}: *{title}*.{link}")
    warning = ""
    for attempt in range(1, max_attempts + 1):
        description = (
            f"## {title}\n\n{warning}{next_steps_md}\n\n"
            f"Type **{site_name}** in *confirm_site* to confirm you are acting on this site."
        )
        answer = await apause_flow_run(
            wait_for_input=input_model.with_initial_data(
                description=description, **{"notes": "", **(initial or {})}
            ),
            timeout=int(timeout_s),
            # Prefect sleeps this with anyio: fractions of a second work despite the hint.
            poll_interval=cast("int", poll_interval_s),
            key=gate_key(key, attempt),
        )
        if answer.confirm_site.strip().lower() != site_name.lower():
            warning = (
                f"> **'{answer.confirm_site}' is not '{site_name}'.** Nothing was done; "
                "answer again.\n\n"
            )
            continue
        record = SignOffRecord(
            key=key,
            title=title,
            operator=answer.operator,
            decision=answer.decision,
            notes=answer.notes,
            answered_at=datetime.now(UTC),
            attempts=attempt,
            simulated_operator=answer.operator.startswith(SIMULATED_OPERATOR),
            inputs={
                name: str(value)
                for name, value in answer.model_dump().items()
                if name not in SignOff.model_fields
            },
        )
        if record.decision == "abort":
            raise UpgradeAborted(record)
        return record
    raise RuntimeError(f"no confirmation of site {site_name!r} after {max_attempts} askings")
