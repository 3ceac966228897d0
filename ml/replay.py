"""Replay of the S3 event archive into Spark: the training data of the rating model.

The driver lists the archive's segments (boto3, no data read) and plans each partition's chain
against the log's offsets: a hole (before the first segment too) or a partition with records but
no segment is an error, since training on part of a user's history would be silently wrong; an
archive that ends before the log end is not (training learns up to the watermark). One Spark
task per log partition fetches that partition's segments in offset order with boto3 (s3a is not
available from PyPI), decodes them with the shared event types and folds them in log order with
the projector's fold (``events.fold.ReviewFold``: segments may overlap after a rebalance, a retried
command may append an event again); malformed records and catalogue events carry no rating.

All of a user's events share one partition (the key is the user id), so folding each partition
on its own is the whole fold, with no shuffle. The tasks hand back Arrow batches of the final
(user, item, rating) rows. The watermark is the last archived offset included per partition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from archive.segments import Segment, list_segments, plan_archive, s3_client


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
    ratings: object  # Spark DataFrame: user string, item string, rating double
    watermark: dict[int, int]  # partition -> last offset included
    segments: int
    records: int  # records in the planned segments (overlaps counted once per segment)


ROWS_PER_BATCH = 100_000


def _fold_partition(source: ArchiveSource, segments: list[Segment]) -> dict[tuple[str, str], float]:
    """The latest rating per (user, movie) of one partition's segment chain; runs in a Spark task."""
    from archive.segments import get_segment
    from events.codec import DecodeError, decode
    from events.fold import ReviewFold

    client = source.client()
    ratings = ReviewFold(lambda event: float(event.rating))
    for segment in segments:
        for record in get_segment(client, source.bucket, segment):
            if not ratings.take(record.partition, record.offset) or record.value is None:
                continue
            try:
                event = decode(record.value)
            except DecodeError:
                continue  # the projector dead-letters it
            ratings.apply(event)
    return ratings.current()


def _arrow_batches(source: ArchiveSource, chains: list[list[Segment]], tasks):
    """mapInArrow body: each input row names a partition chain to fold; out come rating rows."""
    import pyarrow as pa

    for task in tasks:
        for index in task.column("id").to_pylist():
            items = list(_fold_partition(source, chains[index]).items())
            for start in range(0, len(items), ROWS_PER_BATCH):
                chunk = items[start:start + ROWS_PER_BATCH]
                yield pa.RecordBatch.from_arrays(
                    [pa.array([key[0] for key, _ in chunk], pa.string()),
                     pa.array([key[1] for key, _ in chunk], pa.string()),
                     pa.array([rating for _, rating in chunk], pa.float64())],
                    names=["user", "item", "rating"])


def replay(spark, source: ArchiveSource, log: dict[int, range], *,
           progress: Callable[[str], None] | None = None) -> Replayed:
    """The latest rating per (user, movie) over the whole archive, as a cached Spark DataFrame.
    `log`: the offsets each partition's log holds (`events.reader.log_offsets`), which the
    archive must cover from the log start on."""
    say = progress or (lambda message: None)
    chains = plan_archive(list_segments(source.client(), source.bucket, source.topic), log)
    watermark = {chain[0].partition: chain[-1].last for chain in chains}
    segments = sum(len(chain) for chain in chains)
    records = sum(s.count for chain in chains for s in chain)
    say(f"replay: {segments} segments, {records:,} records, watermark {watermark}")
    schema = "user string, item string, rating double"
    if not chains:
        return Replayed(spark.createDataFrame([], schema), watermark, 0, 0)
    tasks = spark.range(len(chains), numPartitions=len(chains))  # one task per log partition
    ratings = tasks.mapInArrow(lambda batches: _arrow_batches(source, chains, batches), schema).cache()
    return Replayed(ratings, watermark, segments, records)
