"""SAL's Kafka wire format: topic names, message keys, private fields and Avro values.

A value is Confluent's wire format: byte 0, the 4-byte big-endian schema id, then the Avro binary
body. A reader decodes every message with its writer's schema, fetched by id from the schema
registry; a client writes commands with the newest schema registered for the command's subject.
This module bundles no schema: the CSCs register theirs when they start (salobj-wire/README.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import fastavro

from blocks.site import CscName
from clients.registry import (
    SchemaRegistryClient,
    SchemaRegistryError,
    SchemaRegistryNotFoundError,
)
from clients.sal.errors import SalDecodeError, SalSchemaError

__all__ = [
    "MAGIC",
    "TAI_MINUS_UTC_S",
    "SalCodec",
    "SalKey",
    "TopicWriter",
    "kafka_timestamp_ms",
    "message_key",
    "pack_value",
    "parse_key",
    "private_stamps",
    "rev_code",
    "topic_name",
    "unpack_value",
    "value_subject",
]

MAGIC = 0
#: TAI - UTC since 2017; salobj's ``private_sndStamp``/``private_kafkaStamp`` are TAI.
TAI_MINUS_UTC_S = 37.0
_HEADER = struct.Struct(">bI")


def topic_name(sal_subname: str, component: str, sal_name: str) -> str:
    """``lsst.{subname}.{Component}.{sal_name}``, one topic shared by all indices."""
    return f"lsst.{sal_subname}.{component}.{sal_name}"


def value_subject(topic: str) -> str:
    """The registry subject of a topic's values (Confluent's TopicNameStrategy)."""
    return f"{topic}-value"


def message_key(csc: CscName, sal_name: str, *, indexed: bool | None = None) -> bytes:
    """The key salobj writes for events, commands and acks, with salobj's exact spacing.

    ``"index"`` is present only for indexed components; by default this project recognises them
    by a non-zero index (``Name:0`` is a non-indexed component). Telemetry keys are empty.
    """
    if csc.index if indexed is None else indexed:
        text = f'{{ "name": "{csc.name}", "index": {csc.index}, "topic": "{sal_name}" }}'
    else:
        text = f'{{ "name": "{csc.name}", "topic": "{sal_name}" }}'
    return text.encode()


@dataclass(frozen=True)
class SalKey:
    """A parsed message key; ``index`` is 0 when the key has none."""

    name: str
    index: int
    topic: str

    @property
    def csc(self) -> CscName:
        return CscName(name=self.name, index=self.index)


def parse_key(data: bytes | None) -> SalKey | None:
    """Parse a SAL key; None for an empty key (telemetry) or one that is not SAL's JSON."""
    if not data:
        return None
    try:
        parsed = json.loads(data)
        return SalKey(str(parsed["name"]), int(parsed.get("index", 0)), str(parsed["topic"]))
    except (ValueError, KeyError, TypeError):
        return None


def private_stamps(utc: float | None = None) -> dict[str, float]:
    """The time fields salobj fills when it writes: TAI send/Kafka stamps, UTC EFD stamp."""
    now = time.time() if utc is None else utc
    tai = now + TAI_MINUS_UTC_S
    return {
        "private_sndStamp": tai,
        "private_rcvStamp": 0.0,
        "private_efdStamp": now,
        "private_kafkaStamp": tai,
    }


def kafka_timestamp_ms(record: Mapping[str, Any]) -> int:
    """The Kafka CreateTime salobj gives a message: its ``private_efdStamp`` in milliseconds."""
    return int(float(record["private_efdStamp"]) * 1000)


def rev_code(schema: Mapping[str, Any]) -> str:
    """``private_revCode``: the first 8 hex digits of the MD5 of the schema's indented JSON,
    as ts_xml computes it from the schema it registers."""
    text = json.dumps(schema, indent=4)
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()[:8]


def pack_value(schema_id: int, parsed_schema: Any, record: Mapping[str, Any]) -> bytes:
    """Encode ``record`` in the Confluent wire format."""
    buffer = io.BytesIO()
    buffer.write(_HEADER.pack(MAGIC, schema_id))
    fastavro.schemaless_writer(buffer, parsed_schema, dict(record))
    return buffer.getvalue()


def unpack_value(value: bytes) -> tuple[int, bytes]:
    """Split a Confluent value into its schema id and Avro body.

    Raises
    ------
    SalDecodeError
        The value is too short or does not start with the magic byte 0.
    """
    if len(value) < _HEADER.size:
        raise SalDecodeError(f"a {len(value)}-byte value is not in the Confluent wire format")
    magic, schema_id = _HEADER.unpack_from(value)
    if magic != MAGIC:
        raise SalDecodeError(f"magic byte {magic}, not {MAGIC}: not the Confluent wire format")
    return schema_id, value[_HEADER.size :]


