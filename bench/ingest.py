"""Ingest benchmark: `POST /v1/reviews` against a real API process beside a bare HTTP endpoint and the raw
producer rates on the same broker, in the same run.

    .venv/bin/python -m bench.ingest [--connections 64] [--duration 20] [--requests N] [--api-workers 2] [--json]

The same load (bench.load) and pre-encoded requests drive `python -m bench.bare_endpoint` (the HTTP stack's
ceiling) and `harmony api`; only 202 answers count. Baselines: one batching acks=all producer
(raw_producer) and an idempotent producer configured as the API's with --connections send_and_wait in
flight (producer_inflight). Target (issue 22): at 64 connections, p99 < 25 ms and ≥ 70% of the bare rate.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import msgspec

from bench.common import (
    Child, Population, PySpy, authorization, base_parser, child_env, console, create_topic, fresh_topic,
    free_port, local_stack, percentile, produce_batched, progress, ratio, review_events, run_benchmark, service_pids,
)
from bench.load import measure

TARGET_P99_MS = 25.0
TARGET_SHARE_OF_BARE = 0.70  # API accepted/s ÷ bare endpoint answers/s
TARGET_CONNECTIONS = 64


def parser():
    p = base_parser(__doc__, profile=True)
    p.add_argument("--connections", type=int, default=64, help="concurrent keep-alive connections (64)")
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds after the warm-up (20)")
    p.add_argument("--requests", type=int, default=None,
                   help="measure a fixed number of accepted requests instead of a duration")
    p.add_argument("--api-workers", type=int, default=1, help="API processes (`harmony api --workers`, 1)")
    p.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds, not measured (3)")
    p.add_argument("--raw-messages", type=int, default=200_000, help="messages of the batched producer baseline")
    p.add_argument("--raw-linger-ms", type=int, default=5, help="linger of the producer baselines (5, as the API)")
    p.add_argument("--inflight-seconds", type=float, default=8.0,
                   help="seconds of the concurrent send_and_wait baseline (0 skips it)")
    p.add_argument("--bodies", type=int, default=20_000, help="distinct pre-encoded request bodies (20000)")
    p.add_argument("--users", type=int, default=5000)
    p.add_argument("--movies", type=int, default=2000)
    return p


def build_requests(population: Population, n: int) -> list[bytes]:
    out, tokens = [], {}
    for i, (user, movie) in enumerate(population.pairs(n)):
        if user not in tokens:
            tokens[user] = authorization(user)
        body = msgspec.json.encode({
            "user_id": user, "movie_id": movie, "rating": population.rating(),
            "summary": f"summary {i}", "text": f"A benchmark review, number {i}, of {movie} by {user}.",
        })
        out.append((f"POST /v1/reviews HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    f"Authorization: {tokens[user]}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
    return out


async def producer_inflight(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]], concurrency: int,
                            seconds: float, linger_ms: int) -> dict:
    """`concurrency` loops of send_and_wait on one producer configured as the API's (idempotent, acks=all)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                linger_ms=linger_ms, max_batch_size=1 << 20, request_timeout_ms=30_000,
                                retry_backoff_ms=100)
    await producer.start()
    latencies: list[float] = []
    sent = itertools.count()
    stop = False

    async def loop() -> None:
        while not stop:
            key, value = messages[next(sent) % len(messages)]
            t0 = time.perf_counter()
            await producer.send_and_wait(topic, value, key=key)
            latencies.append(time.perf_counter() - t0)

    try:
        with progress() as bar:
            task = bar.add_task(f"producer, {concurrency} in flight", total=seconds, info="")
            started = time.perf_counter()
            tasks = [asyncio.create_task(loop()) for _ in range(concurrency)]
            while (elapsed := time.perf_counter() - started) < seconds:
                bar.update(task, completed=elapsed, info=f"{len(latencies) / max(elapsed, 1e-9):,.0f}/s")
                await asyncio.sleep(0.25)
            done, elapsed = len(latencies), time.perf_counter() - started
            stop = True
            await asyncio.gather(*tasks)
    finally:
        await producer.stop()
    ordered = sorted(latencies[:done])
    return {"concurrency": concurrency, "seconds": round(elapsed, 3), "messages": done,
            "per_s": round(done / elapsed, 1), "p50_ms": round(percentile(ordered, 50) * 1000, 2),
            "p99_ms": round(percentile(ordered, 99) * 1000, 2), "linger_ms": linger_ms, "idempotent": True}


