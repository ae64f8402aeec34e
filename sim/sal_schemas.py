"""Avro schemas shaped exactly like the ones salobj registers, for the simulated CSCs.

A CSC's topics are the generic ones its component has (ts_xml's SALGenerics, chosen by the
component's ``AddedGenerics``), plus ``ackcmd`` when it has commands, plus its own topics from a
`TopicCatalog`. The schema of a topic is what ts_xml's ``TopicInfo.make_avro_schema`` makes:
record ``name`` = the SAL topic name, namespace ``lsst.sal.{Component}``, the private fields
first (``salIndex`` only for indexed components), every field with ``default``, ``description``
and ``units``, and the record's ``description`` last. Field types follow ts_xml's mapping, so
SAL ``long`` is Avro ``int``. The field descriptions are ts_xml's, so the schemas (and the
``private_revCode`` derived from them) match what the real CSCs register.

Component-specific topics live in `DEFAULT_CATALOG`; later code adds more with
`TopicCatalog.add_topics` (or works on a `TopicCatalog.copy`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from blocks.site import CscEntry, CscName
from clients.sal.codec import rev_code

__all__ = [
    "ACKCMD",
    "DEFAULT_CATALOG",
    "DEFAULT_GENERICS",
    "GENERIC_CATEGORIES",
    "GENERIC_TOPICS",
    "FieldSpec",
    "TopicCatalog",
    "TopicSpec",
    "avro_schema",
    "command_types",
    "component_schemas",
    "indexed_components",
    "rev_code",
]

# ts_xml's IDL type -> Avro type (AVRO_TYPES in ts_xml's field_info.py).
_AVRO_TYPES = {
    "boolean": "boolean",
    "byte": "int",
    "short": "int",
    "int": "int",
    "long": "int",
    "long long": "long",
    "unsigned short": "int",
    "unsigned int": "long",
    "float": "float",
    "double": "double",
    "string": "string",
}
_DEFAULTS: dict[str, Any] = {"boolean": False, "int": 0, "long": 0, "float": 0.0, "double": 0.0}


@dataclass(frozen=True)
class FieldSpec:
    """One field of a topic as ts_xml describes it (``sal_type`` is the IDL type)."""

    name: str
    sal_type: str
    description: str = ""
    units: str = "unitless"
    count: int = 1

    def __post_init__(self) -> None:
        if self.sal_type not in _AVRO_TYPES:
            raise ValueError(f"field {self.name}: unknown SAL type {self.sal_type!r}")

    def avro(self) -> dict[str, Any]:
        avro_type = _AVRO_TYPES[self.sal_type]
        default = _DEFAULTS.get(avro_type, "")
        # ts_xml ignores a count on strings: strings are never arrays.
        if self.count > 1 and avro_type != "string":
            return {
                "name": self.name,
                "type": {"type": "array", "items": avro_type},
                "default": [default] * self.count,
                "description": self.description,
                "units": self.units,
            }
        return {
            "name": self.name,
            "type": avro_type,
            "default": default,
            "description": self.description,
            "units": self.units,
        }


@dataclass(frozen=True)
class TopicSpec:
    """One SAL topic: ``sal_name`` such as ``command_start``, ``logevent_heartbeat``, ``ackcmd``
    or a telemetry name; its description; its public fields in order."""

    sal_name: str
    description: str = ""
    fields: tuple[FieldSpec, ...] = field(default=())

    @property
    def kind(self) -> str:
        """``command``, ``event``, ``ackcmd`` or ``telemetry``."""
        if self.sal_name == "ackcmd":
            return "ackcmd"
        if self.sal_name.startswith("command_"):
            return "command"
        if self.sal_name.startswith("logevent_"):
            return "event"
        return "telemetry"


_PRIVATE_FIELDS = (
    FieldSpec("salIndex", "long", "SAL index (only present for indexed SAL components)"),
    FieldSpec("private_sndStamp", "double", "Time of instance publication", units="second"),
    FieldSpec("private_rcvStamp", "double", "Time of instance reception", units="second"),
    FieldSpec(
        "private_efdStamp",
        "double",
        "UTC time for EFD timestamp. An integer (the number of leap seconds) different from "
        "private_sndStamp.",
        units="second",
    ),
    FieldSpec(
        "private_kafkaStamp",
        "double",
        "TAI time at which the Kafka message was created.",
        units="second",
    ),
    FieldSpec("private_seqNum", "long", "Sequence number"),
    FieldSpec("private_revCode", "string", "Revision hashcode"),
    FieldSpec(
        "private_identity",
        "string",
        "Identity of publisher: SAL component name for a CSC or user@host for a user",
    ),
    FieldSpec("private_origin", "long", "Process ID of publisher"),
)

ACKCMD = TopicSpec(
    "ackcmd",
    "Command acknowledgement",
    (
        FieldSpec("ack", "long", "Acknowledgement code"),
        FieldSpec("error", "long", "An error code; only relevant if ack=FAILED"),
        FieldSpec("result", "string", "Message"),
        FieldSpec("identity", "string", "private_identity field of the command being acknowledged"),
        FieldSpec("origin", "long", "private_origin field of the command being acknowledged"),
        FieldSpec(
            "cmdtype",
            "long",
            "Index of command in alphabetical list of commands, with 0 being the first",
        ),
        FieldSpec(
            "timeout",
            "double",
            "Estimated remaining duration of command; only relevant if ack=INPROGRESS",
            units="second",
        ),
    ),
)

#: Every generic topic of ts_xml's SALGenerics.xml.
GENERIC_TOPICS: dict[str, TopicSpec] = {
    spec.sal_name: spec
    for spec in (
        TopicSpec(
            "command_abort",
            "Abort the current operation; deprecated.",
        ),
        TopicSpec(
            "command_enable",
            "Transition from state Disabled to Enabled.",
        ),
        TopicSpec(
            "command_disable",
            "Transition from state Enabled to Disabled.",
        ),
        TopicSpec(
            "command_standby",
            "Transition from state Offline/Available, Disabled or Fault to Standby.",
        ),
        TopicSpec(
            "command_exitControl",
            (
                "Transition from state Standby to Offline. Most CSCs will quit, but CSCs that "
                "support the enterControl command will keep running."
            ),
        ),
        TopicSpec(
            "command_start",
            "Transition from state Standby to Disable, in a specified configuration.",
            (
                FieldSpec(
                    "configurationOverride",
                    "string",
                    (
                        "\n            Configuration override in the form [{name}][:{version}].\n  "
                        '          For salobj-based CSCs: name is a filename with ".yaml" suffix '
                        'and version is a git hash; for example:\n\n            * "foo.yaml" '
                        "specifies just a file.\n              Two or three config files are "
                        'loaded: "_init.yaml", "_{site}.yaml" (if present), and "foo.yaml".\n      '
                        '      * ":37bf936" specifies just a git hash.\n              One or two '
                        'config files are loaded from the specified git commit: "_init.yaml" and '
                        '"_{site}.yaml" (if present.\n            * "bar.yaml:HEAD~2" specifies '
                        "both a file and a git hash.\n              Two or three config files are "
                        'read from the specified git commit: "_init.yaml", "_{site}.yaml" (if '
                        'present), and "bar.yaml".\n        '
                    ),
                ),
            ),
        ),
        TopicSpec(
            "command_enterControl",
            (
                "Transition from state Offline to Standby. Only a few CSCs support this command; "
                "all other CSCs start in Standby state and quit when they go to Offline."
            ),
        ),
        TopicSpec(
            "command_setLogLevel",
            "Set the logging level.",
            (
                FieldSpec(
                    "level",
                    "int",
                    (
                        "Logging level, as a Python logging level: error=40, warning=30, info=20, "
                        "debug=10."
                    ),
                ),
                FieldSpec(
                    "subsystem",
                    "string",
                    (
                        "If this CSC itself has sub-ordinate components, they may be listed here. "
                        "An empty string means the setting applies to all such sub-ordinate "
                        "components, or just to this CSC itself."
                    ),
                ),
            ),
        ),
        TopicSpec(
            "logevent_clockOffset",
            (
                "Clock error between a low-level controller and its CSC. Only relevant to CSCs "
                "that control a single low-level controller."
            ),
            (
                FieldSpec(
                    "offset",
                    "double",
                    (
                        "Low-level controller time - CSC time. For most CSCs this is only accurate "
                        "to 0.01 seconds or so, and thus is only intended to detect gross error."
                    ),
                    units="second",
                ),
            ),
        ),
        TopicSpec(
            "logevent_configurationApplied",
            "Information about this CSC's current configuration overrides.",
            (
                FieldSpec(
                    "configurations",
                    "string",
                    (
                        "A comma-separated list of configurations applied. If configuration comes "
                        "from a clone of a git repo, or similar directory, then it will be a list "
                        "of file names, without the file extension. Ignore whitespace after commas."
                    ),
                ),
                FieldSpec(
                    "version",
                    "string",
                    (
                        "Version of the configuration source. For a clone of a git repo it will be "
                        "a git hash."
                    ),
                ),
                FieldSpec(
                    "url",
                    "string",
                    (
                        "URL of the configuration source. For a clone of a git repo this will be a "
                        "file URL. For a database it will be a standard database URL. This should "
                        "always match the same-named field in configurationsAvailable."
                    ),
                ),
                FieldSpec(
                    "schemaVersion",
                    "string",
                    (
                        "Version of config schema used by this CSC. For a configuration git repo, "
                        "this is the name of a folder in the config package, and is typically "
                        'something like "v1". This should always match the same-named field in '
                        "configurationsAvailable."
                    ),
                ),
                FieldSpec(
                    "otherInfo",
                    "string",
                    (
                        "A comma-separated list of event topics (without the logevent prefix) used "
                        "to publish the entire set of configuration parameters loaded by this CSC, "
                        "and any other pertinent information. Ignore whitespace after commas."
                    ),
                ),
            ),
        ),
        TopicSpec(
            "logevent_configurationsAvailable",
            "Available configuration overrides for this CSC.",
            (
                FieldSpec(
                    "overrides",
                    "string",
                    (
                        "Available overrides as a comma-separated list. Each entry is a possible "
                        "value of the `configurationOverride` field of the `start` command. Ignore "
                        "whitespace after commas."
                    ),
                ),
                FieldSpec(
                    "version",
                    "string",
                    (
                        "Version of the configuration source. For a clone of a git repo it will be "
                        "a git hash."
                    ),
                ),
                FieldSpec(
                    "url",
                    "string",
                    (
                        "URL of the configuration source. For a clone of a git repo this will be a "
                        "file URL. For a database it will be a standard database URL."
                    ),
                ),
                FieldSpec(
                    "schemaVersion",
                    "string",
                    (
                        "Version of config schema used by this CSC. For a configuration git repo, "
                        "this is the name of a folder in the config package, and is typically "
                        'something like "v1".'
                    ),
                ),
            ),
        ),
        TopicSpec(
            "logevent_errorCode",
            "Output when this CSC goes into the Fault state as an explanation of the problem.",
            (
                FieldSpec("errorCode", "long", "A numeric error code."),
                FieldSpec(
                    "errorReport",
                    "string",
                    "An string providing detailed information about the error.",
                ),
                FieldSpec("traceback", "string", "An optional stack trace of the error condition."),
            ),
        ),
        TopicSpec(
            "logevent_summaryState",
            "Current summary state of this CSC.",
            (FieldSpec("summaryState", "long", "High level state machine state identifier."),),
        ),
        TopicSpec(
            "logevent_logLevel",
            "Current logging level.",
            (
                FieldSpec(
                    "level",
                    "int",
                    (
                        "Current logging level, a Python logging level: error=40, warning=30, "
                        "info=20, debug=10."
                    ),
                ),
                FieldSpec(
                    "subsystem",
                    "string",
                    (
                        "If this CSC itself has sub-ordinate components, they may be listed here. "
                        "An empty string means the setting applies to all such sub-ordinate "
                        "components, or just to this CSC itself."
                    ),
                ),
            ),
        ),
        TopicSpec(
            "logevent_logMessage",
            "A log message.",
            (
                FieldSpec("name", "string", "Log name."),
                FieldSpec(
                    "level",
                    "int",
                    (
                        "Message level, a Python logging level: error=40, warning=30, info=20, "
                        "debug=10."
                    ),
                ),
                FieldSpec("message", "string", "Log message."),
                FieldSpec("traceback", "string", 'Exception traceback; "" if not an exception.'),
                FieldSpec("filePath", "string", "Path to source file."),
                FieldSpec("functionName", "string", "Function or method name."),
                FieldSpec("lineNumber", "long", "Line number in the file specified by filePath."),
                FieldSpec("process", "long", "Process ID."),
                FieldSpec(
                    "timestamp",
                    "double",
                    (
                        "The time at which the condition being reported was observed (TAI unix "
                        "seconds). 0 if unspecified."
                    ),
                    units="second",
                ),
            ),
        ),
        TopicSpec(
            "logevent_simulationMode",
            "Current simulation mode.",
            (
                FieldSpec(
                    "mode",
                    "int",
                    (
                        "Current simulation mode; 0 for normal operation (no simulation); other "
                        "supported values are specific to each CSC."
                    ),
                ),
            ),
        ),
        TopicSpec(
            "logevent_softwareVersions",
            "Current versions of software in use by CSC.",
            (
                FieldSpec("salVersion", "string", "This is the current version of SAL generation."),
                FieldSpec("xmlVersion", "string", "This is the current version of CSC XML."),
                FieldSpec("cscVersion", "string", "The software version of this CSC."),
                FieldSpec(
                    "subsystemVersions",
                    "string",
                    (
                        "A comma delimited list of key=value pairs relating subsystem name (key) "
                        "to its version number (value). This may be left blank if there are no "
                        "subsystems within this CSC."
                    ),
                ),
            ),
        ),
        TopicSpec(
            "logevent_heartbeat",
            (
                "Event output at regular intervals (typcally once per second) to show that the SAL "
                "component is alive."
            ),
            (FieldSpec("heartbeat", "boolean", "Deprecated field that you should ignore."),),
        ),
        TopicSpec(
            "logevent_largeFileObjectAvailable",
            "A new large file object is available.",
            (
                FieldSpec(
                    "url",
                    "string",
                    (
                        "A Uniform Resource Locator which links to a Large File Object either for "
                        "ingest into the EFD Large File Annex, or to announce the successful copy "
                        "of same to the EFD Large File Annex.Protocols are those supported by the "
                        "cURL library."
                    ),
                ),
                FieldSpec(
                    "generator",
                    "string",
                    "Name of the package which generated the file being announced.",
                ),
                FieldSpec(
                    "version",
                    "float",
                    "A dotted x.y version number denoting the file format revision.",
                ),
                FieldSpec("byteSize", "long", "Size of file in bytes."),
                FieldSpec(
                    "checkSum",
                    "string",
                    "Hexadecimal character string holding the checksum of the file.",
                ),
                FieldSpec("mimeType", "string", "Mime Type code for the file."),
                FieldSpec("id", "string", "A generic identifier field."),
            ),
        ),
        TopicSpec(
            "logevent_statusCode",
            (
                "Output when this CSC experiences a non-optimal condition that is important to a "
                "user but insufficient to raise an error condition."
            ),
            (FieldSpec("mask", "int", "An integer representing a bitmask defined in LSE-209."),),
        ),
    )
}

#: The generic topics each ``AddedGenerics`` category brings; ``mandatory`` is always added.
GENERIC_CATEGORIES: dict[str, tuple[str, ...]] = {
    "mandatory": (
        "logevent_heartbeat",
        "logevent_logLevel",
        "logevent_logMessage",
        "logevent_softwareVersions",
    ),
    "csc": (
        "command_disable",
        "command_enable",
        "command_exitControl",
        "command_setLogLevel",
        "command_standby",
        "command_start",
        "logevent_errorCode",
        "logevent_simulationMode",
        "logevent_summaryState",
    ),
    "configurable": ("logevent_configurationApplied", "logevent_configurationsAvailable"),
}

#: ``AddedGenerics`` of a component that ts_xml does not list in `_ADDED_GENERICS`.
DEFAULT_GENERICS = ("csc", "configurable")

# ts_xml's SALSubsystems.xml, where it differs from DEFAULT_GENERICS.
_LARGE_FILE = "logevent_largeFileObjectAvailable"
_CAMERA = ("csc", "command_enterControl", "configurable", _LARGE_FILE)
_ADDED_GENERICS: dict[str, tuple[str, ...]] = {
    "ATCamera": _CAMERA,
    "CCCamera": _CAMERA,
    "MTCamera": _CAMERA,
    "ATHeaderService": ("csc", _LARGE_FILE),
    "CCHeaderService": ("csc", _LARGE_FILE),
    "MTHeaderService": ("csc", _LARGE_FILE),
    "GCHeaderService": ("csc", _LARGE_FILE),
    "ATMonochromator": ("csc", "configurable", _LARGE_FILE),
    "DREAM": ("csc", "configurable", _LARGE_FILE),
    "Electrometer": ("csc", "configurable", _LARGE_FILE),
    "FiberSpectrograph": ("csc", "configurable", _LARGE_FILE),
    "OCPS": ("csc", "configurable", _LARGE_FILE),
    "Scheduler": ("csc", "configurable", _LARGE_FILE),
    "GenericCamera": ("csc", "configurable", _LARGE_FILE, "logevent_statusCode"),
    "MTMount": ("csc", "configurable", "logevent_clockOffset"),
    "MTRotator": ("csc", "configurable", "logevent_clockOffset"),
    "ATOODS": ("csc",),
    "CCOODS": ("csc",),
    "MTOODS": ("csc",),
    "WFOODS": ("csc",),
    "ATPtg": ("csc",),
    "MTPtg": ("csc",),
    "DSM": ("csc",),
    "HVAC": ("csc",),
    "ScriptQueue": ("csc",),
    "SummitFacility": ("csc",),
    "LOVE": ("command_setLogLevel", _LARGE_FILE),
    "Script": ("command_setLogLevel", _LARGE_FILE),
    "AlarmRule": ("command_setLogLevel",),
}


class TopicCatalog:
    """Which topics each SAL component has: its generics and its own topics.

    The simulation only needs the topics a scenario touches; add a component's own topics with
    `add_topics` (a topic added twice replaces the first) and override its generics with
    `set_generics`.
    """

    def __init__(self) -> None:
        self._generics: dict[str, tuple[str, ...]] = dict(_ADDED_GENERICS)
        self._topics: dict[str, dict[str, TopicSpec]] = {}

    def copy(self) -> TopicCatalog:
        other = TopicCatalog()
        other._generics = dict(self._generics)
        other._topics = {name: dict(specs) for name, specs in self._topics.items()}
        return other

    def set_generics(self, component: str, added_generics: Iterable[str]) -> None:
        """Set a component's ``AddedGenerics``: category names and/or generic topic names."""
        names = tuple(added_generics)
        for name in names:
            if name not in GENERIC_CATEGORIES and name not in GENERIC_TOPICS:
                raise ValueError(f"{name!r} is neither a generics category nor a generic topic")
        self._generics[component] = names

    def add_topics(self, component: str, *specs: TopicSpec) -> None:
        """Give ``component`` these topics of its own."""
        for spec in specs:
            if spec.sal_name == "ackcmd":
                raise ValueError("ackcmd is added to every component that has commands")
            self._topics.setdefault(component, {})[spec.sal_name] = spec

    def generics(self, component: str) -> tuple[str, ...]:
        return self._generics.get(component, DEFAULT_GENERICS)

    def topics(self, component: str) -> dict[str, TopicSpec]:
        """Every topic of ``component`` by SAL name, sorted by name as salobj sorts them."""
        specs: dict[str, TopicSpec] = {}
        for name in ("mandatory", *self.generics(component)):
            for sal_name in GENERIC_CATEGORIES.get(name, (name,)):
                specs[sal_name] = GENERIC_TOPICS[sal_name]
        specs.update(self._topics.get(component, {}))
        if any(spec.kind == "command" for spec in specs.values()):
            specs["ackcmd"] = ACKCMD
        return dict(sorted(specs.items()))


