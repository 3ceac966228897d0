"""Catch-up benchmark: how fast the Faust projection worker folds a backlog into a fresh SQLite store,
beside a raw aiokafka consume of the same topic, measured in the same run.

    .venv/bin/python -m bench.catchup [--events 200000] [--users 5000] [--movies 2000] [--json]

Starts its own local stack in a temporary directory, produces N valid ReviewSubmitted events
(keyed by user id, long-tailed users and movies) to a fresh topic with a batching producer, then:
- raw_consume (the baseline): read the whole topic from offset 0 (events.reader.read_log, which
  ends at the high watermark of its first fetch);
- offline_fold (diagnostic, skip with --no-offline): the same records through decode_batch + fold +
  SQLiteStore.apply in batches of the worker's size, without Faust, each stage timed;
- worker: `python -m harmony worker` with a fresh store, timed from process start and from the
  first applied event until sum(checkpoint offset + 1) == N, polling SQLiteStore.checkpoint().
Ratio = worker steady-state rate / raw consume rate (and from-start rate / raw consume rate).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from bench.common import (
    Child, CpuMeter, Population, PySpy, add_backlog_arguments, base_parser, child_env, console, create_topic,
    fresh_topic, local_stack, print_profile, produce_batched, progress, run_benchmark, review_events,
    service_pids, sqlite_store, summarise_stacks,
)

TARGET_RATE = 20_000.0

WORKER_CATEGORIES = {
    "SQLite (store reads + apply)": ("projections/sqlite_store.py", "sqlite3/"),
    "fold (projections/fold.py)": ("projections/fold.py",),
    "decode (events/codec.py)": ("events/codec.py",),
    "decode_batch/apply glue (projector.py)": ("projections/projector.py",),
    "agent body (worker.py: LogRecord build)": ("projections/worker.py",),
    "faust stream/agent/consumer": ("faust/",),
    "mode (services, timers)": ("mode/",),
    "aiokafka fetch/protocol": ("aiokafka/",),
    "asyncio/uvloop scheduling": ("asyncio/", "uvloop"),
    "logging": ("logging/",),
}


def parser():
    p = base_parser(__doc__.split("\n\n")[0])
    add_backlog_arguments(p)
    p.add_argument("--timeout", type=float, default=900.0, help="give up on the worker after this many s (900)")
    p.add_argument("--no-offline", action="store_true", help="skip the offline fold (no Faust) diagnostic")
    p.add_argument("--batch", type=int, default=None,
                   help="batch size of the offline fold (default: the worker's BATCH_SIZE)")
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
    return {"events": count, "seconds": round(elapsed, 3), "per_s": round(count / elapsed, 1),
            "complete": count == expected}


async def offline_fold(bootstrap: str, topic: str, store_path: Path, expected: int, batch_size: int) -> dict:
    """read_log → decode_batch → fold → apply, like the worker's agent body but without Faust."""
    from events.reader import read_log
    from projections.fold import fold
    from projections.projector import decode_batch

    store = sqlite_store(store_path)
    times = {"read": 0.0, "decode": 0.0, "fold": 0.0, "apply": 0.0}
    count = 0
    perf = time.perf_counter
    try:
        with progress() as bar:
            task = bar.add_task("offline fold (no Faust)", total=expected, info="")
            started = perf()
            mark = perf()
            pending: list = []

            def apply(raw: list) -> None:
                t0 = perf()
                records, _ = decode_batch(raw)
                t1 = perf()
                changes = fold(store, records)
                t2 = perf()
                if changes.checkpoint:
                    store.apply(changes)
                t3 = perf()
                times["decode"] += t1 - t0
                times["fold"] += t2 - t1
                times["apply"] += t3 - t2

            # Batches of exactly batch_size (one fetch may hold more or fewer records).
            async for fetched in read_log(bootstrap, topic, batch=batch_size):
                times["read"] += perf() - mark
                pending.extend(fetched)
                while len(pending) >= batch_size:
                    raw, pending = pending[:batch_size], pending[batch_size:]
                    apply(raw)
                    count += len(raw)
                bar.update(task, completed=count, info=f"{count / (perf() - started):,.0f}/s")
                mark = perf()
            if pending:
                apply(pending)
                count += len(pending)
            elapsed = perf() - started
        applied = sum(offset + 1 for offset in store.checkpoint().values())
    finally:
        store.close()
    return {"events": count, "applied": applied, "seconds": round(elapsed, 3), "per_s": round(count / elapsed, 1),
            "batch": batch_size,
            "stage_seconds": {k: round(v, 3) for k, v in times.items()},
            "stage_us_per_event": {k: round(v / max(count, 1) * 1e6, 1) for k, v in times.items()}}


