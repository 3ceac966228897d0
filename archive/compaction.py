"""Archive compaction: merge a partition's closed segments into bigger segments, so that the archive
stays a few objects per partition and day instead of one every few seconds of trickle.

A merged object is a segment like any other (archive/segments.py: same key scheme, same format),
holding the records of a run of consecutive segments, overlaps (a rebalance's) once. Runs, walked
in offset order along each partition's plan:

- a run is cut at a hole (never bridged: a key claims every offset from first to last), once it
  holds `target_bytes` (compressed), and before a segment written `age` seconds or more after the
  run's first one (a merged object remembers when its oldest segment was written, in its metadata);
- a run is closed, so merged, when it is cut, or when it holds `target_bytes`, or when its first
  segment was written `age` or more ago. The partition's newest segment is never merged: the
  archiver's next segment follows it, and in a rebalance another writer may still be writing a
  segment that overlaps it; leaving it alone keeps the archive's end where the archiver wrote it.
  A closed run is never merged again (what follows starts a new run), so each record is rewritten
  about once.

Crash safety, with readers reading meanwhile (no gap, no duplicate): the merged object is written
(PUT, atomic) before any segment it covers is deleted, and only segments strictly inside one
listed or written object are ever deleted, so every offset stays in some object at every moment
(strict inclusion has no cycles: the outermost object of a chain of inclusions is never deleted).
While both exist, planning takes the object that reaches furthest, and readers trim overlaps. A
reader that planned before a deletion plans that partition again (`read_archive`) or reads the
cover (`iter_segment`). A compactor stopped after its PUT, or among its deletes, leaves segments
inside the merged object; the next pass deletes them first.

Memory: records stream from the inputs (a few compressed objects fetched ahead) through gzip to a
temporary file, a megabyte at a time; the file is then PUT (a merged object is about `target_bytes`,
64 MiB by default, ~10x that raw, which is never held).
"""

from __future__ import annotations

import gzip
import io
import logging
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, NamedTuple

import msgspec

from archive.segments import ArchiveError, Segment, get_object, listed, segment_key
from archive.segments import plan as chain_of

log = logging.getLogger(__name__)

WRITTEN_FROM = "written-from"  # object metadata: when the oldest segment of a merged object was written
DELETE_BATCH = 1000  # keys per DeleteObjects request (S3's limit)
CHUNK = 1 << 20  # bytes copied at once from an input to the merged object
PREFETCH = 8  # input objects fetched ahead: most are small, and one at a time waits on S3 for each


@dataclass(frozen=True)
class CompactionPolicy:
    target_bytes: int  # a run is closed once it holds this many bytes (compressed)
    age: float  # ... or once it spans this many seconds of writes
    gzip_level: int


class Run(NamedTuple):
    segments: list[Segment]  # consecutive in a partition's plan, offsets in order
    began: float  # when its oldest segment was written (seconds since the epoch)
    covered: list[Segment]  # every listed segment inside the run's range (its members and overlaps)


@dataclass
class Plan:
    """What a pass does: delete leftovers (segments inside another object), then merge the runs."""

    objects: int  # segment objects listed
    leftovers: list[Segment] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(segment.size for run in self.runs for segment in run.segments)


class _Position(msgspec.Struct):
    partition: int
    offset: int


_position = msgspec.json.Decoder(_Position)


