"""Client of the Confluent Schema Registry that holds SAL's Avro schemas (Sasquatch's registry).

The upgrade switches the registry's compatibility level to NONE before the new CSCs register
their schemas and back afterwards; it also reads and test-registers schemas. Requests that fail
on the network or with a 5xx answer are retried a few times; 4xx answers never are.
"""

from __future__ import annotations

import asyncio
import json
import logging
from enum import StrEnum
from types import TracebackType
from typing import Any, Self, TypeVar, cast
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "CONTENT_TYPE",
    "CompatibilityLevel",
    "CompatibilityResult",
    "RegisteredSchema",
    "SchemaRegistryClient",
    "SchemaRegistryError",
    "SchemaRegistryIncompatibleError",
    "SchemaRegistryNotFoundError",
    "SchemaRegistryUnavailableError",
    "SchemaRegistryValidationError",
    "SchemaRegistryWebError",
]

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
_SUBJECT_NOT_FOUND = 40401
_SUBJECT_COMPATIBILITY_NOT_CONFIGURED = 40408

_logger = logging.getLogger(__name__)
_ModelT = TypeVar("_ModelT", bound=BaseModel)


class CompatibilityLevel(StrEnum):
    """The registry's compatibility levels. The sites run FORWARD; upgrades switch to NONE."""

    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"
    NONE = "NONE"


class RegisteredSchema(BaseModel):
    """One version of a subject."""

    model_config = ConfigDict(frozen=True)

    subject: str
    version: int
    schema_id: int = Field(description="The registry-wide id that messages carry.")
    avro_schema: dict[str, Any] = Field(description="The parsed Avro schema.")


class CompatibilityResult(BaseModel):
    """Whether a schema could be registered under a subject now, and the registry's reasons."""

    model_config = ConfigDict(frozen=True)

    is_compatible: bool
    messages: list[str] = Field(default_factory=list)


class SchemaRegistryError(Exception):
    """Base of every error this module raises."""


class SchemaRegistryWebError(SchemaRegistryError):
    """The registry answered with an HTTP error.

    ``error_code`` is Confluent's code from the body (such as 40401 or 42201) when there is one.
    """

    def __init__(
        self, message: str, *, method: str, url: str, status: int, error_code: int | None
    ) -> None:
        super().__init__(f"{method} {url}: HTTP {status}: {message}")
        self.method = method
        self.url = url
        self.status = status
        self.error_code = error_code
        self.detail = message


class SchemaRegistryNotFoundError(SchemaRegistryWebError):
    """A subject, version or schema does not exist (HTTP 404; ``error_code`` says which)."""


class SchemaRegistryIncompatibleError(SchemaRegistryWebError):
    """The schema breaks the subject's compatibility level (HTTP 409)."""


class SchemaRegistryValidationError(SchemaRegistryError):
    """The registry answered with a body this client cannot understand."""


class SchemaRegistryUnavailableError(SchemaRegistryError):
    """The registry could not be reached, even after retrying."""


class _ErrorBody(BaseModel):
    error_code: int | None = None
    message: str | None = None


class _ConfigBody(BaseModel):
    compatibility_level: CompatibilityLevel = Field(alias="compatibilityLevel")


class _SetConfigBody(BaseModel):
    compatibility: CompatibilityLevel


class _SchemaBody(BaseModel):
    schema_text: str = Field(alias="schema")
    schema_type: str = Field("AVRO", alias="schemaType")


class _VersionBody(_SchemaBody):
    subject: str
    version: int
    schema_id: int = Field(alias="id")


class _IdBody(BaseModel):
    schema_id: int = Field(alias="id")


