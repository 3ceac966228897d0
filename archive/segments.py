"""The S3 event archive's segments: their object format and keys, writing, listing and reading.

Shared by the archiver (archive/buffer.py), `harmony verify` / `rebuild --from-archive`
and the Spark replay. The archive holds exactly the log's records, malformed ones included.

Objects ("segments") hold many consecutive records of one partition as gzip JSON Lines:

    {topic}/p{partition:04d}/{first:012d}-{last:012d}.jsonl.gz

Keys are deterministic in (topic, partition, first offset, last offset) and zero-padded, so
lexicographic order is offset order, and re-archiving a range writes the same key with the same
bytes (gzip mtime is 0, the encoding is canonical). One line per record, fields in this order:

    {"partition":0,"offset":12,"key":"user-1","value":{...the event JSON, byte for byte...}}

- `value`: the record value embedded as-is when it is one valid JSON text in UTF-8 with no
  surrounding whitespace and no line break (every event the code writes);
  `value_b64`: the standard base64 of the raw bytes otherwise (malformed records, empty values);
  neither: the record has no value (a tombstone).
- `key`: the key as a string when it is valid UTF-8; `key_b64`: base64 otherwise; neither: no key.

Decoding gives back `events.reader.LogRecord`s whose key and value bytes equal the log's.

Invariants the archiver keeps: a partition's segments form a chain without holes; each segment's
records have increasing offsets from `first` to `last` (the review log has no transaction markers
and no compaction, so they are consecutive). Two writers can overlap only briefly (a rebalance):
readers here skip records already read from an earlier, overlapping segment. Whether a chain
starts where the log does, and whether every partition with records has one, only the log's
offsets tell: readers that must not miss a record pass them (`plan_archive`).

Compaction (archive/compaction.py) merges runs of segments into bigger segments of the same
format and key scheme, writing the merged object before deleting the ones it covers: planning
prefers the object that reaches furthest, so it leaves out the covered ones while both exist, and
readers that planned before a deletion plan again (`read_archive`) or read the cover (`iter_segment`).

Readers stream: a segment's records come in lists of a bounded number, decompressed, decoded and
checked as the object's bytes arrive, so a reader's memory does not grow with the object (a
compacted one is 64 MiB compressed, ~10x that as JSON, millions of records).
"""

from __future__ import annotations

import base64
import gzip
import io
import logging
import re
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from typing import Iterable, Iterator, NamedTuple

import msgspec
from botocore.exceptions import ClientError
from msgspec import UNSET, Raw, UnsetType

from events.errors import HarmonyError
from events.reader import LogRecord

SUFFIX = ".jsonl.gz"
logger = logging.getLogger(__name__)  # not `log`: that names the log's offsets here
CHUNK = 50_000  # records in a list readers yield
BLOCK = 1 << 20  # decompressed bytes decoded at once
FETCH_AHEAD = 4 << 20  # objects up to this size (compressed) are fetched whole ahead; bigger ones stream
_KEY_PATTERN = re.compile(r"^(?P<topic>.+)/p(?P<partition>\d{4,})/(?P<first>\d{12,})-(?P<last>\d{12,})\.jsonl\.gz$")


class ArchiveError(HarmonyError):
    """The archive cannot be used: S3 does not answer, a hole in it, a corrupt segment."""


class SegmentGone(ArchiveError):
    """A listed segment is no longer there (compaction merged it into a bigger object)."""


class Segment(NamedTuple):
    partition: int
    first: int
    last: int
    key: str
    size: int = 0  # bytes of the object, when known from a listing

    @property
    def count(self) -> int:
        """Records in the segment (offsets are consecutive in the review log)."""
        return self.last - self.first + 1


class _Line(msgspec.Struct, omit_defaults=True):
    partition: int
    offset: int
    key: str | UnsetType = UNSET
    key_b64: str | UnsetType = UNSET
    value: Raw | UnsetType = UNSET
    value_b64: str | UnsetType = UNSET


_encoder = msgspec.json.Encoder()
_line_decoder = msgspec.json.Decoder(_Line)
_raw_decoder = msgspec.json.Decoder(Raw)
_raw_list_decoder = msgspec.json.Decoder(list[Raw])


