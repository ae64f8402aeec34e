"""The simulated site's Confluent Schema Registry: the REST API that salobj and the flows use.

It keeps subjects, versions and global schema ids in memory and enforces compatibility on
registration the way Confluent does (`sim.avro_compat`), so a CSC whose schema changed
incompatibly fails to register under FORWARD exactly as on the real site. Every state-changing
request is recorded in the write log as service ``schema-registry``. Tests reach the state
through ``app.state.registry`` to inspect it or to make the registry fail (`fail_next`, `down`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sim.avro_compat import (
    AvroSchemaError,
    CompatibilityLevel,
    canonical_text,
    first_incompatibility,
    parse_schema_text,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from starlette.requests import Request

    from sim.writelog import WriteLog

    Handler = Callable[[Request], Awaitable[Response]]

__all__ = [
    "CONTENT_TYPE",
    "RegistryError",
    "SchemaRegistryState",
    "StoredSchema",
    "SubjectVersion",
    "create_registry_app",
]

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
_REQUEST_CONTENT_TYPES = frozenset(
    {
        CONTENT_TYPE,
        "application/vnd.schemaregistry+json",
        "application/json",
        "application/octet-stream",
    }
)
SERVICE = "schema-registry"
_MAX_VERSION = 2**31 - 1
_LEVELS_TEXT = (
    "none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive"
)


class RegistryError(Exception):
    """An error answer in Confluent's shape: HTTP status and ``{"error_code", "message"}``."""

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


def _subject_not_found(subject: str) -> RegistryError:
    return RegistryError(404, 40401, f"Subject '{subject}' not found.")


def _version_not_found(version: int | str) -> RegistryError:
    return RegistryError(404, 40402, f"Version {version} not found.")


@dataclass(frozen=True)
class StoredSchema:
    """A schema under its global id; the same text under any subject has the same id."""

    schema_id: int
    text: str
    parsed: Any
    canonical: str


@dataclass
class SubjectVersion:
    version: int
    schema_id: int
    deleted: bool = False


