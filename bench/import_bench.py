"""Import benchmark: `harmony import` throughput beside a raw aiokafka producer on the same broker.

    .venv/bin/python -m bench.import_bench [--reviews 1000000] [--amazon 200000] [--raw 300000]
                                           [--ml100k PATH] [--partitions 6] [--json]

Starts its own local stack (SeaweedFS + one Kafka broker) in a temporary directory, stopped in the end,
then measures, each into a fresh topic:
- raw: the baseline, an aiokafka producer sending N pre-encoded review events of the import's
  size one `send()` each (acks=all, linger 50 ms, 1 MB batches, acks awaited in windows);
- raw batch: the same messages through aiokafka's batch API as the importer uses it, without
  parsing: the ceiling of the importer's way of producing;
- ml-100k: the MovieLens 100K folder (u.data + u.item; default ../shared/data/ml-100k);
- ratings.csv: N generated MovieLens-format reviews (plus movies.csv), written to a temp file;
- amazon: M generated Amazon review JSON lines with short texts (0 skips it).
Each import runs in this process as `harmony import` does (parse, encode, bulk-append, wait for
every ack). Ratios = import events/s / raw (and raw batch) msgs/s. Figures go to stdout (one JSON object with
--json) and to bench/results/import.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from commands.imports import open_source
from commands.imports.rows import ImportContext
from commands.imports.runner import progress_bar, run_import
from events.codec import encode
from events.topic import ensure_topics, review_topics
from events.types import ReviewSubmitted
from harmony import stack
from harmony.bootstrap import log_config
from harmony.settings import PROJECT_DIR, load

TARGET = 50_000.0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reviews", type=int, default=1_000_000, help="generated ratings.csv rows (1000000)")
    p.add_argument("--amazon", type=int, default=200_000, help="generated Amazon JSON lines, 0 to skip (200000)")
    p.add_argument("--raw", type=int, default=300_000, help="messages for the raw producer baseline (300000)")
    p.add_argument("--ml100k", type=Path, default=PROJECT_DIR.parent / "shared" / "data" / "ml-100k")
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--users", type=int, default=50_000)
    p.add_argument("--movies", type=int, default=10_000)
    p.add_argument("--json", action="store_true", help="print one JSON object of figures")
    p.add_argument("--no-progress", action="store_true")
    return p


def write_ratings_csv(folder: Path, rows: int, users: int, movies: int, seed: int = 7) -> Path:
    """MovieLens `ratings.csv` + `movies.csv` with long-tailed users and movies, unique (user, movie, ts)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "movies.csv", "w", encoding="utf-8") as out:
        out.write("movieId,title,genres\n")
        for movie in range(1, movies + 1):
            out.write(f'{movie},"Movie {movie}, The ({1950 + movie % 70})",Drama|Comedy\n')
    start = 1_000_000_000
    with open(folder / "ratings.csv", "w", encoding="ascii") as out:
        out.write("userId,movieId,rating,timestamp\n")
        lines = []
        for i in range(rows):
            user = int(users * rng.random() ** 2) + 1
            movie = int(movies * rng.random() ** 3) + 1
            lines.append(f"{user},{movie},{rng.randrange(1, 11) / 2},{start + i * 37}\n")
            if len(lines) >= 100_000:
                out.writelines(lines)
                lines.clear()
        out.writelines(lines)
    return folder / "ratings.csv"


WORDS = "the a movie film plot acting great terrible loved hated music scene ending story long short".split()


def write_amazon_jsonl(path: Path, rows: int, users: int, movies: int, seed: int = 11) -> Path:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as out:
        lines = []
        for i in range(rows):
            text = " ".join(rng.choices(WORDS, k=rng.randrange(5, 60)))
            lines.append(json.dumps({
                "overall": float(rng.randrange(1, 6)), "verified": True, "reviewTime": "01 1, 2015",
                "reviewerID": f"A{int(users * rng.random() ** 2):012d}", "asin": f"B{int(movies * rng.random() ** 3):09d}",
                "reviewerName": "Someone", "reviewText": text, "summary": text[:40],
                "unixReviewTime": 1_300_000_000 + i * 61,
            }) + "\n")
            if len(lines) >= 50_000:
                out.writelines(lines)
                lines.clear()
        out.writelines(lines)
    return path


