"""Answering sign-offs from outside the flow: the ``sign-off`` command and a simulated operator.

`answer_sign_off` resumes a paused run with a sign-off and says whether Prefect's server took
it (its API answers 200 even when it rejects the input). `SimulatedOperator` watches runs and
answers every gate as a named simulated operator — for rehearsals (``demo --auto-approve``) and
tests — and can do, at a gate, what the person would have done at the site (merge the Phalanx
PR, start the bare-metal services) through callbacks into the simulated site.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from prefect import get_client
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterTags
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.responses import SetStateStatus

__all__ = [
    "GateAnswer",
    "SignOffRejectedError",
    "SimulatedOperator",
    "answer_sign_off",
    "gate_of",
    "paused_gate",
    "paused_runs",
]

SIMULATED_OPERATOR = "simulated operator"


class SignOffRejectedError(RuntimeError):
    """Prefect's server did not take the sign-off; the message says why."""


def gate_of(pause_key: str) -> str:
    """The gate a pause key belongs to (a re-asked gate's key carries ``-again-N``)."""
    return pause_key.split("-again-", 1)[0]


def paused_gate(run: FlowRun) -> str | None:
    """The gate a paused run waits at, or None when it is not paused."""
    state = run.state
    if state is None or state.type is not StateType.PAUSED:
        return None
    key = state.state_details.pause_key
    return gate_of(key) if key else None


async def answer_sign_off(
    flow_run_id: UUID,
    *,
    operator: str,
    decision: str,
    confirm_site: str,
    notes: str = "",
    gate: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Resume a run paused at a gate with a sign-off; return the gate answered.

    Raises
    ------
    SignOffRejectedError
        The run is not paused (or not at ``gate``), or the server refused the input.
    """
    async with get_client() as client:
        run = await client.read_flow_run(flow_run_id)
        waiting = paused_gate(run)
        if waiting is None:
            state = run.state.name if run.state else "unknown"
            raise SignOffRejectedError(
                f"flow run {run.name} is not paused at a sign-off (it is {state})"
            )
        if gate is not None and waiting != gate:
            raise SignOffRejectedError(f"flow run {run.name} waits at {waiting!r}, not at {gate!r}")
        answer = {
            "operator": operator,
            "decision": decision,
            "confirm_site": confirm_site,
            "notes": notes,
            **(extra or {}),
        }
        result = await client.resume_flow_run(flow_run_id, run_input=answer)
    if result.status is not SetStateStatus.ACCEPT:
        reason = result.details.model_dump().get("reason")
        raise SignOffRejectedError(
            f"the server did not take the sign-off for {waiting!r}: {reason or result.status.value}"
        )
    return waiting


@dataclass
class GateAnswer:
    """How the simulated operator answers one gate, and what it does at the site first."""

    decision: str = "proceed"
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    action: Callable[[], Awaitable[object]] | None = None


@dataclass
class SimulatedOperator:
    """Answers every gate of the runs tagged ``tag`` until stopped.

    ``answers`` holds gate-specific answers; any other gate gets ``proceed``. ``confirm_site``
    is what it types as the site's name. Each answer is recorded in ``answered``.
    """

    tag: str
    confirm_site: str
    answers: dict[str, GateAnswer] = field(default_factory=dict)
    name: str = SIMULATED_OPERATOR
    poll_interval_s: float = 0.2
    answered: list[tuple[str, str]] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        """Answer gates until ``stop`` is set."""
        # One client for the whole watch: making one costs an SSL context, and this polls often.
        async with get_client() as client:
            while not stop.is_set():
                for flow_run in await paused_runs(client, self.tag):
                    gate = paused_gate(flow_run)
                    if gate is None:
                        continue
                    await self.answer(flow_run.id, gate)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_interval_s)

    async def answer(self, flow_run_id: UUID, gate: str) -> None:
        answer = self.answers.get(gate, GateAnswer())
        if answer.action is not None and answer.decision == "proceed":
            await answer.action()
        with contextlib.suppress(SignOffRejectedError):
            await answer_sign_off(
                flow_run_id,
                operator=self.name,
                decision=answer.decision,
                confirm_site=self.confirm_site,
                notes=answer.notes,
                gate=gate,
                extra=answer.extra,
            )
            self.answered.append((gate, answer.decision))


async def paused_runs(client: PrefectClient, tag: str) -> list[FlowRun]:
    """The runs tagged ``tag`` (the sections of a run carry its tags) paused at a gate."""
    return await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=[tag]),
            state=FlowRunFilterState(type={"any_": [StateType.PAUSED]}),
        )
    )
