"""Replay of the S3 event archive into Spark: the training data of the rating model.

The driver lists the archive's segments (boto3, metadata only) and plans each partition's chain
against the log's offsets: a hole (before the first segment too) or a partition with records but
no segment is an error, since training on part of a user's history would be silently wrong; an
archive that ends before the log end is not (training learns up to the watermark).

Nothing of the data passes through the driver. Spark tasks fetch the planned segments with boto3
(s3a is not available from PyPI; one client per task) and hand on their records; the records are
then grouped by their Kafka key (a user's events share one key, ``events.types``), sorted by log
position, and each user's events are folded in log order by the projector's fold
(``events.fold.ReviewFold``: segments may overlap after a rebalance, a retried command may append
an event again), one user at a time, so a task holds one user's events, not its partition's.
Malformed records and catalogue events carry no rating. The tasks open sealed events with the
data keys the driver hands them (``data_keys``: subject -> key, broadcast); a forgotten user's
key is gone, so their events are unreadable, skipped and counted, and the model never sees them.
The watermark is the last archived offset included per partition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from archive.segments import Segment, list_segments, plan_archive, s3_client

RECORDS = "key string, partition int, offset long, value binary"
RATINGS = "user string, item string, rating double"
SEGMENTS_PER_TASK = 4
RECORDS_PER_FOLD_TASK = 1_000_000


@dataclass(frozen=True)
class ArchiveSource:
    """Where the archive is; plain strings, so Spark can ship it to its tasks."""

    endpoint: str
    bucket: str
    topic: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def client(self):
        # Patient: a Spark task that gives up fails the whole training run.
        return s3_client(self.endpoint or None, self.access_key or None, self.secret_key or None, self.region,
                         retries=5, connect_timeout=5, read_timeout=60)


@dataclass
class Replayed:
    ratings: object  # Spark DataFrame: user string, item string, rating double (cached)
    watermark: dict[int, int]  # partition -> last offset included
    segments: int
    records: int  # records in the planned segments (overlaps counted once per segment)
    unreadable: object  # Spark accumulator: sealed records whose key is gone, once the ratings are computed


class TaskKeys:
    """The broadcast subject -> data key, as a task opens events with it (`events.sealing.Keys`'
    reading side). A task folds one user's events after another, so only the last subject's cipher
    is kept."""

    def __init__(self, keys: dict[str, bytes]):
        self.keys = keys  # the broadcast's own dict: not copied per task
        self.last = (None, None)

    def cipher(self, subject: str):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if self.last[0] != subject:
            key = self.keys.get(subject)
            self.last = (subject, AESGCM(key) if key is not None else None)
        return self.last[1]


def _read_segments(source: ArchiveSource, segments: list[Segment], tasks):
    """mapInArrow body: each input row names a planned segment; out come its records, streamed
    (a compacted segment holds millions)."""
    import pyarrow as pa

    from archive.segments import iter_segment

    client = source.client()
    for task in tasks:
        for index in task.column("id").to_pylist():
            for records in iter_segment(client, source.bucket, segments[index]):
                yield pa.RecordBatch.from_arrays(
                    [pa.array([r.key.decode("utf-8", "replace") if r.key is not None else "" for r in records]),
                     pa.array([r.partition for r in records], pa.int32()),
                     pa.array([r.offset for r in records], pa.int64()),
                     pa.array([r.value for r in records], pa.binary())],
                    names=["key", "partition", "offset", "value"])


def _fold_users(keys, unreadable, batches):
    """mapInArrow body over records sorted by (key, partition, offset): each key's events folded in
    log order, out come the ratings standing at the end."""
    import pyarrow as pa

    from events.codec import DecodeError, decode
    from events.fold import ReviewFold
    from events.sealing import Unreadable

    keys = TaskKeys(keys.value)

    def ratings_of(fold: ReviewFold):
        current = fold.current()
        return pa.RecordBatch.from_arrays(
            [pa.array([user for user, _ in current], pa.string()), pa.array([item for _, item in current], pa.string()),
             pa.array(list(current.values()), pa.float64())], names=["user", "item", "rating"])

    key, fold = None, None
    for batch in batches:
        for row_key, partition, offset, value in zip(*(batch.column(name).to_pylist()
                                                      for name in ("key", "partition", "offset", "value"))):
            if row_key != key:
                if fold is not None and fold.reviews:
                    yield ratings_of(fold)
                key, fold = row_key, ReviewFold(lambda event: float(event.rating))
            if not fold.take(partition, offset) or value is None:
                continue
            try:
                event = decode(value, keys)
            except DecodeError:
                continue  # the projector dead-letters it
            except Unreadable:
                unreadable.add(1)
                continue
            fold.apply(event)
    if fold is not None and fold.reviews:
        yield ratings_of(fold)


def replay(spark, source: ArchiveSource, log: dict[int, range], data_keys: dict[str, bytes], *,
           progress: Callable[[str], None] | None = None) -> Replayed:
    """The latest rating per (user, movie) over the whole archive, as a cached Spark DataFrame.
    `log`: the offsets each partition's log holds (`events.reader.log_offsets`), which the
    archive must cover from the log start on; `data_keys`: subject -> data key."""
    say = progress or (lambda message: None)
    chains = plan_archive(list_segments(source.client(), source.bucket, source.topic), log)
    watermark = {chain[0].partition: chain[-1].last for chain in chains}
    segments = [segment for chain in chains for segment in chain]
    records = sum(s.count for s in segments)
    say(f"replay: {len(segments)} segments, {records:,} records, watermark {watermark}")
    unreadable = spark.sparkContext.accumulator(0)
    if not segments:
        return Replayed(spark.createDataFrame([], RATINGS), watermark, 0, 0, unreadable)
    parallelism = spark.sparkContext.defaultParallelism
    tasks = spark.range(len(segments), numPartitions=min(len(segments),
                                                         max(parallelism, -(-len(segments) // SEGMENTS_PER_TASK))))
    logged = tasks.mapInArrow(lambda batches: _read_segments(source, segments, batches), RECORDS)
    folds = max(parallelism, records // RECORDS_PER_FOLD_TASK + 1)
    by_user = logged.repartition(folds, "key").sortWithinPartitions("key", "partition", "offset")
    keys = spark.sparkContext.broadcast(data_keys)
    ratings = by_user.mapInArrow(lambda batches: _fold_users(keys, unreadable, batches), RATINGS).cache()
    return Replayed(ratings, watermark, len(segments), records, unreadable)