def s3_client(endpoint: str | None, access_key: str | None, secret_key: str | None, region: str = "us-east-1", *,
              retries: int = 2, connect_timeout: float = 2, read_timeout: float = 10):
    """A boto3 S3 client with path-style addressing (SeaweedFS has no virtual-host buckets).
    None for the endpoint or keys: boto3's defaults (AWS, its credential chain)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=access_key, aws_secret_access_key=secret_key,
        region_name=region,
        config=Config(retries={"max_attempts": retries}, connect_timeout=connect_timeout,
                      read_timeout=read_timeout, s3={"addressing_style": "path"}),
    )


def ensure_bucket(client, bucket: str) -> None:
    try:
        client.create_bucket(Bucket=bucket)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    except client.exceptions.BucketAlreadyExists:
        pass


# -- keys ----------------------------------------------------------------------------------------


def partition_prefix(topic: str, partition: int | None = None) -> str:
    """The key prefix of a topic's segments, or of one partition's."""
    return f"{topic}/" if partition is None else f"{topic}/p{partition:04d}/"


def segment_key(topic: str, partition: int, first: int, last: int) -> str:
    if not 0 <= first <= last:
        raise ValueError(f"not an offset range: {first}..{last}")
    return f"{partition_prefix(topic, partition)}{first:012d}-{last:012d}{SUFFIX}"


def parse_segment_key(key: str, size: int = 0) -> Segment | None:
    """The segment a key names, or None for any other object."""
    match = _KEY_PATTERN.match(key)
    if match is None:
        return None
    return Segment(int(match["partition"]), int(match["first"]), int(match["last"]), key, size)


# -- the object format ----------------------------------------------------------------------------


def _embeddable(value: bytes) -> bool:
    """True if the bytes can stand in a JSON line as they are and decode back identically."""
    if b"\n" in value or b"\r" in value:
        return False
    try:
        raw = _raw_decoder.decode(value)  # checks the syntax, not the UTF-8
    except msgspec.DecodeError:
        return False
    if len(raw) != len(value):  # surrounding whitespace would be lost
        return False
    if not value.isascii():
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


def _embeddable_all(values: list[bytes]) -> bool:
    """True if every value is embeddable, checked with a few C-speed passes over them all.

    The values joined with commas are parsed as one JSON array. If it has as many elements as
    there are values, and each element is exactly as long as its value, the elements are the
    values themselves (they are in order, disjoint, and their lengths plus the commas add up to
    the whole text, so no whitespace lies around any of them): each is one valid JSON text.
    """
    if not values:
        return True
    joined = b",".join(values)
    if b"\n" in joined or b"\r" in joined:
        return False
    if not joined.isascii():
        try:
            joined.decode("utf-8")
        except UnicodeDecodeError:
            return False
    try:
        elements = _raw_list_decoder.decode(b"[" + joined + b"]")
    except msgspec.DecodeError:
        return False
    return len(elements) == len(values) and all(len(e) == len(v) for e, v in zip(elements, values))


def _line(record: LogRecord, embeddable: bool) -> _Line:
    key, value = record.key, record.value
    line = _Line(record.partition, record.offset)
    if key is not None:
        try:
            line.key = key.decode("utf-8")
        except UnicodeDecodeError:
            line.key_b64 = base64.b64encode(key).decode("ascii")
    if value is not None:
        if embeddable:
            line.value = Raw(value)
        else:
            line.value_b64 = base64.b64encode(value).decode("ascii")
    return line


def encode_lines(records: list[LogRecord]) -> bytes:
    """The uncompressed JSON Lines of records (one line each, newline-terminated)."""
    values = [r.value for r in records if r.value is not None]
    if len(values) == len(records) and _embeddable_all(values):
        try:  # the common case: every value an event, every key UTF-8
            return _encoder.encode_lines(
                [_Line(r.partition, r.offset, key=r.key.decode("utf-8"), value=Raw(r.value)) for r in records]
            )
        except (AttributeError, UnicodeDecodeError):
            pass  # a key is missing or not UTF-8
        lines = [_line(r, True) for r in records]
    else:  # some record is not JSON or has no value: decide one by one
        lines = [_line(r, r.value is not None and _embeddable(r.value)) for r in records]
    return _encoder.encode_lines(lines)


def encode_segment(records: list[LogRecord], compresslevel: int) -> bytes:
    """One segment object: the records of one partition, offsets increasing, gzip JSON Lines.

    Deterministic: the same records give the same bytes (gzip mtime 0, no file name).
    """
    if not records:
        raise ValueError("a segment holds at least one record")
    partition = records[0].partition
    previous = -1
    for record in records:
        if record.partition != partition:
            raise ValueError(f"a segment holds one partition: {partition} and {record.partition}")
        if record.offset <= previous:
            raise ValueError(f"offsets must increase: {previous} then {record.offset}")
        previous = record.offset
    return gzip.compress(encode_lines(records), compresslevel=compresslevel, mtime=0)


def _record(line: _Line) -> LogRecord:
    key = line.key.encode("utf-8") if line.key is not UNSET else (
        base64.b64decode(line.key_b64) if line.key_b64 is not UNSET else None)
    value = bytes(line.value) if line.value is not UNSET else (
        base64.b64decode(line.value_b64) if line.value_b64 is not UNSET else None)
    return LogRecord(line.partition, line.offset, key, value)


def _decoded(body, key: str) -> Iterator[LogRecord]:
    """The records of a segment object read from `body` (a file), decompressed and decoded a block
    at a time (memory: a block and its records); `body` is closed at the end, or when closed early."""
    try:
        with gzip.GzipFile(fileobj=body, mode="rb") as data:
            rest = b""
            while block := data.read(BLOCK):
                lines, _, rest = (rest + block).rpartition(b"\n")
                yield from map(_record, _line_decoder.decode_lines(lines))
            yield from map(_record, _line_decoder.decode_lines(rest))  # a last line without a line break
    except (OSError, EOFError, msgspec.DecodeError, ValueError) as error:
        raise ArchiveError(f"corrupt segment {key}: {error}") from error
    finally:
        body.close()


def _records(segment: Segment, source: Segment, body, chunk: int) -> Iterator[list[LogRecord]]:
    """`segment`'s records in lists of at most `chunk`, read from `body`, the object of `source` (the
    segment itself, or an object covering it). Checked as they go, as keys promise: the object's
    records are of its partition, begin at its first offset, increase, stay within its last; the
    segment's run to its last offset. Else ArchiveError (lists may have been yielded before)."""
    batch: list[LogRecord] = []
    previous = source.first - 1
    with closing(_decoded(body, source.key)) as records:  # closed at the break too
        for record in records:
            if (record.partition != source.partition or record.offset <= previous or record.offset > source.last
                    or (previous < source.first and record.offset != source.first)):
                where = f"after offset {previous}" if previous >= source.first else "first"
                raise ArchiveError(f"segment {source.key} holds partition {record.partition} offset {record.offset} "
                                   f"{where}")
            if record.offset > segment.last:
                break  # read from a cover: the rest is not the segment's
            previous = record.offset
            if record.offset >= segment.first:
                batch.append(record)
                if len(batch) == chunk:
                    yield batch
                    batch = []
    if previous != segment.last:
        raise ArchiveError(f"segment {source.key} stops at offset {previous}, not {segment.last}")
    if batch:
        yield batch