class SchemaRegistryClient:
    """Talks to one registry at ``base_url``.

    Give ``http_client`` to share a connection pool; otherwise the client makes its own and
    closes it in `aclose`. ``retries`` is how many times a request that failed on the network or
    with a 5xx answer is tried again, waiting ``retry_delay_s``, then twice that, and so on.
    """

    def __init__(
        self,
        base_url: str,
        *,
        http_client: httpx.AsyncClient | None = None,
        timeout_s: float = 10.0,
        retries: int = 3,
        retry_delay_s: float = 0.2,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout_s)
        self._retries = max(retries, 0)
        self._retry_delay_s = retry_delay_s
        # Schema ids never change meaning, so what was fetched once is good for ever. The text
        # is kept: each caller gets a dict of its own, and parsing it again is cheaper than a
        # deep copy.
        self._schemas_by_id: dict[int, str] = {}

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- Compatibility level --------------------------------------------------------------------

    async def get_compatibility(self, subject: str | None = None) -> CompatibilityLevel:
        """The level in force: the global one, or ``subject``'s (the global one if it has none).

        Raises
        ------
        SchemaRegistryWebError
            The registry answered with an HTTP error.
        SchemaRegistryValidationError
            The answer is not a compatibility level.
        SchemaRegistryUnavailableError
            The registry could not be reached.
        """
        if subject is None:
            body = await self._request("GET", "/config")
        else:
            try:
                body = await self._request(
                    "GET", f"/config/{_quote(subject)}", params={"defaultToGlobal": "true"}
                )
            except SchemaRegistryNotFoundError as exc:
                # Registries older than Confluent 5.5 ignore defaultToGlobal.
                if exc.error_code != _SUBJECT_COMPATIBILITY_NOT_CONFIGURED:
                    raise
                body = await self._request("GET", "/config")
        return _parse(_ConfigBody, body).compatibility_level

    async def set_compatibility(
        self, level: CompatibilityLevel, subject: str | None = None
    ) -> CompatibilityLevel:
        """Set the global level, or ``subject``'s own; return the level the registry confirms.

        Raises
        ------
        ValueError
            ``level`` is not a compatibility level (checked before any request).
        SchemaRegistryWebError
            The registry refused (42203: not a level it knows).
        SchemaRegistryValidationError
            The answer is not a compatibility level.
        SchemaRegistryUnavailableError
            The registry could not be reached.
        """
        wanted = CompatibilityLevel(level)
        path = "/config" if subject is None else f"/config/{_quote(subject)}"
        body = await self._request("PUT", path, json_body={"compatibility": wanted.value})
        return _parse(_SetConfigBody, body).compatibility

    # --- Subjects and schemas -------------------------------------------------------------------

    async def list_subjects(self) -> list[str]:
        """Every subject with at least one version that is not deleted.

        Raises
        ------
        SchemaRegistryWebError
            The registry answered with an HTTP error.
        SchemaRegistryValidationError
            The answer is not a list of names.
        SchemaRegistryUnavailableError
            The registry could not be reached.
        """
        body = await self._request("GET", "/subjects")
        if not isinstance(body, list) or not all(isinstance(s, str) for s in body):
            raise SchemaRegistryValidationError(f"GET /subjects: not a list of names: {body!r}")
        return body

    async def get_schema(self, schema_id: int) -> dict[str, Any]:
        """The parsed Avro schema with id ``schema_id`` (cached: ids are immutable).

        Raises
        ------
        SchemaRegistryNotFoundError
            No such schema (40403).
        SchemaRegistryWebError
            The registry answered with another HTTP error.
        SchemaRegistryValidationError
            The answer is not an Avro record schema.
        SchemaRegistryUnavailableError
            The registry could not be reached.
        """
        cached = self._schemas_by_id.get(schema_id)
        if cached is not None:
            return cast("dict[str, Any]", json.loads(cached))
        body = _parse(_SchemaBody, await self._request("GET", f"/schemas/ids/{schema_id}"))
        schema = _schema_dict(body)
        self._schemas_by_id[schema_id] = body.schema_text
        return schema

    async def get_latest(self, subject: str) -> RegisteredSchema:
        """The newest version of ``subject``.

        Raises
        ------
        SchemaRegistryNotFoundError
            The subject does not exist (40401).
        SchemaRegistryWebError
            The registry answered with another HTTP error.
        SchemaRegistryValidationError
            The answer is not a registered Avro record schema.
        SchemaRegistryUnavailableError
            The registry could not be reached.
        """
        body = await self._request("GET", f"/subjects/{_quote(subject)}/versions/latest")
        version = _parse(_VersionBody, body)
        schema = _schema_dict(version)
        self._schemas_by_id.setdefault(version.schema_id, version.schema_text)
        return RegisteredSchema(
            subject=version.subject,
            version=version.version,
            schema_id=version.schema_id,
            avro_schema=schema,
        )

    async def register(self, subject: str, schema: dict[str, Any]) -> int:
        """Register ``schema`` under ``subject`` (a no-op if it is there); return its id.

        Raises
        ------
        SchemaRegistryIncompatibleError
            The subject's compatibility level forbids the schema (409).
        SchemaRegistryWebError
            The registry refused otherwise (42201: not a valid Avro schema).
        SchemaRegistryValidationError
            The answer carries no schema id.
        SchemaRegistryUnavailableError
            The registry could not be reached.
        """
        body = await self._request(
            "POST", f"/subjects/{_quote(subject)}/versions", json_body=_schema_request(schema)
        )
        return _parse(_IdBody, body).schema_id

    async def test_compatibility(self, subject: str, schema: dict[str, Any]) -> CompatibilityResult:
        """Whether `register` would accept ``schema`` under ``subject`` now, and why not.

        A subject that does not exist yet accepts any schema.

        Raises
        ------
        SchemaRegistryWebError
            The registry answered with an HTTP error (42201: not a valid Avro schema).
        SchemaRegistryValidationError
            The answer is not a compatibility result.
        SchemaRegistryUnavailableError
            The registry could not be reached.
        """
        try:
            body = await self._request(
                "POST",
                f"/compatibility/subjects/{_quote(subject)}/versions/latest",
                params={"verbose": "true"},
                json_body=_schema_request(schema),
            )
        except SchemaRegistryNotFoundError as exc:
            # Older registries answer 40401 where newer ones report compatible.
            if exc.error_code != _SUBJECT_NOT_FOUND:
                raise
            return CompatibilityResult(is_compatible=True)
        return _parse(CompatibilityResult, body)

    # --- HTTP -----------------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json_body: dict[str, Any] | None = None,
    ) -> Any:
        url = self.base_url + path
        content = None if json_body is None else json.dumps(json_body).encode()
        headers = {"Accept": f"{CONTENT_TYPE}, application/json"}
        if content is not None:
            headers["Content-Type"] = CONTENT_TYPE
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    method, url, params=params, content=content, headers=headers
                )
            except httpx.TransportError as exc:
                if attempt >= self._retries:
                    raise SchemaRegistryUnavailableError(
                        f"{method} {url}: {type(exc).__name__}: {exc} (tried {attempt + 1} times)"
                    ) from exc
                _logger.warning("%s %s failed (%s), retrying", method, url, exc)
            else:
                if not response.is_server_error or attempt >= self._retries:
                    return _answer(method, url, response)
                _logger.warning("%s %s: HTTP %d, retrying", method, url, response.status_code)
            await asyncio.sleep(self._retry_delay_s * 2**attempt)
            attempt += 1


