"""The hand-written lag codecs read and write exactly what aiokafka's generic codecs do.

Each answer is encoded by aiokafka's own schema, then decoded by both; the answers carry what
a real broker can send: null strings, error codes, several brokers, replicas, tagged fields,
multi-byte lengths (more than 127 entries or characters).
"""

from __future__ import annotations

import struct
from io import BytesIO
from typing import Any

import pytest
from aiokafka.protocol.fetch import FetchRequest_v11, FetchResponse_v11
from aiokafka.protocol.metadata import MetadataRequest, MetadataRequest_v5, MetadataResponse_v5
from aiokafka.protocol.offset import OffsetRequest_v3, OffsetResponse_v3
from aiokafka.protocol.types import Schema

import clients.sal.kafka  # noqa: F401 (installs the Fetch v11 and Metadata v5 codecs)
from clients.kafkawire import (
    AllCommittedOffsets,
    AllTopicsMetadata,
    FetchResponseV11,
    LatestOffsets,
    OffsetFetchResponseV8,
    encode_fetch_request_v11,
    unasked_topics_skipped,
)

_METADATA_V5 = {3: (0, 12)}
_LIST_OFFSETS_V3 = {2: (0, 9)}
_OFFSET_FETCH_V8 = {9: (0, 9)}


def _generic_decode(schema: Schema, data: bytes) -> tuple[object, ...]:
    buffer = BytesIO(data)
    return tuple(field.decode(buffer) for field in schema.fields)


def test_metadata_v5_decodes_as_aiokafka_does() -> None:
    # Replicated partitions, and the usual form at a site's test stand: one replica, in sync.
    topics: list[Any] = [
        (0, f"lsst.sal.MTMount.logevent_t{n:04d}", False, [(0, 0, 1, [1, 2, 3], [1, 2], [])])
        if n % 2
        else (0, f"lsst.sal.MTMount.logevent_t{n:04d}", False, [(n % 7, n, 1, [4], [5], [])])
        for n in range(300)
    ]
    topics += [
        (3, "gone", False, []),
        (0, "__consumer_offsets", True, [(0, p, -1, [], [], [2]) for p in range(3)]),
        (0, "é" * 130, False, [(9, 0, 2, [2], [2], [1]), (0, 1, 2, [2], [2], [])]),
        # Shorter than the usual form, at the very end of the answer.
        (0, "t", False, [(5, 0, -1, [], [], [])]),
    ]
    brokers = [(1, "kafka-0.example", 9092, None), (2, "kafka-1.example", 9093, "rack-b")]
    answer = MetadataResponse_v5(7, brokers, None, 2, topics).encode()
    ours = AllTopicsMetadata().prepare(_METADATA_V5).RESPONSE_TYPE.decode(answer)
    assert _generic_decode(MetadataResponse_v5.SCHEMA, answer) == (
        ours.throttle_time_ms,
        ours.brokers,
        ours.cluster_id,
        ours.controller_id,
        ours.topics,
    )
    assert ours.topics[-2][1] == "é" * 130
    # What every aiokafka client's metadata requests use once the SAL Kafka layer is imported.
    assert MetadataRequest([]).prepare(_METADATA_V5).RESPONSE_TYPE is type(ours)


def test_an_answer_to_no_topics_is_read_without_them_only_where_asked() -> None:
    # tansu answers a bootstrap's request for no topics with every topic; Kafka with none.
    topics: list[Any] = [
        (0, f"lsst.sal.ESS.t{n}", False, [(0, 0, 1, [1], [1], [])]) for n in range(5)
    ]
    brokers = [(1, "kafka-0.example", 9092, None)]
    answer = MetadataResponse_v5(0, brokers, "cluster", 1, topics).encode()
    bootstrap = MetadataRequest([]).prepare(_METADATA_V5)
    named = MetadataRequest(["lsst.sal.ESS.t0"]).prepare(_METADATA_V5)
    every = MetadataRequest(None).prepare(_METADATA_V5)
    assert bootstrap.RESPONSE_TYPE.decode(answer).topics == topics
    with unasked_topics_skipped():
        skipped = bootstrap.RESPONSE_TYPE.decode(answer)
        assert (skipped.brokers, skipped.cluster_id, skipped.controller_id) == (
            brokers,
            "cluster",
            1,
        )
        assert skipped.topics == []
        # A request that names topics, or asks for every topic, gets them all.
        assert named.RESPONSE_TYPE.decode(answer).topics == topics
        assert every.RESPONSE_TYPE.decode(answer).topics == topics
    assert bootstrap.RESPONSE_TYPE.decode(answer).topics == topics


def test_metadata_request_asks_for_every_topic() -> None:
    request = AllTopicsMetadata().prepare(_METADATA_V5)
    assert request.API_VERSION == 5
    assert request.encode() == MetadataRequest_v5(None, False).encode()


