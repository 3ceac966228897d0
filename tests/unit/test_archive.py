"""The S3 archive format: segment keys, the gzip JSON Lines encoding, listing and reading.

Pure format tests need nothing; the S3 ones run against the session stack's real SeaweedFS."""

from __future__ import annotations

import base64
import gzip
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest

from archive import segments
from archive.progress import ArchiveProgress
from archive.segments import (
    ArchiveError, Segment, encode_lines, encode_segment, iter_segment, list_segments,
    parse_segment_key, plan, plan_archive, put_segment, read_archive, segment_key,
)
from events.codec import encode
from events.reader import LogRecord
from events.types import ReviewSubmitted
from tests.unit.fakes import MemoryBucket

AT = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
LEVEL = 3  # gzip level: the format and its determinism hold at any level


def event_bytes(i: int, text: str = "") -> bytes:
    return encode(ReviewSubmitted(
        event_id=str(uuid.UUID(int=i)), occurred_at=AT, recorded_at=AT, user_id=f"u{i % 7}",
        movie_id=f"m{i}", rating=4.5, summary=f"s{i}", text=text, reviewed_at=AT,
    ))


def records(partition: int, first: int, count: int) -> list[LogRecord]:
    return [LogRecord(partition, o, f"u{o % 7}".encode(), event_bytes(o)) for o in range(first, first + count)]


# Values that are not one valid single-line UTF-8 JSON text, and keys that are not UTF-8:
# all must come back byte for byte.
ODD = [
    LogRecord(3, 10, b"u1", b"not json at all"),
    LogRecord(3, 11, b"u1", b'{"truncated": '),
    LogRecord(3, 12, b"u1", b""),  # empty value
    LogRecord(3, 13, b"u1", None),  # a tombstone
    LogRecord(3, 14, None, b'{"no":"key"}'),
    LogRecord(3, 15, b"\xff\xfe", b'{"key":"not utf-8"}'),
    LogRecord(3, 16, b"u1", b'{"a": "latin-1 \xe9"}'),  # JSON syntax, invalid UTF-8
    LogRecord(3, 17, b"u1", b' {"padded": true} '),  # whitespace around: embedding would lose it
    LogRecord(3, 18, b"u1", b'{"pretty":\n  true}'),  # a line break would split the line
    LogRecord(3, 19, b"u1", b'{"cr":\r1}'),
    LogRecord(3, 20, b"u1", b"\x00\x01\x02binary"),
    LogRecord(3, 21, b"u1", b"null"),  # valid JSON: not the same as no value
    LogRecord(3, 22, b"u1", b'"a string"'),
    LogRecord(3, 23, b"u1", b'{"a": 1} {"b": 2}'),  # two JSON texts
    LogRecord(3, 24, b"u1", b"1,2"),
    LogRecord(3, 25, "ключ".encode(), '{"title": "Amélie", "emoji": "🎬"}'.encode()),  # UTF-8: embedded
    LogRecord(3, 26, b"u\nnewline", b'{"k": "key with a line break"}'),
    LogRecord(3, 27, b"u1", b'{"lone": "\\ud800"}'),  # a lone surrogate escape: msgspec refuses it
]


def streamed(data: bytes, segment: Segment, chunk: int = segments.CHUNK) -> list[list[LogRecord]]:
    """The lists `iter_segment` reads from an object holding data under the segment's key."""
    s3 = MemoryBucket()
    s3.put_object(Bucket="b", Key=segment.key, Body=data)
    return list(iter_segment(s3, "b", segment, chunk))


def segment_of(partition, first, last):
    return Segment(partition, first, last, segment_key("t", partition, first, last))


def round_trip(batch: list[LogRecord]) -> list[LogRecord]:
    segment = segment_of(batch[0].partition, batch[0].offset, batch[-1].offset)
    return [r for part in streamed(encode_segment(batch, LEVEL), segment) for r in part]


# -- keys ------------------------------------------------------------------------------------------


def test_segment_key_is_zero_padded_and_parses_back():
    key = segment_key("harmony.reviews", 3, 0, 99_999)
    assert key == "harmony.reviews/p0003/000000000000-000000099999.jsonl.gz"
    assert parse_segment_key(key, 12) == Segment(3, 0, 99_999, key, 12)
    assert parse_segment_key("harmony.reviews/p0003/notes.txt") is None
    with pytest.raises(ValueError):
        segment_key("t", 0, 5, 4)


