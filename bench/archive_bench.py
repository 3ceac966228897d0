"""Archive benchmark: does `harmony archiver` keep up with an import?

    .venv/bin/python -m bench.archive_bench [--events 1000000] [--partitions 6] [--segment-age 1.0]
                                            [--no-verify] [--keep] [--json]

Starts its own local stack (SeaweedFS + one Kafka broker) in a temporary directory, stopped in the
end, and a `python -m harmony archiver` child with a fresh topic and bucket. Once the archiver reports in
(it has joined its group), N ReviewSubmitted events are appended the way `harmony import` does
(events generated lazily, KafkaEventLog.append_bulk, every ack awaited) while the archiver runs.

Figures, all from the same run:
- producer: N / time from the first append to the last ack (the raw producer rate);
- archive: events/s from the first segment written to the last (the segments' own log lines),
  counting the events after the first segment: the archiver's rate while events arrive;
- end to end: N / time from the first append until S3 holds every event, and the tail (how long
  after the last ack the last segment landed; a partition's last segment waits up to
  --segment-age seconds for more events);
- ratio: archive rate / producer rate (>= ~1 means it keeps up); archiver CPU (cores busy).
With verification (default) the archive is read back (archive.segments.read_archive) and compared
with the log from offset 0 (events.reader.read_log): same offsets, keys and values per partition.
Progress goes to stderr; the figures (or with --json one JSON object) to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench.common import cpu_seconds, save, service_pids

console = Console(stderr=True)
TARGET = 50_000.0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=1_000_000, help="events to append (1000000)")
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--users", type=int, default=50_000)
    p.add_argument("--movies", type=int, default=10_000)
    p.add_argument("--segment-age", type=float, default=1.0,
                   help="HARMONY_ARCHIVE_SEGMENT_AGE for the archiver (1.0 s; the service default is 5)")
    p.add_argument("--timeout", type=float, default=600.0, help="give up waiting for the archive after (600 s)")
    p.add_argument("--no-verify", action="store_true", help="skip reading the archive back against the log")
    p.add_argument("--keep", action="store_true", help="keep the temporary state directory")
    p.add_argument("--json", action="store_true", help="print only one JSON object on stdout")
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
    """Follows the archiver's JSON log lines: segments written (with their timestamps), readiness."""

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
            if start < 0:
                continue
            try:
                entry = json.loads(line[start:])
            except json.JSONDecodeError:
                continue
            if entry.get("msg") == "archiver lag":
                self.ready = True
            elif entry.get("msg") == "segment written":
                entry["at"] = datetime.fromisoformat(entry["ts"]).timestamp()
                self.segments.append(entry)
                self.archived += entry["records"]
            elif entry.get("level") in ("error", "critical"):
                if str(entry.get("logger", "")).startswith("aiokafka"):
                    self.client_errors.append(entry.get("msg", ""))
                else:
                    self.errors.append(entry.get("msg", ""))

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""


def progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description:9}"), BarColumn(), TextColumn("{task.completed:>11,.0f}/{task.total:,.0f}"),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console, refresh_per_second=4,
    )