class Compactor:
    """Compacts one topic's archive. `checkpoint(step, segment)`, if given, is called at each step
    ("merged": spooled, not yet written; "written": the merged object is in S3; "deleted": a batch
    of covered segments is gone, `segment` the batch's last): tests stop the compactor there."""

    def __init__(self, s3, bucket: str, topic: str, policy: CompactionPolicy, *,
                 checkpoint: Callable[[str, Segment], None] | None = None, clock: Callable[[], float] = time.time):
        self.s3, self.bucket, self.topic, self.policy = s3, bucket, topic, policy
        self._checkpoint = checkpoint or (lambda step, segment: None)
        self._clock = clock
        self._written_from: dict[str, float] = {}  # key -> when its oldest segment was written (keys never change)

    def compact(self, partitions: Iterable[int] | None = None,
                progress: Callable[[int], None] | None = None) -> dict:
        """One pass over some partitions (default: all); answers its figures."""
        return self.run(self.plan(partitions), progress)

    def plan(self, partitions: Iterable[int] | None = None) -> Plan:
        by_partition: dict[int, list[tuple[Segment, float]]] = {}
        for segment, item in listed(self.s3, self.bucket, self.topic, partitions):
            by_partition.setdefault(segment.partition, []).append((segment, item["LastModified"].timestamp()))
        result = Plan(objects=sum(len(found) for found in by_partition.values()))
        for partition, found in sorted(by_partition.items()):
            modified = {segment.key: at for segment, at in found}
            leftovers, kept = _split_inside([segment for segment, _ in found])
            result.leftovers += leftovers
            for segments, began in self._closed_runs(chain_of(kept, strict=False), modified):
                if len(segments) > 1:
                    first, last = segments[0].first, segments[-1].last
                    result.runs.append(Run(segments, began, [s for s in kept if first <= s.first and s.last <= last]))
        return result

    def run(self, plan: Plan, progress: Callable[[int], None] | None = None) -> dict:
        """Delete the plan's leftovers, then merge its runs; answers figures. `progress(bytes)`:
        called as each input segment has been read."""
        started = time.monotonic()
        deleted = self._delete(plan.leftovers)
        written = records = size = 0
        for run in plan.runs:
            merged = self._merge(run, progress)
            self._checkpoint("written", merged)
            deleted += self._delete(run.covered)
            written += 1
            records += merged.count
            size += merged.size
        return {"objects_before": plan.objects, "objects_after": plan.objects + written - deleted,
                "merged": written, "segments_merged": sum(len(run.segments) for run in plan.runs),
                "records": records, "bytes_written": size, "deleted": deleted,
                "seconds": round(time.monotonic() - started, 3)}

    # -- runs ---------------------------------------------------------------------------------------

    def _closed_runs(self, chain: list[Segment], modified: dict[str, float]) -> list[tuple[list[Segment], float]]:
        """The closed runs of a partition's plan, in order, with when each began (see the module doc)."""
        target, age = self.policy.target_bytes, self.policy.age
        runs: list[tuple[list[Segment], float]] = []
        run: list[Segment] = []
        began, size = 0.0, 0
        for segment in chain[:-1]:  # the newest stays
            if run and (segment.first > run[-1].last + 1 or size >= target or modified[segment.key] - began >= age):
                runs.append((run, began))
                run = []
            if not run:
                began, size = self._began(segment, modified[segment.key]), 0
            run.append(segment)
            size += segment.size
        if run and (size >= target or self._clock() - began >= age):
            runs.append((run, began))
        return runs

    def _began(self, segment: Segment, modified: float) -> float:
        """When a segment's oldest records were written: a merged object's metadata says (one HEAD,
        remembered), an archiver's segment's write time is its own."""
        if segment.size >= self.policy.target_bytes:
            return modified  # closed whatever its age
        if segment.key not in self._written_from:
            metadata = self.s3.head_object(Bucket=self.bucket, Key=segment.key).get("Metadata", {})
            self._written_from[segment.key] = float(metadata.get(WRITTEN_FROM, modified))
        return self._written_from[segment.key]

    # -- merging and deleting -------------------------------------------------------------------------

    def _merge(self, run: Run, progress: Callable[[int], None] | None) -> Segment:
        """Write one object holding the run's records (each offset once); answers it."""
        started = time.monotonic()
        segments = run.segments
        partition, first, last = segments[0].partition, segments[0].first, segments[-1].last
        key = segment_key(self.topic, partition, first, last)
        with tempfile.TemporaryFile(prefix="harmony-compact-") as spool:
            previous = first - 1
            with gzip.GzipFile(filename="", fileobj=spool, mode="wb", compresslevel=self.policy.gzip_level,
                               mtime=0) as out:
                for segment, body in self._bodies(segments):
                    previous = _append(out, segment, body, previous)
                    if progress is not None:
                        progress(segment.size)
            if previous != last:
                raise ArchiveError(f"merging {segments[0].key}..{segments[-1].key} ended at offset {previous}, "
                                   f"not {last}")
            size = spool.tell()
            spool.seek(0)
            merged = Segment(partition, first, last, key, size)
            self._checkpoint("merged", merged)
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=spool, ContentType="application/gzip",
                               Metadata={WRITTEN_FROM: repr(run.began)})
        log.info("segments compacted", extra={
            "partition": partition, "first": first, "last": last, "segments": len(segments), "bytes": size,
            "seconds": round(time.monotonic() - started, 3), "key": key})
        return merged

    def _bodies(self, segments: list[Segment]) -> Iterator[tuple[Segment, bytes]]:
        """Each segment with its (compressed) object, in order, fetched up to PREFETCH ahead. Memory:
        PREFETCH objects; all but a run's first (perhaps a merged object) are the archiver's."""
        with ThreadPoolExecutor(PREFETCH, thread_name_prefix="compact-read") as pool:
            ahead = [pool.submit(get_object, self.s3, self.bucket, segment.key) for segment in segments[:PREFETCH]]
            for index, segment in enumerate(segments):
                if index + PREFETCH < len(segments):
                    ahead.append(pool.submit(get_object, self.s3, self.bucket, segments[index + PREFETCH].key))
                yield segment, ahead[index].result()
                ahead[index] = None  # its bytes are merged: let them go

    def _delete(self, segments: list[Segment]) -> int:
        """Delete segments that a written object covers; answers how many went. One that will not go
        is left for the next pass (it is covered: readers skip it)."""
        deleted = 0
        for start in range(0, len(segments), DELETE_BATCH):
            batch = segments[start:start + DELETE_BATCH]
            answer = self.s3.delete_objects(Bucket=self.bucket, Delete={
                "Objects": [{"Key": s.key} for s in batch], "Quiet": True})
            errors = answer.get("Errors", [])
            if errors:
                log.warning("covered segments not deleted", extra={"errors": errors[:5], "count": len(errors)})
            deleted += len(batch) - len(errors)
            self._checkpoint("deleted", batch[-1])
        return deleted


