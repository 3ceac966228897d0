"""The archiver process (`harmony archiver`): copy every record of the review log into S3 segments.

A Faust app with its own consumer group. Its agent takes batches of records and hands them to the
buffer (archive/buffer.py), which writes them as segments and keeps S3 a chain without holes.

Throughput: Faust hands an agent at most ~13k records/s on the reference machine (2 cores; its
per-event machinery, not the broker), far below an import (50-90k/s). So when a partition is
more than `fast_lag` records behind the fetch high watermark, the archiver reads straight from
the log to its end with a consumer of its own (events.reader.LogTail, ~130k records/s alone) and
moves Faust's consumer past what it read (events.faust_apps.skip_to). Faust stays the low-latency
path for a trickle and owns the partition assignment. When the log is quiet but the archive is
behind (Faust's group offsets ahead of S3, nothing delivered), a timer catches up from the log the
same way. bench/archive_bench.py measures it against an import-speed producer.

Compaction: every `compact_interval` seconds a pass of archive/compaction.py merges the closed
segments of the partitions this archiver owns, in a thread beside the archiving (one pass at a
time). A pass that fails on S3 (away, refusing, a segment gone under another compactor) is logged
and tried again at the next interval: what it leaves behind is a valid archive.

Outages: a broker away is waited out around each batch and each read from the log (events/retry.py),
S3 away inside the buffer; both go on from what S3 holds, so a retry neither loses nor repeats a record.
Any other failure ends the process (crash-only): a restart goes on from S3 the same way.

Settings: the HARMONY_ARCHIVE_* variables in harmony/settings.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from archive.buffer import Archiver, SegmentPolicy
from archive.compaction import CompactionPolicy, Compactor
from archive.segments import ArchiveError
from events.lag import PartitionLag
from events.log import LogConfig
from events.reader import LogRecord
from events.retry import broker_unavailable, retrying

log = logging.getLogger(__name__)

BATCH_SIZE = 5000
BATCH_WAIT = 0.1  # seconds to wait for a batch to fill when the log is quiet
LAG_INTERVAL = 2.0
FAST_LANE_SECONDS = 10.0  # the longest a catch-up holds the archiver before Faust's batches get a turn


@dataclass(frozen=True)
class ArchiverConfig(SegmentPolicy):
    """Everything the archiver process needs but its S3 client: the buffer's segment policy,
    where to read and write, and when to read the log directly."""

    log: LogConfig
    bucket: str
    faust_dir: Path  # Faust's data directory
    fast_lag: int  # records behind the log end before the archiver reads the log directly
    compaction: CompactionPolicy
    compact_interval: float  # seconds between compaction passes; 0: none


def create_app(config: ArchiverConfig, s3):
    from events.faust_apps import crash_on_failure, faust_app, run_beside, skip_to

    bootstrap, topic = config.log.bootstrap, config.log.topic
    app = faust_app(f"harmony-archiver.{topic}", bootstrap, config.faust_dir, BATCH_SIZE, 2)  # its own group
    reviews = app.topic(topic, key_serializer="raw", value_serializer="raw", internal=False)
    archiver = Archiver(s3, config.bucket, bootstrap, topic, config, on_failure=_crash)
    delivered: dict = {}  # TP -> the last offset Faust delivered

    def owned() -> dict[int, object]:
        return {tp.partition: tp for tp in app.consumer.assignment() if tp.topic == topic}

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
            async with crash_on_failure("archiving"):
                mine = owned()
                records = [LogRecord(e.message.partition, e.message.offset, e.message.key, e.message.value)
                           for e in batch if e.message.partition in mine]
                if not records:
                    continue
                for record in records:
                    delivered[mine[record.partition]] = record.offset
                await retrying(broker_unavailable, "archiving a batch", archiver.add, records)
                # The fast lane: far behind the log end, read straight from the log to its end.
                behind = far_behind(mine)
                if behind:
                    await retrying(broker_unavailable, "reading the backlog", archiver.catch_up,
                                   dict.fromkeys(behind), FAST_LANE_SECONDS)
                # Faust far behind what is archived (after a catch-up, or re-delivering after a
                # restart): move it forward instead of having it deliver records only to skip them.
                forward = {tp: archiver.next_offset(p) for p, tp in mine.items()
                           if tp in delivered and archiver.next_offset(p) - delivered[tp] > BATCH_SIZE}
                if forward:
                    log.info("moving Faust forward", extra={"to": {tp.partition: o for tp, o in forward.items()}})
                    await skip_to(app, forward)
                    delivered.update({tp: offset - 1 for tp, offset in forward.items()})

    @app.timer(1.0)
    async def flush_aged():
        async with crash_on_failure("archiving"):
            await archiver.flush_aged()

    stalled: dict[int, tuple[int, int | None]] = {}
    reported: dict = {"at": 0.0, "what": None}
    catching_up: set[asyncio.Task] = set()

    async def catch_up(until: dict[int, None]) -> None:
        async with crash_on_failure("archiving"):
            log.info("catching up from the log", extra={"until": until})
            await retrying(broker_unavailable, "catching up from the log", archiver.catch_up, until,
                           FAST_LANE_SECONDS)

    @app.timer(LAG_INTERVAL)
    async def report_lag():
        async with crash_on_failure("archiving"):
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
            if behind and not catching_up:  # beside the timer: it stays short
                run_beside(catching_up, catch_up(behind))
            what = (lags, archiver.segments_written)
            if lags and (what != reported["what"] or time.monotonic() - reported["at"] > 60):
                reported.update(at=time.monotonic(), what=what)
                log.info("archiver lag", extra={
                    "lag": lags, "total": sum(lags.values()), "buffered": archiver.buffered(),
                    "segments_written": archiver.segments_written, "records_written": archiver.records_written,
                    "records_from_log": archiver.records_from_log})

    compactor = Compactor(s3, config.bucket, topic, config.compaction)
    compacting: set[asyncio.Task] = set()

    async def compact(partitions: list[int]) -> None:
        async with crash_on_failure("compacting"):
            try:
                figures = await asyncio.to_thread(compactor.compact, partitions)
            except (BotoCoreError, ClientError, ArchiveError) as error:  # the next pass tries again
                log.warning("compaction pass failed", extra={"partitions": partitions, "error": repr(error)})
                return
            if figures["merged"] or figures["deleted"]:
                log.info("compaction pass", extra={"partitions": partitions, **figures})

    if config.compact_interval > 0:
        @app.timer(config.compact_interval)
        async def start_compaction():
            if owned() and not compacting:  # beside the timer, one pass at a time
                run_beside(compacting, compact(sorted(owned())))

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
        tps = [tp for tp in revoked if tp.topic == topic]
        for tp in tps:
            delivered.pop(tp, None)
            stalled.pop(tp.partition, None)
        async with crash_on_failure("archiving"):
            await archiver.forget([tp.partition for tp in tps])

    return app


def _crash(error: BaseException) -> None:
    log.critical("segment upload failed; exiting", exc_info=error)
    os._exit(70)


def run(config: ArchiverConfig, s3) -> None:
    """Run the archiver until SIGINT/SIGTERM. `s3`: a boto3 client whose bucket exists
    (harmony.bootstrap.s3 checks S3 and creates it)."""
    import faust

    from events.topic import ensure_topics

    started = time.monotonic()
    asyncio.run(ensure_topics(config.log.bootstrap, config.log.topics))
    app = create_app(config, s3)
    log.info("archiver starting", extra={
        "s3": s3.meta.endpoint_url, "config": dataclasses.asdict(config),
        "setup_s": round(time.monotonic() - started, 2)})
    worker = faust.Worker(app, loglevel="INFO", quiet=True, override_logging=False, redirect_stdouts=False)
    worker.execute_from_commandline()
