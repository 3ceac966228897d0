"""Catch-up benchmark: how fast `harmony worker` folds a backlog into a fresh SQLite store, one worker and
two in one consumer group, beside a raw aiokafka consume of the same backlog, measured in the same run.

    .venv/bin/python -m bench.catchup [--events 200000] [--users 5000] [--movies 2000] [--partitions 12]
                                      [--workers 2] [--catch-up-lag N] [--json] [--profile-dir DIR]

Starts its own local stack in a temporary directory, produces N valid ReviewSubmitted events (keyed by user
id, long-tailed users and movies) with a batching producer to a fresh topic of --partitions partitions (12),
and the same N events to a second fresh topic for the multi-worker run (each topic has its own consumer
group, `harmony-projector.<topic>`, so neither run finds the other's committed offsets), then:
- raw_consume (the baseline): read the whole first topic from offset 0 (events.reader.read_log, which ends
  at the high watermark of its first fetch);
- offline_fold (diagnostic, skip with --no-offline): the same records through decode_batch + fold +
  SQLiteStore.apply in batches of the worker's size (or --batch), without Faust, each stage timed;
- sqlite: one `python -m harmony worker` with a fresh store on the first topic, timed from process start
  and from the first applied event until sum(checkpoint offset + 1) == N, polling the store's checkpoint;
- workers_<W> (--workers 2; 0 or 1 skips it): W `harmony worker` processes started together on the second
  topic and one fresh SQLite store. They form one Faust consumer group and share the partitions; the
  store's checkpoint is compared-and-set per partition. Timed the same way; its views are then compared
  with the one worker's (they must be equal: the same events at the same positions).
Ratios: each rate / the raw consume rate (`ratio`), steady state (and from the process start).
Targets (issue 21): one worker at least 40,000 events/s steady and at least 0.20 of raw consume.
The workers run with the product's settings; a worker reads a partition straight from the log (not through
Faust's per-event stream) only while it is more than HARMONY_CATCH_UP_LAG (20,000) records behind in that
partition, so `partition_sizes` tells which path a backlog takes (--catch-up-lag sets it for the workers).
With --profile-dir, py-spy records every worker; the summary splits samples by where they fall and by thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path

from bench.common import (
    Child, CpuMeter, Population, PySpy, add_backlog_arguments, base_parser, child_env, console, create_topic,
    fresh_topic, local_stack, print_profile, produce_batched, progress, run_benchmark, review_events,
    service_pids, sqlite_store, summarise_stacks,
)

TARGET_RATE = 40_000.0  # events/s, one worker, steady
TARGET_RATIO = 0.20  # of raw consume, one worker, steady
PARTITIONS = 12  # the figure for the multi-worker run
POLL_S = 0.05

# Walking each stack from its leaf up, the first category one of whose needles a frame holds (in this
# order for one frame). A leaf at the run-loop call of the main thread or of mode's consumer thread is
# uvloop's own C code (py-spy counts running threads only: callbacks, polling, transports).
WORKER_CATEGORIES = {
    "event loop in C (uvloop run loops)": ("Worker.execute_from_commandline", "ServiceThread._start_thread"),
    "SQLite (store reads + apply)": ("projections/sqlite_store.py", "sqlite3/"),
    "fold (projections/fold.py, events/fold.py)": ("projections/fold.py", "events/fold.py"),
    "decode (events/codec.py)": ("events/codec.py",),
    "decode_batch/apply glue (projector.py)": ("projections/projector.py",),
    "agent body (worker.py: LogRecord build)": ("projections/worker.py",),
    "faust stream/agent/consumer": ("faust/",),
    "mode (services, timers)": ("mode/",),
    "aiokafka fetch/protocol": ("aiokafka/",),
    "read_log (events/reader.py)": ("events/reader.py",),
    "asyncio/uvloop scheduling": ("asyncio/", "uvloop"),
    "threads (to_thread hand-off)": ("threading.py", "concurrent/futures"),
    "logging": ("logging/",),
    "start-up (imports)": ("<frozen importlib", "importlib/"),
}


# Threads of a worker, by the root frame of a stack (py-spy's raw stacks start at the thread's root).
WORKER_THREADS = {
    "main (event loop: Faust stream, agent, decode)": ("_run_module_as_main",),
    "asyncio.to_thread executor (fold + SQLite)": ("concurrent/futures/thread.py",),
    "Faust consumer thread (mode ServiceThread: aiokafka)": ("mode/threads.py",),
}


def thread_shares(path: Path) -> dict[str, float]:
    """Share of a py-spy raw profile's samples per thread kind (by a stack's first four frames), in %."""
    counts: dict[str, int] = {}
    total = 0
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return {}
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        head = ";".join(stack.split(";")[:4])
        kind = next((name for name, needles in WORKER_THREADS.items() if any(n in head for n in needles)),
                    "other (stacks py-spy cut short)")
        counts[kind] = counts.get(kind, 0) + int(count_text)
        total += int(count_text)
    return {kind: round(100 * n / total, 1) for kind, n in sorted(counts.items(), key=lambda kv: -kv[1])} if total else {}


def parser():
    p = base_parser(__doc__.split("\n\n")[0])
    add_backlog_arguments(p)
    p.set_defaults(partitions=PARTITIONS)
    next(a for a in p._actions if a.dest == "partitions").help = f"partitions of the benchmark topics ({PARTITIONS})"
    p.add_argument("--timeout", type=float, default=900.0, help="give up on a worker run after this many s (900)")
    p.add_argument("--no-offline", action="store_true", help="skip the offline fold (no Faust) diagnostic")
    p.add_argument("--batch", type=int, default=None,
                   help="batch size of the offline fold (default: the worker's BATCH_SIZE)")
    p.add_argument("--workers", type=int, default=2,
                   help="workers of the multi-worker run, one consumer group and one store (2; 0 or 1: skip it)")
    p.add_argument("--catch-up-lag", type=int, default=None,
                   help="HARMONY_CATCH_UP_LAG for the workers (default: the product's setting)")
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
    """read_log → decode_batch → fold → apply, like the worker's projector but without Faust."""
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
                changes = fold(store, records)  # LogGap if read_log skipped an offset
                t2 = perf()
                if changes.checkpoint and not store.apply(changes):
                    raise RuntimeError("the offline store refused a batch (nothing else writes to it)")
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


