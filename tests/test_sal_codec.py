"""SAL's wire format: golden vectors from the real salobj 8.2.12, and the codec's own rules."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import Any

import fastavro
import pytest

from blocks.site import CscName, State
from clients.registry import SchemaRegistryClient
from clients.sal import SalSchemaError, transition_step
from clients.sal.codec import (
    TAI_MINUS_UTC_S,
    SalCodec,
    TopicWriter,
    message_key,
    pack_value,
    parse_key,
    private_stamps,
    rev_code,
    topic_name,
    unpack_value,
)
from clients.sal.errors import SalDecodeError, TransitionError
from sim.sal_schemas import (
    DEFAULT_CATALOG,
    FieldSpec,
    TopicCatalog,
    TopicSpec,
    command_types,
    component_schemas,
    indexed_components,
)
from tests.conftest import REFERENCE, needs_reference

WIRE = REFERENCE / "salobj-wire"
GOLDEN_TOPICS = (
    "ackcmd",
    "command_enable",
    "command_start",
    "logevent_heartbeat",
    "logevent_summaryState",
)
TEST_1 = CscName(name="Test", index=1)


def _messages(sal_name: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((WIRE / f"{sal_name}.messages.json").read_text())
    return data


def _avsc(sal_name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((WIRE / f"{sal_name}.avsc.json").read_text())
    return schema


# --- Golden vectors ---------------------------------------------------------------------------


@needs_reference()
@pytest.mark.parametrize("sal_name", GOLDEN_TOPICS)
def test_keys_are_byte_identical(sal_name: str) -> None:
    for path in sorted(WIRE.glob(f"{sal_name}.*.key.bin")):
        assert message_key(TEST_1, sal_name) == path.read_bytes()
    for message in _messages(sal_name):
        assert message_key(TEST_1, sal_name) == bytes.fromhex(message["key_hex"])
        key = parse_key(bytes.fromhex(message["key_hex"]))
        assert key is not None
        assert (key.csc, key.topic) == (TEST_1, sal_name)


@needs_reference()
@pytest.mark.parametrize("sal_name", GOLDEN_TOPICS)
def test_our_schemas_are_salobjs(sal_name: str) -> None:
    """The simulated CSCs register exactly what salobj registers, so revCodes match too."""
    ours = component_schemas("Test", indexed=True)[sal_name]
    assert ours == _avsc(sal_name)
    registered = (WIRE / f"{sal_name}.registered-schema-string.txt").read_text()
    assert json.dumps(ours) == registered
    assert rev_code(ours) == _messages(sal_name)[0]["decoded"]["private_revCode"]


@needs_reference()
def test_test_component_has_salobjs_subjects_and_cmdtypes() -> None:
    subjects = json.loads((WIRE / "subjects.json").read_text())
    schemas = component_schemas("Test", indexed=True)
    assert sorted(f"{topic_name('sal', 'Test', n)}-value" for n in schemas) == sorted(subjects)
    cmdtypes = command_types(schemas)
    # Seen in the recorded acks: disable 2, enable 3, standby 9, start 10, wait 11.
    assert {k: cmdtypes[k] for k in ("disable", "enable", "standby", "start", "wait")} == {
        "disable": 2,
        "enable": 3,
        "standby": 9,
        "start": 10,
        "wait": 11,
    }
    recorded = {m["decoded"]["cmdtype"] for m in _messages("ackcmd")}
    assert recorded <= set(cmdtypes.values())


@needs_reference()
@pytest.mark.parametrize("sal_name", GOLDEN_TOPICS)
def test_encoding_the_recorded_values_gives_the_recorded_bytes(sal_name: str) -> None:
    for message in _messages(sal_name):
        writer = TopicWriter.create(
            topic_name("sal", "Test", sal_name), message["schema_id"], _avsc(sal_name)
        )
        _, value = writer.encode(message["decoded"])
        assert value == bytes.fromhex(message["value_hex"])


@needs_reference()
@pytest.mark.parametrize("sal_name", GOLDEN_TOPICS)
async def test_recorded_messages_decode_through_our_registry(
    sal_name: str, registry_client: SchemaRegistryClient
) -> None:
    """Register the recorded schema in our registry, point the recorded bytes at the id our
    registry gave it (the recorded ids belong to the capturing registry), decode."""
    subject = f"{topic_name('sal', 'Test', sal_name)}-value"
    our_id = await registry_client.register(subject, _avsc(sal_name))
    codec = SalCodec(registry_client)
    for message in _messages(sal_name):
        value = bytes.fromhex(message["value_hex"])
        recorded_id, body = unpack_value(value)
        assert (value[0], recorded_id) == (message["magic"], message["schema_id"])
        decoded = await codec.decode(struct.pack(">bI", 0, our_id) + body)
        assert decoded == message["decoded"]
        assert message["headers"] == []


@needs_reference()
def test_recorded_stamps_follow_salobjs_rules() -> None:
    """TAI = UTC + 37 s, rcvStamp 0 on the wire, Kafka CreateTime = efdStamp in ms."""
    for sal_name in GOLDEN_TOPICS:
        for message in _messages(sal_name):
            data = message["decoded"]
            assert data["private_sndStamp"] - data["private_efdStamp"] == pytest.approx(37.0)
            assert data["private_kafkaStamp"] == data["private_sndStamp"]
            assert data["private_rcvStamp"] == 0.0
            assert message["timestamp_type"] == 0
            assert message["timestamp"] / 1000 == pytest.approx(data["private_efdStamp"], abs=0.05)


@needs_reference()
def test_recorded_acks_echo_the_command() -> None:
    commands = {
        m["decoded"]["private_seqNum"]: m["decoded"]
        for name in ("command_start", "command_enable")
        for m in _messages(name)
    }
    for message in _messages("ackcmd"):
        ack = message["decoded"]
        command = commands.get(ack["private_seqNum"])
        if command is None:
            continue
        assert ack["identity"] == command["private_identity"]
        assert ack["origin"] == command["private_origin"]
        assert ack["salIndex"] == command["salIndex"]


# --- The codec's own rules --------------------------------------------------------------------


def test_keys_of_non_indexed_components_have_no_index() -> None:
    key = message_key(CscName(name="ATDome"), "logevent_summaryState")
    assert key == b'{ "name": "ATDome", "topic": "logevent_summaryState" }'
    parsed = parse_key(key)
    assert parsed is not None
    assert parsed.csc == CscName(name="ATDome", index=0)
    assert parse_key(b"") is None
    assert parse_key(b"not json") is None


def test_private_stamps_are_tai_and_utc() -> None:
    stamps = private_stamps(1_700_000_000.25)
    assert stamps["private_efdStamp"] == 1_700_000_000.25
    assert stamps["private_sndStamp"] == stamps["private_kafkaStamp"] == 1_700_000_000.25 + 37
    assert stamps["private_rcvStamp"] == 0.0
    assert TAI_MINUS_UTC_S == 37.0


def test_writer_fills_defaults_and_rejects_unknown_fields() -> None:
    schema = component_schemas("ATDome", indexed=False)["command_start"]
    writer = TopicWriter.create("lsst.sal.ATDome.command_start", 7, schema)
    record, value = writer.encode({"private_seqNum": 5})
    assert record["configurationOverride"] == ""
    assert "salIndex" not in record
    assert unpack_value(value)[0] == 7
    decoded = fastavro.schemaless_reader(io.BytesIO(value[5:]), fastavro.parse_schema(schema), None)
    assert decoded == record
    with pytest.raises(SalSchemaError, match="no field configurationOveride"):
        writer.encode({"configurationOveride": "x"})
    with pytest.raises(SalSchemaError, match="does not fit"):
        writer.encode({"private_seqNum": "five"})


def test_values_not_in_the_wire_format_are_refused() -> None:
    with pytest.raises(SalDecodeError, match="Confluent wire format"):
        unpack_value(b"\x00\x01")
    with pytest.raises(SalDecodeError, match="magic byte 1"):
        unpack_value(b"\x01\x00\x00\x00\x01\x02")
    record_schema = {"type": "record", "name": "r", "fields": [{"name": "a", "type": "int"}]}
    value = pack_value(3, fastavro.parse_schema(record_schema), {"a": 5})
    assert unpack_value(value) == (3, b"\x0a")


def test_avro_ints_are_ints_and_salindex_only_when_indexed() -> None:
    indexed = component_schemas("ESS", indexed=True)["logevent_summaryState"]
    plain = component_schemas("ATDome", indexed=False)["logevent_summaryState"]
    assert indexed["fields"][0]["name"] == "salIndex"
    assert "salIndex" not in [f["name"] for f in plain["fields"]]
    types = {f["name"]: f["type"] for f in indexed["fields"]}
    assert types["summaryState"] == types["private_seqNum"] == types["private_origin"] == "int"
    for field in indexed["fields"]:
        assert {"default", "description", "units"} <= field.keys()
    assert indexed["namespace"] == "lsst.sal.ESS"
    assert indexed["description"]


def test_catalog_gives_components_their_generics_and_own_topics() -> None:
    queue = DEFAULT_CATALOG.topics("ScriptQueue")
    assert {"command_add", "logevent_script", "logevent_queue", "ackcmd"} <= queue.keys()
    assert "logevent_configurationApplied" not in queue  # ScriptQueue is not configurable
    add = {f.name for f in queue["command_add"].fields}
    assert {"isStandard", "path", "config", "location", "logLevel", "executionId"} <= add
    assert command_types(queue)["add"] == 1  # right after ackcmd
    assert "command_enterControl" in DEFAULT_CATALOG.topics("ATCamera")
    assert "command_enterControl" not in DEFAULT_CATALOG.topics("ATDome")
    assert "logevent_imageInOODS" in DEFAULT_CATALOG.topics("MTOODS")

    catalog = DEFAULT_CATALOG.copy()
    rehearse = TopicSpec(
        "command_rehearse", "Rehearse.", (FieldSpec("pace", "double", "How fast."),)
    )
    catalog.add_topics("ATCamera", rehearse)
    assert "command_rehearse" in catalog.topics("ATCamera")
    assert "command_rehearse" not in DEFAULT_CATALOG.topics("ATCamera")
    catalog.set_generics("Thing", ["csc"])
    assert "logevent_configurationApplied" not in catalog.topics("Thing")
    with pytest.raises(ValueError, match="neither"):
        catalog.set_generics("Thing", ["nonsense"])
    with pytest.raises(ValueError, match="unknown SAL type"):
        FieldSpec("x", "unsigned long")
    assert isinstance(TopicCatalog(), TopicCatalog)


def test_indexed_components_come_from_the_inventory() -> None:
    names = [CscName(name="ESS", index=104), CscName(name="ATDome"), CscName(name="DSM", index=1)]
    assert indexed_components(names) == {"ESS", "DSM"}


@pytest.mark.parametrize(
    ("current", "target", "step"),
    [
        (State.STANDBY, State.ENABLED, ("start", State.DISABLED)),
        (State.DISABLED, State.ENABLED, ("enable", State.ENABLED)),
        (State.ENABLED, State.STANDBY, ("disable", State.DISABLED)),
        (State.DISABLED, State.STANDBY, ("standby", State.STANDBY)),
        (State.STANDBY, State.OFFLINE, ("exitControl", State.OFFLINE)),
        (State.FAULT, State.OFFLINE, ("standby", State.STANDBY)),
        (State.FAULT, State.ENABLED, ("standby", State.STANDBY)),
        (State.OFFLINE, State.STANDBY, ("enterControl", State.STANDBY)),
    ],
)
def test_transition_steps(current: State, target: State, step: tuple[str, State]) -> None:
    assert transition_step(current, target) == step


def test_fault_cannot_be_commanded() -> None:
    with pytest.raises(TransitionError):
        transition_step(State.ENABLED, State.FAULT)


def test_reference_location_is_beside_the_checkout() -> None:
    assert Path(__file__).parents[2] / "shared" / "reference" == REFERENCE