class SchemaRegistryState:
    """Everything the registry holds, plus the fault switches tests use.

    ``down`` makes every request answer 503; `fail_next` makes the next requests answer an error
    status. ``requests`` lists every request's method and path, faulted ones included, so tests
    can count retries.
    """

    def __init__(self, *, default_compatibility: CompatibilityLevel | str = "FORWARD") -> None:
        self.default_compatibility = CompatibilityLevel(default_compatibility)
        self.global_compatibility = self.default_compatibility
        self.subject_compatibility: dict[str, CompatibilityLevel] = {}
        self.schemas: dict[int, StoredSchema] = {}
        self.subjects: dict[str, list[SubjectVersion]] = {}
        self.down = False
        self.requests: list[tuple[str, str]] = []
        self._ids_by_canonical: dict[str, int] = {}
        self._failures: list[int] = []

    # --- Faults ---------------------------------------------------------------------------------

    def fail_next(self, count: int = 1, status: int = 503) -> None:
        """Answer the next ``count`` requests with HTTP ``status`` before serving any."""
        self._failures.extend([status] * count)

    def take_fault(self) -> int | None:
        """The status the current request must fail with, if any."""
        if self.down:
            return 503
        return self._failures.pop(0) if self._failures else None

    # --- Compatibility configuration ------------------------------------------------------------

    def compatibility(self, subject: str | None = None) -> CompatibilityLevel:
        """The level that applies to ``subject``: its own, else the global one."""
        if subject is not None and subject in self.subject_compatibility:
            return self.subject_compatibility[subject]
        return self.global_compatibility

    # --- Subjects and versions ------------------------------------------------------------------

    def live_versions(self, subject: str) -> list[SubjectVersion]:
        return [v for v in self.subjects.get(subject, []) if not v.deleted]

    def subject_names(self, *, deleted: bool = False) -> list[str]:
        return sorted(
            name
            for name, versions in self.subjects.items()
            if versions and (deleted or any(not v.deleted for v in versions))
        )

    def versions(self, subject: str, *, deleted: bool = False) -> list[SubjectVersion]:
        """A subject's versions, oldest first; `RegistryError` 40401 when it has none."""
        versions = self.subjects.get(subject, []) if deleted else self.live_versions(subject)
        if not versions:
            raise _subject_not_found(subject)
        return versions

    def version(self, subject: str, version: str, *, deleted: bool = False) -> SubjectVersion:
        """One version by number, ``latest`` or ``-1``; 40401, 40402 or 42202 when it cannot."""
        number = _parse_version(version)
        versions = self.versions(subject, deleted=deleted)
        if number is None:
            return versions[-1]
        for entry in versions:
            if entry.version == number:
                return entry
        raise _version_not_found(number)

    def schema(self, schema_id: int) -> StoredSchema:
        """A schema by id while some version (soft-deleted included) still refers to it."""
        stored = self.schemas.get(schema_id)
        if stored is None or not any(
            v.schema_id == schema_id for versions in self.subjects.values() for v in versions
        ):
            raise RegistryError(404, 40403, f"Schema {schema_id} not found")
        return stored

    def register(
        self,
        subject: str,
        text: Any,
        *,
        schema_type: str = "AVRO",
        references: list[Any] | None = None,
    ) -> tuple[SubjectVersion, bool]:
        """Register ``text`` under ``subject``; the version and whether it is a new one.

        Raises `RegistryError`: 42201 for an invalid schema, 409 when the subject's compatibility
        level forbids it.
        """
        parsed = _parse_avro(text, schema_type, references)
        canonical = canonical_text(parsed)
        for entry in self.live_versions(subject):
            if self.schemas[entry.schema_id].canonical == canonical:
                return entry, False
        self._check_compatible(subject, parsed)
        schema_id = self._ids_by_canonical.get(canonical)
        if schema_id is None:
            schema_id = max(self.schemas, default=0) + 1
            self._ids_by_canonical[canonical] = schema_id
            # Confluent answers with its own compact form, not the registered spacing.
            compact = json.dumps(parsed, separators=(",", ":"))
            self.schemas[schema_id] = StoredSchema(schema_id, compact, parsed, canonical)
        history = self.subjects.setdefault(subject, [])
        entry = SubjectVersion(max((v.version for v in history), default=0) + 1, schema_id)
        history.append(entry)
        return entry, True

    def _check_compatible(self, subject: str, parsed: Any) -> None:
        level = self.compatibility(subject)
        live = self.live_versions(subject)
        messages = self.incompatibilities(level, parsed, live)
        if messages:
            details = "[" + ", ".join(messages) + "]"
            raise RegistryError(
                409,
                409,
                "Schema being registered is incompatible with an earlier schema for subject "
                f'"{subject}", details: {details}',
            )

    def incompatibilities(
        self, level: CompatibilityLevel, parsed: Any, against: list[SubjectVersion]
    ) -> list[str]:
        """Confluent's messages for why ``parsed`` may not follow ``against`` (oldest first)."""
        failure = first_incompatibility(
            level, parsed, [self.schemas[v.schema_id].parsed for v in against]
        )
        if failure is None:
            return []
        old = against[failure.index]
        return [
            *failure.messages,
            f"{{oldSchemaVersion: {old.version}}}",
            f"{{oldSchema: '{self.schemas[old.schema_id].text}'}}",
            f"{{validateFields: 'false', compatibility: '{level}'}}",
        ]

    def lookup(self, subject: str, text: Any, *, deleted: bool = False) -> SubjectVersion:
        """The newest version of ``subject`` holding this schema; 40401 or 40403 otherwise."""
        canonical = canonical_text(_parse_avro(text, "AVRO", None))
        versions = self.versions(subject, deleted=deleted)
        for entry in reversed(versions):
            if self.schemas[entry.schema_id].canonical == canonical:
                return entry
        raise RegistryError(404, 40403, "Schema not found")

    def delete_version(self, subject: str, version: str, *, permanent: bool = False) -> int:
        """Soft-delete a version, or remove a soft-deleted one for good."""
        entry = self.version(subject, version, deleted=True)
        if permanent:
            if not entry.deleted:
                raise RegistryError(
                    404,
                    40407,
                    f"Subject '{subject}' Version {entry.version} was not deleted first before "
                    "being permanently deleted",
                )
            self.subjects[subject].remove(entry)
            if not self.subjects[subject]:
                del self.subjects[subject]
        elif entry.deleted:
            raise RegistryError(
                404,
                40406,
                f"Subject '{subject}' Version {entry.version} was soft deleted. Set "
                "permanent=true to delete permanently",
            )
        else:
            entry.deleted = True
        return entry.version

    def delete_subject(self, subject: str, *, permanent: bool = False) -> list[int]:
        """Soft-delete every version (and the subject's config), or remove them for good."""
        versions = self.subjects.get(subject, [])
        if not versions:
            raise _subject_not_found(subject)
        live = [v for v in versions if not v.deleted]
        if permanent:
            if live:
                raise RegistryError(
                    404,
                    40405,
                    f"Subject '{subject}' was not deleted first before being permanently deleted",
                )
            del self.subjects[subject]
            return [v.version for v in versions]
        if not live:
            raise RegistryError(
                404,
                40404,
                f"Subject '{subject}' was soft deleted. Set permanent=true to delete permanently",
            )
        for entry in live:
            entry.deleted = True
        self.subject_compatibility.pop(subject, None)
        return [v.version for v in live]