# -- S3 ---------------------------------------------------------------------------------------------


def list_segments(s3, bucket: str, topic: str, partitions: Iterable[int] | None = None) -> dict[int, list[Segment]]:
    """Every segment of a topic (or of some partitions), per partition, in offset order.

    Objects under the topic's prefix that are not segments are ignored. Listing is paginated.
    """
    found: dict[int, list[Segment]] = {} if partitions is None else {p: [] for p in partitions}
    for segment, _ in listed(s3, bucket, topic, partitions):
        found.setdefault(segment.partition, []).append(segment)
    for segments in found.values():
        segments.sort(key=lambda s: (s.first, s.last))
    return dict(sorted(found.items()))


def listed(s3, bucket: str, topic: str, partitions: Iterable[int] | None = None) -> Iterator[tuple[Segment, dict]]:
    """Each segment of a topic (or of some partitions) with its listing entry (`LastModified`...)."""
    prefixes = [partition_prefix(topic)] if partitions is None else [partition_prefix(topic, p) for p in partitions]
    paginator = s3.get_paginator("list_objects_v2")
    for prefix in prefixes:
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", ()):
                segment = parse_segment_key(item["Key"], item.get("Size", 0))
                # Only canonical keys of this topic (a key could parse with another topic's prefix).
                if segment is not None and segment.key == segment_key(
                        topic, segment.partition, segment.first, segment.last):
                    yield segment, item