def test_list_offsets_v3_encodes_and_decodes_as_aiokafka_does() -> None:
    wanted = [(f"lsst.sal.ESS.telemetry_t{n}", list(range(n % 4 + 1))) for n in range(200)]
    request = LatestOffsets(wanted).prepare(_LIST_OFFSETS_V3)
    assert request.API_VERSION == 3
    generic = OffsetRequest_v3(-1, 0, [(t, [(p, -1) for p in ps]) for t, ps in wanted])
    assert request.encode() == generic.encode()

    topics = [
        (topic, [(p, 0 if p else 6, -1, -1 if p else 10_000_000_000 + p) for p in partitions])
        for topic, partitions in wanted
    ]
    answer = OffsetResponse_v3(0, topics).encode()
    ours = request.RESPONSE_TYPE.decode(answer)
    assert _generic_decode(OffsetResponse_v3.SCHEMA, answer) == (ours.throttle_time_ms, ours.topics)


def test_offset_fetch_v8_decodes_as_aiokafka_does() -> None:
    groups: list[Any] = [
        (
            f"telegraf-kafka-consumer-{g}",
            [
                (
                    f"lsst.sal.ATDome.logevent_t{t}",
                    [(p, 1000 * t + p, -1, None if p % 2 else "meta", 0, {}) for p in range(3)],
                    {},
                )
                for t in range(150)
            ],
            0,
            {},
        )
        for g in range(3)
    ]
    groups.append(("unreadable", [], 30, {}))
    answer = OffsetFetchResponseV8(0, groups, {}).encode()
    ours = OffsetFetchResponseV8.decode(answer)
    assert _generic_decode(OffsetFetchResponseV8.SCHEMA, answer) == (
        ours.throttle_time_ms,
        ours.groups,
        ours.tags,
    )
    # aiokafka cannot encode tagged fields (it leaves out their sizes): these bytes are by hand.
    # One group "g", topic "t", partition 0 with offset -1, epoch 5, metadata "", tags 2 (129
    # bytes) and 3 (none); the topic has tag 1 ("y").
    tagged = b"".join(
        [
            b"\x00\x00\x00\x00\x02\x02g\x02\x02t\x02",
            struct.pack(">iqi", 0, -1, 5),
            b"\x01\x00\x00",
            b"\x02\x02\x81\x01" + b"x" * 129 + b"\x03\x00",
            b"\x01\x01\x01y",
            b"\x00\x00\x00\x00",
        ]
    )
    ours = OffsetFetchResponseV8.decode(tagged)
    assert ours.groups == [
        ("g", [("t", [(0, -1, 5, "", 0, {2: b"x" * 129, 3: b""})], {1: b"y"})], 0, {})
    ]
    assert _generic_decode(OffsetFetchResponseV8.SCHEMA, tagged) == (0, ours.groups, {})
    request = AllCommittedOffsets(["a", "b"]).prepare(_OFFSET_FETCH_V8)
    assert request.API_VERSION == 8
    assert request.RESPONSE_TYPE is OffsetFetchResponseV8


def test_fetch_v11_decodes_as_aiokafka_does_and_is_installed() -> None:
    batch = b"\x00" * 61 + b"records"
    topics: list[Any] = [
        (
            f"lsst.sal.MTMount.command_t{n}",
            [
                # read_uncommitted: aborted transactions null; an empty partition: no records.
                (0, 0, 7, 7, 0, None, -1, b""),
                (1, 0, 12, 12, 3, None, -1, batch),
                (2, 6, -1, -1, -1, None, -1, None),  # NOT_LEADER_OR_FOLLOWER
                (3, 0, 9, 5, 0, [(4000, 5), (4001, 6)], 2, batch * 3),
            ],
        )
        for n in range(40)
    ]
    topics.append(("é" * 130, []))
    answer = FetchResponse_v11(0, 0, 77, topics).encode()
    ours = FetchResponseV11.decode(answer)
    assert _generic_decode(FetchResponse_v11.SCHEMA, answer) == (
        ours.throttle_time_ms,
        ours.error_code,
        ours.session_id,
        ours.topics,
    )
    # What aiokafka's consumers use once the SAL Kafka layer is imported.
    assert FetchRequest_v11.RESPONSE_TYPE is FetchResponseV11


@pytest.mark.parametrize(
    ("topics", "forgotten", "rack"),
    [
        # What a consumer's fetcher builds: many topics, a partition or a few each.
        (
            [
                (f"lsst.sal.ESS.command_t{n}", [(p, -1, 10**10 + p, -1, 1048576) for p in range(3)])
                for n in range(50)
            ],
            [],
            "",
        ),
        # The edges of the format: unicode names, null arrays and strings, negative numbers.
        ([("é" * 130, []), ("t", None)], [("gone", [0, 5]), ("x", None)], None),
        (None, None, "rack-1"),
    ],
)
def test_fetch_v11_requests_are_written_as_aiokafka_writes_them(
    topics: Any, forgotten: Any, rack: str | None
) -> None:
    request = FetchRequest_v11(-1, 100, 1, 52428800, 0, 0, -1, topics, forgotten, rack)
    generic = FetchRequest_v11.SCHEMA.encode(
        [request.__dict__[name] for name in FetchRequest_v11.SCHEMA.names]
    )
    assert encode_fetch_request_v11(request) == generic
    # What aiokafka's consumers use once the SAL Kafka layer is imported.
    assert request.encode() == generic
    assert FetchRequest_v11.encode is encode_fetch_request_v11
