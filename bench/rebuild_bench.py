"""Rebuild rate: `harmony rebuild all` from the log and from the S3 archive, beside a raw consume.

    .venv/bin/python -m bench.rebuild_bench [--events 200000] [--store sqlite|cassandra] [--json]

Fills a fresh topic, lets the projection worker and the archiver take it all in, stops them, then times
`harmony rebuild all` and `harmony rebuild all --from-archive` (each takes the store's maintenance lease,
folds every record into a fresh scratch store and swaps it in), beside a raw aiokafka consume of the same
topic in the same run. The command's times include its interpreter start-up; `from_log_in_process` times
the same rebuild (projections.rebuild.rebuild, lease to swap) called in this process, without it.
`under_writes` times `harmony rebuild all` once more with the worker running and 400 events/s appended
throughout, against the idle `from_log`. `--store cassandra` projects into a keyspace of one Cassandra
node the stack starts beside the broker (the product's node, schema changes flushed).
Targets (issue 21): rebuild from the log at least 40,000 events/s (whole command); under steady writes
of at least 300 events/s, at most twice the idle rebuild's time.
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import time
import uuid

from bench.catchup import raw_consume
from bench.common import (
    Child, CpuMeter, Population, base_parser, child_env, fresh_topic, local_stack, open_store, produce_batched,
    review_events, run_benchmark, service_pids,
)

TARGET = 40_000.0  # events/s, `harmony rebuild all` from the log
STEADY_RATE = 400  # events/s appended while `under_writes` rebuilds


def parser():
    p = base_parser(__doc__)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--store", choices=("sqlite", "cassandra"), default="sqlite",
                   help="the projection store rebuilt (sqlite; cassandra: one node, try --events 20000)")
    return p


def wait(predicate, what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"rebuild_bench: timed out waiting for {what}")
        time.sleep(0.5)


def timed_rebuild(env: dict, *flags: str) -> dict:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "harmony", "rebuild", "all", "--json", *flags], env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"rebuild_bench: rebuild {' '.join(flags)} failed: {done.stderr.strip()[-500:]}")
    return {"seconds": seconds, **json.loads(done.stdout.strip().splitlines()[-1])}


def in_process_rebuild(store_url: str, bootstrap: str, topic: str) -> dict:
    """The rebuild `harmony rebuild all` runs (lease, scratch store, fold of the log, swap), timed in
    this process: no interpreter start-up or imports."""
    from projections.rebuild import rebuild
    from projections.store import REBUILDABLE

    live = open_store(store_url)
    try:
        started = time.perf_counter()
        result = asyncio.run(rebuild(live, bootstrap, topic, list(REBUILDABLE), None))  # its log is in clear
        return {"seconds": time.perf_counter() - started, "from_log": result["from_log"],
                "from_archive": result["from_archive"]}
    finally:
        live.close()


async def steady_writes(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]], stop: asyncio.Event,
                        rate: int = STEADY_RATE, tick: float = 0.05) -> int:
    """Append `messages` at `rate` a second (acks=all) until `stop` is set; answer how many."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    written = 0
    try:
        while not stop.is_set() and written < len(messages):
            started = time.monotonic()
            chunk = messages[written:written + int(rate * tick)]
            await asyncio.gather(*[await producer.send(topic, value, key=key) for key, value in chunk])
            written += len(chunk)
            await asyncio.sleep(max(0.0, tick - (time.monotonic() - started)))
    finally:
        await producer.stop()
    return written


async def rebuild_under_writes(env: dict, bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]],
                               pids: dict[str, int]) -> dict:
    """`harmony rebuild all` timed while `messages` are appended at a steady rate (the worker running),
    with the cores the processes `pids` and the rebuild used: first for 5 s without writes, then for 10 s
    of the writes alone (what the store and the worker spend besides the rebuild)."""
    meter = CpuMeter(pids).start()
    await asyncio.sleep(5)
    idle = meter.stop()
    stop = asyncio.Event()
    writing = asyncio.create_task(steady_writes(bootstrap, topic, messages, stop))
    await asyncio.sleep(1)  # the projector is working on the writes
    try:
        meter = CpuMeter(pids).start()
        await asyncio.sleep(10)
        writes_alone = meter.stop()
        meter, children = CpuMeter(pids).start(), children_cpu_seconds()
        result = await asyncio.to_thread(timed_rebuild, env)
        cores = meter.stop()
        cores["rebuild"] = round((children_cpu_seconds() - children) / result["seconds"], 3)
    finally:
        stop.set()
        written = await writing
    return {**result, "written": written, "cores_idle": idle, "cores_writes_alone": writes_alone, "cores": cores}