def put_segment(s3, bucket: str, topic: str, records: list[LogRecord], compresslevel: int) -> Segment:
    """Encode records as one segment and PUT it (blocking; run it in a thread from async code)."""
    body = encode_segment(records, compresslevel)
    first, last = records[0], records[-1]
    key = segment_key(topic, first.partition, first.offset, last.offset)
    # No Content-Encoding header: clients would decompress transparently and hand back JSON Lines.
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/gzip")
    return Segment(first.partition, first.offset, last.offset, key, len(body))


def iter_segment(s3, bucket: str, segment: Segment, chunk: int = CHUNK) -> Iterator[list[LogRecord]]:
    """The records of a planned segment, in order, in lists of at most `chunk`: streamed from S3,
    decompressed, decoded and checked as they arrive (ArchiveError if the object does not hold
    exactly the offsets its key names). If compaction has since merged the segment into a bigger
    object and deleted it, they are read from that object (a reader planning many segments does
    better to plan again, as `read_archive` does: each one gone costs a read of its cover up to it)."""
    try:
        source, body = segment, _open(s3, bucket, segment.key)
    except SegmentGone:
        source = _cover(s3, bucket, segment)
        logger.warning("segment gone, reading its cover", extra={"key": segment.key, "cover": source.key})
        body = _open(s3, bucket, source.key)
    yield from _records(segment, source, body, chunk)


def _cover(s3, bucket: str, segment: Segment) -> Segment:
    """An object holding all of a segment's offsets: the one starting last, the fewest to skip."""
    topic = segment.key.rsplit("/", 2)[0]
    covers = [s for s in list_segments(s3, bucket, topic, [segment.partition])[segment.partition]
              if s.first <= segment.first and s.last >= segment.last]
    if not covers:
        raise ArchiveError(f"segment {segment.key} is gone and no object covers it")
    return covers[-1]


def get_object(s3, bucket: str, key: str) -> bytes:
    """A segment object's bytes; SegmentGone if it is not there (any more)."""
    return _open(s3, bucket, key).read()


def _open(s3, bucket: str, key: str):
    """A segment object's body, a file to read as its bytes arrive; SegmentGone if it is not there (any more)."""
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"]
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            raise SegmentGone(f"segment {key} is gone (compaction merged it into a bigger one)") from None
        raise


def _fetched(s3, bucket: str, segment: Segment) -> io.BytesIO:
    return io.BytesIO(get_object(s3, bucket, segment.key))


def plan(segments: list[Segment], strict: bool = True) -> list[Segment]:
    """The fewest segments that cover one partition's archive, in order (overlaps are left out
    where another segment covers them). With strict, a hole between segments raises ArchiveError
    (a hole before the first segment only `plan_archive` can see: it knows where the log starts).
    """
    ordered = sorted(segments, key=lambda s: (s.first, s.last))
    chosen: list[Segment] = []
    covered = -1
    index = 0
    while index < len(ordered):
        if ordered[index].last <= covered:
            index += 1
            continue  # wholly inside what is chosen already
        reach = covered + 1 if chosen else ordered[index].first
        if ordered[index].first > reach:
            if strict:
                raise ArchiveError(f"hole in the archive of partition {ordered[index].partition}: "
                                   f"offsets {covered + 1}..{ordered[index].first - 1}")
            reach = ordered[index].first
        best = ordered[index]
        while index < len(ordered) and ordered[index].first <= reach:
            if ordered[index].last > best.last:
                best = ordered[index]
            index += 1
        chosen.append(best)
        covered = best.last
    return chosen