def _parse_version(text: str) -> int | None:
    """A version number, or None for the latest; 42202 for anything else."""
    if text in ("latest", "-1"):
        return None
    try:
        number = int(text)
    except ValueError:
        number = 0
    if not 1 <= number <= _MAX_VERSION:
        raise RegistryError(
            422,
            42202,
            f"The specified version '{text}' is not a valid version id. Allowed values are "
            f'between [1, {_MAX_VERSION}] and the string "latest"',
        )
    return number


def _parse_avro(text: Any, schema_type: Any, references: Any) -> Any:
    if not isinstance(text, str) or not text.strip():
        raise RegistryError(422, 42201, "Empty schema")
    if schema_type != "AVRO":
        raise RegistryError(
            422, 42201, f"Invalid schema type {schema_type}: this registry supports only AVRO"
        )
    if references:
        raise RegistryError(422, 42201, "Invalid schema: schema references are not supported")
    try:
        return parse_schema_text(text)
    except AvroSchemaError as exc:
        raise RegistryError(422, 42201, f"Invalid schema {text}, details: {exc}") from None


# --- HTTP --------------------------------------------------------------------------------------


class RegistryResponse(JSONResponse):
    media_type = CONTENT_TYPE


def _error_response(status: int, error_code: int, message: str) -> Response:
    return RegistryResponse({"error_code": error_code, "message": message}, status_code=status)


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "false").lower() == "true"


