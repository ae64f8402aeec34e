"""The simulated Argo CD and our client both speak Argo CD v3.3's API as its OpenAPI spec says.

Every exchange of a scenario that touches each endpoint the upgrade uses (errors included) is
captured with an httpx event hook on the client's own connection pool, and checked against
``argocd-v3.3.14-swagger.json``: the request's path, query parameters and body, and the
response's body (the operation's 200 schema, or ``runtimeError`` for an error). Swagger 2.0
definitions do not forbid extra properties, so the conformance rule here is stricter than the
spec: a property the schema does not define is an error, and so is ``null``.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from blocks.site import load_site_file
from clients.argocd import (
    ArgoCdAuthError,
    ArgoCdClient,
    ArgoCdNotFoundError,
    ArgoCdOperationInProgressError,
    ArgoCdSyncFailedError,
    ArgoCdWebError,
    ResourceRef,
)
from sim.argocd import ArgoCdState, create_argocd_app
from sim.http import serve_app
from sim.model import ModelOptions, SiteModel

# CI lays shared/ beside the checkout.
SHARED = Path(__file__).resolve().parents[2] / "shared"
SPEC_FILE = SHARED / "reference" / "argocd-v3.3.14-swagger.json"
SUMMIT = Path(__file__).resolve().parents[1] / "deployments" / "sites" / "summit.yaml"
PASSWORD = "conformance-password-51d0"  # the simulated server's; exists only in tests
PREFIX = "/argo-cd"

pytestmark = pytest.mark.skipif(
    not SPEC_FILE.is_file(),
    reason=f"{SPEC_FILE} is absent (CI lays ../shared beside the checkout)",
)


class Swagger:
    """Just enough of a Swagger 2.0 checker for Argo CD's spec (``$ref``, ``allOf``, types)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self._paths = sorted(
            (
                (template, re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"))
                for template in spec["paths"]
            ),
            # The most literal segments win: /applications/{name}/sync over /{a}/{b}/{c}.
            key=lambda item: -sum(not part.startswith("{") for part in item[0].split("/")),
        )

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            name = schema["$ref"].removeprefix("#/definitions/")
            schema = self.spec["definitions"][name]
        if "allOf" in schema:
            merged: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
            for part in schema["allOf"]:
                resolved = self.resolve(part)
                merged["properties"].update(resolved.get("properties", {}))
                merged["required"] += resolved.get("required", [])
            merged["properties"].update(schema.get("properties", {}))
            return merged
        return schema

    def errors(self, schema: dict[str, Any], value: Any, where: str = "$") -> list[str]:
        schema = self.resolve(schema)
        if value is None:
            return [f"{where}: null"]
        kind = schema.get("type")
        if kind is None and ("properties" in schema or "additionalProperties" in schema):
            kind = "object"
        if kind is None:
            return []  # a schema that allows any value
        python_types: dict[str, tuple[type, ...]] = {
            "object": (dict,),
            "array": (list,),
            "string": (str,),
            "boolean": (bool,),
            "integer": (int,),
            "number": (int, float),
        }
        if not isinstance(value, python_types[kind]) or (
            kind in ("integer", "number") and isinstance(value, bool)
        ):
            return [f"{where}: expected {kind}, got {type(value).__name__} {value!r:.60}"]
        errors: list[str] = []
        if isinstance(value, dict):
            errors = self._object_errors(schema, value, where)
        elif isinstance(value, list):
            item_schema = schema.get("items", {})
            for index, item in enumerate(value):
                errors += self.errors(item_schema, item, f"{where}[{index}]")
        elif isinstance(value, str):
            errors = _string_errors(schema, value, where)
        return errors

    def _object_errors(
        self, schema: dict[str, Any], value: dict[str, Any], where: str
    ) -> list[str]:
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        errors = [
            f"{where}: missing {name!r}" for name in schema.get("required", []) if name not in value
        ]
        for name, item in value.items():
            if name in properties:
                errors += self.errors(properties[name], item, f"{where}.{name}")
            elif isinstance(extra, dict):
                errors += self.errors(extra, item, f"{where}.{name}")
            elif extra is not True:
                errors.append(f"{where}: {name!r} is not a property of the schema")
        return errors

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]]:
        for template, pattern in self._paths:
            operations = self.spec["paths"][template]
            if pattern.match(path) and method.lower() in operations:
                return template, operations[method.lower()]
        raise AssertionError(f"{method} {path} is not an operation of the spec")

    def exchange_errors(self, request: httpx.Request, response: httpx.Response) -> list[str]:
        path = request.url.path.removeprefix(PREFIX)
        template, operation = self.operation(request.method, path)
        where = f"{request.method} {template}"
        parameters = operation.get("parameters", [])
        declared = {p["name"] for p in parameters if p["in"] == "query"}
        errors = [
            f"{where}: query parameter {name!r} is not in the spec"
            for name in request.url.params
            if name not in declared
        ]
        body_parameter = next((p for p in parameters if p["in"] == "body"), None)
        if request.content:
            if body_parameter is None:
                errors.append(f"{where}: sends a body the operation does not take")
            else:
                body = json.loads(request.content)
                errors += self.errors(body_parameter["schema"], body, f"{where} request")
        elif body_parameter is not None and body_parameter.get("required"):
            errors.append(f"{where}: the required body is missing")
        status = "200" if response.is_success else "default"
        schema = operation["responses"][status]["schema"]
        errors += self.errors(schema, response.json(), f"{where} {response.status_code} response")
        return errors