def test_lexicographic_key_order_is_offset_order():
    ranges = [(0, 9), (10, 99), (100, 999), (1000, 99_999), (100_000, 1_234_567), (1_234_568, 10**11)]
    keys = [segment_key("t", 1, a, b) for a, b in ranges]
    assert sorted(keys) == keys
    # Partitions sort numerically too, and a partition's keys stay together.
    assert sorted([segment_key("t", 10, 0, 1), segment_key("t", 2, 5, 6), segment_key("t", 2, 0, 4)]) == [
        segment_key("t", 2, 0, 4), segment_key("t", 2, 5, 6), segment_key("t", 10, 0, 1)]


# -- encoding --------------------------------------------------------------------------------------


def test_round_trip_of_events():
    batch = records(2, 500, 1000)
    assert round_trip(batch) == batch


def test_round_trip_of_malformed_values_and_odd_keys():
    assert round_trip(ODD) == ODD
    # Mixed into a batch of good events, every record still comes back exactly.
    mixed = sorted(records(3, 0, 10) + ODD + records(3, 28, 10), key=lambda r: r.offset)
    assert round_trip(mixed) == mixed


def test_events_are_embedded_as_json_and_malformed_values_as_base64():
    good, bad, none = records(0, 7, 1)[0], LogRecord(0, 8, b"u1", b"oops {"), LogRecord(0, 9, None, None)
    lines = gzip.decompress(encode_segment([good, bad, none], LEVEL)).decode().splitlines()
    first, second, third = (json.loads(line) for line in lines)
    assert first == {"partition": 0, "offset": 7, "key": good.key.decode(), "value": json.loads(good.value)}
    assert lines[0].endswith(',"value":' + good.value.decode() + "}")  # the event's bytes, as they are
    assert second == {"partition": 0, "offset": 8, "key": "u1", "value_b64": base64.b64encode(b"oops {").decode()}
    assert third == {"partition": 0, "offset": 9}
    # Every line is valid JSON on its own (what Spark reads).
    for record in ODD:
        for line in gzip.decompress(encode_segment([record], LEVEL)).decode("utf-8").splitlines():
            assert json.loads(line)["offset"] == record.offset


def test_encoding_is_deterministic():
    batch = records(1, 0, 2000) + [r._replace(partition=1, offset=2000 + i) for i, r in enumerate(ODD)]
    assert encode_segment(batch, LEVEL) == encode_segment(list(batch), LEVEL)
    assert encode_segment(batch, LEVEL)[4:8] == b"\x00\x00\x00\x00"  # gzip mtime 0


def test_a_segment_is_one_partition_with_increasing_offsets():
    with pytest.raises(ValueError):
        encode_segment([], LEVEL)
    with pytest.raises(ValueError):
        encode_segment(records(0, 0, 2) + records(1, 2, 1), LEVEL)
    with pytest.raises(ValueError):
        encode_segment(records(0, 5, 1) + records(0, 5, 1), LEVEL)


def test_a_segment_bigger_than_a_chunk_streams_in_bounded_lists(monkeypatch):
    monkeypatch.setattr(segments, "BLOCK", 777)  # lines straddle the decompressed blocks
    batch = records(1, 100, 2500)
    lists = streamed(encode_segment(batch, LEVEL), segment_of(1, 100, 2599), chunk=1000)
    assert [len(part) for part in lists] == [1000, 1000, 500]
    assert [r for part in lists for r in part] == batch
    # The last line needs no line break.
    assert streamed(gzip.compress(encode_lines(batch[:3]).rstrip(b"\n")), segment_of(1, 100, 102)) == [batch[:3]]