def _append(out: gzip.GzipFile, segment: Segment, body: bytes, previous: int) -> int:
    """Append a segment's records after offset `previous` (its compressed object: body): the lines
    of an overlap (a rebalance's) are skipped one by one, the rest is copied in chunks. Answers the
    last offset appended, having checked it is the one the segment's key names."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(body), mode="rb") as lines:
            for line in lines:
                if _position.decode(line).offset > previous:
                    break
            else:  # a plan's next segment always reaches further
                raise ArchiveError(f"segment {segment.key} holds no offset after {previous}")
            out.write(line)
            tail = line  # what follows the last line break before the end: the last line, at the end
            while chunk := lines.read(CHUNK):
                out.write(chunk)
                joined = tail + chunk
                tail = joined[joined.rfind(b"\n", 0, len(joined) - 1) + 1:]
        last = _position.decode(tail).offset
    except (OSError, EOFError, msgspec.DecodeError) as error:
        raise ArchiveError(f"corrupt segment {segment.key}: {error}") from error
    if last != segment.last:
        raise ArchiveError(f"segment {segment.key} ends at offset {last}")
    return last


def _split_inside(segments: list[Segment]) -> tuple[list[Segment], list[Segment]]:
    """(segments strictly inside another one, the others). Keys are unique per range, so in the
    order (first, longest first) a segment is inside another exactly when one before it reaches as far."""
    inside, kept = [], []
    reach = -1
    for segment in sorted(segments, key=lambda s: (s.first, -s.last)):
        (inside if segment.last <= reach else kept).append(segment)
        reach = max(reach, segment.last)
    return inside, kept
