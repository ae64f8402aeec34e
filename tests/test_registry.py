"""The simulated schema registry driven by the project's own client, and the registry command."""

from __future__ import annotations

import argparse
import functools
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from starlette.types import ASGIApp, Receive, Scope, Send

from clients import registry as registry_client
from clients.registry import (
    CompatibilityLevel,
    CompatibilityResult,
    SchemaRegistryClient,
    SchemaRegistryIncompatibleError,
    SchemaRegistryNotFoundError,
    SchemaRegistryUnavailableError,
    SchemaRegistryWebError,
)
from deployments import cli_registry
from sim.http import serve_app
from sim.registry import CONTENT_TYPE, SchemaRegistryState, create_registry_app
from sim.writelog import WriteLog
from tests.conftest import REFERENCE, SITES, needs_reference

SUMMARY_STATE = "lsst.sal.Test.logevent_summaryState-value"
HEARTBEAT = "lsst.sal.Test.logevent_heartbeat-value"


def sal_schema(
    topic: str, fields: list[tuple[str, str]], component: str = "Test"
) -> dict[str, Any]:
    """A schema shaped like the ones salobj 8 registers: private fields first, all with defaults."""
    defaults = {"int": 0, "long": 0, "double": 0.0, "string": "", "boolean": False}
    private = [
        ("salIndex", "int"),
        ("private_sndStamp", "double"),
        ("private_rcvStamp", "double"),
        ("private_efdStamp", "double"),
        ("private_kafkaStamp", "double"),
        ("private_seqNum", "int"),
        ("private_revCode", "string"),
        ("private_identity", "string"),
        ("private_origin", "int"),
    ]
    return {
        "type": "record",
        "name": topic,
        "namespace": f"lsst.sal.{component}",
        "fields": [
            {
                "name": name,
                "type": avro_type,
                "default": defaults[avro_type],
                "description": f"{name} of {topic}",
                "units": "unitless",
            }
            for name, avro_type in [*private, *fields]
        ],
        "description": f"{topic} of {component}",
    }


SUMMARY_STATE_V1 = sal_schema("logevent_summaryState", [("summaryState", "int")])
# A ts_xml change that widens a field: old readers (int) cannot read the new data (long).
SUMMARY_STATE_WIDENED = sal_schema("logevent_summaryState", [("summaryState", "long")])
# A new field with a default: every reader copes.
SUMMARY_STATE_EXTENDED = sal_schema(
    "logevent_summaryState", [("summaryState", "int"), ("reason", "string")]
)
HEARTBEAT_V1 = sal_schema("logevent_heartbeat", [("heartbeat", "boolean")])