@dataclass(frozen=True)
class TopicWriter:
    """Writes one topic's values with one registered schema.

    Every field the record leaves out gets the schema's default, as salobj's dataclasses do.
    """

    topic: str
    schema_id: int
    schema: dict[str, Any]
    parsed: Any = field(repr=False)
    defaults: dict[str, Any] = field(repr=False)
    rev_code: str = ""

    @classmethod
    def create(cls, topic: str, schema_id: int, schema: dict[str, Any]) -> TopicWriter:
        """Build a writer for ``schema`` (registered as ``schema_id``).

        Raises
        ------
        SalSchemaError
            The schema is not an Avro record schema.
        """
        try:
            parsed = fastavro.parse_schema(schema)
            fields = schema["fields"]
            defaults = {f["name"]: f.get("default") for f in fields}
        except (fastavro.schema.SchemaParseException, KeyError, TypeError, ValueError) as exc:
            raise SalSchemaError(f"{topic}: schema {schema_id} is not usable: {exc}") from exc
        return cls(topic, schema_id, schema, parsed, defaults, rev_code(schema))

    @property
    def field_names(self) -> frozenset[str]:
        return frozenset(self.defaults)

    def encode(self, values: Mapping[str, Any]) -> tuple[dict[str, Any], bytes]:
        """The full record (defaults filled in) and its encoded value.

        Raises
        ------
        SalSchemaError
            ``values`` names a field the schema does not have, or a value does not fit its type.
        """
        unknown = set(values) - self.defaults.keys()
        if unknown:
            known = ", ".join(sorted(n for n in self.defaults if not n.startswith("private_")))
            raise SalSchemaError(
                f"{self.topic} has no field {', '.join(sorted(unknown))} (its fields: {known})"
            )
        record = {**self.defaults, **values}
        try:
            return record, pack_value(self.schema_id, self.parsed, record)
        except (TypeError, ValueError, AttributeError, struct.error) as exc:
            raise SalSchemaError(f"{self.topic}: a value does not fit the schema: {exc}") from exc


class SalCodec:
    """Decodes any SAL message by its writer's schema and writes with the newest schemas.

    Parameters
    ----------
    registry
        The schema registry client (its ``get_schema`` caches schemas by id).
    latest_ttl_s
        How long the newest schema of a subject is reused before asking the registry again: a
        CSC restarted with a new XML version may have registered a new one.
    """

    def __init__(self, registry: SchemaRegistryClient, *, latest_ttl_s: float = 30.0) -> None:
        self.registry = registry
        self._latest_ttl_s = latest_ttl_s
        self._parsed: dict[int, Any] = {}
        self._fetching: dict[int, asyncio.Task[Any]] = {}
        self._writers: dict[str, tuple[float, TopicWriter]] = {}
        # A few requests at a time reuse kept-alive connections; a burst opens one each and
        # is slower (1,000 schemas: ~2 s at 4 at a time, ~4 s at 16).
        self._fetch_limit = asyncio.Semaphore(4)

    async def decode(self, value: bytes) -> dict[str, Any]:
        """Decode a Confluent-framed Avro value with its writer's schema.

        Raises
        ------
        SalDecodeError
            Not the wire format, or the body does not match the writer's schema.
        SalSchemaError
            The registry has no schema with the value's id, or cannot be reached.
        """
        schema_id, body = unpack_value(value)
        parsed = await self.reader_schema(schema_id)
        try:
            decoded = fastavro.schemaless_reader(io.BytesIO(body), parsed, None)
        except (EOFError, ValueError, TypeError, IndexError, UnicodeDecodeError) as exc:
            raise SalDecodeError(
                f"value with schema id {schema_id} does not decode: {exc}"
            ) from exc
        if not isinstance(decoded, dict):
            raise SalDecodeError(f"schema {schema_id} is not a record schema")
        return decoded

    def prefetch(self, value: bytes | None) -> None:
        """Start fetching the writer schema of ``value`` (if not known) without waiting."""
        if not value or len(value) < _HEADER.size or value[0] != MAGIC:
            return
        schema_id = _HEADER.unpack_from(value)[1]
        if schema_id not in self._parsed and schema_id not in self._fetching:
            _ = self._start_fetch(schema_id)

    def _start_fetch(self, schema_id: int) -> asyncio.Task[Any]:
        task = asyncio.create_task(self._fetch_schema(schema_id))
        self._fetching[schema_id] = task
        task.add_done_callback(lambda _: self._fetching.pop(schema_id, None))
        # A prefetch nobody awaits must not be reported as "exception never retrieved".
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task

    async def reader_schema(self, schema_id: int) -> Any:
        """The parsed writer schema with this id; concurrent callers share one fetch.

        Raises
        ------
        SalSchemaError
            The registry has no such schema, or cannot be reached, or it does not parse.
        """
        parsed = self._parsed.get(schema_id)
        if parsed is not None:
            return parsed
        task = self._fetching.get(schema_id) or self._start_fetch(schema_id)
        return await asyncio.shield(task)

    async def _fetch_schema(self, schema_id: int) -> Any:
        try:
            async with self._fetch_limit:
                schema = await self.registry.get_schema(schema_id)
        except SchemaRegistryError as exc:
            raise SalSchemaError(f"schema id {schema_id}: {exc}") from exc
        try:
            parsed = fastavro.parse_schema(schema)
        except (fastavro.schema.SchemaParseException, KeyError, TypeError, ValueError) as exc:
            raise SalSchemaError(f"schema id {schema_id} does not parse: {exc}") from exc
        self._parsed[schema_id] = parsed
        return parsed

    async def latest_writer(self, topic: str) -> TopicWriter:
        """A writer for ``topic`` with the newest schema registered for it.

        Raises
        ------
        SalSchemaError
            No schema is registered for the topic (no CSC of that component ever started, or
            the command does not exist), or the registry cannot be reached.
        """
        now = time.monotonic()
        cached = self._writers.get(topic)
        if cached is not None and now - cached[0] < self._latest_ttl_s:
            return cached[1]
        subject = value_subject(topic)
        try:
            latest = await self.registry.get_latest(subject)
        except SchemaRegistryNotFoundError as exc:
            raise SalSchemaError(
                f"no schema registered for {subject}: the topic does not exist or no CSC of "
                "its component has started"
            ) from exc
        except SchemaRegistryError as exc:
            raise SalSchemaError(f"{subject}: {exc}") from exc
        writer = TopicWriter.create(topic, latest.schema_id, latest.avro_schema)
        self._writers[topic] = (now, writer)
        return writer

    def forget(self, topic: str | None = None) -> None:
        """Ask the registry again next time (for one topic, or all)."""
        if topic is None:
            self._writers.clear()
        else:
            self._writers.pop(topic, None)