def worker_log_summary(path: Path) -> dict:
    """What a worker's JSON log says about its share: the partitions of its last lag report, the
    partitions it read straight from the log, warnings and errors."""
    assigned: list[int] = []
    read_from_log: set[int] = set()
    warnings: list[str] = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return {}
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        message = entry.get("msg", "")
        if message == "projector lag" and isinstance(entry.get("lag"), dict):
            assigned = sorted(int(p) for p in entry["lag"])
        elif message in ("reading the backlog straight from the log", "catching up from the log"):
            read_from_log.update(int(p) for p in (entry.get("until") or {}))
        if entry.get("level") in ("warning", "error", "critical"):
            warnings.append(f"{entry.get('level')}: {message}"[:200])
    return {"partitions_last_lag_report": assigned, "partitions_read_from_log": sorted(read_from_log),
            "warnings_or_errors": len(warnings), "first_warnings": sorted(set(warnings))[:5]}


async def group_assignment(bootstrap: str, group: str) -> list[list[int]] | dict:
    """The partitions of each member of a consumer group, as the group coordinator has them now."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        members = []
        for response in await admin.describe_consumer_groups([group]):
            for described in response.groups:
                for member in described[5]:  # (member_id, client_id, client_host, metadata, assignment)
                    assignment = ConsumerProtocolMemberAssignment.decode(member[4])
                    members.append(sorted(p for _, partitions in assignment.assignment for p in partitions))
        return sorted(members)
    except Exception as error:  # noqa: BLE001 - a diagnostic only
        return {"error": repr(error)}
    finally:
        await admin.close()


def measure_workers(state_dir: Path, bootstrap: str, name: str, topic: str, partitions: int, expected: int,
                    timeout: float, profile_dir: Path | None, services: dict[str, int], count: int = 1,
                    catch_up_lag: int | None = None) -> dict:
    """Start `count` workers on `topic` and one fresh SQLite store; time them until the store's checkpoint
    covers `expected` events."""
    work = state_dir / f"bench-catchup-{name}"
    work.mkdir()
    store_path = work / "projections.db"
    env = child_env(state_dir, topic, partitions, store_path)
    if catch_up_lag is not None:
        env["HARMONY_CATCH_UP_LAG"] = str(catch_up_lag)
    started = time.monotonic()
    workers: dict[str, Child] = {}
    spies: dict[str, PySpy] = {}
    store = None
    steady_meter = None
    first_at = first_count = None
    applied = 0
    samples: list[tuple[float, int]] = []
    refused = assignment = None
    try:
        for i in range(count):
            label = "worker" if count == 1 else f"worker-{i + 1}"
            home = work / label  # cwd: Faust writes its `<app id>-data` folder into the working directory
            home.mkdir()
            workers[label] = Child(["worker"], env, work / f"{label}.log", cwd=home)
        if profile_dir:
            spies = {label: PySpy(w.pid, profile_dir, label if count == 1 else f"{name}-{label}")
                     for label, w in workers.items()}
        pids = {label: w.pid for label, w in workers.items()}
        meter = CpuMeter({**pids, **services}).start()
        migrated: set[str] = set()
        with progress() as bar:
            task = bar.add_task(f"catch-up, {count} worker{'s' if count > 1 else ''}", total=expected,
                                info="starting / joining the group")
            while applied < expected:
                now = time.monotonic()
                if now - started > timeout:
                    raise TimeoutError(f"{name}: {applied:,} of {expected:,} applied within {timeout:.0f}s")
                for label, worker in workers.items():
                    if not worker.alive():
                        raise RuntimeError(f"{label} exited with {worker.process.returncode}:\n{worker.tail()}")
                # Open the store only once every worker has opened it (and so set its schema up): opening
                # a store that another process is creating can take its half-made tables for an old schema.
                if store is None:
                    migrated.update(label for label, worker in workers.items()
                                    if label not in migrated and "projection worker starting" in worker.tail(1 << 20))
                    if len(migrated) == len(workers):
                        store = sqlite_store(store_path)
                if store is not None:
                    applied = sum(offset + 1 for offset in store.checkpoint().values())
                    now = time.monotonic()
                    if applied and first_at is None:
                        first_at, first_count = now, applied
                        steady_meter = CpuMeter({**pids, **services}).start()
                    samples.append((round(now - started, 2), applied))
                if first_at is not None:
                    steady = (applied - first_count) / max(now - first_at, 1e-9)
                    info = f"{steady:,.0f}/s since first apply at {first_at - started:.1f}s"
                else:
                    info = "starting / joining the group"
                bar.update(task, completed=applied, info=info)
                if applied < expected:
                    time.sleep(POLL_S)
        done_at = time.monotonic()
        cpu = meter.stop()
        steady_cpu = steady_meter.stop()
        # The commits the store refused, as the workers last reported them (every 2 s) per partition.
        refused = sum(lag.refused for lag in store.lag())
        # Before the workers stop: how the group shared the partitions at the end.
        assignment = asyncio.run(group_assignment(bootstrap, f"harmony-projector.{topic}"))
    finally:
        for spy in spies.values():
            spy.stop()
        if store is not None:
            store.close()
        with console.status(f"stopping {name}…"):
            for worker in workers.values():
                worker.stop()
    total = done_at - started
    steady = done_at - first_at
    per_s_steady = round((expected - first_count) / steady, 1) if steady > 0 and first_count < expected else None
    figures = {
        "workers": count,
        "events": expected,
        "per_s": per_s_steady,  # steady: from the first applied batch
        "per_s_steady": per_s_steady,
        "per_s_from_start": round(expected / total, 1),
        "first_apply_s": round(first_at - started, 2),
        "events_at_first_apply": first_count,
        "total_s": round(total, 2),
        "steady_s": round(steady, 2),
        "refused_commits_reported": refused,
        "group_assignment_at_end": assignment,
        "cpu_cores": cpu,
        "cpu_cores_steady": steady_cpu,
        "progress_samples": samples[:: max(1, len(samples) // 40)],
        "store": str(store_path),
    }
    figures["worker_logs"] = {label: worker_log_summary(w.log_path) for label, w in workers.items()}
    if spies:
        figures["profile"] = {}
        for label, spy in spies.items():
            summary = summarise_stacks(spy.path, WORKER_CATEGORIES)
            summary["threads_pct"] = thread_shares(spy.path)
            summary["stacks"] = str(spy.path)
            figures["profile"][label] = summary
            print_profile(f"{name}: {label} profile", summary)
            console.print(f"{name}: {label} samples by thread (%): {summary['threads_pct']}")
    return figures


def views_digest(store_path: Path) -> dict[str, str]:
    """A digest of every view and the checkpoint of a store (to compare two stores without holding both)."""
    store = sqlite_store(store_path)
    try:
        contents = store.contents()
    finally:
        store.close()
    return {view: f"{len(rows)} rows, sha256 {hashlib.sha256(repr(rows).encode()).hexdigest()[:16]}"
            for view, rows in contents.items()}


def ratio(rate: float | None, raw: float) -> float | None:
    return round(rate / raw, 4) if rate is not None and raw else None


def run(args) -> dict:
    from projections.worker import BATCH_SIZE

    topic = fresh_topic("bench.catchup")
    multi = args.workers if args.workers > 1 else 0
    multi_topic = f"{topic}.w{multi}" if multi else None
    multi_key = f"workers_{multi}"
    from harmony.settings import load

    catch_up_lag = args.catch_up_lag if args.catch_up_lag is not None else load().catch_up_lag
    figures: dict = {"benchmark": "catchup",
                     "targets": {"per_s": TARGET_RATE, "ratio_to_raw_consume": TARGET_RATIO},
                     "events": args.events, "users": args.users, "movies": args.movies,
                     "partitions": args.partitions, "catch_up_lag": catch_up_lag}
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
        if multi_topic:
            asyncio.run(create_topic(bootstrap, multi_topic, args.partitions))
            figures[f"produce_{multi_key}"] = asyncio.run(produce_batched(
                bootstrap, multi_topic, messages, linger_ms=args.linger_ms, label=f"fill the {multi_key} topic"))
        del messages
        from events.reader import log_offsets

        sizes = [len(r) for _, r in sorted(asyncio.run(log_offsets(bootstrap, topic)).items())]
        # A worker reads a partition straight from the log only when it is more than catch_up_lag behind.
        figures["partition_sizes"] = {"min": min(sizes), "max": max(sizes), "each": sizes,
                                      "over_catch_up_lag": sum(size > catch_up_lag for size in sizes)}

        raw = figures["raw_consume"] = asyncio.run(raw_consume(bootstrap, topic, args.events))
        if not raw["complete"]:
            raise RuntimeError(f"raw consume read {raw['events']:,} of {args.events:,} events")
        if not args.no_offline:
            figures["offline_fold"] = asyncio.run(offline_fold(
                bootstrap, topic, state_dir / "offline.db", args.events, args.batch or BATCH_SIZE))
        figures["sqlite"] = measure_workers(state_dir, bootstrap, "sqlite", topic, args.partitions, args.events,
                                            args.timeout, args.profile_dir, services,
                                            catch_up_lag=args.catch_up_lag)
        if multi_topic:
            figures[multi_key] = measure_workers(state_dir, bootstrap, multi_key, multi_topic, args.partitions,
                                                 args.events, args.timeout, args.profile_dir, services, count=multi,
                                                 catch_up_lag=args.catch_up_lag)
            with console.status("comparing the views of the two stores…"):
                one = views_digest(Path(figures["sqlite"]["store"]))
                many = views_digest(Path(figures[multi_key]["store"]))
            figures[multi_key]["same_views_as_one_worker"] = one == many
            if one != many:
                figures[multi_key]["views"] = {"one_worker": one, multi_key: many}

    raw_rate = figures["raw_consume"]["per_s"]
    for key in ("offline_fold", "sqlite", multi_key):
        if key in figures:
            figures[key]["ratio"] = ratio(figures[key]["per_s"], raw_rate)
    for key in ("sqlite", multi_key):
        if key in figures:
            figures[key]["ratio_from_start"] = ratio(figures[key]["per_s_from_start"], raw_rate)
    one = figures["sqlite"]
    if multi_topic:
        figures[multi_key]["ratio_to_one_worker"] = ratio(figures[multi_key]["per_s"], one["per_s"])
    # The figures under their earlier names.
    figures["ratio_worker_steady_to_raw_consume"] = one["ratio"]
    figures["ratio_worker_from_start_to_raw_consume"] = one["ratio_from_start"]
    if "offline_fold" in figures:
        figures["ratio_offline_fold_to_raw_consume"] = figures["offline_fold"]["ratio"]
        figures["ratio_worker_steady_to_offline_fold"] = ratio(one["per_s"], figures["offline_fold"]["per_s"])
    figures["meets_targets"] = {"per_s": (one["per_s"] or 0) >= TARGET_RATE,
                                "ratio_to_raw_consume": (one["ratio"] or 0) >= TARGET_RATIO}
    figures["meets_target"] = all(figures["meets_targets"].values())
    return figures


def _cpu(cores: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in cores.items())


def rows(figures: dict) -> list[tuple[str, str]]:
    p, raw = figures["produce"], figures["raw_consume"]
    out = [
        ("backlog", f"{figures['events']:,} ReviewSubmitted, {figures['users']:,} users × {figures['movies']:,} movies, "
                    f"{figures['partitions']} partitions, ~{figures['mean_event_bytes']:.0f} B/event"),
        ("records per partition", f"{figures['partition_sizes']['min']:,}–{figures['partition_sizes']['max']:,}, "
                                  f"{figures['partition_sizes']['over_catch_up_lag']} over the worker's catch-up lag "
                                  f"({figures['catch_up_lag']:,}: read straight from the log)"),
        ("fill the topic (batched producer)", f"{p['per_s']:,.0f} events/s ({p['seconds']} s)"),
        ("raw consume (baseline)", f"{raw['per_s']:,.0f} events/s ({raw['seconds']} s)"),
    ]
    if "offline_fold" in figures:
        o = figures["offline_fold"]
        out.append(("offline fold, no Faust (read+decode+fold+apply)",
                    f"{o['per_s']:,.0f} events/s ({o['seconds']} s), ratio {o['ratio']:.3f}"))
        out.append(("  µs per event", ", ".join(f"{k} {v}" for k, v in o["stage_us_per_event"].items())))
    runs = [("1 worker", figures["sqlite"])]
    runs += [(f"{key.split('_')[1]} workers", figures[key]) for key in figures
             if key.startswith("workers_") and isinstance(figures[key], dict)]
    for label, w in runs:
        out += [
            (f"{label}: first event applied after", f"{w['first_apply_s']} s"),
            (f"{label}: steady (from first apply)",
             f"{w['per_s']:,.0f} events/s ({w['steady_s']} s), RATIO to raw consume {w['ratio']:.3f}"),
            (f"{label}: from process start",
             f"{w['per_s_from_start']:,.0f} events/s ({w['total_s']} s), ratio {w['ratio_from_start']:.3f}"),
            ("  CPU cores busy, steady part", _cpu(w["cpu_cores_steady"])),
            ("  commits refused (last reports)", f"{w['refused_commits_reported']}"),
            ("  group's partitions per member at the end", f"{w['group_assignment_at_end']}"),
        ]
        if w["workers"] > 1:
            out.append(("  ratio to one worker", f"{w['ratio_to_one_worker']:.3f}"))
            out.append(("  same views as one worker", "yes" if w.get("same_views_as_one_worker") else "NO"))
            for name, logged in w["worker_logs"].items():
                out.append((f"  {name}: partitions (last lag report / read from the log)",
                            f"{logged.get('partitions_last_lag_report')} / {logged.get('partitions_read_from_log')}"))
    out.append((f"target ≥ {TARGET_RATE:,.0f} events/s and ≥ {TARGET_RATIO} of raw consume (1 worker, steady)",
                ", ".join(f"{k} {'MET' if v else 'NOT MET'}" for k, v in figures["meets_targets"].items())))
    return out


def main(argv: list[str] | None = None) -> int:
    return run_benchmark("catchup", "catch-up: Faust projection workers vs raw consume", parser().parse_args(argv),
                         run, rows)


if __name__ == "__main__":
    raise SystemExit(main())
