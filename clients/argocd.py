"""Client of a site's Argo CD API server: list, inspect, diff and sync the site's applications.

The upgrade syncs the platform apps, Sasquatch and the ``telescope`` project's apps, each to the
merged Phalanx revision, and waits for each sync to finish. A sync is an Argo CD *operation*:
this client starts it, then polls the application until the operation has Succeeded and the app
is Synced. It never waits for Healthy: a telescope app's CSCs run as Jobs, and a running Job keeps
its app Progressing for as long as it runs.

The sites' first sync of an app sometimes fails for no lasting reason; `ArgoCdClient.sync_and_wait`
tries once more and then gives up.

Requests that fail on the network or with a 5xx answer are retried a few times; 4xx answers never
are. The session token is fetched on first use and fetched again once when Argo CD says it has
expired. Neither the password nor the token ever appears in a log line, an exception or a repr.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic.alias_generators import to_camel

from clients.polling import poll_delays

__all__ = [
    "Application",
    "ArgoCdAuthError",
    "ArgoCdClient",
    "ArgoCdError",
    "ArgoCdNotFoundError",
    "ArgoCdOperationInProgressError",
    "ArgoCdSyncFailedError",
    "ArgoCdTimeoutError",
    "ArgoCdUnavailableError",
    "ArgoCdValidationError",
    "ArgoCdWebError",
    "HealthStatusCode",
    "OperationPhase",
    "OperationState",
    "OutOfSyncReport",
    "OutOfSyncResource",
    "ResourceRef",
    "SyncStatusCode",
]

_logger = logging.getLogger(__name__)
_ModelT = TypeVar("_ModelT", bound=BaseModel)

# gRPC status codes that Argo CD's error bodies carry.
_GRPC_FAILED_PRECONDITION = 9
_IN_PROGRESS_TEXT = "another operation is already in progress"
_TERMINATED_TEXT = "Operation terminated"
_MAX_CHANGES = 20


class SyncStatusCode(StrEnum):
    """``status.sync.status``: whether the live state matches Git."""

    SYNCED = "Synced"
    OUT_OF_SYNC = "OutOfSync"
    UNKNOWN = "Unknown"


class HealthStatusCode(StrEnum):
    """``status.health.status``. Telescope apps stay Progressing while their CSC Jobs run."""

    HEALTHY = "Healthy"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    SUSPENDED = "Suspended"
    MISSING = "Missing"
    UNKNOWN = "Unknown"


class OperationPhase(StrEnum):
    """``status.operationState.phase``."""

    RUNNING = "Running"
    TERMINATING = "Terminating"
    FAILED = "Failed"
    ERROR = "Error"
    SUCCEEDED = "Succeeded"

    @property
    def completed(self) -> bool:
        return self in (OperationPhase.FAILED, OperationPhase.ERROR, OperationPhase.SUCCEEDED)


# --- Argo CD's shapes (only the fields the upgrade uses; everything else is ignored) ---------


class _ArgoModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore"
    )


class ResourceRef(_ArgoModel):
    """A Kubernetes resource an app manages (``v1alpha1SyncOperationResource``)."""

    group: str = ""
    kind: str
    namespace: str = ""
    name: str

    def __str__(self) -> str:
        prefix = f"{self.group}/" if self.group else ""
        namespace = f"{self.namespace}/" if self.namespace else ""
        return f"{prefix}{self.kind}/{namespace}{self.name}"


class ApplicationMetadata(_ArgoModel):
    name: str
    namespace: str = ""


class ApplicationSource(_ArgoModel):
    repo_url: str = Field("", alias="repoURL")
    path: str = ""
    chart: str = ""
    target_revision: str = ""


class ApplicationDestination(_ArgoModel):
    server: str = ""
    name: str = ""
    namespace: str = ""


class ApplicationSpec(_ArgoModel):
    project: str = "default"
    source: ApplicationSource | None = None
    destination: ApplicationDestination = Field(default_factory=ApplicationDestination)


class SyncStatus(_ArgoModel):
    status: SyncStatusCode = SyncStatusCode.UNKNOWN
    revision: str = Field("", description="The Git revision the live state was compared to.")


class HealthStatus(_ArgoModel):
    status: HealthStatusCode = HealthStatusCode.UNKNOWN
    message: str = ""


class SyncOperation(_ArgoModel):
    revision: str = ""
    prune: bool = False
    dry_run: bool = False
    resources: list[ResourceRef] | None = None


class Operation(_ArgoModel):
    sync: SyncOperation | None = None


class ResourceResult(_ArgoModel):
    """What a sync did to one resource."""

    group: str = ""
    version: str = ""
    kind: str = ""
    namespace: str = ""
    name: str = ""
    status: str = ""
    message: str = ""
    hook_phase: str = ""


class SyncOperationResult(_ArgoModel):
    revision: str = ""
    resources: list[ResourceResult] | None = None


class OperationState(_ArgoModel):
    """The last operation, or the running one."""

    phase: OperationPhase
    message: str = ""
    operation: Operation | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    sync_result: SyncOperationResult | None = None

    @property
    def dry_run(self) -> bool:
        sync = self.operation.sync if self.operation else None
        return sync is not None and sync.dry_run


class ResourceStatus(_ArgoModel):
    """One resource in ``status.resources``."""

    group: str = ""
    version: str = ""
    kind: str = ""
    namespace: str = ""
    name: str = ""
    status: SyncStatusCode | None = None
    health: HealthStatus | None = None
    requires_pruning: bool = False


class RevisionHistory(_ArgoModel):
    id: int = 0
    revision: str = ""
    deployed_at: datetime | None = None


class ApplicationSummary(_ArgoModel):
    images: list[str] | None = None


class ApplicationStatus(_ArgoModel):
    sync: SyncStatus = Field(default_factory=SyncStatus)
    health: HealthStatus = Field(default_factory=HealthStatus)
    operation_state: OperationState | None = None
    resources: list[ResourceStatus] | None = None
    history: list[RevisionHistory] | None = None
    summary: ApplicationSummary = Field(default_factory=ApplicationSummary)


class Application(_ArgoModel):
    """An Argo CD application (``v1alpha1Application``), with shortcuts to what flows ask."""

    metadata: ApplicationMetadata
    spec: ApplicationSpec = Field(default_factory=ApplicationSpec)
    status: ApplicationStatus = Field(default_factory=ApplicationStatus)
    operation: Operation | None = Field(
        None, description="Set while an operation is requested or running; cleared when done."
    )

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def project(self) -> str:
        return self.spec.project

    @property
    def sync_status(self) -> SyncStatusCode:
        return self.status.sync.status

    @property
    def health_status(self) -> HealthStatusCode:
        return self.status.health.status

    @property
    def operation_state(self) -> OperationState | None:
        return self.status.operation_state

    @property
    def target_revision(self) -> str:
        """The Git revision Argo CD compares to: what a sync would deploy."""
        return self.status.sync.revision

    @property
    def deployed_revision(self) -> str | None:
        """The revision the last successful sync deployed (from the app's history)."""
        history = self.status.history or []
        return max(history, key=lambda h: h.id).revision if history else None

    @property
    def operation_in_progress(self) -> bool:
        state = self.operation_state
        return self.operation is not None or (state is not None and not state.phase.completed)

    @property
    def out_of_sync_resources(self) -> list[ResourceStatus]:
        return [r for r in self.status.resources or [] if r.status is SyncStatusCode.OUT_OF_SYNC]


class _ApplicationList(_ArgoModel):
    items: list[Application] | None = None


class _Session(_ArgoModel):
    token: SecretStr


class _ResourceDiff(_ArgoModel):
    group: str = ""
    kind: str = ""
    namespace: str = ""
    name: str = ""
    target_state: str | None = None
    live_state: str | None = None
    normalized_live_state: str | None = None
    predicted_live_state: str | None = None
    modified: bool = False
    hook: bool = False


class _ManagedResources(_ArgoModel):
    items: list[_ResourceDiff] | None = None


class _ErrorBody(BaseModel):
    error: str | None = None
    code: int | None = None
    message: str | None = None


# --- The diff report -----------------------------------------------------------------------


class OutOfSyncResource(BaseModel):
    """A resource a sync would change, and how."""

    model_config = ConfigDict(frozen=True)

    resource: ResourceRef
    health: HealthStatusCode | None = None
    requires_pruning: bool = False
    changes: list[str] = Field(
        default_factory=list,
        description="What differs, as 'path: live -> desired' (or that it is missing/extra).",
    )


class OutOfSyncReport(BaseModel):
    """What syncing an app would change: read before syncing Sasquatch, shown to the operator."""

    model_config = ConfigDict(frozen=True)

    application: str
    sync_status: SyncStatusCode
    health_status: HealthStatusCode
    deployed_revision: str | None = Field(description="What the last successful sync deployed.")
    target_revision: str = Field(description="What a sync would deploy.")
    resources: list[OutOfSyncResource] = Field(default_factory=list)

    @property
    def in_sync(self) -> bool:
        return self.sync_status is SyncStatusCode.SYNCED and not self.resources

    def render(self) -> str:
        """The report as plain text lines, for a sign-off prompt or a Slack message."""
        revisions = f"{self.deployed_revision or 'unknown'} -> {self.target_revision or 'unknown'}"
        lines = [
            (
                f"{self.application}: {self.sync_status.value}, {self.health_status.value}, "
                f"revision {revisions}, {len(self.resources)} resource(s) out of sync"
            )
        ]
        for item in self.resources:
            lines.append(f"- {item.resource}")
            lines.extend(f"    {change}" for change in item.changes)
        return "\n".join(lines)


# --- Errors --------------------------------------------------------------------------------


class ArgoCdError(Exception):
    """Base of every error this module raises."""


class ArgoCdWebError(ArgoCdError):
    """Argo CD answered with an HTTP error (or, for the subclass, could not be reached).

    ``grpc_code`` is the gRPC status code from Argo CD's error body when there is one;
    ``attempts`` is how many times the request was sent.
    """

    def __init__(
        self,
        message: str,
        *,
        method: str,
        url: str,
        status: int | None,
        grpc_code: int | None = None,
        attempts: int = 1,
    ) -> None:
        where = f"HTTP {status}" if status is not None else "no answer"
        super().__init__(f"{method} {url}: {where}: {message}")
        self.method = method
        self.url = url
        self.status = status
        self.grpc_code = grpc_code
        self.attempts = attempts
        self.detail = message


class ArgoCdNotFoundError(ArgoCdWebError):
    """No such application (HTTP 404)."""


class ArgoCdOperationInProgressError(ArgoCdWebError):
    """Argo CD refused because another operation is already running on the application."""


class ArgoCdUnavailableError(ArgoCdWebError):
    """Argo CD could not be reached, even after retrying."""


class ArgoCdAuthError(ArgoCdError):
    """Argo CD refused the credentials (the message names the user, never the password)."""


class ArgoCdValidationError(ArgoCdError):
    """Argo CD answered with a body this client cannot understand."""


class ArgoCdSyncFailedError(ArgoCdError):
    """A sync operation ended Failed or Error; ``message`` is Argo CD's own explanation."""

    def __init__(
        self,
        application: str,
        phase: OperationPhase,
        message: str,
        *,
        failed_resources: Sequence[ResourceResult] = (),
    ) -> None:
        text = f"Argo CD sync of {application} ended {phase.value}: {message or 'no message'}"
        failed = [f"{r.kind}/{r.name}: {r.message}" for r in failed_resources]
        if failed:
            text += " (" + "; ".join(failed) + ")"
        super().__init__(text)
        self.application = application
        self.phase = phase
        self.message = message
        self.failed_resources = list(failed_resources)

    @property
    def terminated(self) -> bool:
        """Someone terminated the operation: a decision, not a spurious failure."""
        return self.message == _TERMINATED_TEXT


class ArgoCdTimeoutError(ArgoCdError):
    """An application did not reach the awaited state in time; says where it was."""

    def __init__(self, application: str, timeout_s: float, last: Application | None) -> None:
        if last is None:
            seen = "never read"
        else:
            state = last.operation_state
            phase = state.phase.value if state else "no operation"
            seen = f"sync {last.sync_status.value}, operation {phase}"
        super().__init__(f"Argo CD app {application} not synced after {timeout_s:g} s ({seen})")
        self.application = application
        self.timeout_s = timeout_s
        self.last = last


# --- The client ----------------------------------------------------------------------------


class ArgoCdClient:
    """Talks to one Argo CD at ``base_url`` (with the site's path prefix, ``.../argo-cd``).

    Give ``http_client`` to share a connection pool; otherwise the client makes its own and
    closes it in `aclose`. ``retries`` is how many times a request that failed on the network or
    with a 5xx answer is tried again, waiting ``retry_delay_s``, then twice that, and so on.
    """

    def __init__(
        self,
        base_url: str,
        *,
        username: str = "admin",
        password: SecretStr,
        http_client: httpx.AsyncClient | None = None,
        timeout_s: float = 30.0,
        retries: int = 3,
        retry_delay_s: float = 0.5,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._password = password
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout_s)
        self._retries = retries
        self._retry_delay_s = retry_delay_s
        self._token: SecretStr | None = None
        self._login_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"ArgoCdClient({self.base_url!r}, username={self.username!r})"

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

    # --- Session ------------------------------------------------------------------------------

    async def login(self) -> None:
        """Log in now (otherwise the first request does): checks the credentials early.

        Raises
        ------
        ArgoCdAuthError
            Argo CD refused the username or password.
        ArgoCdWebError
            Argo CD answered with another HTTP error, or could not be reached.
        ArgoCdValidationError
            The answer carries no token.
        """
        self._token = None
        await self._session_token(None)

    async def _session_token(self, stale: SecretStr | None) -> SecretStr:
        async with self._login_lock:
            # Another request may have logged in while this one waited for the lock.
            if self._token is not None and self._token is not stale:
                return self._token
            body = await self._request(
                "POST",
                "/api/v1/session",
                json_body={
                    "username": self.username,
                    "password": self._password.get_secret_value(),
                },
                authenticate=False,
            )
            self._token = _parse(_Session, body).token
            return self._token

    # --- Applications -------------------------------------------------------------------------

    async def list_applications(self, project: str | None = None) -> list[Application]:
        """Every application, or those of ``project`` (such as ``telescope``), sorted by name.

        Raises
        ------
        ArgoCdAuthError
            Argo CD refused the credentials.
        ArgoCdWebError
            Argo CD answered with another HTTP error, or could not be reached.
        ArgoCdValidationError
            The answer is not an application list.
        """
        params = {"projects": [project]} if project else None
        body = await self._request("GET", "/api/v1/applications", params=params)
        return sorted(_parse(_ApplicationList, body).items or [], key=lambda a: a.name)

    async def get_application(
        self, name: str, *, refresh: Literal["normal", "hard"] | None = "normal"
    ) -> Application:
        """One application; ``refresh`` makes Argo CD compare it with Git again first.

        Raises
        ------
        ArgoCdNotFoundError
            No application has that name.
        ArgoCdAuthError
            Argo CD refused the credentials.
        ArgoCdWebError
            Argo CD answered with another HTTP error, or could not be reached.
        ArgoCdValidationError
            The answer is not an application.
        """
        params = {"refresh": refresh} if refresh else None
        body = await self._request("GET", f"/api/v1/applications/{name}", params=params)
        return _parse(Application, body)

    async def sync_application(
        self,
        name: str,
        *,
        revision: str | None = None,
        prune: bool = False,
        dry_run: bool = False,
        resources: Sequence[ResourceRef] | None = None,
    ) -> Application:
        """Start syncing ``name`` (to ``revision``, else its target); return at once.

        The sync runs as an operation; `wait_for_sync` waits for it. ``resources`` limits the
        sync to those resources; ``dry_run`` changes nothing on the cluster.

        Raises
        ------
        ArgoCdOperationInProgressError
            Another operation is running on the app.
        ArgoCdNotFoundError
            No application has that name.
        ArgoCdAuthError
            Argo CD refused the credentials.
        ArgoCdWebError
            Argo CD answered with another HTTP error, or could not be reached.
        ArgoCdValidationError
            The answer is not an application.
        """
        request: dict[str, Any] = {"prune": prune, "dryRun": dry_run}
        if revision:
            request["revision"] = revision
        if resources:
            request["resources"] = [
                r.model_dump(by_alias=True, exclude_defaults=True) for r in resources
            ]
        path = f"/api/v1/applications/{name}/sync"
        try:
            body = await self._request("POST", path, json_body=request)
        except ArgoCdOperationInProgressError as exc:
            if exc.attempts == 1:
                raise
            # An earlier attempt whose answer was lost (5xx from a proxy) started the operation.
            _logger.warning(
                "sync of %s was started by an earlier attempt; not starting it again", name
            )
            return await self.get_application(name, refresh=None)
        return _parse(Application, body)

    async def terminate_operation(self, name: str) -> None:
        """Terminate the operation running on ``name`` (its sync then ends Failed).

        Raises
        ------
        ArgoCdNotFoundError
            No application has that name.
        ArgoCdWebError
            No operation is running (HTTP 400), another HTTP error, or Argo CD unreachable.
        ArgoCdAuthError
            Argo CD refused the credentials.
        """
        await self._request("DELETE", f"/api/v1/applications/{name}/operation")

    async def wait_for_operation(
        self, name: str, *, timeout_s: float, poll_interval_s: float = 2.0
    ) -> Application:
        """Wait until the operation on ``name`` has ended Succeeded; return the app then.

        Raises
        ------
        ArgoCdSyncFailedError
            The operation ended Failed or Error (terminated included).
        ArgoCdTimeoutError
            It had not ended after ``timeout_s``.
        ArgoCdNotFoundError, ArgoCdAuthError, ArgoCdWebError, ArgoCdValidationError
            As for `get_application`.
        """
        return await self._wait(
            name, timeout_s=timeout_s, poll_interval_s=poll_interval_s, synced=False
        )

    async def wait_for_sync(
        self, name: str, *, timeout_s: float, poll_interval_s: float = 2.0
    ) -> Application:
        """Wait until ``name``'s operation has Succeeded and the app is Synced.

        Health is not awaited: CSC Jobs keep telescope apps Progressing.

        Raises
        ------
        ArgoCdSyncFailedError
            The operation ended Failed or Error (terminated included).
        ArgoCdTimeoutError
            The app was not synced after ``timeout_s``.
        ArgoCdNotFoundError, ArgoCdAuthError, ArgoCdWebError, ArgoCdValidationError
            As for `get_application`.
        """
        return await self._wait(
            name, timeout_s=timeout_s, poll_interval_s=poll_interval_s, synced=True
        )

    async def sync_and_wait(
        self,
        name: str,
        *,
        revision: str | None = None,
        prune: bool = False,
        resources: Sequence[ResourceRef] | None = None,
        timeout_s: float,
        poll_interval_s: float = 2.0,
    ) -> Application:
        """Sync ``name`` and wait until it is synced, trying once more if the first sync fails.

        The sites' first sync of an app sometimes fails spuriously; a second failure is real.
        A terminated operation is not retried. ``timeout_s`` bounds the whole call. The app is
        read again after 0.25 s, then twice as long each time up to ``poll_interval_s``
        (`clients.polling.poll_delays`): a quick sync is seen as soon as it ends.

        Raises
        ------
        ArgoCdSyncFailedError
            The sync failed twice (the second failure), or was terminated.
        ArgoCdTimeoutError
            The app was not synced in time.
        ArgoCdOperationInProgressError
            Another operation was running on the app.
        ArgoCdNotFoundError, ArgoCdAuthError, ArgoCdWebError, ArgoCdValidationError
            As for `sync_application`.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        for attempt in (1, 2):
            await self.sync_application(name, revision=revision, prune=prune, resources=resources)
            try:
                return await self._wait(
                    name,
                    timeout_s=max(deadline - loop.time(), 0.0),
                    poll_interval_s=poll_interval_s,
                    synced=True,
                    reported_timeout_s=timeout_s,
                )
            except ArgoCdSyncFailedError as exc:
                if attempt == 2 or exc.terminated:
                    raise
                _logger.warning(
                    "first sync of %s failed (%s); syncing once more, as first syncs at the "
                    "sites sometimes fail spuriously",
                    name,
                    exc.message,
                )
        raise AssertionError("unreachable")  # pragma: no cover

    async def diff_report(self, name: str) -> OutOfSyncReport:
        """What a sync of ``name`` would change: its revisions and its out-of-sync resources.

        Raises
        ------
        ArgoCdNotFoundError
            No application has that name.
        ArgoCdAuthError
            Argo CD refused the credentials.
        ArgoCdWebError
            Argo CD answered with another HTTP error, or could not be reached.
        ArgoCdValidationError
            An answer is not an application or a resource list.
        """
        app = await self.get_application(name, refresh="normal")
        body = await self._request("GET", f"/api/v1/applications/{name}/managed-resources")
        diffs = {
            (d.group, d.kind, d.namespace, d.name): d
            for d in _parse(_ManagedResources, body).items or []
        }
        report: list[OutOfSyncResource] = []
        seen: set[tuple[str, str, str, str]] = set()
        for status in app.status.resources or []:
            key = (status.group, status.kind, status.namespace, status.name)
            diff = diffs.get(key)
            if status.status is not SyncStatusCode.OUT_OF_SYNC and not (diff and diff.modified):
                continue
            seen.add(key)
            report.append(
                OutOfSyncResource(
                    resource=ResourceRef(
                        group=status.group,
                        kind=status.kind,
                        namespace=status.namespace,
                        name=status.name,
                    ),
                    health=status.health.status if status.health else None,
                    requires_pruning=status.requires_pruning,
                    changes=_changes(diff) if diff else [],
                )
            )
        for key, diff in diffs.items():
            if diff.modified and key not in seen:
                report.append(
                    OutOfSyncResource(
                        resource=ResourceRef(
                            group=diff.group,
                            kind=diff.kind,
                            namespace=diff.namespace,
                            name=diff.name,
                        ),
                        changes=_changes(diff),
                    )
                )
        return OutOfSyncReport(
            application=app.name,
            sync_status=app.sync_status,
            health_status=app.health_status,
            deployed_revision=app.deployed_revision,
            target_revision=app.target_revision,
            resources=report,
        )

    # --- Waiting ------------------------------------------------------------------------------

    async def _wait(
        self,
        name: str,
        *,
        timeout_s: float,
        poll_interval_s: float,
        synced: bool,
        reported_timeout_s: float | None = None,
    ) -> Application:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        last: Application | None = None
        delays = poll_delays(poll_interval_s)
        while True:
            last = await self.get_application(name, refresh=None)
            state = last.operation_state
            # ``operation`` stays set until the controller has recorded the outcome, so a result
            # seen without it belongs to the operation that was awaited, not to an older one.
            if last.operation is None and state is not None and state.phase.completed:
                if state.phase is not OperationPhase.SUCCEEDED:
                    results = state.sync_result.resources if state.sync_result else None
                    raise ArgoCdSyncFailedError(
                        name,
                        state.phase,
                        state.message,
                        failed_resources=[
                            r for r in results or [] if r.status not in ("", "Synced", "Pruned")
                        ],
                    )
                if not synced or last.sync_status is SyncStatusCode.SYNCED:
                    return last
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ArgoCdTimeoutError(name, reported_timeout_s or timeout_s, last)
            await asyncio.sleep(min(next(delays), remaining))

    # --- HTTP ---------------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: dict[str, Any] | None = None,
        authenticate: bool = True,
    ) -> Any:
        url = self.base_url + path
        content = None if json_body is None else json.dumps(json_body).encode()
        attempt = 0
        relogged = False
        while True:
            headers = {"Accept": "application/json"}
            if content is not None:
                headers["Content-Type"] = "application/json"
            token: SecretStr | None = None
            if authenticate:
                token = self._token or await self._session_token(None)
                headers["Authorization"] = f"Bearer {token.get_secret_value()}"
            try:
                response = await self._http.request(
                    method, url, params=params, content=content, headers=headers
                )
            except httpx.TransportError as exc:
                if attempt >= self._retries:
                    raise ArgoCdUnavailableError(
                        f"{type(exc).__name__}: {exc}",
                        method=method,
                        url=url,
                        status=None,
                        attempts=attempt + 1,
                    ) from None
                _logger.warning("%s %s failed (%s), retrying", method, url, type(exc).__name__)
            else:
                if response.status_code == 401 and authenticate and not relogged:
                    # Sessions expire; log in once more and repeat the request.
                    _logger.info("Argo CD session expired; logging in again")
                    relogged = True
                    await self._session_token(token)
                    continue
                if not response.is_server_error or attempt >= self._retries:
                    return self._answer(method, url, response, attempts=attempt + 1)
                _logger.warning("%s %s: HTTP %d, retrying", method, url, response.status_code)
            await asyncio.sleep(self._retry_delay_s * 2**attempt)
            attempt += 1

    def _answer(self, method: str, url: str, response: httpx.Response, *, attempts: int) -> Any:
        """The decoded body of a successful response; the module's error for any other."""
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = None
            if response.is_success:
                raise ArgoCdValidationError(
                    f"{method} {url}: answer is not JSON: {response.text[:200]!r}"
                ) from None
        if response.is_success:
            return body
        try:
            error = _ErrorBody.model_validate(body)
        except ValidationError:
            error = _ErrorBody()
        message = error.message or error.error or response.reason_phrase or response.text[:200]
        if response.status_code == 401:
            raise ArgoCdAuthError(
                f"Argo CD at {self.base_url} refused user {self.username!r}: {message}"
            )
        kind: type[ArgoCdWebError] = ArgoCdWebError
        if response.status_code == 404:
            kind = ArgoCdNotFoundError
        elif error.code == _GRPC_FAILED_PRECONDITION and _IN_PROGRESS_TEXT in message:
            kind = ArgoCdOperationInProgressError
        raise kind(
            message,
            method=method,
            url=url,
            status=response.status_code,
            grpc_code=error.code,
            attempts=attempts,
        )


def _parse(model: type[_ModelT], body: Any) -> _ModelT:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise ArgoCdValidationError(
            f"unexpected answer from Argo CD for {model.__name__.lstrip('_')}: "
            f"{exc.error_count()} problem(s), first at "
            f"{'.'.join(str(p) for p in exc.errors()[0]['loc'])}: {exc.errors()[0]['msg']}"
        ) from None


def _state(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _changes(diff: _ResourceDiff) -> list[str]:
    """What differs between the live and the desired manifest, one line per leaf."""
    live = _state(diff.normalized_live_state) or _state(diff.live_state)
    target = _state(diff.predicted_live_state) or _state(diff.target_state)
    if live is None and target is None:
        return []
    if live is None:
        return ["missing: a sync creates it"]
    if target is None:
        return ["not in Git: a sync with prune deletes it"]
    changes: list[str] = []
    _walk(live, target, "", changes)
    if len(changes) > _MAX_CHANGES:
        changes[_MAX_CHANGES:] = [f"... and {len(changes) - _MAX_CHANGES} more"]
    return changes


def _walk(live: Any, target: Any, path: str, changes: list[str]) -> None:
    if isinstance(live, dict) and isinstance(target, dict):
        for key in sorted(set(live) | set(target)):
            if key == "status" and not path:
                continue  # the cluster's report, never part of the desired state
            sub = f"{path}.{key}" if path else str(key)
            _walk(live.get(key, _ABSENT), target.get(key, _ABSENT), sub, changes)
    elif isinstance(live, list) and isinstance(target, list) and len(live) == len(target):
        for index, (a, b) in enumerate(zip(live, target, strict=True)):
            _walk(a, b, f"{path}[{index}]", changes)
    elif live != target:
        changes.append(f"{path}: {_show(live)} -> {_show(target)}")


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


_ABSENT = _Absent()


def _show(value: Any) -> str:
    if value is _ABSENT:
        return "(absent)"
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."
