"""Rebuild rate: `harmony rebuild all` from the log and from the S3 archive, beside a raw consume.

    .venv/bin/python -m bench.rebuild_bench [--events 200000] [--json]

Fills a fresh topic, lets the projection worker and the archiver take it all in, stops them, then times
`harmony rebuild all` and `harmony rebuild all --from-archive` (each takes the store's maintenance lease,
folds every record into a fresh scratch store and swaps it in), beside a raw aiokafka consume of the same
topic in the same run. The command's times include its interpreter start-up; `from_log_in_process` times
the same rebuild (projections.rebuild.rebuild, lease to swap) called in this process, without it.
Target (issue 21): rebuild from the log at least 40,000 events/s (whole command).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

from archive.progress import ArchiveProgress
from archive.segments import s3_client
from bench.catchup import raw_consume
from bench.common import (
    Child, Population, base_parser, child_env, fresh_topic, local_stack, produce_batched, report,
    review_events, sqlite_store,
)
from projections.store import REBUILDABLE

TARGET = 40_000.0  # events/s, `harmony rebuild all` from the log


def wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"rebuild_bench: timed out waiting for {what}")
        time.sleep(0.5)


def timed_rebuild(env: dict, *flags: str) -> tuple[float, dict]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "harmony", "rebuild", "all", "--json", *flags], env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"rebuild_bench: rebuild {' '.join(flags)} failed: {done.stderr.strip()[-500:]}")
    return seconds, json.loads(done.stdout.strip().splitlines()[-1])


def in_process_rebuild(store_path, bootstrap: str, topic: str) -> tuple[float, dict]:
    """The rebuild `harmony rebuild all` runs (lease, scratch store, fold of the log, swap), timed in
    this process: no interpreter start-up or imports."""
    from projections.rebuild import rebuild

    live = sqlite_store(store_path)
    try:
        started = time.perf_counter()
        result = asyncio.run(rebuild(live, bootstrap, topic, list(REBUILDABLE), None))  # its log is in clear
        return time.perf_counter() - started, result
    finally:
        live.close()


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args(argv)
    topic = fresh_topic("bench.rebuild")
    with local_stack("rebuild", topic, args.partitions, args.keep) as (state, info):
        store_path = state / "rebuild-bench.db"
        env = child_env(state, topic, args.partitions, store_path)
        messages = review_events(Population(5_000, 2_000), args.events)
        asyncio.run(produce_batched(info["kafka_bootstrap"], topic, messages, linger_ms=50))
        worker = Child(["worker"], env, state / "worker.log")
        archiver = Child(["archiver"], env, state / "archiver.log")
        try:
            store = sqlite_store(store_path)
            keys = json.loads((state / "credentials.json").read_text())
            s3 = s3_client(info["s3_endpoint"], keys["access_key"], keys["secret_key"])
            wait(lambda: sum(o + 1 for o in store.checkpoint().values()) >= args.events, 600, "the worker")
            wait(lambda: sum(o + 1 for o in ArchiveProgress(s3, "harmony-archive", topic).archived().values()) >= args.events,
                 600, "the archiver")
        finally:
            worker.stop()
            archiver.stop()
        raw = asyncio.run(raw_consume(info["kafka_bootstrap"], topic, args.events))["per_s"]
        log_s, from_log = timed_rebuild(env)
        inproc_s, inproc = in_process_rebuild(store_path, info["kafka_bootstrap"], topic)
        archive_s, from_archive = timed_rebuild(env, "--from-archive")
    figures = {
        "benchmark": "rebuild", "events": args.events, "partitions": args.partitions, "target_per_s": TARGET,
        "raw_consume_per_s": round(raw),
        "from_log": {"seconds": round(log_s, 2), "per_s": round(args.events / log_s), **from_log},
        "from_log_in_process": {"seconds": round(inproc_s, 2), "per_s": round(args.events / inproc_s),
                                "from_log": inproc["from_log"]},
        "from_archive": {"seconds": round(archive_s, 2), "per_s": round(args.events / archive_s), **from_archive},
    }
    for name, result in (("from_log", from_log), ("from_log_in_process", inproc), ("from_archive", from_archive)):
        read = result["from_archive"] + result["from_log"]
        if read != args.events:
            raise SystemExit(f"rebuild_bench: {name} read {read:,} records, not {args.events:,}")
    figures["ratio_log_to_raw"] = round(figures["from_log"]["per_s"] / raw, 3)
    figures["ratio_log_in_process_to_raw"] = round(figures["from_log_in_process"]["per_s"] / raw, 3)
    figures["ratio_archive_to_raw"] = round(figures["from_archive"]["per_s"] / raw, 3)
    figures["meets_target"] = figures["from_log"]["per_s"] >= TARGET
    rows = [
        ("raw consume (baseline)", f"{raw:,.0f} events/s"),
        ("rebuild all from the log", f"{figures['from_log']['per_s']:,} events/s ({log_s:.1f} s, whole command)"),
        ("  the same rebuild in process", f"{figures['from_log_in_process']['per_s']:,} events/s ({inproc_s:.1f} s)"),
        ("rebuild all --from-archive",
         f"{figures['from_archive']['per_s']:,} events/s ({archive_s:.1f} s, whole command)"),
        ("RATIO log / raw", f"{figures['ratio_log_to_raw']} (in process {figures['ratio_log_in_process_to_raw']})"),
        ("RATIO archive / raw", f"{figures['ratio_archive_to_raw']}"),
        (f"target ≥ {TARGET:,.0f} events/s (from the log, whole command)", "MET" if figures["meets_target"] else "NOT MET"),
    ]
    report("rebuild", "rebuild: from the log and from the S3 archive", rows, figures, args.json)
    return figures


if __name__ == "__main__":
    main()
