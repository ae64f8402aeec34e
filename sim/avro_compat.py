"""Avro schema compatibility as the Confluent Schema Registry decides it, for the simulated site.

The rules are the Avro specification's schema resolution ("can a reader with schema R decode data
written with schema W?"), checked the way Avro's Java ``SchemaCompatibility`` (which Confluent
uses) checks them: record, enum and fixed names match by unqualified name or by a reader alias;
a reader field missing from the writer needs a default; writer fields the reader lacks are
skipped; ``int → long → float → double`` and ``string ↔ bytes`` are legal promotions; every
branch a writer union may carry must be readable. Logical types are ignored, as Avro does.

Schemas are taken as parsed JSON (``json.loads`` of the registered text).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import fastavro
from fastavro.schema import SchemaParseException

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = [
    "AvroSchemaError",
    "CompatibilityFailure",
    "CompatibilityLevel",
    "can_read",
    "canonical_text",
    "check_compatibility",
    "first_incompatibility",
    "parse_schema_text",
    "validate_schema",
]

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})

# Writer type → reader types that can read it (Avro specification, "Schema Resolution").
_PROMOTIONS: dict[str, frozenset[str]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class AvroSchemaError(ValueError):
    """The text is not a valid Avro schema (the registry answers 42201)."""


class CompatibilityLevel(StrEnum):
    """The registry's compatibility levels, as Confluent names them."""

    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"
    NONE = "NONE"


# --- Parsed form -------------------------------------------------------------------------------


@dataclass(eq=False)
class _Primitive:
    name: str


@dataclass(eq=False)
class _Array:
    items: _Type


@dataclass(eq=False)
class _Map:
    values: _Type


@dataclass(eq=False)
class _Union:
    branches: list[_Type]


@dataclass(eq=False)
class _Field:
    name: str
    type: _Type
    has_default: bool
    aliases: frozenset[str]


@dataclass(eq=False)
class _Named:
    fullname: str
    aliases: frozenset[str]

    @property
    def name(self) -> str:
        return self.fullname.rpartition(".")[2]


@dataclass(eq=False)
class _Record(_Named):
    fields: list[_Field] = field(default_factory=list)


@dataclass(eq=False)
class _Enum(_Named):
    symbols: list[str] = field(default_factory=list)
    default: str | None = None


@dataclass(eq=False)
class _Fixed(_Named):
    size: int = 0


_Type = _Primitive | _Array | _Map | _Union | _Record | _Enum | _Fixed


def _kind(node: _Type) -> str:
    """The Avro type name of a node, as the checker's messages print it."""
    return node.name if isinstance(node, _Primitive) else _KINDS[type(node)]


_KINDS: dict[type, str] = {
    _Array: "array",
    _Map: "map",
    _Union: "union",
    _Record: "record",
    _Enum: "enum",
    _Fixed: "fixed",
}


