"""Replay of the S3 event archive into Spark: the training data of the rating model.

The driver lists the archive's segments (boto3, no data read) and plans each partition's chain
(a hole is an error: training on part of a user's history would be silently wrong). Spark tasks
fetch and decode the segments with boto3 (s3a is not available from PyPI) and the shared event
types. The fold is the projector's, expressed in Spark:

* records are taken once per (partition, offset) — segments may overlap after a rebalance;
* an event id is applied once, at its first position (a retried command appended it again);
* the latest review event per (user, movie) in log order wins: a ``ReviewSubmitted`` replaces
  the rating before it, a ``ReviewRetracted`` removes it (all of a user's events share one
  partition, so log order is their order);
* malformed records and catalogue events carry no rating and are left out (counted).

The watermark is the last archived offset included per partition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from events.archive import Segment, list_segments, plan


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
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint or None, aws_access_key_id=self.access_key or None,
            aws_secret_access_key=self.secret_key or None, region_name=self.region,
            config=Config(retries={"max_attempts": 5}, connect_timeout=5, read_timeout=60,
                          s3={"addressing_style": "path"}),
        )


@dataclass
class Replayed:
    ratings: object  # Spark DataFrame: user string, item string, rating double
    watermark: dict[int, int]  # partition -> last offset included
    segments: int
    records: int  # records in the planned segments (overlaps counted once per segment)


SUBMITTED, RETRACTED = 1, 0
_COLUMNS = "partition int, offset long, event_id string, user string, item string, kind int, rating double"


def _review_rows(source: ArchiveSource, segments: Iterator[Segment]) -> Iterator[tuple]:
    """One row per review event of the segments; runs inside a Spark task."""
    from events.archive import get_segment
    from events.codec import DecodeError, decode
    from events.types import ReviewRetracted, ReviewSubmitted

    client = source.client()
    for segment in segments:
        for record in get_segment(client, source.bucket, segment):
            if record.value is None:
                continue
            try:
                event = decode(record.value)
            except DecodeError:
                continue  # dead-lettered by the projector too
            if isinstance(event, ReviewSubmitted):
                yield (record.partition, record.offset, event.event_id, event.user_id, event.movie_id,
                       SUBMITTED, float(event.rating))
            elif isinstance(event, ReviewRetracted):
                yield (record.partition, record.offset, event.event_id, event.user_id, event.movie_id,
                       RETRACTED, None)


def plan_archive(source: ArchiveSource) -> list[Segment]:
    """Every partition's segment chain, in order; raises ArchiveError on a hole."""
    return [segment for segments in list_segments(source.client(), source.bucket, source.topic).values()
            for segment in plan(segments, strict=True)]


def replay(spark, source: ArchiveSource, *, progress: Callable[[str], None] | None = None) -> Replayed:
    """The latest rating per (user, movie) over the whole archive, as a cached Spark DataFrame."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    say = progress or (lambda message: None)
    segments = plan_archive(source)
    watermark: dict[int, int] = {}
    for segment in segments:
        watermark[segment.partition] = max(segment.last, watermark.get(segment.partition, -1))
    say(f"replay: {len(segments)} segments, {sum(s.count for s in segments):,} records, "
        f"watermark {watermark}")
    # One segment per slice: a task fetches and decodes its segments while others do theirs.
    rdd = spark.sparkContext.parallelize(segments, max(1, len(segments))) if segments else \
        spark.sparkContext.emptyRDD()
    events = spark.createDataFrame(rdd.mapPartitions(lambda part: _review_rows(source, part)), _COLUMNS)
    position = ["partition", "offset"]
    first_seen = Window.partitionBy("event_id").orderBy(*position)
    latest = Window.partitionBy("user", "item").orderBy(F.desc("partition"), F.desc("offset"))
    ratings = (
        events.dropDuplicates(position)
        .withColumn("n", F.row_number().over(first_seen)).where("n = 1")
        .withColumn("n", F.row_number().over(latest)).where("n = 1")
        .where(F.col("kind") == SUBMITTED)
        .select("user", "item", "rating")
        .cache()
    )
    return Replayed(ratings, watermark, len(segments), sum(s.count for s in segments))