def plan_archive(found: dict[int, list[Segment]], log: dict[int, range] | None) -> list[list[Segment]]:
    """Each partition's plan (see `plan`), in partition order, leaving out partitions with nothing archived.

    Given `log`, the offsets each partition's log holds (`events.reader.log_offsets`), the plans
    are strict: each partition must be archived from its log start on (0 for a partition the log
    does not name) without a hole, else ArchiveError; so must a partition whose log holds records
    but which has no segment. The archive may end before the log end (the archiver has not got
    there yet) and begin before the log start (the broker deleted records the archive keeps).
    Without `log`, holes are skipped: for callers that name them by comparing with the log.
    """
    chains = []
    for partition in sorted(found.keys() | (log or {}).keys()):
        chain = plan(found.get(partition, []), strict=log is not None)
        if log is not None:
            offsets = log.get(partition, range(0))
            if offsets and not chain:
                raise ArchiveError(f"partition {partition} is not archived, though its log holds offsets "
                                   f"{offsets.start}..{offsets.stop - 1} (is `harmony archiver` running?)")
            if chain and chain[0].first > offsets.start:
                raise ArchiveError(f"hole in the archive of partition {partition}: offsets "
                                   f"{offsets.start}..{chain[0].first - 1} (the log starts at {offsets.start})")
        if chain:
            chains.append(chain)
    return chains


def read_archive(
    s3, bucket: str, topic: str, partitions: Iterable[int] | None = None, *,
    log: dict[int, range] | None = None, prefetch: int = 4, chunk: int = CHUNK,
) -> Iterator[list[LogRecord]]:
    """Yield the archived records in lists of at most `chunk` (a segment may come as several),
    partition after partition in offset order, each list of one partition.

    Up to `prefetch` segments are fetched ahead by a thread pool (the boto3 client is shared;
    boto3 clients are thread-safe), whole and compressed if at most FETCH_AHEAD bytes (the
    archiver's: many and small); bigger ones (compacted) stream when their turn comes, so memory
    stays bounded whatever the objects' size. Overlapping segments are trimmed, so no offset is
    yielded twice. Given `log` (the offsets of the partitions read, see `plan_archive`), a hole
    raises ArchiveError before anything is read; without it, holes are skipped. A segment that
    compaction deleted after the listing (archive/compaction.py writes its cover first) makes the
    rest of its partition be listed and planned again from the last offset yielded.
    """
    strict = log is not None
    order = deque(segment for chain in plan_archive(list_segments(s3, bucket, topic, partitions), log)
                  for segment in chain)
    pool = ThreadPoolExecutor(max_workers=max(1, prefetch), thread_name_prefix="archive-read")
    pending: deque[tuple[Segment, Future | None]] = deque()  # None: to stream, not fetched ahead

    def refill() -> None:
        while order and len(pending) < max(1, prefetch):
            segment = order.popleft()
            ahead = pool.submit(_fetched, s3, bucket, segment) if segment.size <= FETCH_AHEAD else None
            pending.append((segment, ahead))

    try:
        covered: dict[int, int] = {}
        refill()
        while pending:
            item, ahead = pending.popleft()
            try:
                body = _open(s3, bucket, item.key) if ahead is None else ahead.result()
            except SegmentGone:
                after = covered.get(item.partition, item.first - 1)
                rest = [s for s, _ in pending if s.partition != item.partition] + [
                    s for s in order if s.partition != item.partition]
                for _, other in pending:
                    if other is not None:
                        other.cancel()
                pending.clear()
                order = deque(_replanned(s3, bucket, topic, item, after, strict) + rest)
                logger.info("segment gone, planned again", extra={"key": item.key, "after": after})
                refill()
                continue
            refill()
            last = covered.get(item.partition, -1)
            with closing(_records(item, item, body, chunk)) as batches:  # closed if the reader stops early
                for records in batches:
                    if records[0].offset <= last:
                        records = [r for r in records if r.offset > last]
                    if records:
                        covered[item.partition] = records[-1].offset
                        yield records
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _replanned(s3, bucket: str, topic: str, gone: Segment, after: int, strict: bool) -> list[Segment]:
    """A partition's plan from offset after + 1 on, listed again since `gone` vanished."""
    later = [s for s in list_segments(s3, bucket, topic, [gone.partition])[gone.partition] if s.last > after]
    chain = plan(later, strict)
    if strict and (not chain or chain[0].first > after + 1):
        raise ArchiveError(f"segment {gone.key} is gone and no object covers offsets {after + 1}.."
                           f"{chain[0].first - 1 if chain else gone.last}")
    return chain
