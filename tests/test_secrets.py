"""No secret ever shows: upgrade runs with recognisable credentials, then every output searched.

The simulated site accepts passwords and tokens that are easy to find (``argocd-SECRET-4f2a``...).
Three runs use them: a dry run of ``full-upgrade``, which reads every service; a ``full-upgrade``
that stops at the preflight on a wrong Argo CD password (itself recognisable); and the cleanup's
first steps, which sign off, post to Slack and change the cluster. Then the logs (Python's and
the Prefect runs' as the API holds them), the artifacts, the runs' state messages and the
exceptions, and the Slack messages are searched for every one of those values.
"""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prefect import get_client, tags
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterTags,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import State as PrefectState
from prefect.logging.handlers import APILogHandler
from prefect.settings import PREFECT_LOGGING_TO_API_ENABLED, temporary_settings
from pydantic import SecretStr

from blocks.credentials import SiteCredentials
from blocks.upgrade_site import save_site_block
from deployments.operator import SimulatedOperator
from sim.site import SimulatedSite
from tests.sitekit import FAST
from tests.test_faults import LIMIT_S, gate_notice_and_change, run_steps, stand_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

CREDENTIALS = SiteCredentials(
    argocd_password=SecretStr("argocd-SECRET-4f2a"),
    love_password=SecretStr("love-SECRET-7c1d"),
    slack_token=SecretStr("xoxb-SECRET-9e3b"),
)
KUBERNETES_TOKEN = SecretStr("kube-SECRET-2b8e")
WRONG_ARGOCD_PASSWORD = SecretStr("argocd-WRONG-SECRET-0d5c")
SECRETS = [
    secret.get_secret_value()
    for secret in (*dict(CREDENTIALS).values(), KUBERNETES_TOKEN, WRONG_ARGOCD_PASSWORD)
    if isinstance(secret, SecretStr)
]


@pytest.fixture
async def stand(tmp_path: Path) -> AsyncIterator[SimulatedSite]:
    async with SimulatedSite(
        stand_config(),
        workdir=tmp_path,
        options=FAST,
        credentials=CREDENTIALS,
        kubernetes_token=KUBERNETES_TOKEN,
    ) as site:
        yield site


async def _full_upgrade(name: str, *, dry_run: bool) -> PrefectState[Any]:
    from flows.full_upgrade import full_upgrade

    async with asyncio.timeout(LIMIT_S):
        state: PrefectState[Any] = await full_upgrade(
            site=name, upgrade_id="c0045", dry_run=dry_run, return_state=True
        )
        return state


async def _exception_texts(state: PrefectState[Any]) -> list[str]:
    """The state's message and, for a failure, the exception as a traceback shows it."""
    texts = [state.message or ""]
    if state.is_failed():
        exc = await state.aresult(raise_on_failure=False)
        if isinstance(exc, BaseException):
            texts += [repr(exc), *traceback.format_exception(exc)]
    return texts


async def _every(read: Callable[[int], Awaitable[list[Any]]]) -> list[Any]:
    """Every item of a paged Prefect listing (the API gives at most 200 at a time)."""
    items: list[Any] = []
    while True:
        page = await read(len(items))
        items += page
        if len(page) < _PAGE:
            return items


_PAGE = 200


async def _published(tag: str) -> list[str]:
    """What the Prefect API holds for the runs tagged ``tag`` (their sections included):
    state messages, parameters, logs and artifacts."""
    await APILogHandler.aflush()
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])), limit=_PAGE
        )
        ids = [run.id for run in runs]
        logs = await _every(
            lambda offset: client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)),
                limit=_PAGE,
                offset=offset,
            )
        )
        artifacts = await _every(
            lambda offset: client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids)),
                limit=_PAGE,
                offset=offset,
            )
        )
    assert len(runs) >= 3 + 5, "the three runs and their sections"
    assert logs, "the runs' logs reached the API"
    assert any(a.key and a.key.endswith("-report") for a in artifacts)
    texts = [run.state.message or "" for run in runs if run.state is not None]
    texts += [json.dumps(run.parameters, default=str) for run in runs]
    texts += [log.message for log in logs]
    texts += [json.dumps(a.data, default=str) + (a.description or "") for a in artifacts]
    return texts


async def test_no_secret_in_logs_artifacts_exceptions_or_slack(
    stand: SimulatedSite, caplog: pytest.LogCaptureFixture
) -> None:
    # Everything of the tool's own, and the libraries' notices (their debug output is huge).
    caplog.set_level(logging.INFO)
    for package in ("blocks", "clients", "deployments", "flows"):
        caplog.set_level(logging.DEBUG, logger=package)
    name = f"secrets-{uuid.uuid4().hex[:6]}"
    wrong = f"{name}-wrong"
    config = stand.site_config(name)
    await save_site_block(config, stand.credentials(), name)
    await save_site_block(
        stand.site_config(wrong),
        stand.credentials().model_copy(update={"argocd_password": WRONG_ARGOCD_PASSWORD}),
        wrong,
    )
    operator = SimulatedOperator(tag=name, confirm_site=name)

    with temporary_settings(updates={PREFECT_LOGGING_TO_API_ENABLED: True}), tags(name):
        planned = await _full_upgrade(name, dry_run=True)
        refused = await _full_upgrade(wrong, dry_run=False)
        cleaned = await run_steps(name, gate_notice_and_change, operator)

    # The runs did what makes secrets travel: every service was logged into, a login was
    # refused, a gate was signed off and Slack was posted to.
    assert planned.is_completed(), planned
    assert refused.is_failed(), refused
    assert "Invalid username or password" in (refused.message or "")
    assert cleaned.is_completed(), cleaned
    assert stand.slack_messages

    outputs = {
        "logs": [caplog.text],
        "exceptions": [
            text for state in (planned, refused, cleaned) for text in await _exception_texts(state)
        ],
        "Prefect API": await _published(name),
        "Slack": [json.dumps({"text": m.text, "blocks": m.blocks}) for m in stand.slack_messages],
        "results": [json.dumps(await planned.aresult(), default=str)],
    }
    for where, texts in outputs.items():
        for secret in SECRETS:
            leaks = [text for text in texts if secret in text]
            assert not leaks, f"{secret} appears in the {where}: {leaks[0][:500]}"
        assert texts