async def raw_producer_rate(bootstrap: str, topic: str, values: list[tuple[bytes, bytes]], count: int) -> dict:
    """The baseline: one send() per message, acks=all, linger 50 ms, 1 MB batches, acks in windows."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=50, max_batch_size=1 << 20)
    await producer.start()
    try:
        started = time.perf_counter()
        window = []
        for i in range(count):
            key, value = values[i % len(values)]
            window.append(await producer.send(topic, value, key=key))
            if len(window) >= 20_000:
                await asyncio.gather(*window)
                window.clear()
        await asyncio.gather(*window)
        seconds = time.perf_counter() - started
    finally:
        await producer.stop()
    return {"messages": count, "seconds": round(seconds, 3), "msgs_per_second": round(count / seconds, 1)}


async def raw_batch_rate(bootstrap: str, topic: str, values: list[tuple[bytes, bytes]], count: int) -> dict:
    """A second reference: the same pre-encoded messages through aiokafka's batch API, the way the
    importer produces (1 MB record batch per partition, keyed partitioning), without any parsing."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        partitioner, partition_of, builders, futures = DefaultPartitioner(), {}, {}, []
        started = time.perf_counter()
        for i in range(count):
            key, value = values[i % len(values)]
            partition = partition_of.get(key)
            if partition is None:
                partition = partition_of[key] = partitioner(key, partitions, partitions)
            builder = builders.get(partition) or builders.setdefault(partition, producer.create_batch())
            if builder.append(key=key, value=value, timestamp=None) is None:
                futures.append(await producer.send_batch(builder, topic, partition=partition))
                builder = builders[partition] = producer.create_batch()
                builder.append(key=key, value=value, timestamp=None)
            if i % 256 == 0:
                await asyncio.sleep(0)
        for partition, builder in builders.items():
            builder.close()
            futures.append(await producer.send_batch(builder, topic, partition=partition))
        await asyncio.gather(*futures)
        seconds = time.perf_counter() - started
    finally:
        await producer.stop()
    return {"messages": count, "seconds": round(seconds, 3), "msgs_per_second": round(count / seconds, 1)}


