"""Store benchmark: the two projection stores side by side, Apache Cassandra against SQLite (the baseline),
on one local stack in the same run.

    .venv/bin/python -m bench.store_bench [--events 200000] [--clients 16] [--duration 10] [--json]

One stack in a temporary directory: SeaweedFS + one Kafka broker (`local_stack`), then one Cassandra node
added to it (`stack.up(..., cassandra_nodes=1, cassandra_heap=HARMONY_CASSANDRA_HEAP)`), taken down at the end.
The same N ReviewSubmitted events (keyed by user id, long-tailed users and movies) go to two fresh topics,
one per store (each worker has a consumer group of its own). Figures:
- catch-up: `python -m harmony worker` with HARMONY_STORE=sqlite:///… and then cassandra://…/<fresh keyspace>
  (store schema created beforehand), timed from process start and from the first applied event until
  sum(checkpoint offset + 1) == N, polling the store's checkpoint; CPU of the worker and the services;
- reads: `python -m harmony api` on each caught-up store; --clients keep-alive connections (bench.ingest's lean
  HTTP/1.1 client) GET /v1/users/{id}/reviews, then /v1/users/{id}/history, for random users of the backlog
  (default page of 20): answers/s, p50, p99 of the 200s over --duration s after --warmup s;
- the node: seconds from the JVM's start (/proc/<pid>/stat) until `stack.up` returns (ready: the driver reads
  system.local), and its resident memory (VmRSS) after start, after both catch-ups and after the reads;
  baseline: the same for the Kafka broker (ready: metadata lists it and the topics exist; started alongside
  SeaweedFS, which `stack.up` waits for first).
Ratios are Cassandra / SQLite (events/s, answers/s, latencies) and Cassandra node / Kafka broker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import time
import uuid
from collections import Counter
from pathlib import Path

from bench.common import (
    Child, CpuMeter, Population, add_backlog_arguments, base_parser, child_env, console, create_topic, free_port,
    fresh_topic, local_stack, percentile, produce_batched, progress, review_events, rss_mib, run_benchmark,
    service_pids,
)
from bench.ingest import read_response, wait_ready

STORES = ("sqlite", "cassandra")  # SQLite first: the baseline
ENDPOINTS = {"reviews": "/v1/users/{}/reviews", "history": "/v1/users/{}/history"}
POLL_S = 0.25  # checkpoint polling (on Cassandra three reads, so not too often)


def parser():
    p = base_parser(__doc__.split("\n\n")[0])
    add_backlog_arguments(p)
    p.add_argument("--timeout", type=float, default=3600.0, help="give up on a worker after this many s (3600)")
    p.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients (16)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per endpoint and store (10)")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each measurement (2)")
    return p


@dataclasses.dataclass
class Store:
    """One projection store under test: its HARMONY_STORE, its own topic and working directory."""

    name: str
    url: str
    topic: str
    work: Path


def open_store(url: str):
    """The store `url` names, built by the composition root (creates its schema if missing)."""
    from harmony import bootstrap
    from harmony.settings import load

    return bootstrap.store(dataclasses.replace(load(), store_url=url))


def store_env(state_dir: Path, store: Store, partitions: int) -> dict[str, str]:
    return {**child_env(state_dir, store.topic, partitions, store.work / "projections.db"), "HARMONY_STORE": store.url}


# -- the node ----------------------------------------------------------------------------------


def process_age_s(pid: int) -> float:
    """Seconds since the process started (/proc/<pid>/stat starttime, in boot-time clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return round(time.clock_gettime(time.CLOCK_BOOTTIME) - int(fields[19]) / os.sysconf("SC_CLK_TCK"), 2)


def add_cassandra(directory: Path, topic: str, partitions: int, heap: str) -> tuple[dict, float]:
    """Add one Cassandra node to the running stack; answer the stack's status and the up() call's seconds."""
    from harmony import stack

    with console.status(f"adding one Cassandra node ({heap} heap)…"):
        started = time.perf_counter()
        info = stack.up(directory, topic, partitions, cassandra_nodes=1, cassandra_heap=heap)
        seconds = round(time.perf_counter() - started, 2)
    console.log(f"Cassandra node up in {seconds:.1f}s: {info['cassandra']['url']}")
    return info, seconds


def memory(pids: dict[str, int]) -> dict[str, float | None]:
    return {name: rss_mib(pid) for name, pid in pids.items()}


# -- catch-up --------------------------------------------------------------------------------


def catch_up(store: Store, env: dict[str, str], expected: int, timeout: float, services: dict[str, int]) -> dict:
    """Run `harmony worker` on the store until its checkpoint covers `expected` events."""
    opened = time.perf_counter()
    with console.status(f"{store.name}: creating the store's schema…"):
        reader = open_store(store.url)
    figures: dict = {"store_open_s": round(time.perf_counter() - opened, 2)}
    started = time.monotonic()
    worker = Child(["worker"], env, store.work / "worker.log", cwd=store.work)  # Faust writes into its cwd
    meter = CpuMeter({"worker": worker.pid, **services}).start()
    first_at = first_count = None
    applied = 0
    try:
        with progress() as bar:
            task = bar.add_task(f"{store.name}: worker catch-up", total=expected, info="starting / joining the group")
            while applied < expected:
                if time.monotonic() - started > timeout:
                    raise TimeoutError(f"{store.name}: the worker applied {applied:,} of {expected:,} "
                                       f"in {timeout:.0f}s")
                if not worker.alive():
                    raise RuntimeError(f"{store.name}: the worker exited with {worker.process.returncode}:\n"
                                       f"{worker.tail()}")
                time.sleep(POLL_S)
                applied = sum(offset + 1 for offset in reader.checkpoint().values())
                now = time.monotonic()
                if applied and first_at is None:
                    first_at, first_count = now, applied
                if first_at is not None:
                    rate = (applied - first_count) / max(now - first_at, 1e-9)
                    bar.update(task, completed=applied, info=f"{rate:,.0f}/s since the first apply")
        done_at = time.monotonic()
        figures["cpu_cores"] = meter.stop()
    finally:
        reader.close()
        with console.status(f"{store.name}: stopping the worker…"):
            worker.stop()
    figures.update({
        "first_apply_s": round(first_at - started, 2),
        "events_at_first_apply": first_count,
        "total_s": round(done_at - started, 2),
        "per_s_from_start": round(expected / (done_at - started), 1),
        "per_s_steady": round((expected - first_count) / (done_at - first_at), 1) if first_count < expected else None,
    })
    return figures


# -- reads -----------------------------------------------------------------------------------


async def get_load(port: int, path: str, users: list[str], clients: int, warmup: float, duration: float,
                   label: str) -> dict:
    """`clients` keep-alive connections, each GETting `path` for a random user in turn; latencies of the 200s
    started in the window. The lean HTTP/1.1 client of bench.ingest: httpx took ~4 ms of CPU a request here,
    more than the API itself, so it would have measured the client."""
    rng = random.Random(7)
    latencies: list[float] = []
    statuses: Counter = Counter()
    begin = time.perf_counter()
    window_start, window_end = begin + warmup, begin + warmup + duration

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (t0 := time.perf_counter()) < window_end:
                writer.write(f"GET {path.format(rng.choice(users))} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                status, _, _ = await read_response(reader)
                if t0 >= window_start:
                    statuses[status] += 1
                    if status == 200:
                        latencies.append(time.perf_counter() - t0)
        finally:
            writer.close()

    tasks = asyncio.gather(*(client() for _ in range(clients)))
    with progress() as bar:
        task = bar.add_task(label, total=warmup + duration, info="warm-up")
        while not tasks.done():
            elapsed = time.perf_counter() - begin
            info = "warm-up" if elapsed < warmup else f"{len(latencies) / (elapsed - warmup):,.0f}/s"
            bar.update(task, completed=min(elapsed, warmup + duration), info=info)
            await asyncio.wait([tasks], timeout=0.25)
    await tasks
    latencies.sort()
    return {"clients": clients, "window_s": duration, "ok": len(latencies),
            "per_s": round(len(latencies) / duration, 1),
            "p50_ms": round(percentile(latencies, 50) * 1000, 2), "p99_ms": round(percentile(latencies, 99) * 1000, 2),
            "statuses": {str(k): v for k, v in sorted(statuses.items())}}


def serve_reads(store: Store, env: dict[str, str], users: list[str], args, services: dict[str, int]) -> dict:
    """`harmony api` on the store, each endpoint driven in turn."""
    port = free_port()
    api = Child(["api", "--port", str(port)], env, store.work / "api.log", cwd=store.work)
    try:
        # /healthz, not /readyz: that wants a projector's lag report from the last 30 s, and the workers
        # stopped after their catch-ups.
        figures: dict = {"api_ready_s": round(wait_ready(port, api, path="/healthz"), 2)}
        for endpoint, path in ENDPOINTS.items():
            meter = CpuMeter({"api": api.pid, **services}).start()
            figures[endpoint] = asyncio.run(get_load(port, path, users, args.clients, args.warmup, args.duration,
                                                     f"{store.name}: GET {path.format('{id}')}"))
            figures[endpoint]["cpu_cores"] = meter.stop()
            if not api.alive():
                raise RuntimeError(f"{store.name}: the API died under load:\n{api.tail()}")
    finally:
        api.stop()
    return figures


# -- the benchmark ---------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def run(args) -> dict:
    from harmony.settings import load

    heap = load().cassandra_heap
    topics = {name: fresh_topic(f"bench.stores.{name}") for name in STORES}
    figures: dict = {"benchmark": "stores", "events": args.events, "users": args.users, "movies": args.movies,
                     "partitions": args.partitions, "clients": args.clients}
    with local_stack("stores", topics["sqlite"], args.partitions, args.keep) as (state_dir, info):
        kafka_pid = info["services"]["kafka-1"]["pid"]
        kafka = {"ready_after_jvm_start_s": process_age_s(kafka_pid)}
        info, up_s = add_cassandra(state_dir, topics["sqlite"], args.partitions, heap)
        cassandra_pid = info["services"]["cassandra-1"]["pid"]
        cassandra = {"up_call_s": up_s, "ready_after_jvm_start_s": process_age_s(cassandra_pid), "heap": heap}
        nodes = {"cassandra-1": cassandra_pid, "kafka-1": kafka_pid}
        figures["rss_mib"] = {"after_start": memory(nodes)}
        services = service_pids(info)

        keyspace = f"bench_{uuid.uuid4().hex[:10]}"
        works = {name: state_dir / f"bench-{name}" for name in STORES}  # state_dir/cassandra is the node's
        urls = {"sqlite": f"sqlite:///{works['sqlite'] / 'projections.db'}",
                "cassandra": f"{info['cassandra']['url'].rsplit('/', 1)[0]}/{keyspace}"}
        stores = [Store(name, urls[name], topics[name], works[name]) for name in STORES]

        with console.status(f"generating {args.events:,} ReviewSubmitted events…"):
            messages = review_events(Population(args.users, args.movies), args.events)
        users = sorted({key.decode() for key, _ in messages})
        figures["produce"] = {}
        for store in stores:
            store.work.mkdir()
            asyncio.run(create_topic(info["kafka_bootstrap"], store.topic, args.partitions))
            figures["produce"][store.name] = asyncio.run(produce_batched(
                info["kafka_bootstrap"], store.topic, messages, linger_ms=args.linger_ms,
                label=f"fill the {store.name} topic"))
        del messages

        envs = {store.name: store_env(state_dir, store, args.partitions) for store in stores}
        figures["catch_up"] = {store.name: catch_up(store, envs[store.name], args.events, args.timeout, services)
                               for store in stores}
        figures["rss_mib"]["after_catch_up"] = memory(nodes)
        figures["reads"] = {store.name: serve_reads(store, envs[store.name], users, args, services)
                            for store in stores}
        figures["rss_mib"]["after_reads"] = memory(nodes)
    figures["node"] = {"cassandra": cassandra, "kafka": kafka}
    figures["ratios"] = ratios(figures)
    return figures


def ratios(figures: dict) -> dict:
    """Cassandra / SQLite for the stores, Cassandra node / Kafka broker for the JVMs."""
    catch, reads, rss = figures["catch_up"], figures["reads"], figures["rss_mib"]
    out = {f"catch_up_{kind}": ratio(catch["cassandra"][kind], catch["sqlite"][kind])
           for kind in ("per_s_steady", "per_s_from_start")}
    for endpoint in ENDPOINTS:
        for kind in ("per_s", "p50_ms", "p99_ms"):
            out[f"{endpoint}_{kind}"] = ratio(reads["cassandra"][endpoint][kind], reads["sqlite"][endpoint][kind])
    node = figures["node"]
    out["node_ready_after_jvm_start"] = ratio(node["cassandra"]["ready_after_jvm_start_s"],
                                              node["kafka"]["ready_after_jvm_start_s"])
    for moment, readings in rss.items():
        out[f"node_rss_{moment}"] = ratio(readings["cassandra-1"], readings["kafka-1"])
    return out


def rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def rows(figures: dict) -> list[tuple[str, str]]:
    catch, reads, r = figures["catch_up"], figures["reads"], figures["ratios"]
    out = [("backlog", f"{figures['events']:,} ReviewSubmitted, {figures['users']:,} users × "
                       f"{figures['movies']:,} movies, {figures['partitions']} partitions, one topic per store")]
    for name in STORES:
        c = catch[name]
        out.append((f"catch-up {name}: steady (from first apply)", f"{rate(c['per_s_steady'])} events/s"))
        out.append((f"catch-up {name}: from worker start",
                    f"{rate(c['per_s_from_start'])} events/s ({c['total_s']} s, "
                    f"first apply at {c['first_apply_s']} s)"))
        out.append(("  store opened beforehand (schema created) in", f"{c['store_open_s']} s"))
        out.append(("  CPU cores busy", ", ".join(f"{k} {v}" for k, v in c["cpu_cores"].items())))
    out.append(("RATIO catch-up Cassandra / SQLite (steady, from start)",
                f"{r['catch_up_per_s_steady']}, {r['catch_up_per_s_from_start']}"))
    for endpoint in ENDPOINTS:
        for name in STORES:
            e = reads[name][endpoint]
            out.append((f"GET {endpoint} {name}, {e['clients']} clients",
                        f"{e['per_s']:,.0f}/s, p50 {e['p50_ms']} ms, p99 {e['p99_ms']} ms (statuses {e['statuses']})"))
        out.append((f"RATIO GET {endpoint} Cassandra / SQLite (rate, p50, p99)",
                    f"{r[f'{endpoint}_per_s']}, {r[f'{endpoint}_p50_ms']}, {r[f'{endpoint}_p99_ms']}"))
    node = figures["node"]
    out.append((f"Cassandra node: JVM start → ready ({node['cassandra']['heap']} heap)",
                f"{node['cassandra']['ready_after_jvm_start_s']} s (stack.up call {node['cassandra']['up_call_s']} s)"))
    out.append(("Kafka broker: JVM start → ready (baseline)", f"{node['kafka']['ready_after_jvm_start_s']} s"))
    out.append(("RATIO start Cassandra / Kafka", f"{r['node_ready_after_jvm_start']}"))
    for moment, readings in figures["rss_mib"].items():
        out.append((f"RSS MiB {moment.replace('_', ' ')}: Cassandra, Kafka (RATIO)",
                    f"{readings['cassandra-1']}, {readings['kafka-1']} ({r[f'node_rss_{moment}']})"))
    return out


def main(argv: list[str] | None = None) -> int:
    return run_benchmark("stores", "stores: Cassandra vs SQLite projection store", parser().parse_args(argv),
                         run, rows)


if __name__ == "__main__":
    raise SystemExit(main())
