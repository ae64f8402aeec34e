"""The simulated registry's Avro compatibility rules, checked rule by rule and level by level."""

from __future__ import annotations

from typing import Any

import pytest

from sim.avro_compat import (
    AvroSchemaError,
    CompatibilityLevel,
    can_read,
    canonical_text,
    check_compatibility,
    first_incompatibility,
    parse_schema_text,
    validate_schema,
)


def record(
    *fields: dict[str, Any], name: str = "logevent_summaryState", **extra: Any
) -> dict[str, Any]:
    return {
        "type": "record",
        "name": name,
        "namespace": "lsst.sal.Test",
        "fields": list(fields),
        **extra,
    }


def field(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


V1 = record(field("private_seqNum", "int", default=0), field("summaryState", "int", default=0))


# --- Records -----------------------------------------------------------------------------------


def test_identical_records_read_each_other() -> None:
    assert can_read(V1, V1) == []


def test_reader_field_without_default_missing_in_writer_is_incompatible() -> None:
    reader = record(*V1["fields"], field("heartbeat", "boolean"))
    problems = can_read(reader, V1)
    assert len(problems) == 1
    assert problems[0].startswith("READER_FIELD_MISSING_DEFAULT_VALUE")
    assert "'heartbeat'" in problems[0]
    assert "/fields/2" in problems[0]


def test_reader_field_with_default_missing_in_writer_is_fine() -> None:
    reader = record(*V1["fields"], field("heartbeat", "boolean", default=False))
    assert can_read(reader, V1) == []


def test_writer_field_missing_in_reader_is_skipped() -> None:
    reader = record(field("summaryState", "int"))
    assert can_read(reader, V1) == []


def test_reader_field_alias_finds_a_renamed_writer_field() -> None:
    reader = record(field("state", "int", aliases=["summaryState"]))
    assert can_read(reader, V1) == []
    assert can_read(record(field("state", "int")), V1) != []


@pytest.mark.parametrize(
    ("writer", "reader"),
    [
        ("int", "long"),
        ("int", "float"),
        ("int", "double"),
        ("long", "float"),
        ("long", "double"),
        ("float", "double"),
        ("string", "bytes"),
        ("bytes", "string"),
    ],
)
def test_legal_promotions(writer: str, reader: str) -> None:
    assert can_read(record(field("x", reader)), record(field("x", writer))) == []


@pytest.mark.parametrize(
    ("writer", "reader"),
    [
        ("long", "int"),
        ("double", "float"),
        ("float", "long"),
        ("int", "string"),
        ("boolean", "int"),
        ("string", "int"),
        ("null", "string"),
    ],
)
def test_illegal_retypes(writer: str, reader: str) -> None:
    problems = can_read(record(field("x", reader)), record(field("x", writer)))
    assert len(problems) == 1
    assert problems[0].startswith("TYPE_MISMATCH")
    assert "/fields/0/type" in problems[0]
    assert f"reader type: {reader.upper()}" in problems[0]


def test_record_name_must_match_unless_aliased() -> None:
    writer = record(field("x", "int"), name="logevent_old")
    problems = can_read(record(field("x", "int"), name="logevent_new"), writer)
    assert [p.split(":")[0] for p in problems] == ["NAME_MISMATCH"]
    aliased = record(field("x", "int"), name="logevent_new", aliases=["logevent_old"])
    assert can_read(aliased, writer) == []


def test_record_names_match_without_their_namespaces() -> None:
    # Avro's checker compares unqualified names; aliases are compared as full names.
    other_namespace = {**record(field("x", "int")), "namespace": "lsst.sal.ATDome"}
    assert can_read(other_namespace, record(field("x", "int"))) == []
    alias_elsewhere = {
        **record(field("x", "int"), name="renamed", aliases=["lsst.sal.Test.original"]),
        "namespace": "lsst.sal.ATDome",
    }
    assert can_read(alias_elsewhere, record(field("x", "int"), name="original")) == []
    wrong_alias = record(field("x", "int"), name="renamed", aliases=["other.original"])
    assert can_read(wrong_alias, record(field("x", "int"), name="original")) != []


def test_nested_records_are_checked_with_their_path() -> None:
    def outer(inner_fields: list[dict[str, Any]]) -> dict[str, Any]:
        inner = {"type": "record", "name": "Position", "fields": inner_fields}
        return record(field("id", "int"), field("position", inner))

    writer = outer([field("x", "double")])
    assert can_read(outer([field("x", "double"), field("y", "double", default=0.0)]), writer) == []
    problems = can_read(outer([field("x", "double"), field("y", "double")]), writer)
    assert len(problems) == 1
    assert "/fields/1/type/fields/1" in problems[0]
    retyped = can_read(outer([field("x", "float")]), writer)
    assert "TYPE_MISMATCH" in retyped[0]
    assert "/fields/1/type/fields/0/type" in retyped[0]


def test_named_type_reference_is_resolved_in_the_enclosing_namespace() -> None:
    inner = {"type": "record", "name": "Point", "fields": [field("x", "double")]}
    writer = record(field("a", inner), field("b", "Point"))
    reader = record(field("a", inner), field("b", "lsst.sal.Test.Point"))
    assert can_read(reader, writer) == []


def test_recursive_records_terminate() -> None:
    node = {
        "type": "record",
        "name": "Node",
        "fields": [field("value", "int"), field("next", ["null", "Node"], default=None)],
    }
    assert can_read(node, node) == []
    wider = {
        "type": "record",
        "name": "Node",
        "fields": [field("value", "long"), field("next", ["null", "Node"], default=None)],
    }
    assert can_read(wider, node) == []
    assert can_read(node, wider) != []


# --- Enums, fixed, arrays, maps ----------------------------------------------------------------


def enum(*symbols: str, **extra: Any) -> dict[str, Any]:
    return record(
        field("state", {"type": "enum", "name": "State", "symbols": list(symbols), **extra})
    )


def test_enum_reader_must_know_every_writer_symbol() -> None:
    problems = can_read(enum("STANDBY", "DISABLED"), enum("STANDBY", "DISABLED", "FAULT"))
    assert len(problems) == 1
    assert problems[0].startswith("MISSING_ENUM_SYMBOLS")
    assert "FAULT" in problems[0]
    assert can_read(enum("STANDBY", "DISABLED", "FAULT"), enum("STANDBY", "DISABLED")) == []


def test_enum_reader_default_covers_unknown_symbols() -> None:
    reader = enum("UNKNOWN", "STANDBY", default="UNKNOWN")
    assert can_read(reader, enum("STANDBY", "FAULT")) == []


def test_enum_name_must_match() -> None:
    writer = record(field("state", {"type": "enum", "name": "Old", "symbols": ["A"]}))
    problems = can_read(enum("A"), writer)
    assert problems[0].startswith("NAME_MISMATCH")


def test_fixed_size_and_name() -> None:
    def fixed(size: int, name: str = "Hash") -> dict[str, Any]:
        return record(field("h", {"type": "fixed", "name": name, "size": size}))

    assert can_read(fixed(16), fixed(16)) == []
    assert can_read(fixed(16), fixed(32))[0].startswith("FIXED_SIZE_MISMATCH")
    assert can_read(fixed(16, "Digest"), fixed(16))[0].startswith("NAME_MISMATCH")


def test_array_items_and_map_values_are_resolved_recursively() -> None:
    def array(items: str) -> dict[str, Any]:
        return record(field("xs", {"type": "array", "items": items}))

    def mapping(values: str) -> dict[str, Any]:
        return record(field("m", {"type": "map", "values": values}))

    assert can_read(array("double"), array("float")) == []
    assert "/fields/0/type/items" in can_read(array("float"), array("double"))[0]
    assert can_read(mapping("long"), mapping("int")) == []
    assert "/fields/0/type/values" in can_read(mapping("int"), mapping("long"))[0]
    as_map = record(field("xs", {"type": "map", "values": "int"}))
    assert can_read(array("int"), as_map)[0].startswith("TYPE_MISMATCH")


# --- Unions ------------------------------------------------------------------------------------


def test_reader_union_needs_a_branch_for_the_writer_type() -> None:
    assert can_read(record(field("x", ["null", "int"])), record(field("x", "int"))) == []
    assert can_read(record(field("x", ["null", "double"])), record(field("x", "int"))) == []
    problems = can_read(record(field("x", ["null", "string"])), record(field("x", "int")))
    assert problems[0].startswith("MISSING_UNION_BRANCH")


def test_every_writer_union_branch_must_be_readable() -> None:
    writer = record(field("x", ["null", "int"]))
    problems = can_read(record(field("x", "int")), writer)
    assert len(problems) == 1
    assert "/fields/0/type/0" in problems[0]  # the null branch
    assert can_read(record(field("x", ["null", "long"])), writer) == []
    assert can_read(record(field("x", ["int", "null"])), writer) == []
    assert can_read(record(field("x", ["null"])), writer) != []


def test_top_level_primitives_and_unions() -> None:
    assert can_read("long", "int") == []
    assert can_read("int", "long") != []
    assert can_read(["null", "string"], "string") == []


# --- Levels ------------------------------------------------------------------------------------

INT_STATE = V1
LONG_STATE = record(
    field("private_seqNum", "int", default=0), field("summaryState", "long", default=0)
)
ADDED_NO_DEFAULT = record(*V1["fields"], field("extra", "string"))
ADDED_WITH_DEFAULT = record(*V1["fields"], field("extra", "string", default=""))
REMOVED_NO_DEFAULT = record(field("private_seqNum", "int"))
V1_NO_DEFAULTS = record(field("private_seqNum", "int"), field("summaryState", "int"))


@pytest.mark.parametrize(
    ("level", "new", "compatible"),
    [
        # Widening int to long: the new schema reads old data, old readers cannot read new data.
        ("BACKWARD", LONG_STATE, True),
        ("FORWARD", LONG_STATE, False),
        ("FULL", LONG_STATE, False),
        ("NONE", LONG_STATE, True),
        # A new field without a default: old data lacks it.
        ("BACKWARD", ADDED_NO_DEFAULT, False),
        ("FORWARD", ADDED_NO_DEFAULT, True),
        ("FULL", ADDED_NO_DEFAULT, False),
        ("FULL", ADDED_WITH_DEFAULT, True),
    ],
)
def test_levels_against_the_latest_schema(
    level: str, new: dict[str, Any], compatible: bool
) -> None:
    problems = check_compatibility(level, new, [INT_STATE])
    assert (problems == []) is compatible, problems


def test_removing_a_field_the_old_reader_needs_breaks_forward_only() -> None:
    assert check_compatibility("BACKWARD", REMOVED_NO_DEFAULT, [V1_NO_DEFAULTS]) == []
    problems = check_compatibility("FORWARD", REMOVED_NO_DEFAULT, [V1_NO_DEFAULTS])
    assert len(problems) == 1
    assert "READER_FIELD_MISSING_DEFAULT_VALUE" in problems[0]
    # Confluent's words: for FORWARD the old schema is the reader.
    assert "in the old schema has no default value and is missing in the new schema" in problems[0]


def test_backward_transitive_checks_every_old_writer() -> None:
    # The new schema reads the latest (which has "extra") but not the first (which lacks it).
    history = [V1, ADDED_WITH_DEFAULT]
    assert check_compatibility("BACKWARD", ADDED_NO_DEFAULT, history) == []
    problems = check_compatibility("BACKWARD_TRANSITIVE", ADDED_NO_DEFAULT, history)
    assert len(problems) == 1
    assert "'extra'" in problems[0]


def test_forward_transitive_checks_every_old_reader() -> None:
    # The latest reader takes long; the first still takes int only.
    history = [INT_STATE, LONG_STATE]
    assert check_compatibility("FORWARD", LONG_STATE, history) == []
    assert check_compatibility("FORWARD_TRANSITIVE", LONG_STATE, history) != []
    assert check_compatibility("FORWARD_TRANSITIVE", INT_STATE, history) == []


def test_full_transitive_reports_the_newest_incompatible_schema() -> None:
    history = [INT_STATE, ADDED_WITH_DEFAULT, ADDED_WITH_DEFAULT]
    failure = first_incompatibility("FULL_TRANSITIVE", LONG_STATE, history)
    assert failure is not None
    assert failure.index == 2
    assert check_compatibility("FULL_TRANSITIVE", ADDED_WITH_DEFAULT, history) == []
    assert first_incompatibility("FULL", ADDED_WITH_DEFAULT, history) is None


def test_no_existing_schema_and_level_none_accept_anything() -> None:
    for level in CompatibilityLevel:
        assert check_compatibility(level, LONG_STATE, []) == []
    assert check_compatibility("NONE", "string", [INT_STATE]) == []


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="SIDEWAYS"):
        check_compatibility("SIDEWAYS", INT_STATE, [INT_STATE])


