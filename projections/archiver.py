"""The S3 archiver: copy every record of the review log into segment objects (events/archive.py).

A Faust app with its own consumer group. Its agent takes batches of records and buffers them
per partition; a partition's buffer becomes one segment when it holds enough records or bytes,
or when its first record is old enough. Segment PUTs run in threads with the shared boto3 client;
a partition's segments are written strictly one after another, so what S3 holds is always a
chain without holes.

Crash safety does not rest on Faust's committed offsets (take_events acks records long before
they reach S3). S3 is the checkpoint: when a partition's first record arrives (after start or an
assignment), the archiver reads `archived_until` from S3, skips records at or below it (no
duplicates) and reads any range between it and the first delivered record straight from the log
(no gaps), like projections/projector.py's LogProjector. A segment cut off by a crash is written
again, identically or with other boundaries, starting right after what S3 holds.

Throughput: Faust hands an agent at most ~13k records/s on the reference machine (2 cores; its
per-event machinery, not the broker), far below an import (50-90k/s). So when a partition is
more than HARMONY_ARCHIVE_FAST_LAG records behind the fetch high watermark, the archiver reads
straight from the log to its end with a consumer of its own (~130k records/s alone) and moves
Faust's consumer past what it read (projections/faust_skip.py). Faust stays the low-latency path for
a trickle and owns the partition assignment. When the log is quiet but the archive is behind
(Faust's group offsets ahead of S3, nothing delivered), a timer catches up from the log the same
way. bench/archive_bench.py measures it against an import-speed producer.

Settings: the HARMONY_ARCHIVE_* variables in harmony/settings.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from contextlib import aclosing
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Iterable, Mapping

from events.archive import DEFAULT_GZIP_LEVEL, Segment, archived_until, ensure_bucket, put_segment, s3_client
from events.reader import LogRecord, read_log, stop_consumer
from projections.store import PartitionLag

log = logging.getLogger(__name__)

BATCH_SIZE = 5000
BATCH_WAIT = 0.1  # seconds to wait for a batch to fill when the log is quiet
LAG_INTERVAL = 2.0
FAST_LANE_SECONDS = 10.0  # the longest a catch-up holds the archiver before Faust's batches get a turn


@dataclass(frozen=True)
class ArchiveConfig:
    segment_records: int = 100_000
    segment_bytes: int = 16 << 20
    segment_age: float = 5.0
    gzip_level: int = DEFAULT_GZIP_LEVEL
    uploads: int = 2
    fast_lag: int = 5_000

    @classmethod
    def from_settings(cls, settings) -> "ArchiveConfig":
        return cls(
            segment_records=settings.archive_segment_records, segment_bytes=settings.archive_segment_bytes,
            segment_age=settings.archive_segment_age, gzip_level=settings.archive_gzip_level,
            uploads=settings.archive_uploads, fast_lag=settings.archive_fast_lag,
        )


class Archiver:
    """Buffers a log's records per partition and writes them to S3 as segments, one partition's
    segments in order, never leaving a hole or archiving a record twice (see the module doc).

    Independent of Faust, so tests and benchmarks can drive it. All public coroutines are
    serialized by one lock; uploads run in the background (bounded), in order per partition.
    """

    def __init__(
        self, s3, bucket: str, bootstrap: str, topic: str, config: ArchiveConfig | None = None, *,
        on_written: Callable[[Segment], None] | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
    ):
        self.s3, self.bucket, self.bootstrap, self.topic = s3, bucket, bootstrap, topic
        self.config = config or ArchiveConfig()
        self.on_written = on_written  # called with each segment S3 holds
        self.on_failure = on_failure  # called once if an upload fails (else the next call raises)
        self.archived: dict[int, int] = {}  # last offset S3 holds, per partition (known ones)
        self._accepted: dict[int, int] = {}  # last offset buffered, being uploaded or archived
        self._buffers: dict[int, list[LogRecord]] = {}
        self._buffered_bytes: dict[int, int] = {}
        self._since: dict[int, float] = {}
        self._uploads: dict[int, asyncio.Task] = {}  # the latest upload per partition
        self._in_flight: set[asyncio.Task] = set()
        self._lock = asyncio.Lock()
        self._upload_slots = asyncio.Semaphore(self.config.uploads)
        self._abort_reads = False
        self._tail = LogTail(bootstrap, topic)
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
        """Read archived_until from S3 for partitions (default: all archived ones) not known yet;
        answer what S3 holds."""
        async with self._lock:
            found = await asyncio.to_thread(archived_until, self.s3, self.bucket, self.topic,
                                            None if partitions is None else list(partitions))
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
        found = await asyncio.to_thread(archived_until, self.s3, self.bucket, self.topic, [partition])
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
            if now - since >= self.config.segment_age:
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
        limit = self.config.segment_records
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
            if len(buffer) >= limit or self._buffered_bytes[partition] >= self.config.segment_bytes:
                await self._flush(partition)

    async def _flush(self, partition: int) -> None:
        records = self._buffers.pop(partition, None)
        self._buffered_bytes.pop(partition, None)
        self._since.pop(partition, None)
        if not records:
            return
        # Back-pressure: at most `uploads` segments being written and one more queued per upload slot.
        while len(self._in_flight) >= 2 * self.config.uploads:
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
            segment = await asyncio.to_thread(
                put_segment, self.s3, self.bucket, self.topic, records, self.config.gzip_level)
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


class LogTail:
    """Reads ranges of partitions straight from the log with one consumer (no group) kept open
    between reads. Unlike events.reader.read_log, a range can end at the log end as it grows:
    reading stops when the position reaches the high watermark of the latest fetch."""

    def __init__(self, bootstrap: str, topic: str, batch: int = 5000, idle_timeout: float = 10.0):
        self.bootstrap, self.topic, self.batch, self.idle_timeout = bootstrap, topic, batch, idle_timeout
        self._consumer = None

    async def read(self, start: dict[int, int], end: dict[int, int | None]) -> AsyncIterator[list[LogRecord]]:
        """Yield batches of records from start[p] up to end[p] (None: the log end). The records
        are aiokafka's ConsumerRecords, which have LogRecord's fields by name (no copy each)."""
        from aiokafka import TopicPartition

        consumer = await self._open()
        partitions = {TopicPartition(self.topic, p): end[p] for p in start}
        consumer.assign(list(partitions))
        for tp in partitions:
            consumer.seek(tp, start[tp.partition])
        active = set(partitions)
        loop = asyncio.get_running_loop()
        last_progress = loop.time()
        try:
            while active:
                fetched = await consumer.getmany(*active, timeout_ms=200, max_records=self.batch)
                out = []
                for tp, messages in fetched.items():
                    stop = partitions[tp]
                    if stop is not None and messages[-1].offset >= stop:
                        messages = [m for m in messages if m.offset < stop]
                    # aiokafka's ConsumerRecords have LogRecord's fields by name: no copy per record.
                    out.extend(messages)
                if out:
                    last_progress = loop.time()
                    yield out
                # A bounded range is done at its end. Ranges to the log end stay read together
                # until every one of them is at the high watermark at once.
                at_end = set()
                for tp in active:
                    limit = partitions[tp] if partitions[tp] is not None else consumer.highwater(tp)
                    if limit is not None and await consumer.position(tp) >= limit:
                        at_end.add(tp)
                active -= {tp for tp in at_end if partitions[tp] is not None}
                if all(partitions[tp] is None for tp in active) and at_end >= active:
                    break
                if active and loop.time() - last_progress > self.idle_timeout:
                    raise TimeoutError(f"no progress reading {self.topic} for {self.idle_timeout:.0f}s")
        finally:
            consumer.pause(*partitions)  # no prefetching between reads

    async def _open(self):
        from aiokafka import AIOKafkaConsumer

        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                max_partition_fetch_bytes=4 << 20, fetch_max_bytes=32 << 20,
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await stop_consumer(consumer)


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


# -- the Faust app -----------------------------------------------------------------------------------


def create_app(settings, s3, config: ArchiveConfig | None = None):
    from projections.faust_app import faust_app
    from projections.faust_skip import skip_to

    config = config or ArchiveConfig.from_settings(settings)
    app = faust_app(f"harmony-archiver.{settings.topic}", settings, BATCH_SIZE, 2)  # its own group
    reviews = app.topic(settings.topic, key_serializer="raw", value_serializer="raw", internal=False)
    archiver = Archiver(s3, settings.s3_bucket, settings.kafka_bootstrap, settings.topic, config,
                        on_failure=_crash)
    delivered: dict = {}  # TP -> the last offset Faust delivered

    def owned() -> dict[int, object]:
        return {tp.partition: tp for tp in app.consumer.assignment() if tp.topic == settings.topic}

    def far_behind(tps: dict[int, object]) -> list[int]:
        behind = []
        for partition, tp in tps.items():
            high, expected = app.consumer.highwater(tp), archiver.next_offset(partition)
            if high is not None and expected is not None and high - expected > config.fast_lag:
                behind.append(partition)
        return behind


    @app.agent(reviews, concurrency=1)
    async def archive(stream):
        async for batch in stream.take_events(BATCH_SIZE, within=BATCH_WAIT):
            try:
                mine = owned()
                records = [LogRecord(e.message.partition, e.message.offset, e.message.key, e.message.value)
                           for e in batch if e.message.partition in mine]
                if not records:
                    continue
                for record in records:
                    delivered[mine[record.partition]] = record.offset
                await archiver.add(records)
                # The fast lane: far behind the log end, read straight from the log to its end.
                behind = far_behind(mine)
                if behind:
                    await archiver.catch_up(dict.fromkeys(behind), max_seconds=FAST_LANE_SECONDS)
                # Faust far behind what is archived (after a catch-up, or re-delivering after a
                # restart): move it forward instead of having it deliver records only to skip them.
                forward = {tp: archiver.next_offset(p) for p, tp in mine.items()
                           if tp in delivered and archiver.next_offset(p) - delivered[tp] > BATCH_SIZE}
                if forward:
                    log.info("moving Faust forward", extra={"to": {tp.partition: o for tp, o in forward.items()}})
                    await skip_to(app, forward)
                    delivered.update({tp: offset - 1 for tp, offset in forward.items()})
            except Exception:
                # Crash-only: a restart goes on from what S3 holds, reading any skipped range from the log.
                log.critical("archiving failed; exiting", exc_info=True)
                os._exit(70)

    @app.timer(1.0)
    async def flush_aged():
        try:
            await archiver.flush_aged()
        except Exception:
            log.critical("archiving failed; exiting", exc_info=True)
            os._exit(70)

    stalled: dict[int, tuple[int, int | None]] = {}
    reported: dict = {"at": 0.0, "what": None}
    catching_up: set[asyncio.Task] = set()

    async def catch_up(until: dict[int, None]) -> None:
        try:
            log.info("catching up from the log", extra={"until": until})
            await archiver.catch_up(until, max_seconds=FAST_LANE_SECONDS)
        except Exception:
            log.critical("archiving failed; exiting", exc_info=True)
            os._exit(70)

    @app.timer(LAG_INTERVAL)
    async def report_lag():
        try:
            mine = owned()
            lags: dict[int, int] = {}
            behind: dict[int, None] = {}
            for partition, tp in sorted(mine.items()):
                high = app.consumer.highwater(tp)
                if high is None:
                    continue
                if archiver.next_offset(partition) is None and high > 0:
                    await archiver.load([partition])
                expected = archiver.next_offset(partition)
                lags[partition] = PartitionLag.of(partition, archiver.archived.get(partition, -1), high).lag
                # Behind the log end and not moving for a whole interval while Faust delivers nothing
                # (its group offsets are ahead of the archive): read it straight from the log.
                if expected is not None and high > expected and stalled.get(partition) == (high, expected):
                    behind[partition] = None  # to the log end
                stalled[partition] = (high, expected)
            if behind and not catching_up:  # in the background: the timer stays short
                task = asyncio.create_task(catch_up(behind))
                catching_up.add(task)
                task.add_done_callback(catching_up.discard)
            what = (lags, archiver.segments_written)
            if lags and (what != reported["what"] or time.monotonic() - reported["at"] > 60):
                reported.update(at=time.monotonic(), what=what)
                log.info("archiver lag", extra={
                    "lag": lags, "total": sum(lags.values()), "buffered": archiver.buffered(),
                    "segments_written": archiver.segments_written, "records_written": archiver.records_written,
                    "records_from_log": archiver.records_from_log})
        except Exception:
            log.critical("archiving failed; exiting", exc_info=True)
            os._exit(70)

    @app.on_before_shutdown.connect
    async def on_shutdown(app_, **kwargs):
        # A clean stop writes what is buffered (a killed archiver loses nothing either: a restart
        # reads it again from the log).
        try:
            await asyncio.wait_for(archiver.close(), 60)
            log.info("archiver stopped", extra={"archived_until": dict(sorted(archiver.archived.items()))})
        except Exception:
            log.error("could not write the buffered records at shutdown", exc_info=True)

    @app.on_partitions_revoked.connect
    async def on_revoked(app_, revoked, **kwargs):
        tps = [tp for tp in revoked if tp.topic == settings.topic]
        for tp in tps:
            delivered.pop(tp, None)
            stalled.pop(tp.partition, None)
        try:
            await archiver.forget([tp.partition for tp in tps])
        except Exception:
            log.critical("archiving failed; exiting", exc_info=True)
            os._exit(70)

    return app


def _crash(error: BaseException) -> None:
    log.critical("segment upload failed; exiting", exc_info=error)
    os._exit(70)


def run(settings) -> None:
    """Run the archiver until SIGINT/SIGTERM."""
    import faust
    from botocore.exceptions import BotoCoreError, ClientError

    from events.topic import ensure_topics, review_topics

    if not settings.kafka_bootstrap:
        raise ValueError("no broker: run `harmony stack up` or set HARMONY_KAFKA_BOOTSTRAP")
    if not settings.s3_endpoint:
        raise ValueError("no S3 endpoint: run `harmony stack up` or set HARMONY_S3_ENDPOINT")
    config = ArchiveConfig.from_settings(settings)
    started = time.monotonic()
    s3 = s3_client(settings.s3_endpoint, settings.aws_access_key_id, settings.aws_secret_access_key,
                   settings.aws_region)
    try:
        ensure_bucket(s3, settings.s3_bucket)
        archived = archived_until(s3, settings.s3_bucket, settings.topic)
    except (BotoCoreError, ClientError) as error:
        raise ValueError(f"S3 at {settings.s3_endpoint} (bucket {settings.s3_bucket}): {error}") from None
    asyncio.run(ensure_topics(settings.kafka_bootstrap, review_topics(settings.topic, settings.partitions)))
    app = create_app(settings, s3, config)
    log.info("archiver starting", extra={
        "broker": settings.kafka_bootstrap, "s3": settings.s3_endpoint, "bucket": settings.s3_bucket,
        "topic": settings.topic, "archived_until": archived, "config": config.__dict__,
        "setup_s": round(time.monotonic() - started, 2)})
    worker = faust.Worker(app, loglevel="INFO", quiet=True, override_logging=False, redirect_stdouts=False)
    worker.execute_from_commandline()
