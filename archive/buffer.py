"""The archiver's buffer: a log's records per partition, written to S3 as segments in order.

A partition's buffer becomes one segment (archive/segments.py) when it holds enough records or
bytes, or when its first record is old enough. Segment PUTs run in threads with the shared boto3
client; a partition's segments are written strictly one after another, so what S3 holds is always
a chain without holes. S3 away (down, not answering, a 5xx) is waited out: its calls are retried
with backoff, and the buffers meanwhile hold up the feeder (back-pressure), not memory.

Crash safety does not rest on the feeder's committed offsets (the Faust app, archive/process.py,
acks records long before they reach S3). S3 is the checkpoint: when a partition's first record
arrives (after start or an assignment), the archiver reads its last archived offset from S3
(archive/progress.py: a few requests whatever the archive's size), skips records
at or below it (no duplicates) and reads any range between it and the first delivered record
straight from the log (no gaps), like projections/projector.py's LogProjector. A segment cut off
by a crash is written again, identically or with other boundaries, starting right after what S3
holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import aclosing
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as S3ConnectionError

from archive.progress import ArchiveProgress
from archive.segments import Segment, put_segment
from events.reader import LogRecord, LogTail, read_log
from events.retry import retrying

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentPolicy:
    """When a partition's buffer becomes a segment, and how segments are written."""

    segment_records: int  # records per segment at most
    segment_bytes: int  # bytes of values per segment (about)
    segment_age: float  # seconds a record waits at most before its segment is written
    gzip_level: int
    uploads: int  # segment uploads at once


