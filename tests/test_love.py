"""Commands through the project's LOVE client against the simulated LOVE and site model."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import yaml
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from blocks.site import CscName, SiteConfig, load_site_file
from clients.love import (
    LoveAuthError,
    LoveClient,
    LoveCommandFailedError,
    LoveNoAckError,
    LovePermissionError,
    LoveUnavailableError,
    LoveWebError,
    ScriptLocation,
)
from clients.registry import SchemaRegistryClient
from clients.sal import SalClient
from sim.broker import TansuBroker
from sim.csc import AckReply, CscFleet, SimulatedCsc
from sim.http import serve_app
from sim.love import LoveState, create_love_app
from sim.model import ModelOptions, SiteModel
from sim.registry import create_registry_app
from sim.sal_schemas import indexed_components
from sim.writelog import WriteLog
from tests.conftest import SITES

PASSWORD = "love-admin-Pa55word"
CMD_COMPLETE = 303
CMD_FAILED = -302


@dataclass(frozen=True)
class Ack:
    ack: int
    result: str


class CommandFailedError(Exception):
    """How a SAL client may report a failed command: raised, carrying the final ack."""

    def __init__(self, ack: Ack) -> None:
        super().__init__(ack.result)
        self.ack = ack


Reply = Callable[[float], Awaitable[Ack]]


@dataclass
class FakeSal:
    """The SAL side of the *simulated* LOVE (its commander's dependency), scripted per test.

    ``reply`` answers the next command; by default a ScriptQueue ``add`` completes with a new
    script index, as the real queue's ack does.
    """

    sent: list[tuple[CscName, str, dict[str, Any]]] = field(default_factory=list)
    reply: Reply | None = None
    _indices: itertools.count[int] = field(default_factory=lambda: itertools.count(100001))

    async def command(
        self,
        csc: CscName,
        name: str,
        params: dict[str, Any] | None = None,
        *,
        timeout_s: float,
    ) -> Ack:
        self.sent.append((csc, name, dict(params or {})))
        if self.reply is not None:
            return await self.reply(timeout_s)
        result = str(next(self._indices)) if name == "add" else "Done"
        return Ack(CMD_COMPLETE, result)


async def silent(timeout_s: float) -> Ack:
    """The CSC never answers: the commander gives up after its timeout."""
    await asyncio.sleep(timeout_s)
    raise TimeoutError


@dataclass
class LoveSim:
    app: Starlette
    url: str
    model: SiteModel
    sal: FakeSal
    write_log: WriteLog

    @property
    def state(self) -> LoveState:
        state: LoveState = self.app.state.love
        return state

    def client(self, *, username: str = "admin", password: str = PASSWORD) -> LoveClient:
        return LoveClient(
            f"{self.url}/love",
            username=username,
            password=SecretStr(password),
            retries=2,
            retry_delay_s=0.01,
            command_timeout_s=5.0,
        )

    def take_love_down(self) -> None:
        """What ``cleanup_all`` does to LOVE: delete every Deployment in its namespace."""
        namespace = self.model.config.cleanup.love_namespace
        for ns, name in list(self.model.deployments):
            if ns == namespace:
                self.model.delete_deployment(ns, name)


class SwappableApp:
    """One server for the module, serving each test's own app (servers are slow to stop)."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def summit_site() -> SiteConfig:
    return load_site_file(SITES / "summit.yaml")


@pytest.fixture(scope="module")
async def love_server() -> AsyncIterator[tuple[SwappableApp, str]]:
    swappable = SwappableApp()
    async with serve_app(swappable, name="love") as url:
        yield swappable, url


@pytest.fixture
async def love(
    summit_site: SiteConfig, love_server: tuple[SwappableApp, str]
) -> AsyncIterator[LoveSim]:
    """A fresh site model and LOVE; the commander waits 0.2 s for a final ack."""
    swappable, url = love_server
    model = SiteModel(summit_site, options=ModelOptions(image_pull_s=0))
    sal = FakeSal()
    write_log = WriteLog()
    app = create_love_app(model, write_log, sal=sal, password=PASSWORD, commander_timeout_s=0.2)
    swappable.app = app
    try:
        yield LoveSim(app, url, model, sal, write_log)
    finally:
        swappable.app = None
        await model.aclose()


async def test_add_script_returns_the_new_script_index(love: LoveSim) -> None:
    config = {"data": [["ScriptQueue:3", "OFFLINE"]], "mute_alarms": False}
    async with love.client() as client:
        index = await client.add_script(1, "set_summary_state.py", config)
        session = await client.login()

    assert index == 100001
    assert session.execute_commands
    [(csc, name, params)] = love.sal.sent
    assert csc == CscName(name="ScriptQueue", index=1)
    assert name == "add"  # LOVE-commander drops the cmd_ prefix
    assert params["isStandard"] is True
    assert params["path"] == "set_summary_state.py"
    assert params["location"] == ScriptLocation.LAST
    assert yaml.safe_load(params["config"]) == config
    [record] = love.write_log.records
    assert (record.service, record.method, record.target) == ("love", "cmd", "ScriptQueue:1")
    assert record.body["cmd"] == "cmd_add"
    assert record.body["user"] == "admin"
    assert record.body["params"]["path"] == "set_summary_state.py"
    assert PASSWORD not in repr(record)


async def test_a_command_returns_the_final_ack_result(love: LoveSim) -> None:
    async with love.client() as client:
        ack = await client.command("ATDome", 0, "start", {"configurationOverride": ""})
    assert (ack.csc, ack.salindex, ack.cmd, ack.result) == ("ATDome", 0, "cmd_start", "Done")
    assert love.sal.sent[0][:2] == (CscName(name="ATDome"), "start")


@pytest.mark.parametrize("raised", [True, False], ids=["raised", "returned"])
async def test_a_failed_command_carries_its_reason_and_is_not_resent(
    love: LoveSim, raised: bool
) -> None:
    failed = Ack(CMD_FAILED, "Failed: the queue is not enabled")

    async def reply(timeout_s: float) -> Ack:
        if raised:
            raise CommandFailedError(failed)
        return failed

    love.sal.reply = reply
    async with love.client() as client:
        with pytest.raises(LoveCommandFailedError) as caught:
            await client.add_script(2, "auxtel/enable_atcs.py")
    assert caught.value.status == 500
    assert caught.value.reason == "Failed: the queue is not enabled"
    assert caught.value.csc == "ScriptQueue:2"
    assert len(love.sal.sent) == 1


async def test_no_final_ack_means_state_unknown_and_is_not_resent(love: LoveSim) -> None:
    love.sal.reply = silent
    async with love.client() as client:
        with pytest.raises(LoveNoAckError) as caught:
            await client.command("ScriptQueue", 1, "cmd_resume")
    assert caught.value.status == 504
    assert "re-check" in str(caught.value)
    assert len(love.sal.sent) == 1


async def test_no_answer_to_a_sent_command_is_not_resent(love: LoveSim) -> None:
    async def slow(timeout_s: float) -> Ack:
        await asyncio.sleep(0.5)
        return Ack(CMD_COMPLETE, "Done")

    love.sal.reply = slow
    async with love.client() as client:
        with pytest.raises(LoveNoAckError) as caught:
            await client.command("ScriptQueue", 1, "cmd_pause", timeout_s=0.1)
    assert caught.value.status is None
    assert len(love.sal.sent) == 1


async def test_an_account_without_permission_cannot_command(love: LoveSim) -> None:
    love.state.add_user("observer", "observer-pw", execute_commands=False)
    async with love.client(username="observer", password="observer-pw") as client:
        session = await client.login()
        with pytest.raises(LovePermissionError) as caught:
            await client.add_script(1, "maintel/enable_mtcs.py")
    assert not session.execute_commands
    assert caught.value.status == 403
    assert love.sal.sent == []
    assert len(love.write_log) == 0


async def test_a_wrong_password_is_refused_without_showing_it(love: LoveSim) -> None:
    wrong = "not-the-Pa55word"
    client = love.client(password=wrong)
    async with client:
        with pytest.raises(LoveAuthError) as caught:
            await client.add_script(1, "maintel/enable_mtcs.py")
    assert caught.value.status == 400
    assert "Unable to log in" in str(caught.value)
    assert wrong not in str(caught.value)
    assert wrong not in repr(client)
    assert love.sal.sent == []


async def test_love_is_down_from_cleanup_until_its_app_is_synced(love: LoveSim) -> None:
    async with love.client() as client:
        assert await client.add_script(1, "set_summary_state.py") == 100001
        love.take_love_down()
        with pytest.raises(LoveUnavailableError, match="503"):
            await client.add_script(1, "set_summary_state.py")
        assert len(love.sal.sent) == 1
        assert love.state.requests.count("/love/manager/api/cmd/") == 1 + 3  # 2 retries

        love.model.sync_application(love.model.applications["love"])
        # LOVE keeps its tokens in its database: the same session works again.
        assert await client.add_script(1, "set_summary_state.py") == 100002
    assert love.state.requests.count("/love/manager/api/get-token/") == 1


async def test_login_while_love_is_down_is_unavailable(love: LoveSim) -> None:
    love.take_love_down()
    async with love.client() as client:
        with pytest.raises(LoveUnavailableError):
            await client.login()


async def test_transient_gateway_errors_are_retried(love: LoveSim) -> None:
    async with love.client() as client:
        await client.login()
        love.state.fail_next(1, 502)
        love.state.fail_next(1, 503)
        assert await client.add_script(1, "set_summary_state.py") == 100001
    assert len(love.sal.sent) == 1


async def test_an_unreachable_love_is_unavailable(summit_site: SiteConfig) -> None:
    model = SiteModel(summit_site)
    app = create_love_app(model, sal=FakeSal(), password=PASSWORD)
    async with serve_app(app, name="love") as url:
        pass  # the port is closed again: connections are refused
    client = LoveClient(
        f"{url}/love",
        username="admin",
        password=SecretStr(PASSWORD),
        retries=1,
        retry_delay_s=0.01,
    )
    async with client:
        with pytest.raises(LoveUnavailableError, match="cannot be reached"):
            await client.command("ScriptQueue", 1, "cmd_add", {})


async def test_a_revoked_token_is_replaced_once(love: LoveSim) -> None:
    async with love.client() as client:
        await client.command("ScriptQueue", 1, "cmd_add", {"path": "a.py"})
        love.state.revoke_tokens()
        await client.command("ScriptQueue", 1, "cmd_add", {"path": "b.py"})
    assert love.state.requests.count("/love/manager/api/get-token/") == 2
    assert [params["path"] for _, _, params in love.sal.sent] == ["a.py", "b.py"]


async def test_a_malformed_command_is_a_web_error(love: LoveSim) -> None:
    async with love.client() as client:
        with pytest.raises(LoveWebError) as caught:
            await client.command("", 1, "cmd_add", {})
    assert caught.value.status == 400
    assert "csc" in caught.value.detail
    assert love.sal.sent == []


async def test_add_script_needs_a_neighbour_for_before_and_after(love: LoveSim) -> None:
    async with love.client() as client:
        with pytest.raises(ValueError, match="location_sal_index"):
            await client.add_script(1, "a.py", location=ScriptLocation.BEFORE)
    assert love.state.requests == []


async def test_commands_reach_simulated_cscs_over_sal(
    summit_site: SiteConfig, love_server: tuple[SwappableApp, str]
) -> None:
    """The whole path: LOVE's API, its commander's SAL client on Kafka, a simulated queue."""
    queue = CscName(name="ScriptQueue", index=1)
    added: list[dict[str, Any]] = []

    async def add(csc: SimulatedCsc, data: dict[str, Any]) -> AckReply:
        added.append(data)
        return AckReply(result=str(100000 + len(added)))

    swappable, url = love_server
    sal_log = WriteLog()
    async with contextlib.AsyncExitStack() as stack:
        broker = await stack.enter_async_context(TansuBroker())
        registry_url = await stack.enter_async_context(
            serve_app(create_registry_app(), name="schema-registry")
        )
        fleet = await stack.enter_async_context(
            CscFleet(
                bootstrap_servers=broker.bootstrap_servers,
                registry_url=registry_url,
                indexed=indexed_components([queue]),
                write_log=sal_log,
            )
        )
        fleet.register_command("ScriptQueue", "add", add)
        assert await fleet.launch(summit_site.csc(queue)) is not None
        http = await stack.enter_async_context(httpx.AsyncClient())
        sal = await stack.enter_async_context(
            SalClient(
                bootstrap_servers=broker.bootstrap_servers,
                registry=SchemaRegistryClient(registry_url, http_client=http),
                identity="LOVE",
            )
        )
        model = SiteModel(summit_site)
        stack.push_async_callback(model.aclose)
        swappable.app = create_love_app(model, sal=sal, password=PASSWORD)
        stack.callback(setattr, swappable, "app", None)
        client = await stack.enter_async_context(
            LoveClient(f"{url}/love", username="admin", password=SecretStr(PASSWORD))
        )

        config = {"data": [["ScriptQueue:3", "OFFLINE"]], "mute_alarms": False}
        assert await client.add_script(1, "set_summary_state.py", config) == 100001
        # The queue came up ENABLED, so salobj's state machine refuses another enable.
        with pytest.raises(LoveCommandFailedError) as caught:
            await client.command("ScriptQueue", 1, "cmd_enable")

    [script] = added
    assert script["path"] == "set_summary_state.py"
    assert yaml.safe_load(script["config"]) == config
    assert "enable not allowed in state" in caught.value.reason
    assert [(r.method, r.target, r.body["identity"]) for r in sal_log.records] == [
        ("add", "ScriptQueue:1", "LOVE"),
        ("enable", "ScriptQueue:1", "LOVE"),
    ]
