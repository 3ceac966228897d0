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
import os
import random
import time
import uuid
from pathlib import Path

from bench.common import (
    Child, Population, add_backlog_arguments, base_parser, catch_up, child_env, console, free_port,
    fresh_topic, local_stack, open_store, produce_batched, ratio, review_events, rss_mib, run_benchmark, service_pids,
)
from bench.load import get, measure

STORES = ("sqlite", "cassandra")  # SQLite first: the baseline
ENDPOINTS = {"reviews": "/v1/users/{}/reviews", "history": "/v1/users/{}/history"}
POLL_S = 0.25  # checkpoint polling (on Cassandra three reads, so not too often)


def parser():
    p = base_parser(__doc__)
    add_backlog_arguments(p)
    p.add_argument("--timeout", type=float, default=3600.0, help="give up on a worker after this many s (3600)")
    p.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients (16)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per endpoint and store (10)")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each measurement (2)")
    return p


def process_age_s(pid: int) -> float:
    """Seconds since the process started (/proc/<pid>/stat starttime, in boot-time clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return round(time.clock_gettime(time.CLOCK_BOOTTIME) - int(fields[19]) / os.sysconf("SC_CLK_TCK"), 2)


def catch_up_store(name: str, url: str, env: dict[str, str], work: Path, args, services: dict[str, int]) -> dict:
    """Run `harmony worker` on the store (its schema created beforehand) until its checkpoint covers the backlog."""
    opened = time.perf_counter()
    with console.status(f"{name}: creating the store's schema…"):
        reader = open_store(url)
    open_s = round(time.perf_counter() - opened, 2)
    try:
        return {"store_open_s": open_s, **catch_up(env, work, reader, args.events, args.timeout, services,
                                                   f"{name}: worker catch-up", poll=POLL_S)}
    finally:
        reader.close()


def serve_reads(name: str, env: dict[str, str], work: Path, users: list[str], args, services: dict[str, int]) -> dict:
    """`harmony api` on the store, each endpoint driven in turn."""
    port = free_port()
    api = Child(["api", "--port", str(port)], env, work / "api.log", cwd=work)
    try:
        # /healthz, not /readyz: that wants a projector's lag report from the last 30 s, and the workers
        # stopped after their catch-ups.
        figures: dict = {"api_ready_s": round(api.ready(port, "/healthz"), 2)}
        rng = random.Random(7)
        for endpoint, path in ENDPOINTS.items():
            requests = [get(path.format(rng.choice(users))) for _ in range(5000)]
            figures[endpoint] = measure(api, port, requests, args.clients, args.warmup, args.duration,
                                        {"api": api.pid}, services, f"{name}: GET {path.format('{id}')}")
    finally:
        api.stop()
    return figures


def run(args) -> dict:
    from harmony import stack
    from harmony.settings import load as settings

    heap = settings().cassandra_heap
    topics = {name: fresh_topic(f"bench.stores.{name}") for name in STORES}
    figures: dict = {"benchmark": "stores", "events": args.events, "users": args.users, "movies": args.movies,
                     "partitions": args.partitions, "clients": args.clients}
    with local_stack("stores", topics["sqlite"], args.partitions, args.keep) as (state_dir, info):
        kafka_pid = info["services"]["kafka-1"]["pid"]
        kafka = {"ready_after_jvm_start_s": process_age_s(kafka_pid)}
        with console.status(f"adding one Cassandra node ({heap} heap)…"):
            started = time.perf_counter()
            info = stack.up(state_dir, topics["sqlite"], args.partitions, cassandra_nodes=1, cassandra_heap=heap)
        cassandra_pid = info["services"]["cassandra-1"]["pid"]
        cassandra = {"up_call_s": round(time.perf_counter() - started, 2),
                     "ready_after_jvm_start_s": process_age_s(cassandra_pid), "heap": heap}
        nodes = {"cassandra-1": cassandra_pid, "kafka-1": kafka_pid}

        def memory() -> dict[str, float | None]:
            return {name: rss_mib(pid) for name, pid in nodes.items()}

        figures["rss_mib"] = {"after_start": memory()}
        services = service_pids(info)
        works = {name: state_dir / f"bench-{name}" for name in STORES}  # state_dir/cassandra is the node's
        keyspace = f"bench_{uuid.uuid4().hex[:10]}"
        urls = {"sqlite": f"sqlite:///{works['sqlite'] / 'projections.db'}",
                "cassandra": stack.keyspace_url(info["cassandra"]["url"], keyspace)}
        envs = {name: {**child_env(state_dir, topics[name], args.partitions, works[name] / "projections.db"),
                       "HARMONY_STORE": urls[name]} for name in STORES}

        with console.status(f"generating {args.events:,} ReviewSubmitted events…"):
            messages = review_events(Population(args.users, args.movies), args.events)
        users = sorted({key.decode() for key, _ in messages})
        figures["produce"] = {}
        for name in STORES:
            works[name].mkdir()
            figures["produce"][name] = asyncio.run(produce_batched(
                info["kafka_bootstrap"], topics[name], messages, linger_ms=args.linger_ms,
                partitions=args.partitions, label=f"fill the {name} topic"))
        del messages

        figures["catch_up"] = {name: catch_up_store(name, urls[name], envs[name], works[name], args, services)
                               for name in STORES}
        figures["rss_mib"]["after_catch_up"] = memory()
        figures["reads"] = {name: serve_reads(name, envs[name], works[name], users, args, services)
                            for name in STORES}
        figures["rss_mib"]["after_reads"] = memory()
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


if __name__ == "__main__":
    raise SystemExit(run_benchmark("stores", __doc__, parser().parse_args(), run))
