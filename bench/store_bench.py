"""Store benchmark: the two projection stores side by side, Apache Cassandra against SQLite (the baseline),
on one local stack in the same run.

    .venv/bin/python -m bench.store_bench [--events 200000] [--clients 16] [--duration 10] [--json]

A local stack plus one Cassandra node (HARMONY_CASSANDRA_HEAP); the same N ReviewSubmitted events go to one
fresh topic per store. Figures: catch-up of `harmony worker` on each store (schema made beforehand), from
its start and from the first applied event; reads: `harmony api` on each caught-up store, --clients
connections (bench.load) on GET /v1/users/{id}/reviews, then /history, for random users; the node: seconds
from its JVM's start until `stack.up` returns and its RSS after start, the catch-ups and the reads, beside
the same for the Kafka broker. Ratios are Cassandra / SQLite and Cassandra node / Kafka broker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import time
import uuid
from pathlib import Path

from bench.common import (
    Child, CpuMeter, Population, add_backlog_arguments, catch_up, base_parser, child_env, console, create_topic, free_port,
    fresh_topic, local_stack, open_store, produce_batched, review_events, rss_mib, run_benchmark,
    service_pids,
)
from bench.load import get, load

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


def catch_up_store(store: Store, env: dict[str, str], expected: int, timeout: float, services: dict[str, int]) -> dict:
    """Run `harmony worker` on the store (its schema created beforehand) until its checkpoint covers `expected`."""
    opened = time.perf_counter()
    with console.status(f"{store.name}: creating the store's schema…"):
        reader = open_store(store.url)
    open_s = round(time.perf_counter() - opened, 2)
    worker = Child(["worker"], env, store.work / "worker.log", cwd=store.work)  # Faust writes into its cwd
    try:
        figures = catch_up([worker], reader, expected, timeout, {"worker": worker.pid, **services},
                           f"{store.name}: worker catch-up", poll=POLL_S)
    finally:
        reader.close()
        with console.status(f"{store.name}: stopping the worker…"):
            worker.stop()
    return {"store_open_s": open_s, **figures}


# -- reads -----------------------------------------------------------------------------------


def serve_reads(store: Store, env: dict[str, str], users: list[str], args, services: dict[str, int]) -> dict:
    """`harmony api` on the store, each endpoint driven in turn."""
    port = free_port()
    api = Child(["api", "--port", str(port)], env, store.work / "api.log", cwd=store.work)
    try:
        # /healthz, not /readyz: that wants a projector's lag report from the last 30 s, and the workers
        # stopped after their catch-ups.
        figures: dict = {"api_ready_s": round(api.ready(port, "/healthz"), 2)}
        rng = random.Random(7)
        for endpoint, path in ENDPOINTS.items():
            requests = [get(path.format(rng.choice(users))) for _ in range(5000)]
            meter = CpuMeter({"api": api.pid, **services}).start()
            figures[endpoint] = load(port, requests, args.clients, args.warmup, args.duration,
                                     label=f"{store.name}: GET {path.format('{id}')}")
            figures[endpoint]["cpu_cores"] = meter.stop()
            api.check(f"{store.name}: the API")
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
        figures["catch_up"] = {store.name: catch_up_store(store, envs[store.name], args.events, args.timeout, services)
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
            out.append((f"GET {endpoint} {name}, {e['connections']} clients",
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
