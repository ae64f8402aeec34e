"""Hand-written codecs for Kafka's large messages: a consumer-lag measurement's, and fetches.

A lag measurement at Summit scale moves three large messages:

- the cluster's metadata (3,350 topics);
- every committed offset of 147 groups (~6,700 partitions);
- the end offsets of every partition.

aiokafka decodes a message field by field through nested generic schema objects. That takes
about 30 µs per partition and is most of a measurement's time. The codecs here read and write
the same bytes with precompiled `struct` formats, several times faster. They return aiokafka's
own response classes, with the same attributes and tuple shapes as aiokafka's decoders (the
tests compare both on the same bytes), so code that reads an answer works with either.

Each codec is pinned to one version of its API:

| API | version | since Kafka |
|---|---|---|
| Metadata | 5 | 1.0 |
| ListOffsets | 3 | 2.0 |
| OffsetFetch | 8 | 3.0 |

A broker without that version makes `Request.prepare` raise (``NotImplementedError`` or
``IncompatibleBrokerVersion``). The caller then falls back to aiokafka's negotiated requests.

`install_codecs` also gives every aiokafka client in the process the Metadata v5 decoder and a
Fetch v11 codec (`FetchResponseV11`, `encode_fetch_request_v11`): each consumer fetches many
times a second, and each client's bootstrap asks for metadata.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterable, Iterator, Sequence
from contextvars import ContextVar
from io import BytesIO
from typing import Any, Self

from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.fetch import FetchRequest_v11, FetchResponse_v11
from aiokafka.protocol.metadata import MetadataRequest_v5, MetadataResponse_v5
from aiokafka.protocol.offset import OffsetRequest_v3, OffsetResponse_v3
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)

__all__ = [
    "AllCommittedOffsets",
    "AllTopicsMetadata",
    "FetchResponseV11",
    "LatestOffsets",
    "OffsetFetchResponseV8",
    "encode_fetch_request_v11",
    "install_codecs",
    "unasked_topics_skipped",
]

_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
# A partition of ListOffsets v3: partition, error code, timestamp, offset.
_END_OFFSET = struct.Struct(">ihqq")
# The fixed head of a partition of OffsetFetch v8: partition, offset, leader epoch.
_COMMITTED_HEAD = struct.Struct(">iqi")
# A whole partition of OffsetFetch v8 in its usual form, metadata "" or null and no tagged
# fields: partition, offset, leader epoch, metadata length + 1, error code, tag count.
_COMMITTED_PLAIN = struct.Struct(">iqiBhB")
# A topic of Metadata v5: error code and name length; then after the name, is-internal and the
# partition count.
_TOPIC_HEAD = struct.Struct(">hh")
_TOPIC_TAIL = struct.Struct(">?i")
# The fixed head of a partition of Metadata v5: error code, partition, leader.
_PARTITION_HEAD = struct.Struct(">hii")
# A whole partition of Metadata v5 in its usual form, one replica, in sync, none offline: error
# code, partition, leader, replica count (1), replica, in-sync count (1), in-sync replica,
# offline count (0).
_PARTITION_PLAIN = struct.Struct(">hiiiiiii")


# The fixed head of a partition of Fetch v11: partition, error code, high watermark, last stable
# offset, log start offset, then the count of aborted transactions.
_FETCHED_HEAD = struct.Struct(">ihqqqi")
_FETCH_TOP = struct.Struct(">ihii")  # throttle, error code, session id, topic count
_ABORTED = struct.Struct(">qq")
_INT32_PAIR = struct.Struct(">ii")


# -- readers: each takes the buffer and a position, and returns the value and the next position --


def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    byte = buf[pos]
    pos += 1
    if byte < 0x80:
        return byte, pos
    value = byte & 0x7F
    shift = 7
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _int32(buf: bytes, pos: int) -> tuple[int, int]:
    (value,) = _INT32.unpack_from(buf, pos)
    return value, pos + 4


def _string(buf: bytes, pos: int) -> tuple[str | None, int]:
    (length,) = _INT16.unpack_from(buf, pos)
    pos += 2
    if length < 0:
        return None, pos
    return buf[pos : pos + length].decode(), pos + length


def _compact_string(buf: bytes, pos: int) -> tuple[str | None, int]:
    length, pos = _uvarint(buf, pos)
    if length == 0:
        return None, pos
    return buf[pos : pos + length - 1].decode(), pos + length - 1


def _tags(buf: bytes, pos: int) -> tuple[dict[int, bytes], int]:
    count, pos = _uvarint(buf, pos)
    if not count:
        return {}, pos
    fields: dict[int, bytes] = {}
    for _ in range(count):
        tag, pos = _uvarint(buf, pos)
        size, pos = _uvarint(buf, pos)
        fields[tag] = buf[pos : pos + size]
        pos += size
    return fields, pos


_INT32_ARRAYS = [struct.Struct(f">{count}i") for count in range(8)]


def _int32_array(buf: bytes, pos: int) -> tuple[list[int], int]:
    count, pos = _int32(buf, pos)
    if count <= 0:
        return [], pos
    # Replica lists are short: their formats are made once.
    layout = _INT32_ARRAYS[count] if count < len(_INT32_ARRAYS) else struct.Struct(f">{count}i")
    return list(layout.unpack_from(buf, pos)), pos + 4 * count


def _body(data: BytesIO | bytes) -> tuple[bytes, int]:
    if isinstance(data, bytes):
        return data, 0
    return data.getvalue(), data.tell()


# -- Metadata v5 -----------------------------------------------------------------------------------


class _MetadataResponseV5(MetadataResponse_v5):  # type: ignore[misc]
    #: Whether the answer's topics are read (see `_MetadataWithoutTopicsV5`).
    READ_TOPICS = True

    @classmethod
    def decode(cls, data: BytesIO | bytes) -> Self:
        buf, pos = _body(data)
        throttle, pos = _int32(buf, pos)
        count, pos = _int32(buf, pos)
        brokers = []
        for _ in range(max(count, 0)):
            (node_id,) = _INT32.unpack_from(buf, pos)
            host, pos = _string(buf, pos + 4)
            (port,) = _INT32.unpack_from(buf, pos)
            rack, pos = _string(buf, pos + 4)
            brokers.append((node_id, host, port, rack))
        cluster_id, pos = _string(buf, pos)
        controller, pos = _int32(buf, pos)
        count, pos = _int32(buf, pos)
        topics = []
        for _ in range(max(count, 0) if cls.READ_TOPICS else 0):
            error_code, length = _TOPIC_HEAD.unpack_from(buf, pos)
            pos += 4
            name = None
            if length >= 0:
                name = buf[pos : pos + length].decode()
                pos += length
            is_internal, partition_count = _TOPIC_TAIL.unpack_from(buf, pos)
            pos += 5
            partitions: list[tuple[Any, ...]] = []
            for _ in range(max(partition_count, 0)):
                if pos + _PARTITION_PLAIN.size <= len(buf):
                    plain = _PARTITION_PLAIN.unpack_from(buf, pos)
                    if plain[3] == 1 and plain[5] == 1 and plain[7] == 0:
                        partitions.append(
                            (plain[0], plain[1], plain[2], [plain[4]], [plain[6]], [])
                        )
                        pos += _PARTITION_PLAIN.size
                        continue
                part_error, partition, leader = _PARTITION_HEAD.unpack_from(buf, pos)
                replicas, pos = _int32_array(buf, pos + 10)
                isr, pos = _int32_array(buf, pos)
                offline, pos = _int32_array(buf, pos)
                partitions.append((part_error, partition, leader, replicas, isr, offline))
            topics.append((error_code, name, is_internal, partitions))
        return cls(throttle, brokers, cluster_id, controller, topics)


class _MetadataWithoutTopicsV5(_MetadataResponseV5):
    """An answer to a request for no topics, read as Kafka sends it: without topics."""

    READ_TOPICS = False


#: Whether the clients whose connections open in this context read an answer to a request for no
#: topics without its topics (`unasked_topics_skipped`).
_SKIP_UNASKED_TOPICS: ContextVar[bool] = ContextVar("skip_unasked_topics", default=False)


class _MetadataDecoderFor:
    """``MetadataRequest_v5.RESPONSE_TYPE`` once `install_codecs` has run: the decoder of the
    answer to that request. aiokafka looks it up on the request when the answer comes, in the
    task that reads the connection, which inherits the context of the task that opened it."""

    def __get__(
        self, request: MetadataRequest_v5 | None, owner: type[MetadataRequest_v5]
    ) -> type[_MetadataResponseV5]:
        if request is not None and request.topics == [] and _SKIP_UNASKED_TOPICS.get():
            return _MetadataWithoutTopicsV5
        return _MetadataResponseV5


@contextlib.contextmanager
def unasked_topics_skipped() -> Iterator[None]:
    """Read the answer to a request for no topics without its topics, as Kafka sends it, in
    the aiokafka clients started in this context (once `install_codecs` has run).

    Every client's bootstrap asks for no topics, and tansu answers with every topic: ~950 at
    the simulated Summit, ~35 ms of decoding and indexing each time. A client that then asks for
    the topics it names (a consumer with a topic subscription) does not need them. Clients that
    rely on knowing every topic from the start (a producer writing to many topics, a consumer
    assigning hundreds of partitions) would instead ask for topics one at a time: do not start
    them in this context."""
    token = _SKIP_UNASKED_TOPICS.set(True)
    try:
        yield
    finally:
        _SKIP_UNASKED_TOPICS.reset(token)


class _MetadataRequestV5(MetadataRequest_v5):  # type: ignore[misc]
    RESPONSE_TYPE = _MetadataResponseV5


class AllTopicsMetadata(Request[_MetadataRequestV5]):  # type: ignore[misc]
    """Metadata v5 of every topic (topics null), decoded by `_MetadataResponseV5`."""

    API_KEY = 3

    def build(self, request_struct_class: type[_MetadataRequestV5]) -> _MetadataRequestV5:
        return request_struct_class(None, False)


# -- ListOffsets v3 --------------------------------------------------------------------------------


class _OffsetResponseV3(OffsetResponse_v3):  # type: ignore[misc]
    @classmethod
    def decode(cls, data: BytesIO | bytes) -> Self:
        buf, pos = _body(data)
        throttle, pos = _int32(buf, pos)
        count, pos = _int32(buf, pos)
        topics = []
        for _ in range(max(count, 0)):
            name, pos = _string(buf, pos)
            partition_count, pos = _int32(buf, pos)
            end = pos + _END_OFFSET.size * max(partition_count, 0)
            topics.append((name, list(_END_OFFSET.iter_unpack(buf[pos:end]))))
            pos = end
        return cls(throttle, topics)


class _OffsetRequestV3(OffsetRequest_v3):  # type: ignore[misc]
    RESPONSE_TYPE = _OffsetResponseV3

    def encode(self) -> bytes:
        topics: list[tuple[str, list[tuple[int, int]]]] = self.topics
        parts = [struct.pack(">ibi", self.replica_id, self.isolation_level, len(topics))]
        for topic, partitions in topics:
            name = topic.encode()
            flat = [value for entry in partitions for value in entry]
            parts.append(
                struct.pack(
                    f">h{len(name)}si{'iq' * len(partitions)}",
                    len(name),
                    name,
                    len(partitions),
                    *flat,
                )
            )
        return b"".join(parts)


class LatestOffsets(Request[_OffsetRequestV3]):  # type: ignore[misc]
    """ListOffsets v3 asking each named partition for its end offset (read uncommitted)."""

    API_KEY = 2
    _LATEST = -1

    def __init__(self, topics: Iterable[tuple[str, Sequence[int]]]) -> None:
        self._topics = [(topic, [(p, self._LATEST) for p in parts]) for topic, parts in topics]

    def build(self, request_struct_class: type[_OffsetRequestV3]) -> _OffsetRequestV3:
        return request_struct_class(-1, 0, self._topics)


# -- Fetch v11: what every consumer asks many times a second ------------------------------------


class FetchResponseV11(FetchResponse_v11):  # type: ignore[misc]
    """aiokafka's Fetch v11 answer, read without its generic schema objects.

    A consumer reading a few hundred partitions (the simulated CSCs' commands, an ack or
    state feed) gets an answer per fetch wait with an entry for each partition, most of them
    empty; aiokafka's decoder spent about as long on those entries as on everything else the
    fetch does. `install_codecs` makes aiokafka use this one."""

    @classmethod
    def decode(cls, data: BytesIO | bytes) -> Self:
        buf, pos = _body(data)
        throttle, error_code, session_id, count = _FETCH_TOP.unpack_from(buf, pos)
        pos += _FETCH_TOP.size
        if count < 0:
            return cls(throttle, error_code, session_id, None)
        topics: list[tuple[str | None, list[Any] | None]] = []
        head = _FETCHED_HEAD.unpack_from
        for _ in range(count):
            name, pos = _string(buf, pos)
            partition_count, pos = _int32(buf, pos)
            if partition_count < 0:
                topics.append((name, None))
                continue
            partitions: list[Any] = []
            for _ in range(partition_count):
                partition, part_error, high, stable, start, aborted_count = head(buf, pos)
                pos += _FETCHED_HEAD.size
                aborted: list[tuple[int, int]] | None = None
                if aborted_count >= 0:
                    aborted = [
                        _ABORTED.unpack_from(buf, pos + _ABORTED.size * n)
                        for n in range(aborted_count)
                    ]
                    pos += _ABORTED.size * aborted_count
                replica, size = _INT32_PAIR.unpack_from(buf, pos)
                pos += 8
                records = None
                if size >= 0:
                    records = buf[pos : pos + size]
                    pos += size
                partitions.append(
                    (partition, part_error, high, stable, start, aborted, replica, records)
                )
            topics.append((name, partitions))
        return cls(throttle, error_code, session_id, topics)


#: The fields of aiokafka's Fetch v11 request that `encode_fetch_request_v11` writes, in order.
_FETCH_REQUEST_FIELDS = (
    "replica_id",
    "max_wait_time",
    "min_bytes",
    "max_bytes",
    "isolation_level",
    "session_id",
    "session_epoch",
    "topics",
    "forgotten_topics_data",
    "rack_id",
)
_FETCH_REQUEST_HEAD = struct.Struct(">iiiibii")
# A partition asked for: partition, current leader epoch, fetch offset, log start, max bytes.
_FETCH_REQUEST_PARTITION = struct.Struct(">iiqqi")


def _put_string(out: list[bytes], text: str | None) -> None:
    if text is None:
        out.append(_INT16.pack(-1))
        return
    raw = text.encode("utf-8")
    out.append(_INT16.pack(len(raw)))
    out.append(raw)


def encode_fetch_request_v11(request: FetchRequest_v11) -> bytes:
    """The bytes of a Fetch v11 request, as aiokafka's schema writes them.

    Every consumer builds one per fetch with an entry for each partition it reads (hundreds
    for the simulated CSCs' commands, many times a second): aiokafka's generic encoder took a
    tenth of a busy simulated site's CPU."""
    fields = request.__dict__
    out = [
        _FETCH_REQUEST_HEAD.pack(
            fields["replica_id"],
            fields["max_wait_time"],
            fields["min_bytes"],
            fields["max_bytes"],
            fields["isolation_level"],
            fields["session_id"],
            fields["session_epoch"],
        )
    ]
    topics = fields["topics"]
    if topics is None:
        out.append(_INT32.pack(-1))
    else:
        out.append(_INT32.pack(len(topics)))
        pack = _FETCH_REQUEST_PARTITION.pack
        for topic, partitions in topics:
            _put_string(out, topic)
            if partitions is None:
                out.append(_INT32.pack(-1))
                continue
            out.append(_INT32.pack(len(partitions)))
            out.extend(pack(*partition) for partition in partitions)
    forgotten = fields["forgotten_topics_data"]
    if forgotten is None:
        out.append(_INT32.pack(-1))
    else:
        out.append(_INT32.pack(len(forgotten)))
        for topic, numbers in forgotten:
            _put_string(out, topic)
            if numbers is None:
                out.append(_INT32.pack(-1))
                continue
            out.append(_INT32.pack(len(numbers)))
            out.extend(_INT32.pack(number) for number in numbers)
    _put_string(out, fields["rack_id"])
    return b"".join(out)


def install_codecs() -> None:
    """Make aiokafka use these codecs for what every client sends, in this process: Fetch v11
    answers (`FetchResponseV11`) and requests (`encode_fetch_request_v11`), and Metadata v5
    answers.

    Metadata matters because tansu answers a request for no topics, which every client's
    bootstrap sends, with every topic (test-servers.md does not list this quirk): ~950 topics
    at the simulated Summit, 40 ms each by aiokafka's generic decoder. Clients started under
    `unasked_topics_skipped` read that answer without its topics.

    Each gives the same objects and bytes as aiokafka's own (the tests compare them). Nothing
    changes for an API whose aiokafka class is not the one its codec was written for."""
    if MetadataRequest_v5.RESPONSE_TYPE is MetadataResponse_v5:
        # A descriptor, so that the decoder can depend on the request (`unasked_topics_skipped`).
        MetadataRequest_v5.RESPONSE_TYPE = _MetadataDecoderFor()
    if FetchRequest_v11.RESPONSE_TYPE is FetchResponse_v11:
        FetchRequest_v11.RESPONSE_TYPE = FetchResponseV11
    if tuple(FetchRequest_v11.SCHEMA.names) == _FETCH_REQUEST_FIELDS:
        FetchRequest_v11.encode = encode_fetch_request_v11


# -- OffsetFetch v8: every committed offset of many groups in one request ---------------------


class OffsetFetchResponseV8(Response):  # type: ignore[misc]
    API_KEY = 9
    API_VERSION = 8
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "groups",
            CompactArray(
                ("group_id", CompactString("utf-8")),
                (
                    "topics",
                    CompactArray(
                        ("name", CompactString("utf-8")),
                        (
                            "partitions",
                            CompactArray(
                                ("partition_index", Int32),
                                ("committed_offset", Int64),
                                ("committed_leader_epoch", Int32),
                                ("metadata", CompactString("utf-8")),
                                ("error_code", Int16),
                                ("tags", TaggedFields),
                            ),
                        ),
                        ("tags", TaggedFields),
                    ),
                ),
                ("error_code", Int16),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )

    @classmethod
    def decode(cls, data: BytesIO | bytes) -> Self:
        buf, pos = _body(data)
        (throttle,) = _INT32.unpack_from(buf, pos)
        count, pos = _uvarint(buf, pos + 4)
        groups = []
        for _ in range(count - 1):
            group_id, pos = _compact_string(buf, pos)
            topics, pos = _committed_topics(buf, pos)
            (error_code,) = _INT16.unpack_from(buf, pos)
            group_tags, pos = _tags(buf, pos + 2)
            groups.append((group_id, topics, error_code, group_tags))
        tags, pos = _tags(buf, pos)
        return cls(throttle, groups, tags)


def _committed_topics(buf: bytes, pos: int) -> tuple[list[Any], int]:
    """One group's topics in an OffsetFetch v8 answer.

    The usual shapes are read inline: a name shorter than 127 bytes, fewer than 127 partitions,
    no tagged fields; anything else goes through the general readers."""
    count, pos = _uvarint(buf, pos)
    topics: list[Any] = []
    plain = _COMMITTED_PLAIN.unpack_from
    for _ in range(count - 1):
        length = buf[pos]
        if 0 < length < 0x80:
            name: str | None = buf[pos + 1 : pos + length].decode()
            pos += length
        else:
            name, pos = _compact_string(buf, pos)
        partition_count = buf[pos]
        if partition_count < 0x80:
            pos += 1
        else:
            partition_count, pos = _uvarint(buf, pos)
        partitions: list[Any] = []
        for _ in range(partition_count - 1):
            if buf[pos + 16] < 2 and buf[pos + 19] == 0:
                partition, offset, epoch, meta, error_code, _ = plain(buf, pos)
                partitions.append((partition, offset, epoch, "" if meta else None, error_code, {}))
                pos += 20
                continue
            partition, offset, epoch = _COMMITTED_HEAD.unpack_from(buf, pos)
            metadata, pos = _compact_string(buf, pos + 16)
            (error_code,) = _INT16.unpack_from(buf, pos)
            tags, pos = _tags(buf, pos + 2)
            partitions.append((partition, offset, epoch, metadata, error_code, tags))
        if buf[pos] == 0:
            topics.append((name, partitions, {}))
            pos += 1
        else:
            topic_tags, pos = _tags(buf, pos)
            topics.append((name, partitions, topic_tags))
    return topics, pos


class _OffsetFetchRequestV8(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 9
    API_VERSION = 8
    RESPONSE_TYPE = OffsetFetchResponseV8
    SCHEMA = Schema(
        (
            "groups",
            CompactArray(
                ("group_id", CompactString("utf-8")),
                (
                    "topics",
                    CompactArray(
                        ("name", CompactString("utf-8")),
                        ("partition_indexes", CompactArray(Int32)),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("require_stable", Boolean),
        ("tags", TaggedFields),
    )


class AllCommittedOffsets(Request[_OffsetFetchRequestV8]):  # type: ignore[misc]
    """OffsetFetch v8 asking, for each group, every partition it has committed (topics null)."""

    API_KEY = 9

    def __init__(self, groups: Sequence[str]) -> None:
        self._groups = list(groups)

    def build(self, request_struct_class: type[_OffsetFetchRequestV8]) -> _OffsetFetchRequestV8:
        return request_struct_class([(group, None, {}) for group in self._groups], False, {})