def serve(label: str, command: list[str], env: dict[str, str], work: Path, requests: list[bytes], args,
          services: dict[str, int], module: str = "harmony", windows: int = 1) -> dict:
    """A fresh child (`python -m <module> <command>`) on a free port under the load, with CPU readings (its
    CPU µs per answer is steadier than the rate on a busy machine) and an optional profile; with `windows` 2
    measured again in the same process (`second_window`)."""
    port = free_port()
    child = Child([*command, "--port", str(port)], env, work / f"{label.replace(' ', '-')}.log", cwd=work,
                  module=module)
    try:
        figures: dict = {"ready_s": round(child.ready(port), 2)}
        # `harmony api --workers N` serves from the processes it forks
        mine = {label: child.pid, **{f"{label} worker {n}": pid for n, pid in enumerate(child.children(), 1)}}
        for window in range(windows):
            name = label.replace(" ", "-") + ("-again" if window else "")
            spy = PySpy(child.pid, args.profile_dir, name) if args.profile_dir else None
            result = measure(child, port, requests, args.connections, args.warmup, args.duration, mine, services,
                             label if not window else f"{label}, again", count=args.requests, ok=202)
            if spy:
                result["profile"] = spy.stop()
            if window:
                figures["second_window"] = result
            else:
                figures.update(result)
        return figures
    finally:
        child.stop()


def run(args) -> dict:
    api_topic, raw_topic, inflight_topic = (fresh_topic(f"bench.ingest.{name}") for name in ("api", "raw", "inflight"))
    population = Population(args.users, args.movies)
    figures: dict = {"benchmark": "ingest", "targets": {
        "p99_ms": TARGET_P99_MS, "share_of_bare": TARGET_SHARE_OF_BARE, "connections": TARGET_CONNECTIONS}}
    with local_stack("ingest", api_topic, args.partitions, args.keep) as (state_dir, info):
        bootstrap = info["kafka_bootstrap"]
        with console.status("encoding events and requests…"):
            messages = review_events(population, args.raw_messages, source="api")
            requests = build_requests(population, args.bodies)
        figures["raw_producer"] = asyncio.run(produce_batched(
            bootstrap, raw_topic, messages, linger_ms=args.raw_linger_ms, partitions=args.partitions,
            label="raw producer"))
        if args.inflight_seconds > 0:
            asyncio.run(create_topic(bootstrap, inflight_topic, args.partitions))
            figures["producer_inflight"] = asyncio.run(producer_inflight(
                bootstrap, inflight_topic, messages, args.connections, args.inflight_seconds, args.raw_linger_ms))
        del messages

        work = state_dir / "bench-ingest"
        work.mkdir()
        env = child_env(state_dir, api_topic, args.partitions, work / "projections.db")
        services = service_pids(info)
        figures["bare_endpoint"] = serve("bare endpoint", [], env, work, requests, args, services,
                                         module="bench.bare_endpoint")
        figures["api"] = serve("api", ["api", "--workers", str(args.api_workers)], env, work, requests, args,
                               services)
        figures["bare_ready_s"] = figures["bare_endpoint"].pop("ready_s")
        figures["api_ready_s"] = figures["api"].pop("ready_s")
    best, bare = figures["api"], figures["bare_endpoint"]
    figures["api"]["workers"] = args.api_workers
    figures["ratio_api_to_bare"] = ratio(best["per_s"], bare["per_s"])
    figures["ratio_api_to_raw_producer"] = ratio(best["per_s"], figures["raw_producer"]["per_s"])
    if "producer_inflight" in figures:
        figures["ratio_api_to_producer_inflight"] = ratio(best["per_s"], figures["producer_inflight"]["per_s"])
    figures["meets_target"] = bool(args.connections == TARGET_CONNECTIONS and (best["p99_ms"] or 1e9) < TARGET_P99_MS
                                   and (figures["ratio_api_to_bare"] or 0.0) >= TARGET_SHARE_OF_BARE)
    return figures


if __name__ == "__main__":
    raise SystemExit(run_benchmark("ingest", __doc__, parser().parse_args(), run))