def measure_worker(state_dir: Path, topic: str, partitions: int, expected: int, timeout: float,
                   profile_dir: Path | None, services: dict[str, int]) -> dict:
    work = state_dir / "bench-catchup-worker"
    work.mkdir()
    store_path = work / "projections.db"
    env = child_env(state_dir, topic, partitions, store_path)
    started = time.monotonic()
    # cwd: Faust writes its `<app id>-data` folder into the working directory.
    worker = Child(["worker"], env, work / "worker.log", cwd=work)
    spy = PySpy(worker.pid, profile_dir, "worker") if profile_dir else None
    meter = CpuMeter({"worker": worker.pid, **services}).start()
    store = None
    steady_meter = None
    first_at = first_count = None
    applied = 0
    samples: list[tuple[float, int]] = []
    try:
        with progress() as bar:
            task = bar.add_task("worker catch-up", total=expected, info="starting / joining the group")
            while applied < expected:
                now = time.monotonic()
                if now - started > timeout:
                    raise TimeoutError(f"worker applied {applied:,} of {expected:,} within {timeout:.0f}s")
                if not worker.alive():
                    raise RuntimeError(f"the worker exited with {worker.process.returncode}:\n{worker.tail()}")
                if store is None and store_path.exists():
                    store = sqlite_store(store_path)
                if store is not None:
                    applied = sum(offset + 1 for offset in store.checkpoint().values())
                    now = time.monotonic()
                    if applied and first_at is None:
                        first_at, first_count = now, applied
                        steady_meter = CpuMeter({"worker": worker.pid, **services}).start()
                    samples.append((round(now - started, 2), applied))
                if first_at is not None:
                    steady = (applied - first_count) / max(now - first_at, 1e-9)
                    info = f"{steady:,.0f}/s since first apply at {first_at - started:.1f}s"
                else:
                    info = "starting / joining the group"
                bar.update(task, completed=applied, info=info)
                if applied < expected:
                    time.sleep(0.05)
        done_at = time.monotonic()
        cpu = meter.stop()
        steady_cpu = steady_meter.stop()
    finally:
        if spy:
            spy.stop()
        if store is not None:
            store.close()
        with console.status("stopping the worker…"):
            worker.stop()
    total = done_at - started
    steady = done_at - first_at
    figures = {
        "events": expected,
        "first_apply_s": round(first_at - started, 2),
        "events_at_first_apply": first_count,
        "total_s": round(total, 2),
        "steady_s": round(steady, 2),
        "per_s_from_start": round(expected / total, 1),
        "per_s_steady": round((expected - first_count) / steady, 1) if steady > 0 else None,
        "cpu_cores": cpu,
        "cpu_cores_steady": steady_cpu,
        "progress_samples": samples[:: max(1, len(samples) // 40)],
    }
    if spy:
        figures["profile"] = summarise_stacks(spy.path, WORKER_CATEGORIES)
        figures["profile"]["stacks"] = str(spy.path)
        print_profile("worker profile", figures["profile"])
    return figures


def run(args) -> dict:
    from projections.worker import BATCH_SIZE

    topic = fresh_topic("bench.catchup")
    figures: dict = {"benchmark": "catchup", "targets": {"per_s": TARGET_RATE}, "events": args.events,
                     "users": args.users, "movies": args.movies, "partitions": args.partitions}
    with local_stack("catchup", topic, args.partitions, args.keep) as (state_dir, info):
        bootstrap = info["kafka_bootstrap"]
        services = service_pids(info)
        with console.status(f"generating {args.events:,} ReviewSubmitted events…"):
            t0 = time.perf_counter()
            messages = review_events(Population(args.users, args.movies), args.events)
            figures["generate_s"] = round(time.perf_counter() - t0, 2)
        figures["mean_event_bytes"] = round(sum(len(v) for _, v in messages) / len(messages), 1)
        asyncio.run(create_topic(bootstrap, topic, args.partitions))
        figures["produce"] = asyncio.run(
            produce_batched(bootstrap, topic, messages, linger_ms=args.linger_ms, label="fill the topic"))
        del messages

        figures["raw_consume"] = asyncio.run(raw_consume(bootstrap, topic, args.events))
        if not figures["raw_consume"]["complete"]:
            raise RuntimeError(f"raw consume read {figures['raw_consume']['events']:,} of {args.events:,} events")
        if not args.no_offline:
            figures["offline_fold"] = asyncio.run(offline_fold(
                bootstrap, topic, state_dir / "offline.db", args.events, args.batch or BATCH_SIZE))
        figures["worker"] = measure_worker(state_dir, topic, args.partitions, args.events, args.timeout,
                                           args.profile_dir, services)

    raw = figures["raw_consume"]["per_s"]
    worker = figures["worker"]
    figures["ratio_worker_steady_to_raw_consume"] = round(worker["per_s_steady"] / raw, 4)
    figures["ratio_worker_from_start_to_raw_consume"] = round(worker["per_s_from_start"] / raw, 4)
    if "offline_fold" in figures:
        figures["ratio_offline_fold_to_raw_consume"] = round(figures["offline_fold"]["per_s"] / raw, 4)
        figures["ratio_worker_steady_to_offline_fold"] = round(
            worker["per_s_steady"] / figures["offline_fold"]["per_s"], 4)
    figures["meets_target"] = worker["per_s_steady"] >= TARGET_RATE
    return figures


def rows(figures: dict) -> list[tuple[str, str]]:
    p, raw, w = figures["produce"], figures["raw_consume"], figures["worker"]
    out = [
        ("backlog", f"{figures['events']:,} ReviewSubmitted, {figures['users']:,} users × {figures['movies']:,} movies, "
                    f"{figures['partitions']} partitions, ~{figures['mean_event_bytes']:.0f} B/event"),
        ("fill the topic (batched producer)", f"{p['per_s']:,.0f} events/s ({p['seconds']} s)"),
        ("raw consume (baseline)", f"{raw['per_s']:,.0f} events/s ({raw['seconds']} s)"),
    ]
    if "offline_fold" in figures:
        o = figures["offline_fold"]
        us = o["stage_us_per_event"]
        out.append(("offline fold, no Faust (read+decode+fold+apply)", f"{o['per_s']:,.0f} events/s ({o['seconds']} s)"))
        out.append(("  µs per event", ", ".join(f"{k} {v}" for k, v in us.items())))
    out += [
        ("worker: first event applied after", f"{w['first_apply_s']} s"),
        ("worker: from process start", f"{w['per_s_from_start']:,.0f} events/s ({w['total_s']} s)"),
        ("worker: steady (from first apply)", f"{w['per_s_steady']:,.0f} events/s ({w['steady_s']} s)"),
        ("  CPU cores busy, whole run", ", ".join(f"{k} {v}" for k, v in w["cpu_cores"].items())),
        ("  CPU cores busy, steady part", ", ".join(f"{k} {v}" for k, v in w["cpu_cores_steady"].items())),
        ("RATIO worker steady / raw consume", f"{figures['ratio_worker_steady_to_raw_consume']:.3f}"),
        ("RATIO worker from start / raw consume", f"{figures['ratio_worker_from_start_to_raw_consume']:.3f}"),
    ]
    if "offline_fold" in figures:
        out.append(("RATIO offline fold / raw consume", f"{figures['ratio_offline_fold_to_raw_consume']:.3f}"))
        out.append(("RATIO worker steady / offline fold", f"{figures['ratio_worker_steady_to_offline_fold']:.3f}"))
    out.append((f"target ≥ {TARGET_RATE:,.0f} events/s (steady)", "MET" if figures["meets_target"] else "NOT MET"))
    return out


def main(argv: list[str] | None = None) -> int:
    return run_benchmark("catchup", "catch-up: Faust projection worker vs raw consume", parser().parse_args(argv), run, rows)


if __name__ == "__main__":
    raise SystemExit(main())
