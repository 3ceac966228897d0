"""Archive benchmark: does `harmony archiver` keep up with an import?

    .venv/bin/python -m bench.archive_bench [--events 1000000] [--partitions 6] [--segment-age 1.0]
                                            [--no-verify] [--keep] [--json]

On a local stack, once a `harmony archiver` child has joined its group, N ReviewSubmitted events are
appended as `harmony import` does (KafkaEventLog.append_bulk, every ack awaited) while it runs. Figures:
the producer's rate; the archive's, from the first segment written to the last (its log lines); end to end
(first append until S3 holds every event) and the tail after the last ack; their ratio; CPU. Then the
archive is read back and compared with the log (--no-verify skips it).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

from bench.common import (
    Child, CpuMeter, base_parser, child_env, console, local_stack, progress, run_benchmark, service_pids,
)

TARGET = 50_000.0


def parser():
    p = base_parser(__doc__)
    p.add_argument("--events", type=int, default=1_000_000, help="events to append (1000000)")
    p.add_argument("--users", type=int, default=50_000)
    p.add_argument("--movies", type=int, default=10_000)
    p.add_argument("--segment-age", type=float, default=1.0,
                   help="HARMONY_ARCHIVE_SEGMENT_AGE for the archiver (1.0 s; the service default is 5)")
    p.add_argument("--timeout", type=float, default=600.0, help="give up waiting for the archive after (600 s)")
    p.add_argument("--no-verify", action="store_true", help="skip reading the archive back against the log")
    return p


def events(n: int, users: int, movies: int, seed: int = 3) -> Iterator:
    """n ReviewSubmitted events of an import's shape (long-tailed users and movies), made lazily."""
    from events.types import ReviewSubmitted

    rng = random.Random(seed)
    start = datetime(2015, 1, 1, tzinfo=timezone.utc)
    for i in range(n):
        user = f"ml:{int(users * rng.random() ** 2) + 1}"
        movie = f"ml:{int(movies * rng.random() ** 3) + 1}"
        at = start + timedelta(seconds=37 * i)
        yield ReviewSubmitted(
            event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)), occurred_at=at, recorded_at=at,
            user_id=user, movie_id=movie, rating=rng.randrange(1, 11) / 2,
            summary=f"summary {i}", text=f"A benchmark review, number {i}, of {movie} by {user}.",
            reviewed_at=at, source="movielens",
        )


class SegmentLog:
    """Follows the archiver's JSON log lines: segments written (with their timestamps), readiness, errors."""

    def __init__(self, path: Path):
        self.path = path
        self._offset = 0
        self._partial = b""
        self.ready = False
        self.archived = 0
        self.segments: list[dict] = []
        self.errors: list[str] = []
        # aiokafka logs retriable errors at error level (e.g. GroupCoordinatorNotAvailable while Kafka
        # creates __consumer_offsets on the first group join): kept for the figures, not a failure.
        self.client_errors: list[str] = []

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as stream:
                stream.seek(self._offset)
                data = stream.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            start = line.find(b"{")  # Faust's terminal escapes can precede a line
            try:
                entry = json.loads(line[start:]) if start >= 0 else {}
            except json.JSONDecodeError:
                continue
            if entry.get("msg") == "archiver lag":
                self.ready = True
            elif entry.get("msg") == "segment written":
                entry["at"] = datetime.fromisoformat(entry["ts"]).timestamp()
                self.segments.append(entry)
                self.archived += entry["records"]
            elif entry.get("level") in ("error", "critical"):
                aiokafka = str(entry.get("logger", "")).startswith("aiokafka")
                (self.client_errors if aiokafka else self.errors).append(entry.get("msg", ""))


