"""Conformance: Confluent's own registry client and Avro serde against the simulated registry.

confluent-kafka is synchronous, so each call runs in a worker thread while the registry serves
from the event loop.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from sim.http import serve_app
from sim.registry import SchemaRegistryState, create_registry_app
from tests.test_registry import (
    SUMMARY_STATE,
    SUMMARY_STATE_EXTENDED,
    SUMMARY_STATE_V1,
    SUMMARY_STATE_WIDENED,
)

T = TypeVar("T")


class Confluent:
    """confluent-kafka's client on the simulated registry; `call` runs a method off the loop."""

    def __init__(self, url: str, state: SchemaRegistryState) -> None:
        self.url = url
        self.state = state
        # No retry waits: the tests that fail on purpose should fail at once.
        self.client = SchemaRegistryClient({"url": url, "max.retries": 0})

    async def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(function, *args, **kwargs)


@pytest.fixture
async def confluent() -> AsyncIterator[Confluent]:
    app = create_registry_app()
    async with serve_app(app, name="registry") as url:
        wrapper = Confluent(url, app.state.registry)
        try:
            yield wrapper
        finally:
            await wrapper.call(wrapper.client.close)


def avro(schema: dict[str, Any]) -> Schema:
    return Schema(json.dumps(schema), "AVRO")


async def test_register_lookup_and_get_by_id(confluent: Confluent) -> None:
    c = confluent.client
    schema_id = await confluent.call(c.register_schema, SUMMARY_STATE, avro(SUMMARY_STATE_V1))
    assert schema_id == 1
    # A fresh client has no cache: every answer below comes from the server.
    fresh = SchemaRegistryClient({"url": confluent.url})
    try:
        found = await confluent.call(fresh.lookup_schema, SUMMARY_STATE, avro(SUMMARY_STATE_V1))
        assert (found.subject, found.version, found.schema_id) == (SUMMARY_STATE, 1, schema_id)
        by_id = await confluent.call(fresh.get_schema, schema_id)
        assert by_id.schema_type == "AVRO"
        assert by_id.schema_str is not None
        assert json.loads(by_id.schema_str) == SUMMARY_STATE_V1
        latest = await confluent.call(fresh.get_latest_version, SUMMARY_STATE)
        assert (latest.version, latest.schema_id) == (1, schema_id)
        assert await confluent.call(fresh.get_subjects) == [SUMMARY_STATE]
        assert await confluent.call(fresh.get_versions, SUMMARY_STATE) == [1]
        pairs = await confluent.call(fresh.get_schema_versions, schema_id)
        assert [(p.subject, p.version) for p in pairs] == [(SUMMARY_STATE, 1)]
        assert await confluent.call(fresh.get_schema_types) == ["AVRO"]
    finally:
        fresh.close()


async def test_lookup_of_an_unknown_schema_is_40403(confluent: Confluent) -> None:
    c = confluent.client
    await confluent.call(c.register_schema, SUMMARY_STATE, avro(SUMMARY_STATE_V1))
    with pytest.raises(SchemaRegistryError) as caught:
        await confluent.call(c.lookup_schema, SUMMARY_STATE, avro(SUMMARY_STATE_EXTENDED))
    assert (caught.value.http_status_code, caught.value.error_code) == (404, 40403)


async def test_compatibility_config_and_tests(confluent: Confluent) -> None:
    c = confluent.client
    assert await confluent.call(c.get_compatibility) == "FORWARD"
    # Annotated as str, but the client hands back the registry's JSON answer.
    answer: Any = await confluent.call(c.set_compatibility, level="FULL")
    assert answer == {"compatibility": "FULL"}
    assert confluent.state.global_compatibility == "FULL"
    with pytest.raises(SchemaRegistryError) as caught:
        await confluent.call(c.get_compatibility, SUMMARY_STATE)
    assert caught.value.error_code == 40408
    await confluent.call(c.set_compatibility, SUMMARY_STATE, "FORWARD")
    assert await confluent.call(c.get_compatibility, SUMMARY_STATE) == "FORWARD"

    await confluent.call(c.register_schema, SUMMARY_STATE, avro(SUMMARY_STATE_V1))
    ok = await confluent.call(c.test_compatibility, SUMMARY_STATE, avro(SUMMARY_STATE_EXTENDED))
    assert ok is True
    widened = avro(SUMMARY_STATE_WIDENED)
    assert await confluent.call(c.test_compatibility, SUMMARY_STATE, widened) is False
    assert await confluent.call(c.test_compatibility_all_versions, SUMMARY_STATE, widened) is False

    with pytest.raises(SchemaRegistryError) as refused:
        await confluent.call(c.register_schema, SUMMARY_STATE, widened)
    assert (refused.value.http_status_code, refused.value.error_code) == (409, 409)
    assert "incompatible with an earlier schema" in refused.value.error_message
    assert [v.version for v in confluent.state.subjects[SUMMARY_STATE]] == [1]


async def test_delete_subject_soft_then_permanent(confluent: Confluent) -> None:
    c = confluent.client
    schema_id = await confluent.call(c.register_schema, SUMMARY_STATE, avro(SUMMARY_STATE_V1))
    assert await confluent.call(c.delete_subject, SUMMARY_STATE) == [1]
    assert await confluent.call(c.get_subjects) == []
    assert await confluent.call(c.delete_subject, SUMMARY_STATE, permanent=True) == [1]
    assert SUMMARY_STATE not in confluent.state.subjects
    fresh = SchemaRegistryClient({"url": confluent.url})
    try:
        with pytest.raises(SchemaRegistryError) as caught:
            await confluent.call(fresh.get_schema, schema_id)
        assert caught.value.error_code == 40403
    finally:
        fresh.close()


async def test_avro_serializer_round_trip(confluent: Confluent) -> None:
    c = confluent.client
    topic = "lsst.sal.Test.logevent_summaryState"
    serializer = AvroSerializer(c, json.dumps(SUMMARY_STATE_V1))
    deserializer = AvroDeserializer(c)
    context = SerializationContext(topic, MessageField.VALUE)
    value = {field["name"]: field["default"] for field in SUMMARY_STATE_V1["fields"]}
    value |= {"salIndex": 1, "private_seqNum": 7, "private_identity": "Test:1", "summaryState": 5}

    data = await confluent.call(serializer, value, context)
    # The Confluent wire format: magic byte 0, the schema id big-endian, then the Avro body.
    magic, schema_id = struct.unpack(">bI", data[:5])
    assert magic == 0
    assert confluent.state.subjects[SUMMARY_STATE][0].schema_id == schema_id
    assert await confluent.call(deserializer, data, context) == value