def avro_schema(component: str, spec: TopicSpec, *, indexed: bool) -> dict[str, Any]:
    """The schema salobj registers for ``spec`` of ``component``."""
    private = _PRIVATE_FIELDS if indexed else _PRIVATE_FIELDS[1:]
    return {
        "type": "record",
        "name": spec.sal_name,
        "namespace": f"lsst.sal.{component}",
        "fields": [f.avro() for f in (*private, *spec.fields)],
        "description": spec.description,
    }


def component_schemas(
    component: str,
    *,
    indexed: bool,
    catalog: TopicCatalog | None = None,
    overrides: Mapping[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every topic's schema of ``component``, by SAL name in salobj's (sorted) order.

    ``overrides`` replaces some schemas (by SAL name), as a new XML version of the component
    would; a topic only in ``overrides`` is added.
    """
    topics = (catalog or DEFAULT_CATALOG).topics(component)
    schemas = {name: avro_schema(component, spec, indexed=indexed) for name, spec in topics.items()}
    for name, schema in (overrides or {}).items():
        schemas[name] = copy.deepcopy(schema)
    return dict(sorted(schemas.items()))


def command_types(sal_names: Iterable[str]) -> dict[str, int]:
    """``ackcmd.cmdtype`` of each command (by name without ``command_``): the command's position
    in the sorted list of all the component's SAL topic names (salobj-wire/README.md)."""
    ordered = sorted(sal_names)
    return {
        name.removeprefix("command_"): position
        for position, name in enumerate(ordered)
        if name.startswith("command_")
    }


def indexed_components(names: Iterable[CscName | CscEntry]) -> set[str]:
    """The components with a non-zero index anywhere in ``names`` (an inventory)."""
    cscs = (n.name if isinstance(n, CscEntry) else n for n in names)
    return {csc.name for csc in cscs if csc.index != 0}


def _test_value_fields(*, arrays: bool) -> tuple[FieldSpec, ...]:
    """The fields of the Test component's ``scalars``/``arrays`` topics (one per SAL type)."""
    kinds = [
        ("boolean", "boolean", "A boolean."),
        ("byte", "byte", "A byte."),
        ("short", "short", "A short."),
        ("int", "int", "An int."),
        ("long", "long", "A long."),
        ("longLong", "long long", "A long long."),
        ("unsignedShort", "unsigned short", "An unsigned short."),
        ("unsignedInt", "unsigned int", "An unsigned int."),
        ("float", "float", "A float."),
        ("double", "double", "A double."),
        ("string", "string", "A string."),
    ]
    if arrays:
        return tuple(
            FieldSpec(f"{name}0", sal_type, f"Array of {sal_type}.", count=5)
            for name, sal_type, _ in kinds
            if sal_type != "string"
        )
    return tuple(FieldSpec(f"{name}0", sal_type, text) for name, sal_type, text in kinds)


def _test_topics() -> tuple[TopicSpec, ...]:
    scalars = _test_value_fields(arrays=False)
    arrays = _test_value_fields(arrays=True)
    return (
        TopicSpec("command_setScalars", "Set scalar values.", scalars),
        TopicSpec("command_setArrays", "Set array values.", arrays),
        TopicSpec(
            "command_fault",
            "Enter the Fault summary state.",
        ),
        TopicSpec(
            "command_wait",
            "Wait for the specified period.",
            (
                FieldSpec("ack", "int", "Final ack code, typically a SAL__CMD constant."),
                FieldSpec("duration", "double", "Desired command duration.", units="second"),
            ),
        ),
        TopicSpec("logevent_scalars", "Scalar values.", scalars),
        TopicSpec("logevent_arrays", "Array values.", arrays),
        TopicSpec("scalars", "Scalar values.", scalars),
        TopicSpec("arrays", "Array values.", arrays),
    )


def _image_in_oods(description: str) -> TopicSpec:
    return TopicSpec(
        "logevent_imageInOODS",
        description,
        (
            FieldSpec("camera", "string", "camera name from which the image was retrieved"),
            FieldSpec("obsid", "string", "obsid of image ingested into OODS"),
            FieldSpec("raft", "string", "raft designation"),
            FieldSpec("sensor", "string", "sensor designation"),
            FieldSpec("statusCode", "long", "status code indicating success (0) or error (>0)"),
            FieldSpec("description", "string", "description of the status code"),
        ),
    )


def _script_queue_topics() -> tuple[TopicSpec, ...]:
    return (
        TopicSpec(
            "command_showAvailableScripts",
            "List the scripts that are available.",
        ),
        TopicSpec(
            "command_showSchema",
            "Show the configuration schema for a given script.",
            (
                FieldSpec(
                    "isStandard",
                    "boolean",
                    "Is this a standard script (True) or an external script (False)?",
                ),
                FieldSpec(
                    "path",
                    "string",
                    (
                        "Path to script, relative to the root directory for standard or "
                        "external scripts."
                    ),
                ),
            ),
        ),
        TopicSpec(
            "command_showQueue",
            "Output the queue event.",
        ),
        TopicSpec(
            "command_showScript",
            "Output script event for a specified script.",
            (
                FieldSpec(
                    "scriptSalIndex",
                    "int",
                    "SAL index of Script for which you want information.",
                ),
            ),
        ),
        TopicSpec(
            "command_pause",
            (
                "Pause the queue. If a script is executing it will continue, but once that "
                "script is done no new script will be run."
            ),
        ),
        TopicSpec(
            "command_resume",
            "Resume normal operation (unpause the queue).",
        ),
        TopicSpec(
            "command_add",
            "Add a script to the queue and configure it.",
            (
                FieldSpec(
                    "isStandard",
                    "boolean",
                    "Is this a standard script (True) or an external script (False)?",
                ),
                FieldSpec(
                    "path",
                    "string",
                    (
                        "Path to script, relative to the root directory for standard or "
                        "external scripts."
                    ),
                ),
                FieldSpec(
                    "config",
                    "string",
                    (
                        "Configuration as yaml text that is parsed to make a keyword argument "
                        "dict for the script's configure method."
                    ),
                ),
                FieldSpec(
                    "descr",
                    "string",
                    "Short description of why you are running this script.",
                ),
                FieldSpec("location", "byte", "Location in the queue; a Location enum."),
                FieldSpec(
                    "locationSalIndex",
                    "int",
                    (
                        "Index of Script SAL component referred to by `location`; ignored "
                        "unless `location` is `Before` or `After`."
                    ),
                ),
                FieldSpec(
                    "logLevel",
                    "int",
                    (
                        "Logging level for the script, as a Python logging level: error=40, "
                        "warning=30, info=20, debug=10, use default=0."
                    ),
                ),
                FieldSpec(
                    "pauseCheckpoint",
                    "string",
                    (
                        "Checkpoint(s) at which to pause the script, as a regular expression. "
                        'No checkpoints if blank; all checkpoints if ".*".'
                    ),
                ),
                FieldSpec(
                    "stopCheckpoint",
                    "string",
                    (
                        "Checkpoint(s) at which to stop the script, as a regular expression. "
                        'No checkpoints if blank; all checkpoints if ".*".'
                    ),
                ),
                FieldSpec(
                    "block",
                    "string",
                    (
                        "Name of the observing block the script is part of, e.g. BLOCK-000 "
                        "(optional)."
                    ),
                ),
                FieldSpec("blockSize", "int", "How many scripts are part of this block?"),
                FieldSpec(
                    "startBlock",
                    "boolean",
                    (
                        "Is this the first script of a new block execution? If true, any "
                        "currently executing block will be closed."
                    ),
                ),
                FieldSpec(
                    "executionId",
                    "string",
                    (
                        "The script execution ID. This is a metadata generated by the OCS when "
                        "running a script as part of a test execution."
                    ),
                ),
            ),
        ),
        TopicSpec(
            "command_move",
            (
                "Move a script elsewhere in the queue. This will fail if the script is already "
                "running."
            ),
            (
                FieldSpec("scriptSalIndex", "int", "Index of Script SAL component to move."),
                FieldSpec("location", "byte", "New location in the queue; a Location enum."),
                FieldSpec(
                    "locationSalIndex",
                    "int",
                    (
                        "Index of Script SAL component referred to by `location`; ignored "
                        "unless `location` is `Before` or `After`."
                    ),
                ),
            ),
        ),
        TopicSpec(
            "command_requeue",
            "Put a script back on the queue that has already run, is running or is queued.",
            (
                FieldSpec("scriptSalIndex", "int", "Index of Script SAL component to requeue."),
                FieldSpec("location", "byte", "Location in the queue; a Location enum."),
                FieldSpec(
                    "locationSalIndex",
                    "int",
                    (
                        "Index of Script SAL component referred to by the location field; "
                        "ignored unless the location is Before or After."
                    ),
                ),
            ),
        ),
        TopicSpec(
            "command_stopScripts",
            "Stop one or more queued scripts and/or the current script.",
            (
                FieldSpec("length", "int", "Number of valid entries in salIndices."),
                FieldSpec(
                    "salIndices",
                    "int",
                    "Indices of Script SAL component to stop, 0 terminated.",
                    count=400,
                ),
                FieldSpec(
                    "terminate",
                    "boolean",
                    (
                        "If True, terminate the current script without giving it a chance to "
                        "clean up. If False, try sending a stop command first, and only "
                        "terminate if if that doesn't work in a timely fashion."
                    ),
                ),
            ),
        ),
        TopicSpec(
            "logevent_availableScripts",
            "List of available scripts.",
            (
                FieldSpec(
                    "standard",
                    "string",
                    (
                        "Colon-separated paths to standard scripts, relative to the standard "
                        "root directory."
                    ),
                ),
                FieldSpec(
                    "external",
                    "string",
                    (
                        "Colon-separated paths to external scripts, relative to the external "
                        "root directory."
                    ),
                ),
            ),
        ),
        TopicSpec(
            "logevent_configSchema",
            "Configuration schema for a given script.",
            (
                FieldSpec(
                    "isStandard",
                    "boolean",
                    "Is this a standard script (True) or an external script (False)?",
                ),
                FieldSpec(
                    "path",
                    "string",
                    (
                        "Path to script, relative to the root directory for standard or "
                        "external scripts."
                    ),
                ),
                FieldSpec(
                    "configSchema",
                    "string",
                    "Configuration schema: jsonschema encoded as yaml.",
                ),
            ),
        ),
        TopicSpec(
            "logevent_nextVisit",
            "Group ID and other information about the next script to be run.",
            (
                FieldSpec("scriptSalIndex", "int", "Index of Script SAL component."),
                FieldSpec("groupId", "string", "Group ID for images taken by the script."),
                FieldSpec(
                    "coordinateSystem",
                    "short",
                    (
                        "Coordinate system for position. A Script MetadataCoordSys enum. "
                        "Observed is refracted apparent topocentric, e.g. similar to Mount but "
                        "the telescope model is applied and the azimuth is wrapped. If None "
                        "then position should be ignored."
                    ),
                ),
                FieldSpec(
                    "position",
                    "double",
                    "Longitude, latitude axes of position in coordinateSystem",
                    units="degree",
                    count=2,
                ),
                FieldSpec(
                    "startTime",
                    "double",
                    "The expected start time for this visit (TAI).",
                    units="second",
                ),
                FieldSpec(
                    "rotationSystem",
                    "short",
                    (
                        "Rotation system for cameraAngle, a Script MetadataRotSys enum\n       "
                        " * None: The camera rotator is not used; ignore cameraAngle.\n        "
                        "* Sky: Position angle of focal plane +Y, measured from N through E.\n "
                        "         At 0 degrees, +Y is along N and +X is along E/W depending on "
                        "handedness.\n          At 90 degrees, +Y is along E and +X is along "
                        "S/N depending on handedness.\n        * Horizon: Position angle of "
                        "focal plane +Y, measured from +Alt through +Az.\n          At 0 "
                        "degrees, +Y is along +Alt and +X is along +/-Az, depending on "
                        "handedness.\n          At 90 degrees, +Y is along +Az and +X is along "
                        "-/+Alt, depending on handedness.\n        * Mount: The position sent "
                        "to the instrument rotator; the details depend on the rotator.\n       "
                        " "
                    ),
                ),
                FieldSpec(
                    "cameraAngle",
                    "double",
                    "Camera angle in rotationSystem",
                    units="degree",
                ),
                FieldSpec(
                    "filters",
                    "string",
                    "Comma-separated names of acceptable filters, or blank for any filter.",
                ),
                FieldSpec("dome", "short", "Desired dome state; a Script MetadataDome enum."),
                FieldSpec(
                    "duration",
                    "double",
                    (
                        "Estimated duration of the script, excluding slewing to the initial "
                        "position required by the script."
                    ),
                    units="second",
                ),
                FieldSpec("nimages", "int", "Predicted number of images to take; 0 if unknown."),
                FieldSpec(
                    "instrument",
                    "string",
                    (
                        "Instrument name (the short name used by middleware) used to take the "
                        "data; blank if unknown or not relevant."
                    ),
                ),
                FieldSpec("survey", "string", "Survey name."),
                FieldSpec(
                    "totalCheckpoints",
                    "int",
                    (
                        "Predicted total number of checkpoints that will be seen (counting all "
                        "repetitions of a repeated checkpoint); 0 if unknown."
                    ),
                ),
            ),
        ),
        TopicSpec(
            "logevent_nextVisitCanceled",
            (
                "The group ID reported by a nextVisit event will not be used, because the "
                "script that was next to be run has been cancelled or rescheduled."
            ),
            (
                FieldSpec("scriptSalIndex", "int", "Index of Script SAL component."),
                FieldSpec(
                    "groupId",
                    "string",
                    "Group ID for images taken by the script. This ID will not be used.",
                ),
            ),
        ),
        TopicSpec(
            "logevent_script",
            "Information about a queued script.",
            (
                FieldSpec("cmdId", "int", "ID of command which queued this script."),
                FieldSpec("scriptSalIndex", "int", "Index of Script SAL component."),
                FieldSpec(
                    "isStandard",
                    "boolean",
                    "True if this is a standard script, False if an external script.",
                ),
                FieldSpec(
                    "path",
                    "string",
                    "Path of script, relative to standard or external root directory.",
                ),
                FieldSpec(
                    "timestampProcessStart",
                    "double",
                    "When the script process started. 0 before the process is started.",
                    units="second",
                ),
                FieldSpec(
                    "timestampConfigureStart",
                    "double",
                    "When script configuration began. 0 before configuration begins.",
                    units="second",
                ),
                FieldSpec(
                    "timestampConfigureEnd",
                    "double",
                    (
                        "When script configuration finished (succeeded or failed). 0 before "
                        "configuration ends."
                    ),
                    units="second",
                ),
                FieldSpec(
                    "timestampRunStart",
                    "double",
                    "When the script was told to run. 0 before the script is told to run.",
                    units="second",
                ),
                FieldSpec(
                    "timestampProcessEnd",
                    "double",
                    (
                        "When the script process ended. This is also approximately the time at "
                        "which the script stopped running, if it was ever run. 0 before the "
                        "script process ends."
                    ),
                    units="second",
                ),
                FieldSpec(
                    "processState",
                    "byte",
                    (
                        "State of script process; a ScriptProcessState enum. Loading means the "
                        "script is still being loaded and is not yet configured. Configured "
                        "means the script has been configured and can be run. Running means "
                        "the script has been commanded to run. Done means the script has "
                        "finished (see scriptState to see whether it ran successfully). "
                        "ConfigureFailed means the process was terminated because the "
                        "`configure` command failed. Terminated means the process was "
                        "terminated due to calling the `terminate` command, or due to calling "
                        "the `stop` command when the script was not running or if running but "
                        "stopping the script gently failed."
                    ),
                ),
                FieldSpec(
                    "scriptState",
                    "byte",
                    (
                        "State of the script; a ScriptState enum from Script_Events.xml; 0 if "
                        "the script is not yet loaded."
                    ),
                ),
                FieldSpec(
                    "blockId",
                    "string",
                    "Id of the block this script is part of (optional).",
                ),
                FieldSpec(
                    "scriptBlockIndex",
                    "int",
                    "The position of this script the block (0-based).",
                ),
                FieldSpec("blockSize", "int", "The number of scripts in the block."),
                FieldSpec(
                    "executionId",
                    "string",
                    (
                        "ID generated by the OCS when running a script as part of a test "
                        "execution (optional)."
                    ),
                ),
            ),
        ),
        TopicSpec(
            "logevent_queue",
            "SAL indices of scripts on the queue.",
            (
                FieldSpec(
                    "enabled",
                    "boolean",
                    (
                        "Is the ScriptQueue CSC enabled? New scripts will only be started if "
                        "both `running` and `enable` are True."
                    ),
                ),
                FieldSpec(
                    "running",
                    "boolean",
                    (
                        "Is the queue running (True) or paused (False)? New scripts will only "
                        "be started if both `running` and `enable` are True."
                    ),
                ),
                FieldSpec("currentSalIndex", "int", "SAL index of script being run; 0 if none."),
                FieldSpec("length", "int", "Number of valid entries in salIndices."),
                FieldSpec(
                    "salIndices",
                    "int",
                    ("SAL index of each Script on the queue. Item 0 is the next script to be run."),
                    count=400,
                ),
                FieldSpec("pastLength", "int", "Number of valid entries in pastSalIndices."),
                FieldSpec(
                    "pastSalIndices",
                    "int",
                    (
                        "SAL index of scripts that have been run. Item 0 is the script most "
                        "recently run."
                    ),
                    count=400,
                ),
            ),
        ),
        TopicSpec(
            "logevent_rootDirectories",
            "Root directories for scripts.",
            (
                FieldSpec("standard", "string", "Root directory for standard scripts."),
                FieldSpec("external", "string", "Root directory for external scripts."),
            ),
        ),
    )


def _camera_topics() -> tuple[TopicSpec, ...]:
    """What a camera CSC (ATCamera, CCCamera, MTCamera) needs to take images in the simulation."""
    image = (
        FieldSpec("additionalKeys", "string", "Additional keys passed to the takeImages command"),
        FieldSpec(
            "additionalValues", "string", "Additional values passed to the takeImages command"
        ),
        FieldSpec("imagesInSequence", "long", "The total number of requested images in sequence"),
        FieldSpec("imageName", "string", "The imageName for this specific exposure"),
        FieldSpec(
            "imageIndex", "long", "The one based index number for this exposure in the sequence"
        ),
        FieldSpec("imageSource", "string", "The source component of the image name (AT/CC/MC)"),
        FieldSpec("imageController", "string", "The controller for the image (O=OCS/C=CCS/...)"),
        FieldSpec("imageDate", "string", "The date component of the image name (YYYYMMDD)"),
        FieldSpec("imageNumber", "long", "The image number (SEQNO) component of the image name"),
        FieldSpec(
            "timestampAcquisitionStart",
            "double",
            "The effective time at which the image acquisition started",
            units="second",
        ),
    )
    return (
        TopicSpec(
            "command_takeImages",
            "LSE-71 takeImages command",
            (
                FieldSpec("numImages", "long", "Number of consecutive images to take"),
                FieldSpec("expTime", "double", "Exposure time", units="second"),
                FieldSpec("shutter", "boolean", "True if the shutter should be opened/closed"),
                FieldSpec("sensors", "string", "Sensors to be read out, if blank all"),
                FieldSpec(
                    "keyValueMap",
                    "string",
                    "Map of additional key value pairs to associate extra data with the image(s)",
                ),
                FieldSpec("obsNote", "string", "An arbitrary operator provided string"),
            ),
        ),
        TopicSpec(
            "command_play",
            "Play specified playlist",
            (
                FieldSpec("playlist", "string", "Name of an existing DAQ playlist to play"),
                FieldSpec("repeat", "boolean", "True if the playlist should run in repeat mode"),
            ),
        ),
        TopicSpec(
            "logevent_startIntegration",
            "Event sent at start of image integration.",
            (
                *image,
                FieldSpec("exposureTime", "double", "The requested exposure time", units="second"),
                FieldSpec("mode", "string", "The camera data taking mode"),
                FieldSpec("timeout", "double", "Header service timeout", units="second"),
            ),
        ),
        TopicSpec(
            "logevent_endReadout",
            "Event sent at end of readout.",
            (
                *image,
                FieldSpec(
                    "requestedExposureTime",
                    "double",
                    "The requested exposure time (as specified in the takeImages command)",
                    units="second",
                ),
                FieldSpec(
                    "timestampEndOfReadout",
                    "double",
                    "The time at which the readout was completed",
                    units="second",
                ),
            ),
        ),
    )


def _pointing_topics() -> tuple[TopicSpec, ...]:
    """ATPtg's and MTPtg's target commands (the same fields in both)."""
    return (
        TopicSpec(
            "command_raDecTarget",
            "Define a telescope target, with a position defined as RA and Dec.",
            (
                FieldSpec("targetName", "string", "Name of target"),
                FieldSpec("frame", "long", "Target co-ordinate reference frame"),
                FieldSpec("epoch", "double", "Target epoch in years e.g. 2000.0.", units="year"),
                FieldSpec("equinox", "double", "Target equinox in years e.g. 2000.0", units="year"),
                FieldSpec("ra", "double", "RA of target (Hours)", units="hour"),
                FieldSpec("declination", "double", "Declination of target (Degrees)", "degree"),
                FieldSpec("parallax", "double", "Parallax (arcseconds)", units="arcsec"),
                FieldSpec("pmRA", "double", "Proper Motion (RA)", units="arcsec / year"),
                FieldSpec("pmDec", "double", "Proper motion (Dec)", units="arcsec / year"),
                FieldSpec("rv", "double", "Radial velocity (km/sec)", units="km / second"),
                FieldSpec("dRA", "double", "Differential Track Rate in RA", "arcsec / second"),
                FieldSpec("trackId", "long", "Target identifier."),
                FieldSpec("dDec", "double", "Differential Track Rate in Dec", "arcsec / second"),
                FieldSpec("rotAngle", "double", "Desired instrument position angle", units="deg"),
                FieldSpec("rotStartFrame", "long", "Rotator frame for rotator start position."),
                FieldSpec("rotTrackFrame", "long", "Rotator frame for rotator tracking."),
                FieldSpec("rotMode", "long", "Rotator position mode (Field or Slit optimized)"),
                FieldSpec("azWrapStrategy", "long", "Azimuth wrap strategy."),
                FieldSpec("timeOnTarget", "double", "Total expected time on target.", "second"),
                FieldSpec("validateOnly", "boolean", "Only validate this target command."),
            ),
        ),
        TopicSpec(
            "command_azElTarget",
            "Define a telescope target, with a position defined as Azimuth and Elevation.",
            (
                FieldSpec("targetName", "string", "Name of AzEl target"),
                FieldSpec("azDegs", "double", "Azimuth of target in degrees", units="degree"),
                FieldSpec("elDegs", "double", "Elevation of target in degrees", units="degree"),
                FieldSpec("trackId", "long", "Target identifier."),
                FieldSpec("rotPA", "double", "Desired instrument position angle", units="degree"),
            ),
        ),
        TopicSpec(
            "command_stopTracking",
            "Stop tracking. Axes positions will not be sent to the mount.",
            (FieldSpec("ignored", "boolean", "This attribute is ignored and not used."),),
        ),
    )


def _following_topics() -> tuple[TopicSpec, ...]:
    """ATDomeTrajectory's and MTDomeTrajectory's following mode."""
    return (
        TopicSpec(
            "command_setFollowingMode",
            "Set whether or not the dome should follow the telescope.",
            (FieldSpec("enable", "boolean", "True to follow, false to stop following."),),
        ),
        TopicSpec(
            "logevent_followingMode",
            "Is the dome following the telescope?",
            (FieldSpec("enabled", "boolean", "True if following, false if not."),),
        ),
    )


def _shutter_topics() -> tuple[TopicSpec, ...]:
    return (
        TopicSpec("command_openShutter", "Open the shutter."),
        TopicSpec("command_closeShutter", "Close the shutter."),
    )


def _observatory_topics() -> dict[str, tuple[TopicSpec, ...]]:
    """The component-specific topics the standard scripts of the procedure use (ts_xml names)."""
    return {
        "Watcher": (
            TopicSpec(
                "command_mute",
                "Mute one or more alarms.",
                (
                    FieldSpec("name", "string", "Name of alarm or alarms to mute (a regex)."),
                    FieldSpec("duration", "float", "Duration of mute.", units="second"),
                    FieldSpec("severity", "int", "Severity level being muted (AlarmSeverity)."),
                    FieldSpec("mutedBy", "string", "User who muted the alarm."),
                ),
            ),
        ),
        "ATCamera": _camera_topics(),
        "CCCamera": _camera_topics(),
        "MTCamera": _camera_topics(),
        "ATPtg": _pointing_topics(),
        "MTPtg": _pointing_topics(),
        "ATDome": _shutter_topics(),
        "MTDome": _shutter_topics(),
        "ATDomeTrajectory": _following_topics(),
        "MTDomeTrajectory": _following_topics(),
        "ATPneumatics": (
            TopicSpec("command_openM1Cover", "Open the M1 mirror covers."),
            TopicSpec("command_openM1CellVents", "Open the M1 cell vents."),
        ),
        "MTMount": (
            TopicSpec(
                "command_homeBothAxes",
                "Home the elevation and azimuth axes.",
            ),
        ),
        "MTM1M3": (
            TopicSpec(
                "command_raiseM1M3",
                "Raise the mirror up off its static supports.",
                (
                    FieldSpec(
                        "bypassReferencePosition",
                        "boolean",
                        "Bypass reference position when raising M1M3?",
                    ),
                ),
            ),
            TopicSpec("command_lowerM1M3", "Lower the mirror back onto its static supports."),
            TopicSpec(
                "logevent_detailedState",
                "M1M3 detailed state - lowered, active (=raised), lowering, raising, ...",
                (
                    FieldSpec("timestamp", "double", "Detailed State timestamp.", units="s"),
                    FieldSpec("detailedState", "long", "Detailed state."),
                ),
            ),
        ),
        "MTHexapod": (
            TopicSpec(
                "command_setCompensationMode",
                "Enable or disable automatic compensation for telescope elevation, etc.",
                (FieldSpec("enable", "boolean", "Enable or disable automatic compensation?"),),
            ),
            TopicSpec(
                "logevent_compensationMode",
                "Mode of compensation for telescope elevation, etc.",
                (FieldSpec("enabled", "boolean", "Is automatic compensation enabled?"),),
            ),
        ),
    }


def _default_catalog() -> TopicCatalog:
    catalog = TopicCatalog()
    catalog.add_topics("ScriptQueue", *_script_queue_topics())
    catalog.add_topics(
        "ATOODS", _image_in_oods("status of LATISS image ingestion into OODS butler")
    )
    catalog.add_topics(
        "CCOODS", _image_in_oods("status of ComCam image ingestion into OODS butler")
    )
    main = "status of Main Telescope image ingestion into the OODS butler"
    catalog.add_topics("MTOODS", _image_in_oods(main))
    catalog.add_topics("WFOODS", _image_in_oods(main))
    catalog.add_topics("Test", *_test_topics())
    for component, specs in _observatory_topics().items():
        catalog.add_topics(component, *specs)
    return catalog


#: The topics of the components the simulation knows beyond their generics.
DEFAULT_CATALOG = _default_catalog()
