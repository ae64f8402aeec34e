"""What a site is: its services, its CSC inventory, its ordering rules and its time budgets.

A site file (``deployments/sites/<site>.yaml``) is reviewed like code; `load_site_file` turns it
into a `SiteConfig` or fails with a `SiteConfigError` that names the file and the field. Nothing in
a site file is secret: passwords and tokens live in the `blocks.credentials` fields.
"""

from __future__ import annotations

import re
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = [
    "ArgoCdConfig",
    "AuxTelTesting",
    "AzEl",
    "CleanupConfig",
    "ConsumerSelector",
    "CscEntry",
    "CscName",
    "IcrsTarget",
    "ImageType",
    "KafkaConfig",
    "KubernetesConfig",
    "KubernetesPlacement",
    "LoveConfig",
    "MainTelTesting",
    "MinimalTestingConfig",
    "SchemaRegistryConfig",
    "ShutdownConfig",
    "SiteConfig",
    "SiteConfigError",
    "SlackConfig",
    "State",
    "StrimziConfig",
    "Telescope",
    "Timeouts",
    "load_site_file",
    "parse_csc_name",
]


class State(IntEnum):
    """A CSC's summary state, with SAL's numbering (``logevent_summaryState.summaryState``)."""

    DISABLED = 1
    ENABLED = 2
    FAULT = 3
    OFFLINE = 4
    STANDBY = 5


class SiteConfigError(ValueError):
    """A site file cannot be used; the message names the file and the field."""


_CSC_NAME = re.compile(r"^(?P<name>[A-Z][A-Za-z0-9]*)(?::(?P<index>\d+))?$")
_COMPONENT = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class CscName(BaseModel):
    """A CSC instance: SAL component name and index (0 for a non-indexed component)."""

    model_config = ConfigDict(frozen=True)

    name: str
    index: int = 0

    def __str__(self) -> str:
        return f"{self.name}:{self.index}"


def parse_csc_name(text: str) -> CscName:
    """Parse ``Name`` or ``Name:index`` (``ESS:104``); raise `ValueError` saying what is wrong."""
    match = _CSC_NAME.match(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a CSC name: expected Name or Name:index, such as ATDome or ESS:104"
        )
    index = match.group("index")
    return CscName(name=match.group("name"), index=int(index) if index else 0)


def _component(value: str) -> str:
    if not _COMPONENT.match(value):
        raise ValueError(f"{value!r} is not a SAL component name (such as MTM1M3 or Watcher)")
    return value


def _k8s_name(value: str) -> str:
    if not _K8S_NAME.match(value):
        raise ValueError(f"{value!r} is not a Kubernetes name (lowercase letters, digits, '-')")
    return value


def _label_selector(value: str) -> str:
    for term in value.split(","):
        key, sep, _ = term.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{value!r} is not a label selector such as key=value")
    return value


