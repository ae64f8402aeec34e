"""The Prefect UI, driven as an operator would: a sign-off answered in a real browser.

A local Prefect server (`LocalPrefectServer`, the one ``rubin-upgrade demo`` starts) serves the
UI; the cleanup's first steps (a sign-off, a notice, a change) run against a small simulated
stand; headless Chromium follows the link the flow posted to Slack, opens the run's resume form
(generated from the `SignOff` model), fills it in and submits it, as a person would.

The browser is Debian's chromium (`scripts/install.sh` installs it); Playwright only drives it
and its own browser downloads are never used. Without chromium the test fails and says how to
install it: a UI test that quietly skips would prove nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from playwright.async_api import Browser, Locator, Page, async_playwright, expect
from prefect import get_client
from prefect.client.schemas.objects import State as PrefectState
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

from deployments.server import LocalPrefectServer
from sim.site import SimulatedSite
from tests.test_faults import (
    gate_notice_and_change,
    open_stand,
    report_of,
    run_steps,
    save,
    telegraf_replicas,
)

CHROMIUM = Path(os.environ.get("RUBIN_UPGRADE_CHROMIUM", "/usr/bin/chromium"))
#: Headless, and nothing that phones home: this network is closed, and Chromium waits on the
#: connections of its background services (sync, component updates, QUIC) until they time out.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: A fresh Prefect database takes ~15 s of migrations; a loaded machine has taken 55 s.
SERVER_STARTUP_S = 240.0
#: How long the browser waits for the UI to show something (the UI polls the API).
UI_TIMEOUT_MS = 60_000
#: The whole exchange, from the flow's start to its end.
LIMIT_S = 180.0

#: Slow: a second Prefect server (the test harness's serves no UI) and a browser beside the
#: Summit's end-to-end run took CI past its 10 minutes on 2 cores. Run with ``-m slow``.
pytestmark = pytest.mark.slow

GATE = "camera-bridges"
TITLE = "Camera bridges stopped"
OPERATOR = "Vera Rubin"
NOTES = "Bridges stopped by hand at 10:02; LOVE shows them gone."
#: The sign-off's Slack notice links to the run: ``<url|Open the run>``.
RUN_LINK = re.compile(r"<(http[^|>]+)\|Open the run>")


def chromium() -> Path:
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: this test drives the Prefect UI in Debian's chromium. "
            "Install it with `bash scripts/install.sh` (as root) or "
            "`apt-get install --no-install-recommends chromium`, or point "
            "RUBIN_UPGRADE_CHROMIUM at another Chromium."
        )
    return CHROMIUM


@contextlib.asynccontextmanager
async def browser_page(executable: Path) -> AsyncIterator[Page]:
    async with async_playwright() as playwright:
        browser: Browser = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(UI_TIMEOUT_MS)
            yield page
        finally:
            await browser.close()


@contextlib.asynccontextmanager
async def stand_server_page(
    workdir: Path, executable: Path
) -> AsyncIterator[tuple[SimulatedSite, LocalPrefectServer, Page]]:
    """The stand, a Prefect server serving the UI, and a browser page; the server, by far the
    slowest to start, starts while the others do."""
    async with contextlib.AsyncExitStack() as stack:
        server = LocalPrefectServer(workdir / "prefect", startup_timeout_s=SERVER_STARTUP_S)
        stack.push_async_callback(server.stop)
        starting = asyncio.create_task(server.start())
        stack.push_async_callback(ended, starting)
        stand = await stack.enter_async_context(open_stand(workdir / "stand"))
        page = await stack.enter_async_context(browser_page(executable))
        await starting
        yield stand, server, page


async def ended(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` if it still runs, and wait for it (its outcome was seen, or is moot)."""
    task.cancel()
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await task


async def sign_off_link(stand: SimulatedSite) -> str:
    """The run's URL from the gate's Slack notice, once it is posted."""
    while True:
        for message in stand.slack_messages:
            if TITLE in message.text and (link := RUN_LINK.search(message.text)):
                return link.group(1)
        await asyncio.sleep(0.2)


async def paused_at(flow_run_id: UUID, pause_key: str) -> None:
    """Wait until the run pauses at ``pause_key``; fail at once if it ends instead."""
    async with get_client() as client:
        while True:
            state = (await client.read_flow_run(flow_run_id)).state
            if state and state.is_paused() and state.state_details.pause_key == pause_key:
                return
            if state and state.is_final():
                pytest.fail(f"the run ended ({state!r}) instead of pausing at {pause_key!r}")
            await asyncio.sleep(0.2)