def _quote(subject: str) -> str:
    return quote(subject, safe="")


def _schema_request(schema: dict[str, Any]) -> dict[str, Any]:
    # json.dumps with default spacing is what salobj sends, so both produce the same text.
    return {"schema": json.dumps(schema), "schemaType": "AVRO", "references": []}


def _answer(method: str, url: str, response: httpx.Response) -> Any:
    """The decoded body of a successful response; the module's error for any other."""
    try:
        body = response.json() if response.content else None
    except ValueError:
        body = None
        if response.is_success:
            raise SchemaRegistryValidationError(
                f"{method} {url}: answer is not JSON: {response.text[:200]!r}"
            ) from None
    if response.is_success:
        return body
    try:
        error = _ErrorBody.model_validate(body)
    except ValidationError:
        error = _ErrorBody()
    message = error.message or response.reason_phrase or response.text[:200]
    kind = {404: SchemaRegistryNotFoundError, 409: SchemaRegistryIncompatibleError}.get(
        response.status_code, SchemaRegistryWebError
    )
    raise kind(
        message,
        method=method,
        url=url,
        status=response.status_code,
        error_code=error.error_code,
    )


def _parse(model: type[_ModelT], body: Any) -> _ModelT:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise SchemaRegistryValidationError(
            f"unexpected answer from the schema registry for {model.__name__}: {exc}"
        ) from None


def _schema_dict(body: _SchemaBody) -> dict[str, Any]:
    if body.schema_type != "AVRO":
        raise SchemaRegistryValidationError(f"schema type {body.schema_type}, not AVRO")
    try:
        schema = json.loads(body.schema_text)
    except json.JSONDecodeError as exc:
        raise SchemaRegistryValidationError(f"schema text is not JSON: {exc}") from None
    if not isinstance(schema, dict):
        raise SchemaRegistryValidationError(f"not an Avro record schema: {schema!r}")
    return schema