class Archiver:
    """Buffers a log's records per partition and writes them to S3 as segments, one partition's
    segments in order, never leaving a hole or archiving a record twice (see the module doc).

    Independent of Faust, so tests and benchmarks can drive it. All public coroutines are
    serialized by one lock; uploads run in the background (bounded), in order per partition.
    """

    def __init__(
        self, s3, bucket: str, bootstrap: str, topic: str, policy: SegmentPolicy, *,
        on_written: Callable[[Segment], None] | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
    ):
        self.s3, self.bucket, self.bootstrap, self.topic = s3, bucket, bootstrap, topic
        self.policy = policy
        self.on_written = on_written  # called with each segment S3 holds
        self.on_failure = on_failure  # called once if an upload fails for good (else the next call raises)
        self.archived: dict[int, int] = {}  # last offset S3 holds, per partition (known ones)
        self._accepted: dict[int, int] = {}  # last offset buffered, being uploaded or archived
        self._buffers: dict[int, list[LogRecord]] = {}
        self._buffered_bytes: dict[int, int] = {}
        self._since: dict[int, float] = {}
        self._uploads: dict[int, asyncio.Task] = {}  # the latest upload per partition
        self._in_flight: set[asyncio.Task] = set()
        self._lock = asyncio.Lock()
        self._upload_slots = asyncio.Semaphore(self.policy.uploads)
        self._abort_reads = False
        self._tail = LogTail(bootstrap, topic)
        self._progress = ArchiveProgress(s3, bucket, topic)
        self.failure: BaseException | None = None
        self.segments_written = 0
        self.records_written = 0
        self.bytes_written = 0
        self.records_from_log = 0  # read straight from the log (holes and catch-ups)

    # -- what is known ----------------------------------------------------------------------------

    def next_offset(self, partition: int) -> int | None:
        """The next offset this archiver will accept for a partition; None until S3 was asked."""
        accepted = self._accepted.get(partition)
        return None if accepted is None else accepted + 1

    def buffered(self) -> dict[int, int]:
        return {p: len(b) for p, b in self._buffers.items() if b}

    async def load(self, partitions: Iterable[int] | None = None) -> dict[int, int]:
        """Read the last archived offsets from S3 for partitions (default: all archived ones) not
        known yet; answer what S3 holds."""
        async with self._lock:
            found = await retrying(s3_unavailable, "reading the archive's position", asyncio.to_thread,
                                   self._progress.archived, None if partitions is None else list(partitions))
            for partition, offset in found.items():
                if partition not in self._accepted:
                    self._know(partition, offset)
            return found

    # -- feeding it ---------------------------------------------------------------------------------

    async def add(self, batch: list[LogRecord]) -> None:
        """Archive delivered records: skip what is archived or buffered, fill holes from the log."""
        self._raise_failure()
        by_partition: dict[int, list[LogRecord]] = {}
        for record in batch:
            by_partition.setdefault(record.partition, []).append(record)
        async with self._lock:
            for partition, records in by_partition.items():
                await self._ensure_known(partition)
                for run in _runs(records):
                    await self._accept_run(partition, run)

    async def catch_up(self, until: Mapping[int, int | None], max_seconds: float | None = None) -> int:
        """Archive everything up to (not including) until[p] per partition, read straight from the
        log; None: up to the log end, followed while it grows (the fetch high watermark) until
        reached. Stops early after max_seconds (the lock is held meanwhile). Answers the records read.
        """
        self._raise_failure()
        async with self._lock:
            for partition in until:
                await self._ensure_known(partition)
            start = {p: self._accepted[p] + 1 for p, end in until.items()
                     if end is None or self._accepted[p] + 1 < end}
            if not start:
                return 0
            started = time.monotonic()
            deadline = None if max_seconds is None else started + max_seconds
            count = 0
            async with aclosing(self._tail.read(start, {p: until[p] for p in start})) as chunks:
                async for chunk in chunks:
                    count += await self._accept_chunk(chunk)
                    if self._abort_reads or (deadline is not None and time.monotonic() > deadline):
                        break
            self.records_from_log += count
            log.info("caught up from the log", extra={
                "from": start, "records": count, "seconds": round(time.monotonic() - started, 3),
                "now_at": {p: self._accepted[p] + 1 for p in start}})
            return count

    async def flush_aged(self) -> None:
        """Write the buffers whose first record waited segment_age or longer (unless busy: a
        read from the log in progress does it between chunks)."""
        self._raise_failure()
        if self._lock.locked():
            return
        async with self._lock:
            await self._flush_aged()

    async def flush(self, partitions: Iterable[int] | None = None) -> None:
        """Write every buffer (of some partitions) and wait until S3 holds it all."""
        async with self._lock:
            chosen = list(self._buffers) if partitions is None else [p for p in partitions if p in self._buffers]
            for partition in chosen:
                await self._flush(partition)
            await self._wait_uploads(chosen if partitions is not None else None)
        self._raise_failure()

    async def forget(self, partitions: Iterable[int]) -> None:
        """Before a partition goes to another archiver: write its buffer, then drop what is known,
        so it is asked from S3 again if it comes back. Reads from the log in progress stop early."""
        partitions = list(partitions)
        self._abort_reads = True
        try:
            async with self._lock:
                self._abort_reads = False
                for partition in partitions:
                    if partition in self._buffers:
                        await self._flush(partition)
                await self._wait_uploads(partitions)
                for partition in partitions:
                    self.archived.pop(partition, None)
                    self._accepted.pop(partition, None)
        finally:
            self._abort_reads = False

    async def close(self) -> None:
        """Write everything buffered; wait for the uploads; close the log reader."""
        try:
            await self.flush()
        finally:
            await self._tail.close()

    # -- inside the lock -----------------------------------------------------------------------------

    def _know(self, partition: int, archived: int) -> None:
        self.archived[partition] = archived
        self._accepted[partition] = archived
        self._buffers.pop(partition, None)
        self._buffered_bytes.pop(partition, None)
        self._since.pop(partition, None)

    async def _ensure_known(self, partition: int) -> None:
        if partition in self._accepted:
            return
        found = await retrying(s3_unavailable, "reading the archive's position", asyncio.to_thread,
                               self._progress.archived, [partition])
        self._know(partition, found[partition])
        log.info("archive position", extra={"partition": partition, "archived_until": found[partition]})

    async def _accept_run(self, partition: int, run: list[LogRecord]) -> None:
        """Accept consecutive records of one partition: drop what is already accepted, read the
        range before them from the log if they start beyond the next offset."""
        expected = self._accepted[partition] + 1
        if run[-1].offset < expected:
            return
        if run[0].offset < expected:
            run = run[expected - run[0].offset:]
        elif run[0].offset > expected:
            await self._read_from_log({partition: expected}, {partition: run[0].offset})
            if self._abort_reads:
                return  # cut short (a rebalance): the hole is read again when records come next
            expected = self._accepted[partition] + 1
            if run[-1].offset < expected:
                return
            if run[0].offset < expected:
                run = run[expected - run[0].offset:]
        await self._buffer(partition, run)

    async def _read_from_log(self, start: dict[int, int], end: dict[int, int]) -> int:
        """Buffer the log's records in [start, end) per partition; answer how many."""
        count = 0
        log.info("reading from the log", extra={"from": start, "until": end})
        async with aclosing(read_log(self.bootstrap, self.topic, start=start, end=end)) as chunks:
            async for chunk in chunks:
                count += await self._accept_chunk(chunk)
                if self._abort_reads:
                    break
        self.records_from_log += count
        return count

    async def _flush_aged(self) -> None:
        now = time.monotonic()
        for partition, since in list(self._since.items()):
            if now - since >= self.policy.segment_age:
                await self._flush(partition)

    async def _accept_chunk(self, chunk: list[LogRecord]) -> int:
        """Buffer records read from the log (beyond what is accepted); answer how many."""
        count = 0
        by_partition: dict[int, list[LogRecord]] = {}
        for record in chunk:
            by_partition.setdefault(record.partition, []).append(record)
        for partition, records in by_partition.items():
            expected = self._accepted[partition] + 1
            if records[0].offset < expected:
                records = [r for r in records if r.offset >= expected]
            if records:
                count += len(records)
                await self._buffer(partition, records)
        await self._flush_aged()
        return count

    async def _buffer(self, partition: int, records: list[LogRecord]) -> None:
        limit = self.policy.segment_records
        while records:
            buffer = self._buffers.setdefault(partition, [])
            if not buffer:
                self._since[partition] = time.monotonic()
            room = limit - len(buffer)
            taken, records = (records, []) if len(records) <= room else (records[:room], records[room:])
            buffer.extend(taken)
            self._buffered_bytes[partition] = self._buffered_bytes.get(partition, 0) + sum(
                [len(r.value) for r in taken if r.value is not None])
            self._accepted[partition] = taken[-1].offset
            if len(buffer) >= limit or self._buffered_bytes[partition] >= self.policy.segment_bytes:
                await self._flush(partition)

    async def _flush(self, partition: int) -> None:
        records = self._buffers.pop(partition, None)
        self._buffered_bytes.pop(partition, None)
        self._since.pop(partition, None)
        if not records:
            return
        # Back-pressure: at most `uploads` segments being written and one more queued per upload slot.
        while len(self._in_flight) >= 2 * self.policy.uploads:
            await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
            self._raise_failure()
        previous = self._uploads.get(partition)
        task = asyncio.create_task(self._upload(partition, records, previous))
        self._uploads[partition] = task
        self._in_flight.add(task)
        task.add_done_callback(self._upload_done)

    async def _upload(self, partition: int, records: list[LogRecord], previous: asyncio.Task | None) -> None:
        if previous is not None:
            await previous  # a partition's segments in order: a failed one stops the ones after it
        started = time.monotonic()
        async with self._upload_slots:
            segment = await retrying(s3_unavailable, "writing a segment", asyncio.to_thread,
                                     put_segment, self.s3, self.bucket, self.topic, records, self.policy.gzip_level)
        self.archived[partition] = max(self.archived.get(partition, -1), segment.last)
        self.segments_written += 1
        self.records_written += len(records)
        self.bytes_written += segment.size
        log.info("segment written", extra={
            "partition": partition, "first": segment.first, "last": segment.last, "records": len(records),
            "bytes": segment.size, "seconds": round(time.monotonic() - started, 3), "key": segment.key})
        if self.on_written is not None:
            self.on_written(segment)

    def _upload_done(self, task: asyncio.Task) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and task.exception() is not None and self.failure is None:
            self.failure = task.exception()
            log.error("segment upload failed", exc_info=self.failure)
            if self.on_failure is not None:
                self.on_failure(self.failure)

    async def _wait_uploads(self, partitions: Iterable[int] | None = None) -> None:
        tasks = list(self._in_flight) if partitions is None else [
            self._uploads[p] for p in partitions if p in self._uploads]
        if tasks:
            await asyncio.wait(tasks)

    def _raise_failure(self) -> None:
        if self.failure is not None:
            raise RuntimeError(f"a segment upload failed: {self.failure!r}") from self.failure


def s3_unavailable(error: BaseException) -> bool:
    """True for failures that mean S3 is away for now: no connection, no answer in time, a 5xx."""
    if isinstance(error, ClientError):
        return error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500
    return isinstance(error, (S3ConnectionError, HTTPClientError))


def _runs(records: list[LogRecord]) -> list[list[LogRecord]]:
    """Split one partition's records (offsets increasing) into runs of consecutive offsets."""
    if records[-1].offset - records[0].offset == len(records) - 1:
        return [records]
    runs, start = [], 0
    for index in range(1, len(records)):
        if records[index].offset != records[index - 1].offset + 1:
            runs.append(records[start:index])
            start = index
    runs.append(records[start:])
    return runs