def children_cpu_seconds() -> float:
    """User + system CPU of this process's finished children (the rebuild command, once it is done)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def run(args) -> dict:
    from archive.progress import ArchiveProgress
    from archive.segments import s3_client
    from harmony.stack import keyspace_url

    topic = fresh_topic("bench.rebuild")
    figures: dict = {"benchmark": "rebuild", "store": args.store, "events": args.events,
                     "partitions": args.partitions, "target_per_s": TARGET}
    nodes = {"cassandra_nodes": 1} if args.store == "cassandra" else {}
    with local_stack("rebuild", topic, args.partitions, args.keep, **nodes) as (state, info):
        store_path = state / "rebuild-bench.db"
        env = child_env(state, topic, args.partitions, store_path)
        if nodes:  # a keyspace of its own on the stack's node
            env["HARMONY_STORE"] = keyspace_url(info["cassandra"]["url"], f"rebuild_{uuid.uuid4().hex[:10]}")
        messages = review_events(Population(5_000, 2_000), args.events)
        asyncio.run(produce_batched(info["kafka_bootstrap"], topic, messages, linger_ms=50))
        store = open_store(env["HARMONY_STORE"])
        worker = Child(["worker"], env, state / "worker.log")
        archiver = Child(["archiver"], env, state / "archiver.log")
        try:
            keys = json.loads((state / "credentials.json").read_text())
            archive = ArchiveProgress(s3_client(info["s3_endpoint"], keys["access_key"], keys["secret_key"]),
                                      "harmony-archive", topic)
            wait(lambda: sum(o + 1 for o in store.checkpoint().values()) >= args.events, "the worker")
            wait(lambda: sum(o + 1 for o in archive.archived().values()) >= args.events, "the archiver")
            worker.stop()
            archiver.stop()
            raw = figures["raw_consume_per_s"] = round(
                asyncio.run(raw_consume(info["kafka_bootstrap"], topic, args.events))["per_s"])
            figures["from_log"] = timed_rebuild(env)
            figures["from_log_in_process"] = in_process_rebuild(env["HARMONY_STORE"], info["kafka_bootstrap"], topic)
            figures["from_archive"] = timed_rebuild(env, "--from-archive")
            worker = Child(["worker"], env, state / "worker.log")
            figures["under_writes"] = asyncio.run(rebuild_under_writes(
                env, info["kafka_bootstrap"], topic, review_events(Population(5_000, 2_000), STEADY_RATE * 180),
                {"worker": worker.pid, **service_pids(info)}))
        finally:
            worker.stop()
            archiver.stop()
            store.close()
    for name in ("from_log", "from_log_in_process", "from_archive"):
        result = figures[name]
        if result["from_archive"] + result["from_log"] != args.events:
            raise RuntimeError(f"rebuild_bench: {name} read {result['from_archive'] + result['from_log']:,} "
                               f"records, not {args.events:,}")
        result["per_s"] = round(args.events / result["seconds"])
        result["seconds"] = round(result["seconds"], 2)
        figures[f"ratio_{name.removeprefix('from_')}_to_raw"] = round(result["per_s"] / raw, 3)
    loaded = figures["under_writes"]
    loaded["seconds"] = round(loaded["seconds"], 2)
    loaded["ratio_to_idle"] = round(loaded["seconds"] / figures["from_log"]["seconds"], 2)
    figures["meets_target"] = figures["from_log"]["per_s"] >= TARGET
    figures["under_writes_meets_target"] = loaded["ratio_to_idle"] <= 2
    return figures


if __name__ == "__main__":
    raise SystemExit(run_benchmark("rebuild", __doc__, parser().parse_args(), run))
