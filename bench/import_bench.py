"""Import benchmark: `harmony import` throughput beside a raw aiokafka producer on the same broker.

    .venv/bin/python -m bench.import_bench [--reviews 1000000] [--amazon 200000] [--raw 300000]
                                           [--ml100k PATH] [--partitions 6] [--json]

On a local stack, each into a fresh topic: raw (the baseline: N pre-encoded review events of the import's
size, one send() each, acks=all, linger 50 ms); raw batch (the same through aiokafka's batch API as the
importer uses it, without parsing); then imports run in this process as `harmony import` runs them: the
MovieLens 100K folder, N generated ratings.csv rows and M generated Amazon JSON lines (0 skips them).
Ratios = import events/s / raw (and raw batch) msgs/s.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from commands.imports import open_source
from commands.imports.rows import ImportContext
from commands.imports.runner import progress_bar, run_import
from events.codec import Sealer, encode
from events.topic import ensure_topics, review_topics
from events.types import ReviewSubmitted
from bench.common import base_parser, console, local_stack, produce_batched, run_benchmark
from harmony.bootstrap import keyring, log_config
from harmony.settings import PROJECT_DIR, load

TARGET = 50_000.0


def parser():
    p = base_parser(__doc__)
    p.add_argument("--reviews", type=int, default=1_000_000, help="generated ratings.csv rows (1000000)")
    p.add_argument("--amazon", type=int, default=200_000, help="generated Amazon JSON lines, 0 to skip (200000)")
    p.add_argument("--raw", type=int, default=300_000, help="messages for the raw producer baseline (300000)")
    p.add_argument("--ml100k", type=Path, default=PROJECT_DIR.parent / "shared" / "data" / "ml-100k")
    p.add_argument("--users", type=int, default=50_000)
    p.add_argument("--movies", type=int, default=10_000)
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
        for i in range(rows):
            user = int(users * rng.random() ** 2) + 1
            movie = int(movies * rng.random() ** 3) + 1
            out.write(f"{user},{movie},{rng.randrange(1, 11) / 2},{start + i * 37}\n")
    return folder / "ratings.csv"


WORDS = "the a movie film plot acting great terrible loved hated music scene ending story long short".split()


def write_amazon_jsonl(path: Path, rows: int, users: int, movies: int, seed: int = 11) -> Path:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as out:
        for i in range(rows):
            text = " ".join(rng.choices(WORDS, k=rng.randrange(5, 60)))
            out.write(json.dumps({
                "overall": float(rng.randrange(1, 6)), "verified": True, "reviewTime": "01 1, 2015",
                "reviewerID": f"A{int(users * rng.random() ** 2):012d}", "asin": f"B{int(movies * rng.random() ** 3):09d}",
                "reviewerName": "Someone", "reviewText": text, "summary": text[:40],
                "unixReviewTime": 1_300_000_000 + i * 61,
            }) + "\n")
    return path


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


def run(args) -> dict:
    figures: dict = {"target_events_per_second": TARGET}
    with local_stack("import", "harmony.reviews", args.partitions, args.keep) as (state, info):
        with console.status(f"generating {args.reviews:,} ratings.csv rows and {args.amazon:,} Amazon JSON lines…"):
            started = time.perf_counter()
            ratings = write_ratings_csv(state / "generated", args.reviews, args.users, args.movies)
            amazon = write_amazon_jsonl(state / "reviews.json", args.amazon, args.users, args.movies) \
                if args.amazon else None
            figures["generate_seconds"] = round(time.perf_counter() - started, 1)
        os.environ.update(HARMONY_STATE_DIR=str(state), HARMONY_PARTITIONS=str(args.partitions))

        def topic_settings(name: str):
            os.environ["HARMONY_TOPIC"] = f"bench.{name}.{uuid.uuid4().hex[:8]}"
            settings = load()
            asyncio.run(ensure_topics(info["kafka_bootstrap"], review_topics(settings.topic, args.partitions)))
            return settings

        values = sample_events(ratings, "movielens")
        messages = [values[i % len(values)] for i in range(args.raw)]
        raw = asyncio.run(produce_batched(info["kafka_bootstrap"], topic_settings("raw").topic, messages, linger_ms=50,
                                          label="raw producer"))
        figures["raw_producer"] = {"messages": raw["messages"], "seconds": raw["seconds"],
                                   "msgs_per_second": raw["per_s"],
                                   "value_bytes_mean": round(sum(len(v) for _, v in values) / len(values), 1)}
        with console.status(f"raw aiokafka batch API: {args.raw:,} messages…"):
            figures["raw_batch_producer"] = asyncio.run(raw_batch_rate(
                info["kafka_bootstrap"], topic_settings("rawbatch").topic, values, args.raw))
        runs = [("ml-100k", "movielens", args.ml100k)] if args.ml100k.is_dir() else []
        runs += [("ratings.csv", "movielens", ratings)] + ([("amazon.jsonl", "amazon", amazon)] if amazon else [])
        figures["imports"] = {}
        for name, kind, path in runs:
            console.log(f"import {kind} {path}")
            settings = topic_settings(name.replace(".", "-"))
            sealer = Sealer(keyring(settings))
            result = asyncio.run(run_import(log_config(settings), open_source(kind, path), sealer,
                                            progress=progress_bar()))
            assert sum(offset + 1 for offset in result.last_offsets.values()) == result.events_appended
            figures["imports"][name] = {
                "events": result.events_appended, "reviews": result.reviews, "movies": result.movies,
                "bad_rows": result.bad_rows, "seconds": round(result.seconds, 3),
                "events_per_second": round(result.events_per_second, 1),
                "ratio_to_raw": round(result.events_per_second / figures["raw_producer"]["msgs_per_second"], 2),
                "ratio_to_raw_batch": round(
                    result.events_per_second / figures["raw_batch_producer"]["msgs_per_second"], 2),
                "input_bytes": sum(p.stat().st_size for p in open_source(kind, path).files),
            }
    return figures


if __name__ == "__main__":
    raise SystemExit(run_benchmark("import", __doc__, parser().parse_args(), run))