Component = Annotated[str, AfterValidator(_component)]
K8sName = Annotated[str, AfterValidator(_k8s_name)]
LabelSelector = Annotated[str, AfterValidator(_label_selector)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaConfig(_Strict):
    """The Kafka cluster carrying SAL (``lsst.{sal_subname}.{Component}.{topic}``)."""

    bootstrap_servers: str
    sal_subname: str = "sal"
    security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None


class SchemaRegistryConfig(_Strict):
    url: str


class LoveConfig(_Strict):
    url: str
    username: str = "admin"


class ArgoCdConfig(_Strict):
    """Argo CD and the order its applications are synced in during bring-up."""

    url: str
    username: str = "admin"
    platform_apps: list[K8sName] = Field(
        description="Synced first, in order, before the telescope apps (science-platform, nublado)."
    )
    sasquatch_app: K8sName = "sasquatch"
    telescope_project: K8sName = "telescope"
    telescope_apps: list[K8sName] = Field(description="Every app of the telescope project.")
    sync_order: list[K8sName] = Field(
        description="The order the telescope apps are synced in; must name each app once. "
        "Where LOVE goes is a site decision (see rubin-systems.md §1)."
    )
    queue_app: K8sName = Field("obssys", description="The app that runs the ScriptQueues.")

    @model_validator(mode="after")
    def _check_sync_order(self) -> Self:
        known = set(self.telescope_apps)
        _no_duplicates(self.telescope_apps, "telescope_apps")
        _no_duplicates(self.sync_order, "sync_order")
        for position, app in enumerate(self.sync_order):
            if app not in known:
                raise ValueError(
                    f"sync_order[{position}] names {app!r}, which is not one of telescope_apps"
                )
        missing = [app for app in self.telescope_apps if app not in self.sync_order]
        if missing:
            raise ValueError(
                f"sync_order leaves out {', '.join(missing)}: list every telescope app"
            )
        if self.queue_app not in known:
            raise ValueError(f"queue_app {self.queue_app!r} is not one of telescope_apps")
        return self


class KubernetesConfig(_Strict):
    """Which cluster the flows may act on. The client refuses any other."""

    context: str
    cluster_server: str = Field(description="The API server URL the context must point at.")
    kubeconfig: Path | None = Field(
        None, description="Kubeconfig file; None means $KUBECONFIG or ~/.kube/config."
    )


class SlackConfig(_Strict):
    channel: str = Field(description="The site's channel for upgrade notices.")
    camera_channel: str | None = Field(
        None, description="Where the camera team is told; default channel."
    )
    it_channel: str | None = Field(None, description="Where IT is told; default channel.")
    base_url: str | None = Field(None, description="Slack Web API base URL; None for Slack itself.")


class ConsumerSelector(_Strict):
    """A family of Kafka consumers: their Deployments and their consumer groups."""

    namespace: K8sName
    selector: LabelSelector
    group_prefix: str
    deployments: list[K8sName] = Field(default_factory=list)


class StrimziConfig(_Strict):
    """Names used by the graceful Kafka shutdown (Sasquatch runbook, rubin-systems.md §6)."""

    namespace: K8sName = "sasquatch"
    kafka: K8sName = "sasquatch"
    broker_pod_set: K8sName
    controller_pod_set: K8sName = "sasquatch-controller"
    schema_registry_deployment: K8sName = "sasquatch-schema-registry"
    schema_registry_replicas: int = Field(3, ge=1)


class CleanupConfig(_Strict):
    """What ``cleanup_all`` and ``cleanup_nublado`` (lsst-ts/k8s-admin) remove."""

    job_namespaces: list[K8sName]
    legacy_namespaces: list[K8sName] = Field(
        default_factory=list, description="Cleaned too; 'not found' is fine."
    )
    uws_namespace: K8sName = "uws"
    uws_cscs: list[K8sName] = Field(description="`csc` label values of the OCPS jobs in uws.")
    love_namespace: K8sName = "love"
    nublado_selector: LabelSelector = "argocd.argoproj.io/instance=nublado-users"


class ShutdownConfig(_Strict):
    """How ``system_wide_shutdown.py`` and the ScriptQueue shutdown run at this site."""

    start_with: list[Component] = Field(default_factory=lambda: ["Watcher"])
    ignore: list[Component] = Field(default_factory=list)
    end_with: list[Component] = Field(default_factory=list)
    queue: int = Field(1, description="The ScriptQueue index that runs the shutdown scripts.")
    queues: list[int] = Field(default_factory=lambda: [1, 2, 3])

    @model_validator(mode="after")
    def _check(self) -> Self:
        _no_duplicates(self.ignore, "ignore")
        _no_duplicates(self.start_with, "start_with")
        both = set(self.ignore) & set(self.start_with)
        if both:
            raise ValueError(f"{', '.join(sorted(both))} in both start_with and ignore")
        if self.queue not in self.queues:
            raise ValueError(f"queue {self.queue} is not one of queues {self.queues}")
        return self

    def queue_offline_order(self) -> list[int]:
        """ScriptQueues to send OFFLINE, the one running the script last."""
        return [q for q in sorted(self.queues, reverse=True) if q != self.queue] + [self.queue]


class Timeouts(_Strict):
    """Time budgets, in seconds."""

    bring_up_s: float = Field(1800.0, gt=0, description="CSCs to reach their expected state.")
    transition_s: float = Field(60.0, gt=0, description="One state transition command.")
    shutdown_script_s: float = Field(3600.0, gt=0)
    heartbeat_window_s: float = Field(5.0, gt=0, description="A CSC is alive if it beat within.")
    lag_drain_s: float = Field(600.0, gt=0)
    poll_s: float = Field(
        2.0,
        gt=0,
        le=60,
        description="How often to ask again while waiting: Argo CD syncs, lag, sign-offs. "
        "Syncs and lag are asked again after 0.25 s first, then twice as long each time up to "
        "this.",
    )
    argocd_sync_s: float = Field(600.0, gt=0)
    sign_off_s: float = Field(86400.0, gt=0, description="Default wait for an operator.")
    sign_off_overrides_s: dict[str, float] = Field(
        default_factory=dict, description="Per sign-off key."
    )


Telescope = Literal["auxtel", "maintel"]
_TELESCOPES: tuple[Telescope, ...] = ("auxtel", "maintel")
#: ``image_type`` values the take-image scripts accept (ts_observatory_control's image types).
ImageType = Literal[
    "BIAS",
    "DARK",
    "FLAT",
    "OBJECT",
    "ENGTEST",
    "ACQ",
    "CWFS",
    "FOCUS",
    "STUTTERED",
    "INDOME",
    "CBP",
    "SFLAT",
    "DFLAT",
]


class IcrsTarget(_Strict):
    """``slew_icrs`` of ``auxtel/track_target.py``: right ascension in hours, dec in degrees."""

    ra: float = Field(ge=0, le=24)
    dec: float = Field(ge=-90, le=90)


class AzEl(_Strict):
    """A fixed pointing, in degrees."""

    az: float = Field(ge=-360, le=360)
    el: float = Field(ge=0, le=90)


class _TelescopeTesting(_Strict):
    queue: int = Field(description="The ScriptQueue index the telescope's scripts run on.")
    takes_images: bool = Field(
        True,
        description="The site's camera produces images. Without, the camera steps (enable the "
        "camera, load the playlist, prepare for on-sky's biases, take images) are left out.",
    )
    playlist: str = Field(description="The camera playlist loaded with run_command.py.")
    nimages: int = Field(5, ge=1, description="How many images take_image takes.")
    reason: str = "minimal_testing"


class AuxTelTesting(_TelescopeTesting):
    """AuxTel's minimal testing: the procedure's configurations (its "To get AT to track")."""

    queue: int = 2
    playlist: str = "bias"
    slew_icrs: IcrsTarget = Field(default_factory=lambda: IcrsTarget(ra=18, dec=-20))
    image_type: ImageType = "BIAS"
    program: str = "IntegrationTesting"


class MainTelTesting(_TelescopeTesting):
    """MainTel's minimal testing: the procedure's configurations (its "To get MT to track")."""

    queue: int = 1
    playlist: str = "lsstcam-20250530"
    raise_m1m3_at: AzEl | None = Field(
        None,
        description="Point here with maintel/point_azel.py before raising M1M3 (the test "
        "stands: the raise hangs at low elevation); None: raise where the telescope is.",
    )
    target_name: str = "HD164461"
    rot_value: float = 80.0
    rot_type: Literal["Sky", "SkyAuto", "Parallactic", "PhysicalSky", "Physical"] = "PhysicalSky"
    track_for: float = Field(30.0, ge=0)
    exp_times: float = Field(30.0, ge=0)
    image_type: ImageType = "ACQ"


class MinimalTestingConfig(_Strict):
    """What minimal testing does at this site: which telescopes, on which queues, with images
    or not (the TTS tracks but takes no images)."""

    telescopes: list[Telescope] = Field(
        default_factory=lambda: list(_TELESCOPES),
        description="The telescopes this site tests, in order.",
    )
    auxtel: AuxTelTesting = Field(default_factory=AuxTelTesting)
    maintel: MainTelTesting = Field(default_factory=MainTelTesting)
    script_timeout_s: float = Field(
        1800.0, gt=0, description="One script, from add to its end (homing, opening the dome)."
    )
    ingest_timeout_s: float = Field(
        300.0, gt=0, description="After the last image, for the OODS to ingest them all."
    )

    @field_validator("telescopes")
    @classmethod
    def _check_telescopes(cls, values: list[Telescope]) -> list[Telescope]:
        _no_duplicates(values, "telescopes")
        return values

    def telescope(self, name: Telescope) -> AuxTelTesting | MainTelTesting:
        return self.auxtel if name == "auxtel" else self.maintel


class KubernetesPlacement(_Strict):
    """Where a CSC's Job runs: its namespace (= its Argo CD app) and its labels."""

    namespace: K8sName
    csc: K8sName = Field(description="The Job's `csc` label (the chart alias).")
    csc_class: K8sName


class CscEntry(_Strict):
    """One CSC instance of the inventory."""

    name: CscName
    kubernetes: KubernetesPlacement | None = None
    bare_metal: str | None = Field(None, description="Where it runs when not a Kubernetes Job.")
    expected_state: State = State.STANDBY
    never_reports_offline: bool = False
    summary_state: bool = Field(
        True,
        description="False for a SAL component that beats but has no state machine (LOVE:0): "
        "nothing to command; it comes and goes with its Job, and is back when it beats.",
    )

    @field_validator("name", mode="before")
    @classmethod
    def _parse_name(cls, value: Any) -> Any:
        return parse_csc_name(value) if isinstance(value, str) else value

    @field_validator("expected_state", mode="before")
    @classmethod
    def _parse_state(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return State[value]
            except KeyError:
                names = ", ".join(s.name for s in State)
                raise ValueError(f"{value!r} is not a State name ({names})") from None
        return value

    @model_validator(mode="after")
    def _one_placement(self) -> Self:
        if (self.kubernetes is None) == (self.bare_metal is None):
            raise ValueError(f"{self.name}: give exactly one of kubernetes or bare_metal")
        return self


class SiteConfig(_Strict):
    """Everything the flows need to know about one site, reviewed in ``deployments/sites``."""

    name: K8sName
    title: str
    is_summit: bool = Field(
        default=False,
        description="Bare-metal deployments, ESS controllers, cRIOs and M2's closed loop: "
        "the Summit-only sign-offs apply.",
    )
    kafka: KafkaConfig
    schema_registry: SchemaRegistryConfig
    love: LoveConfig
    argocd: ArgoCdConfig
    kubernetes: KubernetesConfig
    slack: SlackConfig
    telegraf: ConsumerSelector
    love_producers: ConsumerSelector
    strimzi: StrimziConfig
    cleanup: CleanupConfig
    shutdown: ShutdownConfig
    enable_after_bring_up: list[tuple[str, str]] = Field(
        default_factory=list,
        description="set_summary_state.py data run once the CSCs are up, e.g. [Watcher, ENABLED].",
    )
    csc_parallelism: int = Field(16, ge=1, le=256)
    lag_tolerance: int = Field(
        20,
        ge=0,
        description="Consumer lag counted as drained: the CSCs kept running (MTM1M3, MTM1M3TS) "
        "still heartbeat, so lag hovers just above zero.",
    )
    timeouts: Timeouts = Field(default_factory=Timeouts)
    minimal_testing: MinimalTestingConfig = Field(default_factory=MinimalTestingConfig)
    cscs: list[CscEntry]

    @field_validator("enable_after_bring_up")
    @classmethod
    def _check_enable(cls, items: list[tuple[str, str]]) -> list[tuple[str, str]]:
        for position, (target, state) in enumerate(items):
            name, _, index = target.partition(":")
            if not _COMPONENT.match(name) or (index not in ("", "*") and not index.isdigit()):
                raise ValueError(f"item {position}: {target!r} is not Name, Name:index or Name:*")
            if state not in State.__members__:
                raise ValueError(f"item {position}: {state!r} is not a State name")
        return items

    @model_validator(mode="after")
    def _check_inventory(self) -> Self:
        seen: dict[CscName, int] = {}
        jobs: dict[tuple[str, str], CscName] = {}
        apps = set(self.argocd.telescope_apps)
        for position, entry in enumerate(self.cscs):
            if entry.name in seen:
                first = seen[entry.name]
                raise ValueError(
                    f"cscs[{position}]: {entry.name} is listed twice (first at cscs[{first}])"
                )
            seen[entry.name] = position
            placement = entry.kubernetes
            if placement is None:
                continue
            if placement.namespace not in apps:
                raise ValueError(
                    f"cscs[{position}]: {entry.name} runs in namespace {placement.namespace!r}, "
                    "which is not one of argocd.telescope_apps"
                )
            key = (placement.namespace, placement.csc)
            if key in jobs:
                raise ValueError(
                    f"cscs[{position}]: {entry.name} and {jobs[key]} share the Job "
                    f"{placement.namespace}/{placement.csc}"
                )
            jobs[key] = entry.name
        queues = {CscName(name="ScriptQueue", index=q) for q in self.shutdown.queues}
        missing = sorted(str(q) for q in queues - set(seen))
        if missing:
            raise ValueError(f"shutdown.queues names {', '.join(missing)}, not in cscs")
        return self

    @model_validator(mode="after")
    def _check_minimal_testing(self) -> Self:
        names = {entry.name for entry in self.cscs}
        for telescope in self.minimal_testing.telescopes:
            queue = CscName(
                name="ScriptQueue", index=self.minimal_testing.telescope(telescope).queue
            )
            if queue not in names:
                raise ValueError(f"minimal_testing.{telescope}.queue: {queue} is not in cscs")
        return self

    def csc(self, name: CscName | str) -> CscEntry:
        """The inventory entry for ``name``; `KeyError` when the site has no such CSC."""
        wanted = parse_csc_name(name) if isinstance(name, str) else name
        for entry in self.cscs:
            if entry.name == wanted:
                return entry
        raise KeyError(f"{wanted} is not in the {self.name} inventory")

    def kubernetes_cscs(self) -> list[CscEntry]:
        return [entry for entry in self.cscs if entry.kubernetes is not None]

    def csc_classes(self) -> set[str]:
        return {e.kubernetes.csc_class for e in self.cscs if e.kubernetes is not None}

    def timeout_for_sign_off(self, key: str) -> float:
        return self.timeouts.sign_off_overrides_s.get(key, self.timeouts.sign_off_s)


def _no_duplicates(values: list[Any], field: str) -> None:
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{field} lists {value!r} twice")
        seen.add(value)


def _location(loc: tuple[int | str, ...], data: Any) -> str:
    """Render a pydantic error location as a site-file path, naming CSCs by their name."""
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            if isinstance(node, list) and item < len(node):
                entry = node[item]
                if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                    label = f"[{item}] ({entry['name']})"
                node = entry
            else:
                node = None
            parts.append(label)
        else:
            parts.append(("." if parts else "") + item)
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts) or "(top level)"


def site_config_from_dict(data: Any, *, source: str) -> SiteConfig:
    """Validate parsed site data; `SiteConfigError` names ``source`` and each bad field."""
    if not isinstance(data, dict):
        raise SiteConfigError(f"{source}: a site file must be a mapping of fields")
    try:
        return SiteConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors(include_url=False):
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown field (check its spelling and where it is nested)"
            lines.append(f"  {_location(error['loc'], data)}: {message}")
        raise SiteConfigError(
            f"{source}: invalid site configuration\n" + "\n".join(lines)
        ) from None


def load_site_file(path: Path | str) -> SiteConfig:
    """Read and validate a site file; `SiteConfigError` names the file and each bad field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SiteConfigError(f"{path}: cannot read site file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SiteConfigError(f"{path}: not valid YAML: {exc}") from None
    return site_config_from_dict(data, source=str(path))