def form_field(dialog: Locator, label: str) -> Locator:
    """The input group of the form's field labelled ``label``.

    The UI's labels are not tied to their inputs (``get_by_label`` finds nothing), so: the
    label by its visible text, then the nearest element around it that holds a form group.
    """
    return (
        dialog.locator("label")
        .filter(has_text=re.compile(rf"^{re.escape(label)}\b"))
        .locator("xpath=ancestor::*[.//fieldset][1]")
        .get_by_role("group")
    )


async def resume_form(page: Page) -> Locator:
    """Press the run's Resume button; the dialog with the sign-off form."""
    await page.get_by_role("button", name="Resume", exact=True).click()
    dialog = page.get_by_role("dialog")
    await expect(dialog.get_by_role("heading", name=TITLE)).to_be_visible()
    return dialog


async def answer(
    page: Page, dialog: Locator, *, operator: str, decision: str, site: str, notes: str
) -> None:
    await form_field(dialog, "Operator").get_by_role("textbox").fill(operator)
    # The select opens from the keyboard; a synthetic click on it does not open it headless.
    choice = form_field(dialog, "Decision").get_by_role("button")
    await choice.focus()
    await page.keyboard.press("ArrowDown")
    await page.get_by_role("option", name=decision, exact=True).click()
    await expect(choice).to_have_text(decision)
    await form_field(dialog, "Confirm Site").get_by_role("textbox").fill(site)
    await form_field(dialog, "Notes").get_by_role("textbox").fill(notes)
    await dialog.get_by_role("button", name="Submit", exact=True).click()
    await expect(dialog).to_be_hidden()


async def test_operator_signs_off_in_the_prefect_ui(tmp_path: Path) -> None:
    executable = chromium()
    async with contextlib.AsyncExitStack() as stack:
        stand, server, page = await stack.enter_async_context(
            stand_server_page(tmp_path, executable)
        )
        stack.enter_context(
            temporary_settings(
                updates={PREFECT_API_URL: server.api_url, PREFECT_UI_URL: server.url}
            )
        )
        name = await save(stand)
        running = asyncio.create_task(run_steps(name, gate_notice_and_change))
        stack.push_async_callback(ended, running)
        try:
            async with asyncio.timeout(LIMIT_S):
                state = await operator_answers_in_the_ui(page, stand, name, running)
        except BaseException:
            with contextlib.suppress(Exception):
                await page.screenshot(path=tmp_path / "ui-at-failure.png", full_page=True)
                print(f"the page at the failure: {tmp_path / 'ui-at-failure.png'}")
            raise

        # The run went on past the gate: it made its change and completed.
        assert state.is_completed(), state
        assert telegraf_replicas(stand) == {0}
        texts = [m.text for m in stand.slack_messages]
        notice = next(i for i, text in enumerate(texts) if "ready for Stage 1" in text)
        assert notice > next(i for i, text in enumerate(texts) if TITLE in text)
        # The report holds what was typed in the browser, and only the accepted answer.
        report = await report_of(state)
        rows = [line for line in report.splitlines() if line.startswith(f"| {TITLE} |")]
        assert len(rows) == 1, report
        assert rows[0].startswith(f"| {TITLE} | {OPERATOR} | proceed | "), rows
        assert rows[0].endswith(f"| {NOTES} |"), rows
        assert "wrong site" not in report


async def operator_answers_in_the_ui(
    page: Page, stand: SimulatedSite, name: str, running: asyncio.Task[PrefectState[Any]]
) -> PrefectState[Any]:
    """Answer the gate from the Slack link: once with the wrong site, then right."""
    url = await sign_off_link(stand)
    flow_run_id = UUID(url.rstrip("/").rsplit("/", 1)[-1])
    await paused_at(flow_run_id, GATE)
    assert telegraf_replicas(stand) == {1}  # nothing changed before the sign-off

    await page.goto(url)
    dialog = await resume_form(page)
    await expect(dialog).to_contain_text(f"Type {name} in confirm_site")
    await answer(
        page, dialog, operator=OPERATOR, decision="proceed", site="summit", notes="wrong site"
    )

    # Asked again, saying why; the run has still changed nothing.
    await paused_at(flow_run_id, f"{GATE}-again-2")
    assert telegraf_replicas(stand) == {1}
    dialog = await resume_form(page)
    await expect(dialog).to_contain_text(f"'summit' is not '{name}'. Nothing was done")
    await answer(page, dialog, operator=OPERATOR, decision="proceed", site=name, notes=NOTES)
    await expect(page.get_by_text("Flow run resumed").last).to_be_visible()
    return await running