async def produce_and_watch(settings, args, follow: SegmentLog, pids: dict[str, int]) -> dict:
    from events.log import KafkaEventLog

    log = KafkaEventLog(settings.kafka_bootstrap, settings.topic, timeout=30.0)
    await log.start()
    acked = 0
    figures: dict = {}

    def on_acked(n: int) -> None:
        nonlocal acked
        acked += n

    try:
        with progress() as bar:
            produced_task = bar.add_task("produced", total=args.events, info="")
            archived_task = bar.add_task("archived", total=args.events, info="")
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            process_before = time.process_time()
            started_wall, started = time.time(), time.perf_counter()
            append = asyncio.create_task(
                log.append_bulk(events(args.events, args.users, args.movies), on_acked=on_acked))
            produced_at = None
            deadline = started + args.timeout
            while True:
                await asyncio.sleep(0.25)
                follow.poll()
                now = time.perf_counter()
                if append.done() and produced_at is None:
                    append.result()  # raises if the append failed
                    produced_at = now
                    produced_wall = time.time()
                elapsed = (produced_at or now) - started
                bar.update(produced_task, completed=acked, info=f"{acked / max(elapsed, 1e-9):>9,.0f}/s")
                bar.update(archived_task, completed=follow.archived,
                           info=f"{follow.archived / max(now - started, 1e-9):>9,.0f}/s")
                if follow.errors:
                    raise RuntimeError(f"the archiver failed: {follow.errors[0]}\n{follow.tail()}")
                if produced_at is not None and follow.archived >= args.events:
                    break
                if now > deadline:
                    raise TimeoutError(f"archived {follow.archived:,} of {args.events:,} after {args.timeout:.0f}s")
            cpu_after = {name: cpu_seconds(pid) for name, pid in pids.items()}
            wall = time.perf_counter() - started
            cpu = {name: round((cpu_after[name] - cpu_before[name]) / wall, 2) for name in pids
                   if cpu_before[name] is not None and cpu_after[name] is not None}
            cpu["bench (producer)"] = round((time.process_time() - process_before) / wall, 2)
            cpu["total"] = round(sum(cpu.values()), 2)
    finally:
        await log.stop()

    segments = follow.segments
    first, last = segments[0], max(segments, key=lambda s: s["at"])
    archive_span = last["at"] - first["at"]
    after_first = args.events - first["records"]
    produce_s = produced_at - started
    end_to_end_s = last["at"] - started_wall
    figures.update({
        "producer": {"events": args.events, "seconds": round(produce_s, 3),
                     "events_per_second": round(args.events / produce_s, 1), "via": "KafkaEventLog.append_bulk"},
        "archive": {
            "segments": len(segments), "events": follow.archived,
            "first_segment_after_s": round(first["at"] - started_wall, 3),
            "first_to_last_segment_s": round(archive_span, 3),
            "events_per_second": round(after_first / archive_span, 1) if archive_span > 0 else None,
            "end_to_end_s": round(end_to_end_s, 3),
            "end_to_end_events_per_second": round(args.events / end_to_end_s, 1),
            "tail_after_last_ack_s": round(last["at"] - produced_wall, 3),
            "segment_records_mean": round(follow.archived / len(segments)),
            "segment_bytes_mean": round(sum(s["bytes"] for s in segments) / len(segments)),
        },
        "cpu_cores_busy": cpu,  # from the first append until S3 held everything
        "archiver_client_errors_logged": follow.client_errors[:10],
    })
    rate = figures["archive"]["events_per_second"]
    figures["ratio_archive_to_producer"] = round(rate / figures["producer"]["events_per_second"], 3) if rate else None
    figures["ratio_end_to_end_to_producer"] = round(
        figures["archive"]["end_to_end_events_per_second"] / figures["producer"]["events_per_second"], 3)
    return figures


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


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # like Ctrl-C: the stack is still taken down
    from events.topic import ensure_topics, review_topics
    from harmony import stack
    from harmony.settings import load

    directory = Path(tempfile.mkdtemp(prefix="harmony-bench-archive-"))
    topic, bucket = f"bench.archive.{uuid.uuid4().hex[:8]}", f"bench-archive-{uuid.uuid4().hex[:8]}"
    for name in ("HARMONY_KAFKA_BOOTSTRAP", "HARMONY_S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.pop(name, None)  # the bench's own stack, nothing else
    os.environ.update({"HARMONY_STATE_DIR": str(directory), "HARMONY_TOPIC": topic, "HARMONY_S3_BUCKET": bucket,
                       "HARMONY_PARTITIONS": str(args.partitions), "HARMONY_LOG_FORMAT": "json",
                       "HARMONY_ARCHIVE_SEGMENT_AGE": str(args.segment_age)})
    figures: dict = {"machine": {"cpus": os.cpu_count()}, "events": args.events, "partitions": args.partitions,
                     "segment_age_s": args.segment_age, "target_events_per_second": TARGET}
    child = None
    try:
        started = time.monotonic()
        with console.status("starting the local stack (SeaweedFS + Kafka)…"):
            info = stack.up(directory, topic, args.partitions)
        console.log(f"stack up in {time.monotonic() - started:.1f}s: kafka {info['kafka_bootstrap']}, "
                    f"s3 {info['s3_endpoint']}, state {directory}")
        settings = load()
        asyncio.run(ensure_topics(settings.kafka_bootstrap, review_topics(topic, args.partitions)))
        figures["archiver_config"] = {name.removeprefix("archive_"): value for name, value in vars(settings).items()
                                      if name.startswith("archive_")}
        log_path = directory / "logs" / "archiver.log"
        with open(log_path, "ab") as out:
            child = subprocess.Popen([sys.executable, "-m", "harmony", "archiver"], env=dict(os.environ),
                                     stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        follow = SegmentLog(log_path)
        started = time.monotonic()
        with console.status("waiting for the archiver to join its group…"):
            while not follow.ready:
                if child.poll() is not None:
                    raise RuntimeError(f"the archiver exited with {child.returncode}: {follow.tail()}")
                if time.monotonic() - started > 120:
                    raise TimeoutError(f"the archiver did not report in: {follow.tail()}")
                time.sleep(0.2)
                follow.poll()
        figures["archiver_ready_s"] = round(time.monotonic() - started, 1)
        console.log(f"archiver ready in {figures['archiver_ready_s']}s")
        pids = {"archiver": child.pid, **service_pids(info)}
        figures.update(asyncio.run(produce_and_watch(settings, args, follow, pids)))
        child.send_signal(signal.SIGTERM)
        child.wait(60)
        if not args.no_verify:
            from archive.segments import s3_client

            s3 = s3_client(settings.s3_endpoint, settings.aws_access_key_id, settings.aws_secret_access_key)
            with console.status("reading the archive back and comparing it with the log…"):
                figures["verify"] = asyncio.run(verify(settings, s3))
    except KeyboardInterrupt:
        console.log("interrupted")
        return 130
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        with console.status("stopping the local stack…"):
            stack.down(directory)
        if args.keep:
            console.log(f"kept state directory {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    report(figures, args.json)
    return 0 if figures.get("verify", {}).get("equal", True) else 1


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def report(figures: dict, as_json: bool) -> None:
    figures["recorded_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    path = save("archive", figures)
    if not as_json:
        console.log(f"figures saved to {path}")
        producer, archive = figures["producer"], figures["archive"]
        table = Table(title=f"archiver vs producer, {figures['events']:,} events, "
                            f"{figures['partitions']} partitions, {figures['machine']['cpus']} CPUs")
        table.add_column("figure")
        table.add_column("value", justify="right")
        rows = [
            ("producer (append_bulk, acks=all)", f"{producer['events_per_second']:,.0f} events/s"),
            ("archive, first to last segment", f"{archive['events_per_second']:,.0f} events/s"),
            ("ratio archive / producer", f"{figures['ratio_archive_to_producer']}"),
            ("end to end (first append → all in S3)", f"{archive['end_to_end_events_per_second']:,.0f} events/s"
                                                      f" ({archive['end_to_end_s']} s)"),
            ("last segment after the last ack", f"{archive['tail_after_last_ack_s']} s"),
            ("segments", f"{archive['segments']} (mean {archive['segment_records_mean']:,} events, "
                         f"{archive['segment_bytes_mean'] / 1e6:.1f} MB gz)"),
            ("CPU cores busy", ", ".join(f"{k} {v}" for k, v in figures["cpu_cores_busy"].items())),
        ]
        if "verify" in figures:
            check = figures["verify"]
            rows.append(("archive == log", f"{check['equal']} ({check['archived_records']:,} records)"))
        for name, value in rows:
            table.add_row(name, value)
        Console().print(table)
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    sys.exit(main())
