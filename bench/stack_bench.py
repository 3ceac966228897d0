"""Stack benchmark: how long `harmony stack up` takes and how much memory its services hold, for one and
three Kafka brokers, beside the fixed cost of one JVM on Kafka's classpath, measured in the same run.

    .venv/bin/python -m bench.stack_bench [--repeats 2] [--records 100000] [--idle 5] [--heap 512m] [--json]

Per size and repeat, a fresh state dir: `stack.up` timed to its return; on the first repeat, each service's
RSS after --idle s and after --records small records, then `stack.down` timed (and for one broker, a restart
in the same dir). Baseline: one JVM running `kafka.tools.StorageTool version` on the stack's classpath
(median of --baseline-runs); ratio = stack up / baseline.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import time
from pathlib import Path

from bench.common import (
    base_parser, console, produce_batched, rss_mib, run_benchmark, scratch, service_pids, uninterrupted,
)

TOPIC = "harmony.reviews"


def parser():
    p = base_parser(__doc__)
    p.add_argument("--repeats", type=int, default=2, help="fresh `stack up` runs per size (2)")
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 3], choices=[1, 3], help="broker counts (1 3)")
    p.add_argument("--records", type=int, default=100_000, help="small records of the load (100000; 0 skips)")
    p.add_argument("--idle", type=float, default=5.0, help="seconds idle before the first memory reading (5)")
    p.add_argument("--heap", default=None, help="Kafka heap per broker (default: the stack's, 512m)")
    p.add_argument("--baseline-runs", type=int, default=3, help="runs of the JVM baseline (3)")
    return p


# -- the baseline ------------------------------------------------------------------------------


def jvm_baseline(runs: int, work: Path) -> dict:
    """Seconds of one JVM on Kafka's classpath doing almost nothing (StorageTool version)."""
    from harmony.stack import find_kafka_lib, require_java

    java, lib = require_java(), find_kafka_lib()
    log4j = work / "log4j2.properties"
    log4j.write_text(
        "status = warn\nappender.out.type = Console\nappender.out.name = OUT\n"
        "appender.out.layout.type = PatternLayout\nappender.out.layout.pattern = [%d] %p %m (%c)%n\n"
        "rootLogger.level = WARN\nrootLogger.appenderRef.out.ref = OUT\n"
    )
    command = [java, f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{lib}/*", "kafka.tools.StorageTool", "version"]

    def timed(args: list[str]) -> float:
        started = time.perf_counter()
        done = subprocess.run(args, capture_output=True, text=True, timeout=120)
        seconds = time.perf_counter() - started
        if done.returncode:
            raise RuntimeError(f"{' '.join(args[-2:])} failed: {(done.stderr or done.stdout)[-300:]}")
        return seconds

    with console.status("baseline: one JVM on Kafka's classpath (StorageTool version)…"):
        storage_tool = [timed(command) for _ in range(runs)]
        java_version = [timed([java, "-version"]) for _ in range(runs)]
    return {
        "command": "java -cp .jvm/kafka/lib/* kafka.tools.StorageTool version",
        "runs_s": [round(s, 3) for s in storage_tool],
        "seconds": round(statistics.median(storage_tool), 3),
        "java_version_s": round(statistics.median(java_version), 3),
    }


# -- one stack ---------------------------------------------------------------------------------


def memory(info: dict) -> dict[str, float | None]:
    out = {name: rss_mib(pid) for name, pid in service_pids(info).items()}
    kafka = [v for name, v in out.items() if name.startswith("kafka-") and v is not None]
    out["kafka (sum)"] = round(sum(kafka), 1)
    out["total"] = round(sum(v for name, v in out.items() if v is not None and name != "kafka (sum)"), 1)
    return out


def small_records(n: int) -> list[tuple[bytes, bytes]]:
    return [(f"user-{i % 5000:05d}".encode(), f'{{"i":{i},"r":"{"x" * 80}"}}'.encode()) for i in range(n)]


def _exited(pid: int) -> bool:
    """Gone or a zombie (the services are children of this process until stack.down reaps them)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True


def timed_down(directory: Path, info: dict) -> tuple[float, dict[str, float | None]]:
    """Time `stack.down` (SIGTERM to all, wait for all), and when each service exited after it began."""
    import threading

    from harmony import stack

    pids = service_pids(info)
    exits: dict[str, float | None] = {name: None for name in pids}
    thread = threading.Thread(target=stack.down, args=(directory,))
    started = time.perf_counter()
    thread.start()
    while thread.is_alive():
        for name, pid in pids.items():
            if exits[name] is None and _exited(pid):
                exits[name] = round(time.perf_counter() - started, 2)
        time.sleep(0.05)
    seconds = round(time.perf_counter() - started, 3)
    return seconds, {name: (at if at is not None else seconds) for name, at in exits.items()}


def one_stack(brokers: int, repeat: int, args, measure: bool, restart: bool) -> dict:
    from harmony import stack
    from harmony.settings import DEFAULT_KAFKA_HEAP

    heap = args.heap or DEFAULT_KAFKA_HEAP
    figures: dict = {"brokers": brokers, "repeat": repeat}
    with scratch(f"stack{brokers}", args.keep) as directory:
        try:
            with console.status(f"stack up: {brokers} broker(s), fresh state dir (run {repeat})…"):
                started = time.perf_counter()
                info = stack.up(directory, TOPIC, args.partitions, brokers=brokers, kafka_heap=heap)
                figures["up_s"] = round(time.perf_counter() - started, 3)
            console.log(f"{brokers} broker(s), run {repeat}: stack up in {figures['up_s']:.2f} s "
                        f"(kafka {info['kafka_bootstrap']})")
            if measure:
                with console.status(f"idle {args.idle:.0f} s before reading memory…"):
                    time.sleep(args.idle)
                figures["rss_mib_idle"] = memory(info)
                if args.records:
                    figures["load"] = asyncio.run(produce_batched(
                        info["kafka_bootstrap"], TOPIC, small_records(args.records), linger_ms=5,
                        label=f"load, {brokers} broker(s)"))
                    time.sleep(1.0)
                    figures["rss_mib_after_load"] = memory(info)
            with console.status("stack down…"):
                figures["down_s"], figures["down_exit_s"] = timed_down(directory, info)
            if restart:
                with console.status(f"stack up again in the same state dir ({brokers} broker(s))…"):
                    started = time.perf_counter()
                    info = stack.up(directory, TOPIC, args.partitions, brokers=brokers, kafka_heap=heap)
                    figures["restart_up_s"] = round(time.perf_counter() - started, 3)
                console.log(f"{brokers} broker(s): restart (existing state dir) in {figures['restart_up_s']:.2f} s")
                stack.down(directory)
        finally:
            with uninterrupted():
                stack.down(directory)
    return figures


def run(args) -> dict:
    from harmony.settings import DEFAULT_KAFKA_HEAP

    with scratch("stack") as work:
        baseline = jvm_baseline(args.baseline_runs, work)
    console.log(f"baseline: JVM + Kafka classpath {baseline['seconds']:.2f} s (java -version "
                f"{baseline['java_version_s']:.2f} s)")
    figures: dict = {"benchmark": "stack", "partitions": args.partitions, "heap": args.heap or DEFAULT_KAFKA_HEAP,
                     "records": args.records, "idle_s": args.idle, "jvm_baseline": baseline, "sizes": {}}
    for brokers in args.sizes:
        runs = [one_stack(brokers, repeat, args, measure=repeat == 1, restart=brokers == 1 and repeat == 1)
                for repeat in range(1, args.repeats + 1)]
        ups = [r["up_s"] for r in runs]
        size: dict = {
            "up_s": ups,
            "up_s_median": round(statistics.median(ups), 3),
            "down_s": [r["down_s"] for r in runs],
            "down_exit_s": runs[0]["down_exit_s"],
            "ratio_up_to_jvm_baseline": round(statistics.median(ups) / baseline["seconds"], 2),
            "rss_mib_idle": runs[0].get("rss_mib_idle"),
            "rss_mib_after_load": runs[0].get("rss_mib_after_load"),
            "load": runs[0].get("load"),
        }
        if "restart_up_s" in runs[0]:
            size["restart_up_s"] = runs[0]["restart_up_s"]
            size["ratio_restart_to_jvm_baseline"] = round(runs[0]["restart_up_s"] / baseline["seconds"], 2)
        figures["sizes"][str(brokers)] = size
    return figures


if __name__ == "__main__":
    raise SystemExit(run_benchmark("stack", __doc__, parser().parse_args(), run))