def test_corrupt_segments_raise_archive_error():
    with pytest.raises(ArchiveError, match="corrupt"):
        streamed(b"not gzip", segment_of(0, 0, 0))
    with pytest.raises(ArchiveError, match="corrupt"):
        streamed(gzip.compress(b'{"partition":0}\n'), segment_of(0, 0, 0))
    data = encode_segment(records(0, 0, 3000), LEVEL)
    with pytest.raises(ArchiveError, match="corrupt"):  # truncated: the lists before it came already
        streamed(data[:len(data) // 2], segment_of(0, 0, 2999), chunk=100)


@pytest.mark.parametrize("segment, message", [
    (segment_of(0, 9, 20), "offset 10 first"),  # the key names offsets before the object's first
    (segment_of(0, 11, 20), "offset 10 first"),  # ... or after it
    (segment_of(0, 10, 18), "offset 19 after offset 18"),  # the object holds offsets after its key's last
    (segment_of(0, 10, 21), "stops at offset 20, not 21"),  # ... or ends before it
    (segment_of(1, 10, 20), "partition 0 offset 10 first"),  # another partition
])
def test_a_segment_holding_other_offsets_than_its_key_names_raises_archive_error(segment, message):
    with pytest.raises(ArchiveError, match=message):
        streamed(encode_segment(records(0, 10, 11), LEVEL), segment, chunk=3)


def test_offsets_must_increase_within_a_segment():
    twice = records(0, 10, 3) + records(0, 12, 3)
    with pytest.raises(ArchiveError, match="offset 12 after offset 12"):
        streamed(gzip.compress(encode_lines(twice)), segment_of(0, 10, 14))


def test_plan_drops_overlaps_and_finds_holes():
    def seg(first, last):
        return Segment(0, first, last, segment_key("t", 0, first, last))

    chain = [seg(0, 9), seg(10, 19), seg(20, 29)]
    assert plan(chain) == chain
    # An overlapping rewrite (a zombie writer during a rebalance) is read once.
    assert plan(chain + [seg(10, 14), seg(15, 25)]) == chain
    assert plan(chain + [seg(15, 25), seg(26, 40)]) == chain + [seg(26, 40)]
    assert plan([seg(0, 9), seg(5, 14), seg(15, 20)]) == [seg(0, 9), seg(5, 14), seg(15, 20)]
    assert plan([seg(0, 4), seg(0, 9), seg(3, 12), seg(5, 7), seg(10, 12)]) == [seg(0, 9), seg(3, 12)]
    with pytest.raises(ArchiveError, match="10..19"):
        plan([seg(0, 9), seg(20, 29)])
    assert plan([seg(0, 9), seg(20, 29)], strict=False) == [seg(0, 9), seg(20, 29)]


def test_a_strict_plan_covers_each_partition_from_its_log_start():
    # The first segment starts after the log start: offsets 0..399 would be lost.
    with pytest.raises(ArchiveError, match=r"partition 0: offsets 0\.\.399"):
        plan_archive({0: [segment_of(0, 400, 499)]}, {0: range(0, 500)})
    # A partition whose log holds records has no segment at all, listed or not.
    with pytest.raises(ArchiveError, match=r"partition 1 is not archived.* 0\.\.4 "):
        plan_archive({0: [segment_of(0, 0, 9)], 1: []}, {0: range(0, 10), 1: range(0, 5)})
    with pytest.raises(ArchiveError, match=r"partition 1 is not archived.* 3\.\.4 "):
        plan_archive({0: [segment_of(0, 0, 9)]}, {0: range(0, 10), 1: range(3, 5)})
    # A partition the log does not name is held to offset 0.
    with pytest.raises(ArchiveError, match=r"partition 2: offsets 0\.\.4"):
        plan_archive({2: [segment_of(2, 5, 9)]}, {})
    # A hole between segments is still one.
    with pytest.raises(ArchiveError, match=r"10\.\.19"):
        plan_archive({0: [segment_of(0, 0, 9), segment_of(0, 20, 29)]}, {0: range(0, 30)})


def test_a_strict_plan_allows_a_later_log_start_and_an_archive_behind_the_log_end():
    # The broker deleted offsets 0..399: the archive need not hold them.
    assert plan_archive({0: [segment_of(0, 400, 499)]}, {0: range(400, 500)}) == [[segment_of(0, 400, 499)]]
    # ... and when it still does, they are read.
    kept = [segment_of(0, 0, 399), segment_of(0, 400, 499)]
    assert plan_archive({0: kept}, {0: range(450, 900)}) == [kept]
    # The archiver has not written the newest records yet; a partition with no records has no segment.
    assert plan_archive({0: [segment_of(0, 0, 9)], 1: [segment_of(1, 0, 4), segment_of(1, 0, 2)]},
                        {0: range(0, 1000), 1: range(0, 50), 2: range(0), 3: range(7, 7)}) == \
        [[segment_of(0, 0, 9)], [segment_of(1, 0, 4)]]
    assert plan_archive({}, {0: range(0), 1: range(0)}) == []


def test_a_plan_without_the_log_skips_holes():
    # For verification, which names the holes by comparing with the log.
    holed = [segment_of(0, 400, 499), segment_of(0, 600, 699)]
    assert plan_archive({0: holed, 1: [], 2: [segment_of(2, 0, 9)]}, None) == [holed, [segment_of(2, 0, 9)]]


# -- on S3 (the session stack's SeaweedFS) ---------------------------------------------------------


@pytest.fixture
def s3_bucket(env):
    """The stack's archive bucket. Tests use topics of their own (keys start with the topic): a
    bucket per test would exhaust SeaweedFS's volume slots (each bucket reserves its own)."""
    from harmony.settings import load
    from archive.segments import ensure_bucket, s3_client

    settings = load()
    client = s3_client(settings.s3_endpoint, settings.aws_access_key_id, settings.aws_secret_access_key)
    ensure_bucket(client, settings.s3_bucket)
    return client, settings.s3_bucket


@pytest.mark.integration
def test_list_read_and_the_archives_end_on_s3(s3_bucket):
    s3, bucket = s3_bucket
    topic = f"t.{uuid.uuid4().hex[:8]}"
    assert ArchiveProgress(s3, bucket, topic).archived() == {}
    assert ArchiveProgress(s3, bucket, topic).archived([0, 1]) == {0: -1, 1: -1}
    written = {0: [], 1: []}
    # Many small segments: more than one listing page (1000 keys).
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda first: put_segment(s3, bucket, topic, records(0, first, 1), LEVEL), range(1200)))
    written[0] = records(0, 0, 1200)
    for first in (0, 3000, 6000):
        batch = records(1, first, 3000)
        put_segment(s3, bucket, topic, batch, LEVEL)
        written[1] += batch
    put_segment(s3, bucket, topic + "2", records(0, 0, 5), LEVEL)  # another topic sharing the prefix's start
    s3.put_object(Bucket=bucket, Key=f"{topic}/p0000/README", Body=b"not a segment")

    segments = list_segments(s3, bucket, topic)
    assert sorted(segments) == [0, 1] and len(segments[0]) == 1200 and len(segments[1]) == 3
    assert [s.first for s in segments[0]] == list(range(1200))
    assert ArchiveProgress(s3, bucket, topic).archived() == {0: 1199, 1: 8999}
    assert ArchiveProgress(s3, bucket, topic).archived([1, 5]) == {1: 8999, 5: -1}

    read = {0: [], 1: []}
    for batch in read_archive(s3, bucket, topic, log={0: range(0, 1200), 1: range(0, 9000)}, prefetch=8):
        read[batch[0].partition] += batch
    assert read == written
    assert [r for b in read_archive(s3, bucket, topic, [1]) for r in b] == written[1]

    # Rewriting a range gives the same key and the same bytes.
    key = segment_key(topic, 1, 3000, 5999)
    before = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    put_segment(s3, bucket, topic, records(1, 3000, 3000), LEVEL)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == before

    # An overlapping segment (different boundaries) is read once; a hole is an error.
    put_segment(s3, bucket, topic, records(1, 4500, 3000), LEVEL)
    assert [r for b in read_archive(s3, bucket, topic, [1]) for r in b] == written[1]
    put_segment(s3, bucket, topic, records(1, 10_000, 10), LEVEL)
    with pytest.raises(ArchiveError, match="9000..9999"):
        list(read_archive(s3, bucket, topic, [1], log={1: range(0, 10_010)}))
    assert sum(len(b) for b in read_archive(s3, bucket, topic, [1])) == 9010  # without the log: skipped
    # A lost first segment is a hole when the log starts before it; a log start after it is not.
    s3.delete_object(Bucket=bucket, Key=segment_key(topic, 1, 10_000, 10_009))
    s3.delete_object(Bucket=bucket, Key=segment_key(topic, 1, 0, 2999))
    with pytest.raises(ArchiveError, match=r"partition 1: offsets 0\.\.2999"):
        list(read_archive(s3, bucket, topic, [1], log={1: range(0, 9000)}))
    assert sum(len(b) for b in read_archive(s3, bucket, topic, [1], log={1: range(3000, 9000)})) == 6000


@pytest.mark.integration
def test_malformed_records_on_s3(s3_bucket):
    s3, bucket = s3_bucket
    topic = f"odd.{uuid.uuid4().hex[:8]}"
    put_segment(s3, bucket, topic, ODD, LEVEL)
    assert [r for b in read_archive(s3, bucket, topic) for r in b] == ODD
    assert ArchiveProgress(s3, bucket, topic).archived() == {3: 27}