def test_confluent_message_shape() -> None:
    problems = check_compatibility("FORWARD", LONG_STATE, [INT_STATE])
    expected = (
        "{errorType:'TYPE_MISMATCH', description:'The type (path '/fields/1/type') of a field "
        "in the old schema does not match with the new schema', additionalInfo:'reader type: "
        "INT not compatible with writer type: LONG'}"
    )
    assert problems == [expected]


# --- Parsing -----------------------------------------------------------------------------------


BAD_DEFAULT = (
    '{"type": "record", "name": "a", "fields": [{"name": "x", "type": "int", "default": 1.5}]}'
)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "not JSON"),
        ('{"type": "record", "name": "a"}', "fields"),
        ('{"type": "record", "name": "a", "fields": [{"name": "x", "type": "Nope"}]}', "Nope"),
        (BAD_DEFAULT, "[Dd]efault"),
        ('["int", "int"]', "twice"),
        ('["int", ["null"]]', "union"),
        ('{"type": "enum", "name": "e", "symbols": ["A", "A"]}', "twice"),
        ('{"type": "fixed", "name": "f"}', "size"),
        ('{"type": "record", "name": "1a", "fields": []}', "valid Avro name"),
        ("42", "not a schema"),
    ],
)
def test_invalid_schemas_are_refused(text: str, match: str) -> None:
    with pytest.raises(AvroSchemaError, match=match):
        parse_schema_text(text)


def test_valid_schema_text_parses() -> None:
    assert parse_schema_text('"int"') == "int"
    assert parse_schema_text("string") == "string"
    validate_schema(V1)


def test_canonical_text_ignores_spacing_key_order_and_primitive_wrappers() -> None:
    spaced = '{"type": "record", "name": "a", "fields": [{"name": "x", "type": "int"}]}'
    dense = '{"fields":[{"type":{"type":"int"},"name":"x"}],"name":"a","type":"record"}'
    assert canonical_text(parse_schema_text(spaced)) == canonical_text(parse_schema_text(dense))
    assert canonical_text(V1) != canonical_text(LONG_STATE)