def _string_errors(schema: dict[str, Any], value: str, where: str) -> list[str]:
    if schema.get("format") == "date-time":
        try:
            datetime.fromisoformat(value)
        except ValueError:
            return [f"{where}: {value!r} is not an RFC 3339 time"]
    if schema.get("format") == "int64" and not value.lstrip("-").isdigit():
        return [f"{where}: {value!r} is not an int64 string"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} is not one of {schema['enum']}"]
    return []


@pytest.fixture(scope="module")
def swagger() -> Swagger:
    return Swagger(json.loads(SPEC_FILE.read_text(encoding="utf-8")))


def test_the_checker_rejects_what_the_rule_forbids(swagger: Swagger) -> None:
    application = {"$ref": "#/definitions/v1alpha1Application"}
    good = {
        "metadata": {"name": "auxtel", "labels": {"a": "b"}},
        "status": {"sync": {"status": "Synced"}},
    }
    assert swagger.errors(application, good) == []
    assert swagger.errors(application, {"metadata": {"name": 3}}) == [
        "$.metadata.name: expected string, got int 3"
    ]
    assert swagger.errors(application, {"status": {"sync": {"state": "Synced"}}}) == [
        "$.status.sync: 'state' is not a property of the schema"
    ]
    assert swagger.errors(application, {"metadata": {"creationTimestamp": "yesterday"}}) == [
        "$.metadata.creationTimestamp: 'yesterday' is not an RFC 3339 time"
    ]
    assert swagger.errors(application, {"operation": None}) == ["$.operation: null"]
    error = {"$ref": "#/definitions/runtimeError"}
    assert swagger.errors(error, {"error": "x", "code": True, "message": "x"}) == [
        "$.code: expected integer, got bool True"
    ]


@pytest.fixture
async def argocd() -> AsyncIterator[tuple[str, ArgoCdState, SiteModel]]:
    model = SiteModel(load_site_file(SUMMIT), options=ModelOptions(image_pull_s=0), runner=None)
    app = create_argocd_app(model, password=PASSWORD, base_path=PREFIX)
    state: ArgoCdState = app.state.argocd
    async with serve_app(app, name="argocd-conformance") as url:
        yield url + PREFIX, state, model
        await state.aclose()
    await model.aclose()