def sample_events(source_path: Path, kind: str, count: int = 20_000) -> list[tuple[bytes, bytes]]:
    """Encoded events of the import's own shape, for the raw baseline."""
    context = ImportContext(kind)
    out = []
    for event in open_source(kind, source_path).events(context):
        if not isinstance(event, ReviewSubmitted):
            continue
        out.append((event.key.encode(), encode(event)))
        if len(out) >= count:
            break
    return out


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="harmony-import-bench-"))
    state = work / "stack"
    figures: dict = {"machine": {"cpus": os.cpu_count()}, "target_events_per_second": TARGET}

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    say(f"generating {args.reviews:,} ratings.csv rows and {args.amazon:,} Amazon JSON lines in {work}")
    started = time.perf_counter()
    ratings = write_ratings_csv(work / "generated", args.reviews, args.users, args.movies)
    amazon = write_amazon_jsonl(work / "reviews.json", args.amazon, args.users, args.movies) if args.amazon else None
    figures["generate_seconds"] = round(time.perf_counter() - started, 1)

    os.environ["HARMONY_STATE_DIR"] = str(state)
    os.environ["HARMONY_PARTITIONS"] = str(args.partitions)
    info = stack.up(state, "harmony.reviews", args.partitions)
    try:
        bootstrap = info["kafka_bootstrap"]

        def topic_settings(name: str):
            os.environ["HARMONY_TOPIC"] = f"bench.{name}.{uuid.uuid4().hex[:8]}"
            return load()

        async def raw() -> dict:
            settings = topic_settings("raw")
            await ensure_topics(bootstrap, review_topics(settings.topic, args.partitions))
            values = sample_events(ratings, "movielens")
            result = await raw_producer_rate(bootstrap, settings.topic, values, args.raw)
            result["value_bytes_mean"] = round(sum(len(v) for _, v in values) / len(values), 1)
            return result

        say(f"raw aiokafka producer: {args.raw:,} messages")
        figures["raw_producer"] = asyncio.run(raw())
        say(f"  {figures['raw_producer']['msgs_per_second']:,.0f} msgs/s")

        async def raw_batches() -> dict:
            settings = topic_settings("rawbatch")
            await ensure_topics(bootstrap, review_topics(settings.topic, args.partitions))
            return await raw_batch_rate(bootstrap, settings.topic, sample_events(ratings, "movielens"), args.raw)

        say(f"raw aiokafka batch API: {args.raw:,} messages")
        figures["raw_batch_producer"] = asyncio.run(raw_batches())
        say(f"  {figures['raw_batch_producer']['msgs_per_second']:,.0f} msgs/s")

        runs = []
        if args.ml100k.is_dir():
            runs.append(("ml-100k", "movielens", args.ml100k))
        else:
            say(f"no MovieLens 100K at {args.ml100k}: skipped")
        runs.append(("ratings.csv", "movielens", ratings))
        if amazon is not None:
            runs.append(("amazon.jsonl", "amazon", amazon))
        figures["imports"] = {}
        for name, kind, path in runs:
            settings = topic_settings(name.replace(".", "-"))
            say(f"import {kind} {path}")
            progress = progress_bar(disable=args.no_progress)
            result = asyncio.run(run_import(log_config(settings), open_source(kind, path), progress=progress))
            written = sum(offset + 1 for offset in result.last_offsets.values())
            assert written == result.events_appended, (written, result.events_appended)
            entry = {
                "events": result.events_appended, "reviews": result.reviews, "movies": result.movies,
                "bad_rows": result.bad_rows, "seconds": round(result.seconds, 3),
                "events_per_second": round(result.events_per_second, 1),
                "ratio_to_raw": round(result.events_per_second / figures["raw_producer"]["msgs_per_second"], 2),
                "ratio_to_raw_batch": round(
                    result.events_per_second / figures["raw_batch_producer"]["msgs_per_second"], 2),
                "input_bytes": sum(p.stat().st_size for p in open_source(kind, path).files),
            }
            figures["imports"][name] = entry
            say(f"  {entry['events']:,} events in {entry['seconds']:.2f} s: {entry['events_per_second']:,.0f} "
                f"events/s, {entry['ratio_to_raw']:.2f}x raw")
    finally:
        stack.down(state)
        shutil.rmtree(work, ignore_errors=True)

    figures["recorded_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results = PROJECT_DIR / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "import.json").write_text(json.dumps(figures, indent=2))
    if args.json:
        print(json.dumps(figures))
    else:
        raw_rate = figures["raw_producer"]["msgs_per_second"]
        batch = figures["raw_batch_producer"]
        print(f"raw aiokafka producer   {raw_rate:>10,.0f} msgs/s  ({figures['raw_producer']['messages']:,} messages, "
              "send() each, linger 50 ms, 1 MB batches)")
        print(f"raw aiokafka batch API  {batch['msgs_per_second']:>10,.0f} msgs/s  ({batch['messages']:,} messages, "
              "pre-encoded, no parsing)")
        for name, entry in figures["imports"].items():
            verdict = "" if name == "ml-100k" else ("  meets" if entry["events_per_second"] >= TARGET else "  BELOW") + \
                f" the {TARGET:,.0f}/s target"
            print(f"import {name:<16} {entry['events_per_second']:>10,.0f} events/s  ({entry['events']:,} events in "
                  f"{entry['seconds']:.2f} s, {entry['ratio_to_raw']:.2f}x raw, {entry['ratio_to_raw_batch']:.2f}x raw batch)"
                  f"{verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
