"""Catch-up benchmark: how fast `harmony worker` folds a backlog into a fresh SQLite store, one worker and
two in one consumer group, beside a raw aiokafka consume of the same backlog, measured in the same run.

    .venv/bin/python -m bench.catchup [--events 200000] [--users 5000] [--movies 2000] [--partitions 12]
                                      [--workers 2] [--json] [--profile-dir DIR]

The same N ReviewSubmitted events go to two fresh topics (each with its own consumer group). Figures:
raw_consume (the baseline: events.reader.read_log from offset 0); offline_fold (read, decode, fold and
apply without Faust, each stage timed; --no-offline skips it); sqlite (one `harmony worker`, timed from
its start and from the first applied event, steady, until the checkpoint covers N); workers_<W> (W workers
on the second topic sharing one store; their views must equal the one worker's). Ratios to raw consume.
Target (issue 21): one worker ≥ 40,000 events/s steady and ≥ 0.20 of raw consume.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

from bench.common import (
    Population, add_backlog_arguments, base_parser, catch_up, child_env, console, fresh_topic, local_stack,
    produce_batched, progress, ratio, review_events, run_benchmark, service_pids, sqlite_store,
)

TARGET_RATE = 40_000.0  # events/s, one worker, steady
TARGET_RATIO = 0.20  # of raw consume, one worker, steady


def parser():
    p = base_parser(__doc__, partitions=12, profile=True)
    add_backlog_arguments(p)
    p.add_argument("--timeout", type=float, default=900.0, help="give up on a worker run after this many s (900)")
    p.add_argument("--no-offline", action="store_true", help="skip the offline fold (no Faust)")
    p.add_argument("--workers", type=int, default=2,
                   help="workers of the multi-worker run, one consumer group and one store (2; 0 or 1: skip it)")
    return p


async def raw_consume(bootstrap: str, topic: str, expected: int) -> dict:
    from events.reader import read_log

    count = 0
    with progress() as bar:
        task = bar.add_task("raw consume", total=expected, info="")
        started = time.perf_counter()
        async for batch in read_log(bootstrap, topic):
            count += len(batch)
            bar.update(task, completed=count, info=f"{count / (time.perf_counter() - started):,.0f}/s")
        elapsed = time.perf_counter() - started
    if count != expected:
        raise RuntimeError(f"raw consume read {count:,} of {expected:,} events")
    return {"events": count, "seconds": round(elapsed, 3), "per_s": round(count / elapsed, 1)}


async def offline_fold(bootstrap: str, topic: str, store_path: Path, expected: int, keys=None) -> dict:
    """read_log → decode_batch → fold → apply in the worker's batches, like its projector but without
    Faust; `keys` open sealed records (None: a log in clear)."""
    from events.reader import read_log
    from projections.fold import fold
    from projections.projector import decode_batch
    from projections.worker import BATCH_SIZE

    store = sqlite_store(store_path)
    times = dict.fromkeys(("read", "decode", "fold", "apply"), 0.0)
    count = 0
    perf = time.perf_counter

    def apply(raw: list) -> None:
        t0 = perf()
        records = decode_batch(raw, keys).records
        t1 = perf()
        changes = fold(store, records)
        t2 = perf()
        if changes.checkpoint and not store.apply(changes):
            raise RuntimeError("the offline store refused a batch (nothing else writes to it)")
        times["decode"], times["fold"], times["apply"] = (
            times["decode"] + t1 - t0, times["fold"] + t2 - t1, times["apply"] + perf() - t2)

    try:
        with progress() as bar:
            task = bar.add_task("offline fold (no Faust)", total=expected, info="")
            started = mark = perf()
            pending: list = []
            async for fetched in read_log(bootstrap, topic, batch=BATCH_SIZE):
                times["read"] += perf() - mark
                pending.extend(fetched)
                while len(pending) >= BATCH_SIZE:  # one fetch may hold more or fewer records than a batch
                    apply(pending[:BATCH_SIZE])
                    pending, count = pending[BATCH_SIZE:], count + BATCH_SIZE
                bar.update(task, completed=count, info=f"{count / (perf() - started):,.0f}/s")
                mark = perf()
            if pending:
                apply(pending)
                count += len(pending)
            elapsed = perf() - started
    finally:
        store.close()
    return {"events": count, "seconds": round(elapsed, 3), "per_s": round(count / elapsed, 1), "batch": BATCH_SIZE,
            "stage_us_per_event": {k: round(v / max(count, 1) * 1e6, 1) for k, v in times.items()}}


def measure_workers(state_dir: Path, name: str, topic: str, count: int, args, services: dict[str, int],
                    env: dict[str, str] = {}) -> dict:
    """`count` workers on `topic` (and more `env`) and one fresh SQLite store (its schema made first), until
    it covers the backlog."""
    work = state_dir / f"bench-catchup-{name}"
    work.mkdir()
    store_path = work / "projections.db"
    store = sqlite_store(store_path)
    try:
        figures = catch_up({**child_env(state_dir, topic, args.partitions, store_path), **env}, work, store,
                           args.events, args.timeout, services, f"catch-up, {count} worker(s)", count, args.profile_dir)
    finally:
        store.close()
    return {**figures, "store": str(store_path)}


def views_digest(store_path: Path) -> dict[str, str]:
    """A digest of every view and the checkpoint of a store (to compare two stores without holding both)."""
    store = sqlite_store(store_path)
    try:
        contents = store.contents()
    finally:
        store.close()
    return {view: f"{len(rows)} rows, sha256 {hashlib.sha256(repr(rows).encode()).hexdigest()[:16]}"
            for view, rows in contents.items()}


def run(args) -> dict:
    topic = fresh_topic("bench.catchup")
    multi = f"workers_{args.workers}" if args.workers > 1 else None
    figures: dict = {"benchmark": "catchup", "targets": {"per_s": TARGET_RATE, "ratio_to_raw_consume": TARGET_RATIO},
                     "events": args.events, "users": args.users, "movies": args.movies, "partitions": args.partitions}
    with local_stack("catchup", topic, args.partitions, args.keep) as (state_dir, info):
        bootstrap = info["kafka_bootstrap"]
        services = service_pids(info)
        with console.status(f"generating {args.events:,} ReviewSubmitted events…"):
            messages = review_events(Population(args.users, args.movies), args.events)
        topics = {"sqlite": topic, **({multi: f"{topic}.{multi}"} if multi else {})}
        for name, each in topics.items():
            figures["produce" if name == "sqlite" else f"produce_{name}"] = asyncio.run(produce_batched(
                bootstrap, each, messages, linger_ms=args.linger_ms, partitions=args.partitions,
                label=f"fill the {name} topic"))
        del messages
        raw = figures["raw_consume"] = asyncio.run(raw_consume(bootstrap, topic, args.events))
        if not args.no_offline:
            figures["offline_fold"] = asyncio.run(offline_fold(bootstrap, topic, state_dir / "offline.db", args.events))
        for name, each in topics.items():
            figures[name] = measure_workers(state_dir, name, each, 1 if name == "sqlite" else args.workers, args,
                                            services)
        if multi:
            with console.status("comparing the views of the two stores…"):
                figures[multi]["same_views_as_one_worker"] = (
                    views_digest(Path(figures["sqlite"]["store"])) == views_digest(Path(figures[multi]["store"])))
            figures[multi]["ratio_to_one_worker"] = ratio(figures[multi]["per_s"], figures["sqlite"]["per_s"])
    for key in ("offline_fold", "sqlite", multi):
        if key in figures:
            figures[key]["ratio"] = ratio(figures[key]["per_s"], raw["per_s"])
            if "per_s_from_start" in figures[key]:
                figures[key]["ratio_from_start"] = ratio(figures[key]["per_s_from_start"], raw["per_s"])
    one = figures["sqlite"]
    figures["meets_targets"] = {"per_s": (one["per_s"] or 0) >= TARGET_RATE,
                                "ratio_to_raw_consume": (one["ratio"] or 0) >= TARGET_RATIO}
    figures["meets_target"] = all(figures["meets_targets"].values())
    return figures


if __name__ == "__main__":
    raise SystemExit(run_benchmark("catchup", __doc__, parser().parse_args(), run))