@dataclass
class Registry:
    url: str
    state: SchemaRegistryState
    write_log: WriteLog

    def writes(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [(r.method, r.target, r.body) for r in self.write_log.records]


class _CurrentApp:
    """Serves whichever app the running test installed: one server for the module, one fresh
    registry per test (starting and stopping uvicorn costs more than most tests here)."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[tuple[str, _CurrentApp]]:
    current = _CurrentApp()
    async with serve_app(current, name="registry") as url:
        yield url, current


@pytest.fixture
async def registry(server: tuple[str, _CurrentApp]) -> Registry:
    url, current = server
    write_log = WriteLog()
    app = create_registry_app(write_log)
    current.app = app
    return Registry(url, app.state.registry, write_log)


def closed_port_url() -> str:
    """A local URL where nothing listens (the port was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
async def client(registry: Registry) -> AsyncIterator[SchemaRegistryClient]:
    async with SchemaRegistryClient(registry.url, retries=2, retry_delay_s=0.0) as client:
        yield client


@pytest.fixture
async def http(registry: Registry) -> AsyncIterator[httpx.AsyncClient]:
    """Raw requests, for the parts of the API our client does not use (salobj's, errors)."""
    async with httpx.AsyncClient(base_url=registry.url) as http:
        yield http


# --- Compatibility configuration ---------------------------------------------------------------


async def test_global_compatibility_starts_forward_and_can_be_set(
    registry: Registry, client: SchemaRegistryClient
) -> None:
    assert await client.get_compatibility() is CompatibilityLevel.FORWARD
    assert await client.set_compatibility(CompatibilityLevel.NONE) is CompatibilityLevel.NONE
    assert await client.get_compatibility() is CompatibilityLevel.NONE
    assert registry.state.global_compatibility == "NONE"
    assert registry.writes() == [("PUT", "/config", {"compatibility": "NONE"})]


async def test_subject_compatibility_falls_back_to_global_and_overrides_it(
    registry: Registry, client: SchemaRegistryClient, http: httpx.AsyncClient
) -> None:
    assert await client.get_compatibility(SUMMARY_STATE) is CompatibilityLevel.FORWARD
    response = await http.get(f"/config/{SUMMARY_STATE}")
    assert response.status_code == 404
    assert response.json()["error_code"] == 40408

    level = await client.set_compatibility(CompatibilityLevel.FULL, SUMMARY_STATE)
    assert level is CompatibilityLevel.FULL
    assert await client.get_compatibility(SUMMARY_STATE) is CompatibilityLevel.FULL
    assert await client.get_compatibility() is CompatibilityLevel.FORWARD
    assert await client.get_compatibility(HEARTBEAT) is CompatibilityLevel.FORWARD
    assert registry.writes() == [
        ("PUT", f"/config/{SUMMARY_STATE}", {"subject": SUMMARY_STATE, "compatibility": "FULL"})
    ]

    response = await http.delete(f"/config/{SUMMARY_STATE}")
    assert response.json() == {"compatibilityLevel": "FULL"}
    assert await client.get_compatibility(SUMMARY_STATE) is CompatibilityLevel.FORWARD
    assert (await http.delete(f"/config/{SUMMARY_STATE}")).json()["error_code"] == 40408


async def test_invalid_level_and_global_reset(registry: Registry, http: httpx.AsyncClient) -> None:
    response = await http.put("/config", json={"compatibility": "SIDEWAYS"})
    assert response.status_code == 422
    assert response.json()["error_code"] == 42203
    assert "backward_transitive" in response.json()["message"]
    assert registry.state.global_compatibility == "FORWARD"

    await http.put("/config", json={"compatibility": "none"})
    assert (await http.get("/config")).json() == {"compatibilityLevel": "NONE"}
    response = await http.delete("/config")
    assert response.json() == {"compatibilityLevel": "NONE"}
    assert (await http.get("/config")).json() == {"compatibilityLevel": "FORWARD"}


# --- Registration ------------------------------------------------------------------------------


async def test_register_is_idempotent_and_ids_are_global(
    registry: Registry, client: SchemaRegistryClient
) -> None:
    first = await client.register(SUMMARY_STATE, SUMMARY_STATE_V1)
    assert await client.register(SUMMARY_STATE, SUMMARY_STATE_V1) == first
    heartbeat = await client.register(HEARTBEAT, HEARTBEAT_V1)
    assert heartbeat != first
    # The same schema under another subject keeps its id, as in Confluent.
    assert await client.register("copy-value", SUMMARY_STATE_V1) == first

    assert await client.list_subjects() == sorted([SUMMARY_STATE, HEARTBEAT, "copy-value"])
    assert [v.version for v in registry.state.subjects[SUMMARY_STATE]] == [1]
    assert registry.writes() == [
        (
            "POST",
            f"/subjects/{SUMMARY_STATE}/versions",
            {"subject": SUMMARY_STATE, "version": 1, "id": first},
        ),
        (
            "POST",
            f"/subjects/{HEARTBEAT}/versions",
            {"subject": HEARTBEAT, "version": 1, "id": heartbeat},
        ),
        (
            "POST",
            "/subjects/copy-value/versions",
            {"subject": "copy-value", "version": 1, "id": first},
        ),
    ]


async def test_get_latest_and_get_schema(registry: Registry, client: SchemaRegistryClient) -> None:
    first = await client.register(SUMMARY_STATE, SUMMARY_STATE_V1)
    second = await client.register(SUMMARY_STATE, SUMMARY_STATE_EXTENDED)
    latest = await client.get_latest(SUMMARY_STATE)
    assert (latest.subject, latest.version, latest.schema_id) == (SUMMARY_STATE, 2, second)
    assert latest.avro_schema == SUMMARY_STATE_EXTENDED

    before = len(registry.state.requests)
    schema = await client.get_schema(first)
    assert schema == SUMMARY_STATE_V1
    schema["name"] = "changed by the caller"
    # Ids are immutable: the second read comes from the cache, unchanged by the caller's edit.
    assert await client.get_schema(first) == SUMMARY_STATE_V1
    assert len(registry.state.requests) == before + 1


async def test_forward_refuses_an_incompatible_sal_change_and_none_accepts_it(
    registry: Registry, client: SchemaRegistryClient
) -> None:
    await client.register(SUMMARY_STATE, SUMMARY_STATE_V1)
    with pytest.raises(SchemaRegistryIncompatibleError) as caught:
        await client.register(SUMMARY_STATE, SUMMARY_STATE_WIDENED)
    assert caught.value.status == 409
    assert caught.value.error_code == 409
    assert caught.value.detail.startswith(
        "Schema being registered is incompatible with an earlier schema for subject "
        f'"{SUMMARY_STATE}", details: ['
    )
    assert "TYPE_MISMATCH" in caught.value.detail
    assert "{oldSchemaVersion: 1}" in caught.value.detail
    assert "compatibility: 'FORWARD'" in caught.value.detail
    assert [v.version for v in registry.state.subjects[SUMMARY_STATE]] == [1]

    # What the procedure does: switch to NONE, let the new CSCs register, switch back.
    await client.set_compatibility(CompatibilityLevel.NONE)
    new_id = await client.register(SUMMARY_STATE, SUMMARY_STATE_WIDENED)
    assert (await client.get_latest(SUMMARY_STATE)).schema_id == new_id
    await client.set_compatibility(CompatibilityLevel.FORWARD)
    assert [r[:2] for r in registry.writes()] == [
        ("POST", f"/subjects/{SUMMARY_STATE}/versions"),
        ("PUT", "/config"),
        ("POST", f"/subjects/{SUMMARY_STATE}/versions"),
        ("PUT", "/config"),
    ]


async def test_backward_accepts_the_widening_that_forward_refuses(
    client: SchemaRegistryClient,
) -> None:
    await client.register(SUMMARY_STATE, SUMMARY_STATE_V1)
    await client.set_compatibility(CompatibilityLevel.BACKWARD, SUMMARY_STATE)
    assert await client.register(SUMMARY_STATE, SUMMARY_STATE_WIDENED) > 0


@needs_reference()
async def test_real_salobj_schema_change_is_refused_under_forward(
    registry: Registry, client: SchemaRegistryClient, http: httpx.AsyncClient
) -> None:
    wire = REFERENCE / "salobj-wire"
    text = (wire / "logevent_summaryState.registered-schema-string.txt").read_text().strip()
    assert json.loads(text) == json.loads((wire / "logevent_summaryState.avsc.json").read_text())
    # Registered byte for byte as salobj sends it.
    response = await http.post(
        f"/subjects/{SUMMARY_STATE}/versions",
        params={"normalize": "False"},
        json={"schema": text, "schemaType": "AVRO", "references": []},
    )
    assert response.status_code == 200
    schema_id = response.json()["id"]
    assert await client.get_schema(schema_id) == json.loads(text)

    widened = json.loads(text)
    for entry in widened["fields"]:
        if entry["name"] == "summaryState":
            entry["type"] = "long"
    result = await client.test_compatibility(SUMMARY_STATE, widened)
    assert result.is_compatible is False
    assert any("TYPE_MISMATCH" in m and "/fields/9/type" in m for m in result.messages)
    with pytest.raises(SchemaRegistryIncompatibleError):
        await client.register(SUMMARY_STATE, widened)

    await client.set_compatibility(CompatibilityLevel.NONE)
    assert await client.register(SUMMARY_STATE, widened) != schema_id
    assert (await client.get_latest(SUMMARY_STATE)).version == 2


async def test_test_compatibility(client: SchemaRegistryClient) -> None:
    # A subject without versions accepts anything.
    assert await client.test_compatibility(SUMMARY_STATE, SUMMARY_STATE_WIDENED) == (
        CompatibilityResult(is_compatible=True, messages=[])
    )
    await client.register(SUMMARY_STATE, SUMMARY_STATE_V1)
    assert (await client.test_compatibility(SUMMARY_STATE, SUMMARY_STATE_EXTENDED)).is_compatible
    result = await client.test_compatibility(SUMMARY_STATE, SUMMARY_STATE_WIDENED)
    assert result.is_compatible is False
    assert result.messages[0].startswith("{errorType:'TYPE_MISMATCH'")
    assert result.messages[-1] == "{validateFields: 'false', compatibility: 'FORWARD'}"


async def test_salobj_call_sequence(registry: Registry, http: httpx.AsyncClient) -> None:
    """Every registry call the real salobj 8 makes (salobj-wire/README.md), answered as it needs."""
    text = json.dumps(SUMMARY_STATE_V1)
    body = {"schema": text, "schemaType": "AVRO", "references": []}
    registered = await http.post(
        f"/subjects/{SUMMARY_STATE}/versions", params={"normalize": "False"}, json=body
    )
    assert registered.status_code == 200
    assert registered.headers["content-type"] == CONTENT_TYPE
    schema_id = registered.json()["id"]

    found = await http.post(
        f"/subjects/{SUMMARY_STATE}", params={"normalize": "False", "deleted": "False"}, json=body
    )
    assert found.status_code == 200
    assert found.json()["subject"] == SUMMARY_STATE
    assert found.json()["version"] == 1
    assert found.json()["id"] == schema_id
    assert json.loads(found.json()["schema"]) == SUMMARY_STATE_V1

    by_id = await http.get(f"/schemas/ids/{schema_id}", params={"subject": SUMMARY_STATE})
    assert json.loads(by_id.json()["schema"]) == SUMMARY_STATE_V1

    associations = await http.get(
        "/associations/resources/-/lsst.sal.Test.logevent_summaryState",
        params={"resourceType": "topic"},
    )
    assert associations.status_code == 404
    assert associations.json()["error_code"] == 404

    deleted = await http.delete(f"/subjects/{SUMMARY_STATE}")
    assert deleted.json() == [1]
    # Soft-deleted: gone from the listing, but its id still decodes old messages.
    assert (await http.get("/subjects")).json() == []
    assert (await http.get("/subjects", params={"deleted": "true"})).json() == [SUMMARY_STATE]
    assert (await http.get(f"/schemas/ids/{schema_id}")).status_code == 200
    purged = await http.delete(f"/subjects/{SUMMARY_STATE}", params={"permanent": "true"})
    assert purged.json() == [1]
    gone = await http.get(f"/schemas/ids/{schema_id}")
    assert (gone.status_code, gone.json()["error_code"]) == (404, 40403)
    assert registry.writes()[1:] == [
        (
            "DELETE",
            f"/subjects/{SUMMARY_STATE}",
            {"subject": SUMMARY_STATE, "versions": [1], "permanent": False},
        ),
        (
            "DELETE",
            f"/subjects/{SUMMARY_STATE}",
            {"subject": SUMMARY_STATE, "versions": [1], "permanent": True},
        ),
    ]


async def test_lookup_of_an_unregistered_schema(http: httpx.AsyncClient) -> None:
    body = {"schema": json.dumps(SUMMARY_STATE_V1)}
    missing_subject = await http.post(f"/subjects/{SUMMARY_STATE}", json=body)
    assert (missing_subject.status_code, missing_subject.json()["error_code"]) == (404, 40401)
    await http.post(f"/subjects/{SUMMARY_STATE}/versions", json=body)
    other = {"schema": json.dumps(SUMMARY_STATE_EXTENDED)}
    missing_schema = await http.post(f"/subjects/{SUMMARY_STATE}", json=other)
    assert (missing_schema.status_code, missing_schema.json()["error_code"]) == (404, 40403)
    # Spacing and key order do not make another schema.
    dense = {"schema": json.dumps(SUMMARY_STATE_V1, separators=(",", ":"), sort_keys=True)}
    assert (await http.post(f"/subjects/{SUMMARY_STATE}", json=dense)).status_code == 200


async def test_versions_and_version_deletes(registry: Registry, http: httpx.AsyncClient) -> None:
    for schema in (SUMMARY_STATE_V1, SUMMARY_STATE_EXTENDED):
        await http.post(f"/subjects/{SUMMARY_STATE}/versions", json={"schema": json.dumps(schema)})
    assert (await http.get(f"/subjects/{SUMMARY_STATE}/versions")).json() == [1, 2]
    raw = await http.get(f"/subjects/{SUMMARY_STATE}/versions/1/schema")
    assert raw.json() == SUMMARY_STATE_V1

    permanent_first = await http.delete(
        f"/subjects/{SUMMARY_STATE}/versions/2", params={"permanent": "true"}
    )
    assert permanent_first.json()["error_code"] == 40407
    assert (await http.delete(f"/subjects/{SUMMARY_STATE}/versions/latest")).json() == 2
    assert (await http.delete(f"/subjects/{SUMMARY_STATE}/versions/2")).json()[
        "error_code"
    ] == 40406
    assert (await http.get(f"/subjects/{SUMMARY_STATE}/versions")).json() == [1]
    assert (await http.get(f"/subjects/{SUMMARY_STATE}/versions/latest")).json()["version"] == 1
    deleted = await http.get(f"/subjects/{SUMMARY_STATE}/versions/2", params={"deleted": "true"})
    assert deleted.json()["version"] == 2
    # A new registration takes the next number, after the soft-deleted one.
    await http.put("/config", json={"compatibility": "NONE"})
    await http.post(
        f"/subjects/{SUMMARY_STATE}/versions", json={"schema": json.dumps(SUMMARY_STATE_WIDENED)}
    )
    assert (await http.get(f"/subjects/{SUMMARY_STATE}/versions")).json() == [1, 3]
    assert (
        await http.delete(f"/subjects/{SUMMARY_STATE}/versions/2", params={"permanent": "true"})
    ).json() == 2
    assert (
        await http.get(f"/subjects/{SUMMARY_STATE}/versions", params={"deleted": "true"})
    ).json() == [1, 3]
    assert (
        "DELETE",
        f"/subjects/{SUMMARY_STATE}/versions/latest",
        {"subject": SUMMARY_STATE, "version": 2, "permanent": False},
    ) in registry.writes()


async def test_schemas_by_id_list_their_subjects(http: httpx.AsyncClient) -> None:
    body = {"schema": json.dumps(SUMMARY_STATE_V1)}
    schema_id = (await http.post("/subjects/b-value/versions", json=body)).json()["id"]
    await http.post("/subjects/a-value/versions", json=body)
    versions = await http.get(f"/schemas/ids/{schema_id}/versions")
    assert versions.json() == [
        {"subject": "a-value", "version": 1},
        {"subject": "b-value", "version": 1},
    ]
    assert (await http.get(f"/schemas/ids/{schema_id}/subjects")).json() == ["a-value", "b-value"]


# --- Errors ------------------------------------------------------------------------------------


async def test_not_found_errors_carry_confluent_codes(client: SchemaRegistryClient) -> None:
    with pytest.raises(SchemaRegistryNotFoundError) as subject:
        await client.get_latest("no-such-subject")
    assert (subject.value.status, subject.value.error_code) == (404, 40401)
    with pytest.raises(SchemaRegistryNotFoundError) as schema:
        await client.get_schema(999)
    assert schema.value.error_code == 40403


async def test_invalid_schema_is_refused_with_42201(
    registry: Registry, client: SchemaRegistryClient
) -> None:
    broken = {"type": "record", "name": "x", "fields": [{"name": "a", "type": "nonsense"}]}
    with pytest.raises(SchemaRegistryWebError) as caught:
        await client.register(SUMMARY_STATE, broken)
    assert (caught.value.status, caught.value.error_code) == (422, 42201)
    assert "nonsense" in caught.value.detail
    assert registry.state.subjects == {}
    assert registry.writes() == []


@pytest.mark.parametrize(
    ("version", "status", "error_code"),
    [("abc", 422, 42202), ("0", 422, 42202), ("7", 404, 40402), ("-1", 200, None)],
)
async def test_version_ids(
    http: httpx.AsyncClient, version: str, status: int, error_code: int | None
) -> None:
    await http.post(
        f"/subjects/{SUMMARY_STATE}/versions", json={"schema": json.dumps(SUMMARY_STATE_V1)}
    )
    response = await http.get(f"/subjects/{SUMMARY_STATE}/versions/{version}")
    assert response.status_code == status
    assert response.json().get("error_code") == error_code


async def test_request_and_response_formats(http: httpx.AsyncClient) -> None:
    root = await http.get("/")
    assert (root.json(), root.headers["content-type"]) == ({}, CONTENT_TYPE)
    assert (await http.get("/schemas/types")).json() == ["AVRO"]
    assert (await http.get("/mode")).json() == {"mode": "READWRITE"}
    for content_type in (CONTENT_TYPE, "application/vnd.schemaregistry+json", "application/json"):
        response = await http.put(
            "/config", content=b'{"compatibility": "FULL"}', headers={"content-type": content_type}
        )
        assert response.json() == {"compatibility": "FULL"}
    wrong_type = await http.put(
        "/config", content=b'{"compatibility": "FULL"}', headers={"content-type": "text/plain"}
    )
    assert wrong_type.status_code == 415
    not_json = await http.put("/config", content=b"{", headers={"content-type": CONTENT_TYPE})
    assert (not_json.status_code, not_json.json()["error_code"]) == (400, 400)
    json_schema = await http.post(
        f"/subjects/{SUMMARY_STATE}/versions", json={"schema": "{}", "schemaType": "JSON"}
    )
    assert json_schema.json()["error_code"] == 42201


# --- Retries and faults ------------------------------------------------------------------------


async def test_5xx_is_retried(registry: Registry, client: SchemaRegistryClient) -> None:
    registry.state.fail_next(2, 503)
    assert await client.get_compatibility() is CompatibilityLevel.FORWARD
    assert registry.state.requests == [("GET", "/config")] * 3


async def test_5xx_after_the_last_retry_is_a_web_error(
    registry: Registry, client: SchemaRegistryClient
) -> None:
    registry.state.fail_next(3, 500)
    with pytest.raises(SchemaRegistryWebError) as caught:
        await client.set_compatibility(CompatibilityLevel.NONE)
    assert (caught.value.status, caught.value.error_code) == (500, 50001)
    assert len(registry.state.requests) == 3
    assert registry.state.global_compatibility == "FORWARD"
    assert registry.writes() == []


async def test_down_registry_answers_503(registry: Registry, client: SchemaRegistryClient) -> None:
    registry.state.down = True
    with pytest.raises(SchemaRegistryWebError) as caught:
        await client.list_subjects()
    assert caught.value.status == 503
    registry.state.down = False
    assert await client.list_subjects() == []


async def test_4xx_is_not_retried(registry: Registry, client: SchemaRegistryClient) -> None:
    with pytest.raises(SchemaRegistryNotFoundError):
        await client.get_latest("no-such-subject")
    registry.state.fail_next(1, 429)
    with pytest.raises(SchemaRegistryWebError) as caught:
        await client.list_subjects()
    assert caught.value.status == 429
    assert len(registry.state.requests) == 2


async def test_unreachable_registry_is_unavailable_after_retries() -> None:
    async with SchemaRegistryClient(closed_port_url(), retries=2, retry_delay_s=0.0) as client:
        with pytest.raises(SchemaRegistryUnavailableError, match="tried 3 times"):
            await client.get_compatibility()


async def test_injected_http_client_stays_open(registry: Registry) -> None:
    async with httpx.AsyncClient() as http:
        async with SchemaRegistryClient(registry.url, http_client=http) as client:
            await client.list_subjects()
        assert not http.is_closed
        assert (await http.get(registry.url + "/subjects")).status_code == 200


# --- rubin-upgrade registry --------------------------------------------------------------------


def registry_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rubin-upgrade")
    cli_registry.add_parser(parser.add_subparsers(required=True))
    return parser


def site_file(tmp_path: Path, url: str) -> Path:
    data = yaml.safe_load((SITES / "bts.yaml").read_text())
    data["schema_registry"]["url"] = url
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def test_cli_sets_and_prints_the_level(
    registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = site_file(tmp_path, registry.url)
    parser = registry_parser()
    args = parser.parse_args(["registry", "--site-file", str(path), "compatibility"])
    assert await args.handler(args) == 0
    assert capsys.readouterr().out == "FORWARD\n"

    args = parser.parse_args(
        [
            "registry",
            "--site-file",
            str(path),
            "compatibility",
            "--set",
            "none",
            "--subject",
            SUMMARY_STATE,
        ]
    )
    assert await args.handler(args) == 0
    assert capsys.readouterr().out == "NONE\n"
    assert registry.state.subject_compatibility == {SUMMARY_STATE: "NONE"}
    assert registry.state.global_compatibility == "FORWARD"


async def test_cli_refuses_a_bad_level_before_any_request(
    registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = site_file(tmp_path, registry.url)
    with pytest.raises(SystemExit) as caught:
        registry_parser().parse_args(
            ["registry", "--site-file", str(path), "compatibility", "--set", "SIDEWAYS"]
        )
    assert caught.value.code == 2
    error = capsys.readouterr().err
    assert "'SIDEWAYS' is not a compatibility level" in error
    assert (
        "BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE, NONE"
        in error
    )

    namespace = argparse.Namespace(site_file=path, level="SIDEWAYS", subject=None)
    assert await cli_registry.run_compatibility(namespace) == 2
    assert "valid levels" in capsys.readouterr().err
    assert registry.state.requests == []


async def test_cli_reports_an_unreachable_registry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = closed_port_url()
    quick = functools.partial(registry_client.SchemaRegistryClient, retry_delay_s=0.0)
    monkeypatch.setattr(registry_client, "SchemaRegistryClient", quick)
    namespace = argparse.Namespace(site_file=site_file(tmp_path, url), level=None, subject=None)
    assert await cli_registry.run_compatibility(namespace) == 1
    assert f"schema registry {url}" in capsys.readouterr().err