async def test_every_exchange_conforms_to_the_spec(
    swagger: Swagger, argocd: tuple[str, ArgoCdState, SiteModel]
) -> None:
    url, state, model = argocd
    exchanges: list[tuple[httpx.Request, httpx.Response]] = []

    async def capture(response: httpx.Response) -> None:
        await response.aread()
        exchanges.append((response.request, response))

    async with httpx.AsyncClient(event_hooks={"response": [capture]}) as http:
        wrong = ArgoCdClient(url, password=SecretStr("not-it"), http_client=http)
        with pytest.raises(ArgoCdAuthError):
            await wrong.login()
        client = ArgoCdClient(url, password=SecretStr(PASSWORD), http_client=http, retry_delay_s=0)

        await client.list_applications(project="telescope")
        await client.list_applications()
        await client.get_application("auxtel", refresh="hard")
        with pytest.raises(ArgoCdNotFoundError):
            await client.get_application("no-such-app")

        model.publish_upgrade(revision="5c1e2ab", image_tag="c0045", sasquatch_changes=True)
        model.delete_job("auxtel", "atdome-job")
        model.scale_deployment(model.deployments[("sasquatch", "sasquatch-telegraf-m2")], 0)
        await client.diff_report("sasquatch")
        await client.diff_report("auxtel")

        state.sync_duration_s = 0.05
        job = ResourceRef(group="batch", kind="Job", namespace="auxtel", name="atdome-job")
        await client.sync_application("auxtel", revision="5c1e2ab", prune=True, resources=[job])
        with pytest.raises(ArgoCdOperationInProgressError):
            await client.sync_application("auxtel")
        await client.wait_for_sync(
            "auxtel", timeout_s=5.0, poll_interval_s=0.01
        )  # polls see Running, then Succeeded
        await client.sync_application("calsys", dry_run=True)
        await client.wait_for_operation("calsys", timeout_s=5.0, poll_interval_s=0.01)
        state.fail_first_sync("obssys")
        await client.sync_and_wait(
            "obssys", timeout_s=5.0, poll_interval_s=0.01
        )  # a Failed operation state, then Succeeded

        state.sync_duration_s = 30.0
        await client.sync_application("envsys")
        await _until_running(client, "envsys")
        await client.terminate_operation("envsys")
        with pytest.raises(ArgoCdSyncFailedError):
            await client.wait_for_operation("envsys", timeout_s=5.0, poll_interval_s=0.01)
        with pytest.raises(ArgoCdWebError):
            await client.terminate_operation("envsys")

        state.expire_tokens()
        state.fail_next(1, status=503)
        await client.get_application("sasquatch", refresh="normal")

        # The legacy ``project`` parameter and a selector, which our client does not send.
        token = await _token(http, url)
        await http.get(
            f"{url}/api/v1/applications",
            params={"project": "telescope", "selector": "a=b"},
            headers={"Authorization": f"Bearer {token}"},
        )

    seen = {
        (r.method, swagger.operation(r.method, r.url.path.removeprefix(PREFIX))[0])
        for r, _ in exchanges
    }
    assert seen >= {
        ("POST", "/api/v1/session"),
        ("GET", "/api/v1/applications"),
        ("GET", "/api/v1/applications/{name}"),
        ("POST", "/api/v1/applications/{name}/sync"),
        ("DELETE", "/api/v1/applications/{name}/operation"),
        ("GET", "/api/v1/applications/{applicationName}/managed-resources"),
    }
    assert {response.status_code for _, response in exchanges} >= {200, 400, 401, 404, 503}
    errors = [
        e for request, response in exchanges for e in swagger.exchange_errors(request, response)
    ]
    assert errors == []


async def _until_running(client: ArgoCdClient, name: str) -> None:
    while True:
        app = await client.get_application(name, refresh=None)
        if app.operation_state is not None:
            return


async def _token(http: httpx.AsyncClient, url: str) -> str:
    response = await http.post(
        f"{url}/api/v1/session", json={"username": "admin", "password": PASSWORD}
    )
    token = response.json()["token"]
    assert isinstance(token, str)
    return token