async def produce_and_watch(settings, args, follow: SegmentLog, archiver: Child, pids: dict[str, int]) -> dict:
    from events.codec import Sealer
    from events.log import KafkaEventLog
    from harmony.bootstrap import keyring

    log = KafkaEventLog(settings.kafka_bootstrap, settings.topic, timeout=30.0, sealer=Sealer(keyring(settings)))
    await log.start()
    acked = 0

    def on_acked(n: int) -> None:
        nonlocal acked
        acked += n

    try:
        with progress() as bar:
            produced_task = bar.add_task("produced", total=args.events, info="")
            archived_task = bar.add_task("archived", total=args.events, info="")
            meter = CpuMeter(pids).start()
            started_wall, started = time.time(), time.perf_counter()
            append = asyncio.create_task(log.append_bulk(events(args.events, args.users, args.movies),
                                                         on_acked=on_acked))
            produced_at = None
            while not (produced_at and follow.archived >= args.events):
                await asyncio.sleep(0.25)
                follow.poll()
                now = time.perf_counter()
                if append.done() and produced_at is None:
                    append.result()  # raises if the append failed
                    produced_at, produced_wall = now, time.time()
                bar.update(produced_task, completed=acked, info=f"{acked / ((produced_at or now) - started):>9,.0f}/s")
                bar.update(archived_task, completed=follow.archived, info=f"{follow.archived / (now - started):>9,.0f}/s")
                if follow.errors:
                    raise RuntimeError(f"the archiver failed: {follow.errors[0]}\n{archiver.tail()}")
                archiver.check("the archiver")
                if now > started + args.timeout:
                    raise TimeoutError(f"archived {follow.archived:,} of {args.events:,} after {args.timeout:.0f}s")
            cpu = meter.stop()
    finally:
        await log.stop()

    segments = follow.segments
    first, last = segments[0], max(segments, key=lambda s: s["at"])
    span = last["at"] - first["at"]
    produce_rate = args.events / (produced_at - started)
    end_to_end_s = last["at"] - started_wall
    archive = {
        "segments": len(segments), "events": follow.archived,
        "first_segment_after_s": round(first["at"] - started_wall, 3), "first_to_last_segment_s": round(span, 3),
        "events_per_second": round((args.events - first["records"]) / span, 1) if span > 0 else None,
        "end_to_end_s": round(end_to_end_s, 3), "end_to_end_events_per_second": round(args.events / end_to_end_s, 1),
        "tail_after_last_ack_s": round(last["at"] - produced_wall, 3),
        "segment_records_mean": round(follow.archived / len(segments)),
        "segment_bytes_mean": round(sum(s["bytes"] for s in segments) / len(segments)),
    }
    rate = archive["events_per_second"]
    return {"producer": {"events": args.events, "seconds": round(produced_at - started, 3),
                         "events_per_second": round(produce_rate, 1), "via": "KafkaEventLog.append_bulk"},
            "archive": archive,
            "cpu_cores_busy": cpu,  # from the first append until S3 held everything
            "archiver_client_errors_logged": follow.client_errors[:10],
            "ratio_archive_to_producer": round(rate / produce_rate, 3) if rate else None,
            "ratio_end_to_end_to_producer": round(archive["end_to_end_events_per_second"] / produce_rate, 3)}


async def verify(settings, s3) -> dict:
    """Read the archive back and compare it with the log from offset 0, partition by partition."""
    from archive.segments import read_archive
    from events.reader import read_log

    started = time.perf_counter()
    in_log: dict[int, list] = {}
    async for batch in read_log(settings.kafka_bootstrap, settings.topic):
        for record in batch:
            in_log.setdefault(record.partition, []).append(record)
    archived: dict[int, list] = {}
    for batch in await asyncio.to_thread(lambda: list(read_archive(s3, settings.s3_bucket, settings.topic))):
        archived.setdefault(batch[0].partition, []).extend(batch)
    same = {p: in_log.get(p) == archived.get(p) for p in sorted(set(in_log) | set(archived))}
    return {"equal": all(same.values()), "per_partition": same,
            "log_records": sum(map(len, in_log.values())), "archived_records": sum(map(len, archived.values())),
            "seconds": round(time.perf_counter() - started, 2)}


def run(args) -> dict:
    from archive.segments import s3_client
    from events.topic import ensure_topics, review_topics
    from harmony.settings import load

    topic, bucket = f"bench.archive.{uuid.uuid4().hex[:8]}", f"bench-archive-{uuid.uuid4().hex[:8]}"
    figures: dict = {"events": args.events, "partitions": args.partitions, "segment_age_s": args.segment_age,
                     "target_events_per_second": TARGET}
    with local_stack("archive", topic, args.partitions, args.keep) as (directory, info):
        for name in ("HARMONY_KAFKA_BOOTSTRAP", "HARMONY_S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            os.environ.pop(name, None)  # the bench's own stack, nothing else
        # In os.environ: load() here reads the same settings as the archiver.
        os.environ.update(child_env(directory, topic, args.partitions, directory / "unused.db"),
                          HARMONY_S3_BUCKET=bucket, HARMONY_ARCHIVE_SEGMENT_AGE=str(args.segment_age))
        settings = load()
        asyncio.run(ensure_topics(settings.kafka_bootstrap, review_topics(topic, args.partitions)))
        figures["archiver_config"] = {name.removeprefix("archive_"): value for name, value in vars(settings).items()
                                      if name.startswith("archive_")}
        archiver = Child(["archiver"], dict(os.environ), directory / "archiver.log")
        try:
            follow = SegmentLog(archiver.log_path)
            with console.status("waiting for the archiver to join its group…"):
                while not follow.ready:
                    archiver.check("the archiver")
                    if time.monotonic() - archiver.started > 120:
                        raise TimeoutError(f"the archiver did not report in: {archiver.tail()}")
                    time.sleep(0.2)
                    follow.poll()
            figures["archiver_ready_s"] = round(time.monotonic() - archiver.started, 1)
            figures.update(asyncio.run(produce_and_watch(settings, args, follow, archiver,
                                                         {"archiver": archiver.pid, **service_pids(info)})))
        finally:
            archiver.stop(60)
        if not args.no_verify:
            s3 = s3_client(settings.s3_endpoint, settings.aws_access_key_id, settings.aws_secret_access_key)
            with console.status("reading the archive back and comparing it with the log…"):
                figures["verify"] = asyncio.run(verify(settings, s3))
            figures["failed"] = not figures["verify"]["equal"]
    return figures


if __name__ == "__main__":
    raise SystemExit(run_benchmark("archive", __doc__, parser().parse_args(), run))