class _Parser:
    """Turns schema JSON into linked nodes, resolving names the way Avro's Java parser does."""

    def __init__(self) -> None:
        self.names: dict[str, _Record | _Enum | _Fixed] = {}

    def parse(self, value: Any, namespace: str) -> _Type:
        if isinstance(value, str):
            return self._reference(value, namespace)
        if isinstance(value, list):
            return self._union(value, namespace)
        if isinstance(value, dict):
            return self._complex(value, namespace)
        raise AvroSchemaError(f"{value!r} is not a schema: expected a name, an object or a list")

    def _reference(self, name: str, namespace: str) -> _Type:
        if name in PRIMITIVES:
            return _Primitive(name)
        candidates = [name] if "." in name else [_join(namespace, name), name]
        for candidate in candidates:
            if candidate in self.names:
                return self.names[candidate]
        raise AvroSchemaError(f"undefined name: {name!r}")

    def _union(self, branches: list[Any], namespace: str) -> _Union:
        parsed = [self.parse(branch, namespace) for branch in branches]
        seen: set[str] = set()
        for node in parsed:
            if isinstance(node, _Union):
                raise AvroSchemaError("a union may not directly contain another union")
            key = node.fullname if isinstance(node, _Named) else _kind(node)
            if key in seen:
                raise AvroSchemaError(f"union contains {key!r} twice")
            seen.add(key)
        return _Union(parsed)

    def _complex(self, value: dict[str, Any], namespace: str) -> _Type:
        kind = value.get("type")
        if isinstance(kind, (dict, list)):
            return self.parse(kind, namespace)
        if not isinstance(kind, str):
            raise AvroSchemaError(f"schema object without a type: {value!r}")
        if kind in PRIMITIVES:
            return _Primitive(kind)
        if kind == "array":
            return _Array(self.parse(_require(value, "items"), namespace))
        if kind == "map":
            return _Map(self.parse(_require(value, "values"), namespace))
        named: dict[str, Callable[[dict[str, Any], str], _Record | _Enum | _Fixed]] = {
            "record": self._record,
            "error": self._record,
            "enum": self._enum,
            "fixed": self._fixed,
        }
        if kind in named:
            return named[kind](value, namespace)
        return self._reference(kind, namespace)

    def _define(self, value: dict[str, Any], namespace: str) -> tuple[str, str, frozenset[str]]:
        """Full name, namespace for nested names, and full-name aliases of a named type."""
        name = _require(value, "name")
        if not isinstance(name, str):
            raise AvroSchemaError(f"name {name!r} is not a string")
        if "." in name:
            own_namespace, _, simple = name.rpartition(".")
        else:
            explicit = value.get("namespace")
            own_namespace = explicit if isinstance(explicit, str) else namespace
            simple = name
        for part in [simple, *filter(None, own_namespace.split("."))]:
            if not _NAME.match(part):
                raise AvroSchemaError(f"{name!r} is not a valid Avro name")
        fullname = _join(own_namespace, simple)
        if fullname in self.names:
            raise AvroSchemaError(f"{fullname!r} is defined twice")
        aliases = value.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise AvroSchemaError(f"aliases of {fullname!r} must be a list of names")
        full_aliases = frozenset(a if "." in a else _join(own_namespace, a) for a in aliases)
        return fullname, own_namespace, full_aliases

    def _record(self, value: dict[str, Any], namespace: str) -> _Record:
        fullname, own_namespace, aliases = self._define(value, namespace)
        record = _Record(fullname, aliases)
        # Registered before its fields so that a field may refer to the record itself.
        self.names[fullname] = record
        fields = _require(value, "fields")
        if not isinstance(fields, list):
            raise AvroSchemaError(f"fields of {fullname!r} must be a list")
        seen: set[str] = set()
        for entry in fields:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise AvroSchemaError(f"a field of {fullname!r} has no name: {entry!r}")
            name = entry["name"]
            if not _NAME.match(name):
                raise AvroSchemaError(f"{name!r} in {fullname!r} is not a valid field name")
            if name in seen:
                raise AvroSchemaError(f"{fullname!r} has two fields named {name!r}")
            seen.add(name)
            field_type = self.parse(_require(entry, "type"), own_namespace)
            aliases_value = entry.get("aliases", [])
            field_aliases = (
                frozenset(aliases_value) if isinstance(aliases_value, list) else frozenset()
            )
            record.fields.append(_Field(name, field_type, "default" in entry, field_aliases))
        return record

    def _enum(self, value: dict[str, Any], namespace: str) -> _Enum:
        fullname, _, aliases = self._define(value, namespace)
        symbols = _require(value, "symbols")
        if not isinstance(symbols, list) or not all(
            isinstance(s, str) and _NAME.match(s) for s in symbols
        ):
            raise AvroSchemaError(f"symbols of {fullname!r} must be a list of names")
        if len(set(symbols)) != len(symbols):
            raise AvroSchemaError(f"{fullname!r} lists a symbol twice")
        default = value.get("default")
        if default is not None and default not in symbols:
            raise AvroSchemaError(f"default {default!r} of {fullname!r} is not one of its symbols")
        node = _Enum(fullname, aliases, list(symbols), default)
        self.names[fullname] = node
        return node

    def _fixed(self, value: dict[str, Any], namespace: str) -> _Fixed:
        fullname, _, aliases = self._define(value, namespace)
        size = _require(value, "size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise AvroSchemaError(f"size of {fullname!r} must be a non-negative integer")
        node = _Fixed(fullname, aliases, size)
        self.names[fullname] = node
        return node


def _join(namespace: str, name: str) -> str:
    return f"{namespace}.{name}" if namespace else name


def _require(value: dict[str, Any], key: str) -> Any:
    if key not in value:
        raise AvroSchemaError(f"{value.get('type', 'schema')} without {key!r}: {value!r}")
    return value[key]


def _parse(schema: Any) -> _Type:
    return _Parser().parse(schema, "")


def validate_schema(schema: Any) -> None:
    """Raise `AvroSchemaError` unless ``schema`` (parsed JSON) is a valid Avro schema."""
    _parse(schema)
    try:
        # fastavro checks what our own parser does not: default values against their types.
        fastavro.parse_schema(copy.deepcopy(schema))
    except (SchemaParseException, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise AvroSchemaError(str(exc) or type(exc).__name__) from None


def parse_schema_text(text: str) -> Any:
    """Parse and validate registered schema text; `AvroSchemaError` when it is not Avro."""
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        # Avro also accepts a bare primitive name without JSON quotes.
        if text.strip() in PRIMITIVES:
            return text.strip()
        raise AvroSchemaError(f"not JSON: {exc}") from None
    validate_schema(schema)
    return schema


def canonical_text(schema: Any) -> str:
    """A key under which the same schema, however spaced or ordered, is found again."""
    return json.dumps(_strip_primitive_wrappers(schema), sort_keys=True, separators=(",", ":"))


def _strip_primitive_wrappers(value: Any) -> Any:
    # Avro prints {"type": "int"} as "int", so the registry treats the two as one schema.
    if isinstance(value, dict):
        if set(value) == {"type"} and value["type"] in PRIMITIVES:
            return value["type"]
        return {key: _strip_primitive_wrappers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_strip_primitive_wrappers(item) for item in value]
    return value


# --- Resolution check --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Problem:
    """One incompatibility; ``template`` names the two sides as ``{reader}`` and ``{writer}``."""

    error_type: str
    path: str
    template: str
    info: str

    def describe(self, reader: str, writer: str) -> str:
        return self.template.format(reader=reader, writer=writer, path=self.path)


class _Checker:
    def __init__(self) -> None:
        # Pairs being compared further up the stack: recursive types are assumed to match there,
        # which is how Avro's checker terminates on self-referencing records.
        self._in_progress: set[tuple[int, int]] = set()
        self._compatible: set[tuple[int, int]] = set()

    def check(self, reader: _Type, writer: _Type, path: str) -> list[_Problem]:
        key = (id(reader), id(writer))
        if key in self._in_progress or key in self._compatible:
            return []
        self._in_progress.add(key)
        try:
            problems = self._check(reader, writer, path)
        finally:
            self._in_progress.discard(key)
        if not problems:
            self._compatible.add(key)
        return problems

    def _check(self, reader: _Type, writer: _Type, path: str) -> list[_Problem]:
        if isinstance(writer, _Union):
            # Data may have been written with any branch: each must be readable.
            return [
                problem
                for index, branch in enumerate(writer.branches)
                for problem in self.check(reader, branch, f"{path}/{index}")
            ]
        if isinstance(reader, _Union):
            return self._reader_union(reader, writer, path)
        problems: list[_Problem]
        match reader, writer:
            case _Primitive(), _Primitive() if reader.name == writer.name or (
                reader.name in _PROMOTIONS.get(writer.name, frozenset())
            ):
                problems = []
            case _Array(), _Array():
                problems = self.check(reader.items, writer.items, f"{path}/items")
            case _Map(), _Map():
                problems = self.check(reader.values, writer.values, f"{path}/values")
            case _Record(), _Record():
                problems = self._name(reader, writer, path) or self._record(reader, writer, path)
            case _Enum(), _Enum():
                problems = self._name(reader, writer, path) or self._enum(reader, writer, path)
            case _Fixed(), _Fixed():
                problems = self._name(reader, writer, path) or self._fixed(reader, writer, path)
            case _:
                problems = [
                    _Problem(
                        "TYPE_MISMATCH",
                        path,
                        "The type (path '{path}') of a field in the {reader} schema does not "
                        "match with the {writer} schema",
                        f"reader type: {_kind(reader).upper()} not compatible with writer type: "
                        f"{_kind(writer).upper()}",
                    )
                ]
        return problems

    def _reader_union(self, reader: _Union, writer: _Type, path: str) -> list[_Problem]:
        if any(not self.check(branch, writer, path) for branch in reader.branches):
            return []
        return [
            _Problem(
                "MISSING_UNION_BRANCH",
                path,
                "The {reader} schema is missing a type inside a union field at path '{path}' "
                "in the {writer} schema",
                f"reader union lacking writer type: {_kind(writer).upper()}",
            )
        ]

    @staticmethod
    def _name(reader: _Named, writer: _Named, path: str) -> list[_Problem]:
        if reader.name == writer.name or writer.fullname in reader.aliases:
            return []
        return [
            _Problem(
                "NAME_MISMATCH",
                f"{path}/name",
                "The name of the schema has changed (path '{path}')",
                f"expected: {writer.fullname}",
            )
        ]

    def _record(self, reader: _Record, writer: _Record, path: str) -> list[_Problem]:
        by_name = {f.name: f for f in writer.fields}
        problems: list[_Problem] = []
        for index, reader_field in enumerate(reader.fields):
            writer_field = by_name.get(reader_field.name)
            if writer_field is None:
                writer_field = next(
                    (by_name[a] for a in sorted(reader_field.aliases) if a in by_name), None
                )
            field_path = f"{path}/fields/{index}"
            if writer_field is None:
                if not reader_field.has_default:
                    problems.append(
                        _Problem(
                            "READER_FIELD_MISSING_DEFAULT_VALUE",
                            field_path,
                            f"The field '{reader_field.name}' at path '{{path}}' in the {{reader}} "
                            "schema has no default value and is missing in the {writer} schema",
                            reader_field.name,
                        )
                    )
                continue
            problems += self.check(reader_field.type, writer_field.type, f"{field_path}/type")
        return problems

    @staticmethod
    def _enum(reader: _Enum, writer: _Enum, path: str) -> list[_Problem]:
        missing = [s for s in writer.symbols if s not in reader.symbols]
        if not missing or reader.default is not None:
            return []
        return [
            _Problem(
                "MISSING_ENUM_SYMBOLS",
                f"{path}/symbols",
                f"The {{reader}} schema is missing enum symbols '{missing}' at path '{{path}}' "
                "in the {writer} schema",
                str(missing),
            )
        ]

    @staticmethod
    def _fixed(reader: _Fixed, writer: _Fixed, path: str) -> list[_Problem]:
        if reader.size == writer.size:
            return []
        return [
            _Problem(
                "FIXED_SIZE_MISMATCH",
                f"{path}/size",
                "The size of FIXED type field at path '{path}' in the {reader} schema does not "
                "match with the {writer} schema",
                f"expected: {writer.size}, found: {reader.size}",
            )
        ]


def _problems(reader: Any, writer: Any) -> list[_Problem]:
    return _Checker().check(_parse(reader), _parse(writer), "")


def can_read(reader_schema: Any, writer_schema: Any) -> list[str]:
    """Why a reader with ``reader_schema`` cannot decode ``writer_schema`` data; empty if it can.

    Both schemas are parsed JSON. Raises `AvroSchemaError` when either is not a valid schema.
    """
    return [
        f"{p.error_type}: {p.describe('reader', 'writer')} ({p.info})"
        for p in _problems(reader_schema, writer_schema)
    ]


# --- Compatibility levels ----------------------------------------------------------------------


@dataclass(frozen=True)
class CompatibilityFailure:
    """The newest existing schema the new one is incompatible with, and why (Confluent's words)."""

    index: int
    messages: list[str]


def _confluent_messages(problems: list[_Problem], reader: str, writer: str) -> list[str]:
    return [
        f"{{errorType:'{p.error_type}', description:'{p.describe(reader, writer)}', "
        f"additionalInfo:'{p.info}'}}"
        for p in problems
    ]


def first_incompatibility(
    level: CompatibilityLevel | str, new_schema: Any, existing_schemas: Sequence[Any]
) -> CompatibilityFailure | None:
    """Check ``new_schema`` against ``existing_schemas`` (oldest first) under ``level``.

    Like Confluent, the newest schemas are checked first and the first incompatible one is
    reported; non-transitive levels check only the latest. Raises `ValueError` for an unknown
    level and `AvroSchemaError` for an invalid schema.
    """
    level = CompatibilityLevel(level)
    if level is CompatibilityLevel.NONE or not existing_schemas:
        return None
    transitive = level.name.endswith("_TRANSITIVE")
    backward = level.name.startswith(("BACKWARD", "FULL"))
    forward = level.name.startswith(("FORWARD", "FULL"))
    indexes = range(len(existing_schemas) - 1, -1 if transitive else len(existing_schemas) - 2, -1)
    new = _parse(new_schema)
    for index in indexes:
        old = _parse(existing_schemas[index])
        messages: list[str] = []
        if backward:
            messages += _confluent_messages(_Checker().check(new, old, ""), "new", "old")
        if forward:
            messages += _confluent_messages(_Checker().check(old, new, ""), "old", "new")
        if messages:
            return CompatibilityFailure(index, messages)
    return None


def check_compatibility(
    level: CompatibilityLevel | str, new_schema: Any, existing_schemas_oldest_first: Sequence[Any]
) -> list[str]:
    """Why ``new_schema`` may not follow the existing schemas under ``level``; empty if it may.

    BACKWARD: the new schema reads the latest's data; FORWARD: the latest reads the new one's;
    FULL: both; the ``_TRANSITIVE`` levels hold against every existing schema; NONE: anything.
    Raises `ValueError` for an unknown level and `AvroSchemaError` for an invalid schema.
    """
    failure = first_incompatibility(level, new_schema, existing_schemas_oldest_first)
    return [] if failure is None else failure.messages