async def _json_body(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type and content_type not in _REQUEST_CONTENT_TYPES:
        raise RegistryError(415, 415, "HTTP 415 Unsupported Media Type")
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RegistryError(400, 400, f"Unexpected character in request body: {exc}") from None
    if not isinstance(body, dict):
        raise RegistryError(422, 422, "Unrecognized request body: expected a JSON object")
    return body


def _compatibility_level(body: dict[str, Any]) -> CompatibilityLevel:
    value = body.get("compatibility", body.get("compatibilityLevel"))
    try:
        return CompatibilityLevel(str(value).upper())
    except ValueError:
        raise RegistryError(
            422, 42203, f"Invalid compatibility level. Valid values are {_LEVELS_TEXT}"
        ) from None


class _RegistryApi:
    """The HTTP endpoints over one `SchemaRegistryState`; each method answers one route."""

    def __init__(self, state: SchemaRegistryState, write_log: WriteLog | None) -> None:
        self.state = state
        self.write_log = write_log

    def routes(self) -> list[Route]:
        subject = "/subjects/{subject}"
        version = subject + "/versions/{version}"
        schema = "/schemas/ids/{schema_id:int}"
        table: list[tuple[str, Handler, str]] = [
            ("/", self.root, "GET"),
            ("/config", self.get_config, "GET"),
            ("/config", self.put_config, "PUT"),
            ("/config", self.delete_config, "DELETE"),
            ("/config/{subject}", self.get_subject_config, "GET"),
            ("/config/{subject}", self.put_subject_config, "PUT"),
            ("/config/{subject}", self.delete_subject_config, "DELETE"),
            ("/mode", self.get_mode, "GET"),
            ("/mode/{subject}", self.get_mode, "GET"),
            ("/subjects", self.list_subjects, "GET"),
            (subject, self.lookup, "POST"),
            (subject, self.delete_subject, "DELETE"),
            (subject + "/versions", self.list_versions, "GET"),
            (subject + "/versions", self.register, "POST"),
            (version, self.get_version, "GET"),
            (version, self.delete_version, "DELETE"),
            (version + "/schema", self.get_version_schema, "GET"),
            (version + "/referencedby", self.get_referenced_by, "GET"),
            (schema, self.get_schema, "GET"),
            (schema + "/versions", self.get_schema_versions, "GET"),
            (schema + "/subjects", self.get_schema_subjects, "GET"),
            ("/schemas/types", self.schema_types, "GET"),
            ("/compatibility" + subject + "/versions", self.test_compatibility, "POST"),
            ("/compatibility" + version, self.test_compatibility, "POST"),
        ]
        return [Route(path, self._endpoint(handler), methods=[m]) for path, handler, m in table]

    def _endpoint(self, handler: Handler) -> Handler:
        async def run(request: Request) -> Response:
            self.state.requests.append((request.method, request.url.path))
            status = self.state.take_fault()
            if status is not None:
                code = 50001 if status == 500 else status
                return _error_response(status, code, f"Simulated failure (HTTP {status})")
            try:
                return await handler(request)
            except RegistryError as exc:
                return _error_response(exc.status, exc.error_code, exc.message)

        return run

    def _record(self, request: Request, body: dict[str, Any]) -> None:
        if self.write_log is not None:
            self.write_log.record(SERVICE, request.method, request.url.path, body)

    async def root(self, _: Request) -> Response:
        return RegistryResponse({})

    # --- Compatibility configuration ------------------------------------------------------------

    async def get_config(self, _: Request) -> Response:
        return RegistryResponse({"compatibilityLevel": self.state.global_compatibility})

    async def put_config(self, request: Request) -> Response:
        level = _compatibility_level(await _json_body(request))
        self.state.global_compatibility = level
        self._record(request, {"compatibility": level.value})
        return RegistryResponse({"compatibility": level})

    async def delete_config(self, request: Request) -> Response:
        old = self.state.global_compatibility
        default = self.state.default_compatibility
        self.state.global_compatibility = default
        self._record(request, {"deleted": old.value, "compatibility": default.value})
        return RegistryResponse({"compatibilityLevel": old})

    async def get_subject_config(self, request: Request) -> Response:
        subject = request.path_params["subject"]
        level = self.state.subject_compatibility.get(subject)
        if level is None:
            if not _flag(request, "defaultToGlobal"):
                raise _not_configured(subject)
            level = self.state.global_compatibility
        return RegistryResponse({"compatibilityLevel": level})

    async def put_subject_config(self, request: Request) -> Response:
        subject = request.path_params["subject"]
        level = _compatibility_level(await _json_body(request))
        self.state.subject_compatibility[subject] = level
        self._record(request, {"subject": subject, "compatibility": level.value})
        return RegistryResponse({"compatibility": level})

    async def delete_subject_config(self, request: Request) -> Response:
        subject = request.path_params["subject"]
        old = self.state.subject_compatibility.pop(subject, None)
        if old is None:
            raise _not_configured(subject)
        self._record(request, {"subject": subject, "deleted": old.value})
        return RegistryResponse({"compatibilityLevel": old})

    async def get_mode(self, _: Request) -> Response:
        return RegistryResponse({"mode": "READWRITE"})

    # --- Subjects -------------------------------------------------------------------------------

    async def list_subjects(self, request: Request) -> Response:
        prefix = request.query_params.get("subjectPrefix", "")
        names = self.state.subject_names(deleted=_flag(request, "deleted"))
        return RegistryResponse([name for name in names if name.startswith(prefix)])

    async def list_versions(self, request: Request) -> Response:
        subject = request.path_params["subject"]
        versions = self.state.versions(subject, deleted=_flag(request, "deleted"))
        return RegistryResponse([v.version for v in versions])

    async def register(self, request: Request) -> Response:
        subject = request.path_params["subject"]
        body = await _json_body(request)
        entry, is_new = self.state.register(
            subject,
            body.get("schema"),
            schema_type=body.get("schemaType", "AVRO"),
            references=body.get("references"),
        )
        if is_new:
            self._record(
                request, {"subject": subject, "version": entry.version, "id": entry.schema_id}
            )
        return RegistryResponse({"id": entry.schema_id})

    async def lookup(self, request: Request) -> Response:
        subject = request.path_params["subject"]
        body = await _json_body(request)
        if body.get("schemaType", "AVRO") != "AVRO":
            raise RegistryError(404, 40403, "Schema not found")
        entry = self.state.lookup(subject, body.get("schema"), deleted=_flag(request, "deleted"))
        return RegistryResponse(self._registered(subject, entry))

    async def delete_subject(self, request: Request) -> Response:
        subject = request.path_params["subject"]
        permanent = _flag(request, "permanent")
        versions = self.state.delete_subject(subject, permanent=permanent)
        self._record(request, {"subject": subject, "versions": versions, "permanent": permanent})
        return RegistryResponse(versions)

    def _version(self, request: Request) -> SubjectVersion:
        return self.state.version(
            request.path_params["subject"],
            request.path_params["version"],
            deleted=_flag(request, "deleted"),
        )

    def _registered(self, subject: str, entry: SubjectVersion) -> dict[str, Any]:
        return {
            "subject": subject,
            "version": entry.version,
            "id": entry.schema_id,
            "schema": self.state.schemas[entry.schema_id].text,
        }

    async def get_version(self, request: Request) -> Response:
        return RegistryResponse(
            self._registered(request.path_params["subject"], self._version(request))
        )

    async def get_version_schema(self, request: Request) -> Response:
        text = self.state.schemas[self._version(request).schema_id].text
        return Response(text, media_type=CONTENT_TYPE)

    async def get_referenced_by(self, request: Request) -> Response:
        self._version(request)
        return RegistryResponse([])

    async def delete_version(self, request: Request) -> Response:
        subject = request.path_params["subject"]
        permanent = _flag(request, "permanent")
        version = self.state.delete_version(
            subject, request.path_params["version"], permanent=permanent
        )
        self._record(request, {"subject": subject, "version": version, "permanent": permanent})
        return RegistryResponse(version)

    # --- Schemas by id --------------------------------------------------------------------------

    async def get_schema(self, request: Request) -> Response:
        # ``?subject=`` (salobj sends it) only matters with contexts, which this registry lacks.
        stored = self.state.schema(request.path_params["schema_id"])
        return RegistryResponse({"schema": stored.text})

    def _referring(self, request: Request) -> list[tuple[str, SubjectVersion]]:
        schema_id = request.path_params["schema_id"]
        self.state.schema(schema_id)
        deleted = _flag(request, "deleted")
        return [
            (subject, entry)
            for subject, versions in sorted(self.state.subjects.items())
            for entry in versions
            if entry.schema_id == schema_id and (deleted or not entry.deleted)
        ]

    async def get_schema_versions(self, request: Request) -> Response:
        pairs = self._referring(request)
        return RegistryResponse([{"subject": s, "version": v.version} for s, v in pairs])

    async def get_schema_subjects(self, request: Request) -> Response:
        return RegistryResponse(sorted({s for s, _ in self._referring(request)}))

    async def schema_types(self, _: Request) -> Response:
        return RegistryResponse(["AVRO"])

    # --- Compatibility test ---------------------------------------------------------------------

    async def test_compatibility(self, request: Request) -> Response:
        subject = request.path_params["subject"]
        version = request.path_params.get("version")
        body = await _json_body(request)
        parsed = _parse_avro(
            body.get("schema"), body.get("schemaType", "AVRO"), body.get("references")
        )
        if version is None:
            against = self.state.live_versions(subject)
        elif _parse_version(version) is None:
            # Like Confluent: "latest" of a subject without versions accepts any schema.
            against = self.state.live_versions(subject)[-1:]
        else:
            against = [self.state.version(subject, version)]
        level = self.state.compatibility(subject)
        messages = self.state.incompatibilities(level, parsed, against)
        answer: dict[str, Any] = {"is_compatible": not messages}
        if _flag(request, "verbose"):
            answer["messages"] = messages
        return RegistryResponse(answer)


def _not_configured(subject: str) -> RegistryError:
    return RegistryError(
        404, 40408, f"Subject '{subject}' does not have subject-level compatibility configured"
    )


async def _http_error(_: Request, exc: Exception) -> Response:
    # Unknown paths (such as salobj's /associations lookups) get Confluent's JSON error shape.
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return _error_response(status, status, f"HTTP {status} {_REASONS.get(status, 'Error')}")


_REASONS = {404: "Not Found", 405: "Method Not Allowed"}


def create_registry_app(
    write_log: WriteLog | None = None,
    *,
    default_compatibility: CompatibilityLevel | str = "FORWARD",
) -> Starlette:
    """The registry as an ASGI app, its state at ``app.state.registry``.

    ``default_compatibility`` is the global level at start and after ``DELETE /config``; the
    sites run FORWARD (Confluent's own default is BACKWARD).
    """
    state = SchemaRegistryState(default_compatibility=default_compatibility)
    api = _RegistryApi(state, write_log)
    app = Starlette(routes=api.routes(), exception_handlers={HTTPException: _http_error})
    app.state.registry = state
    return app
