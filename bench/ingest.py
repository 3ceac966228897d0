"""Ingest benchmark: sustained `POST /v1/reviews` rate and latency against a real API process,
beside a bare HTTP endpoint and the raw aiokafka producer rate on the same broker, measured in the same run.

    .venv/bin/python -m bench.ingest [--connections 64] [--duration 20] [--requests N] [--json]

Starts its own local stack (SeaweedFS + one Kafka broker) in a temporary directory and an API process
(`python -m harmony api`) on a free port with a fresh topic and store; takes both down at the end.
The load generator is a lean asyncio HTTP/1.1 keep-alive client (one socket per connection,
pre-encoded requests, status line + Content-Length parsing). Only 202 answers count as accepted.

Figures:
- api: accepted reviews/s over the measured window (after a warm-up), p50/p90/p99/max latency;
- bare_endpoint: the same load generator, requests and connections against `python -m
  bench.bare_endpoint` (Starlette + uvicorn with the API's options, msgspec decode of the same body
  into SubmitReview, 202 with a small JSON receipt, nothing appended): the HTTP stack's ceiling;
- raw_producer: one batching acks=all AIOKafkaProducer sending pre-encoded events as fast as it can;
- producer_inflight: an idempotent acks=all producer configured as the API's KafkaEventLog with
  `--connections` concurrent send_and_wait loops (the API's append pattern without HTTP: what the
  broker allows at that concurrency);
- producer_pool (diagnostic, --pool-producers N): the same with a partition-affine pool of N producers
  (what KafkaEventLog did for Tansu; on Kafka one producer is as fast, so the log keeps one);
- ratios = api rate / bare endpoint rate, api / raw_producer, api / producer_inflight;
- cpu: cores busy per process during each window (API or bare endpoint, brokers, SeaweedFS, this load
  generator).
Target (issue 22): at 64 connections, ≥ 70% of the bare endpoint's rate measured in the same run, with p99 < 25 ms.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from bench.common import (
    Child, CpuMeter, Population, PySpy, authorization, base_parser, child_env, console, create_topic, fresh_topic,
    free_port, local_stack, percentile, print_profile, produce_batched, progress, run_benchmark,
    review_events, service_pids, summarise_stacks,
)

TARGET_P99_MS = 25.0
TARGET_SHARE_OF_BARE = 0.70  # API accepted/s ÷ bare endpoint answers/s
TARGET_CONNECTIONS = 64

API_CATEGORIES = {
    "aiokafka producer (send/accumulate/protocol)": ("aiokafka/",),
    "event encode (msgspec)": ("events/codec.py",),
    "KafkaEventLog.append": ("events/log.py",),
    "command handler (uuid, event build)": ("commands/handlers.py", "uuid.py"),
    "handler + body decode (api/)": ("api/",),
    "starlette routing/request/response": ("starlette/",),
    "uvicorn httptools protocol": ("uvicorn/",),
    "asyncio/uvloop scheduling": ("asyncio/", "uvloop"),
    "logging": ("logging/",),
}


def parser():
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--connections", type=int, default=64, help="concurrent keep-alive connections (64)")
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds after the warm-up (20)")
    p.add_argument("--requests", type=int, default=None,
                   help="measure a fixed number of accepted requests instead of a duration")
    p.add_argument("--api-workers", type=int, default=1, help="API processes (`harmony api --workers`, 1)")
    p.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds, not measured (3)")
    p.add_argument("--loop", choices=["uvloop", "asyncio", "both"], default="uvloop",
                   help="event loop of the load generator; `both` measures the API twice (uvloop)")
    p.add_argument("--raw-messages", type=int, default=200_000, help="messages of the batched producer baseline")
    p.add_argument("--raw-linger-ms", type=int, default=5, help="linger of the producer baselines (5, as the API)")
    p.add_argument("--inflight-seconds", type=float, default=8.0,
                   help="seconds of the concurrent send_and_wait baseline (0 skips it)")
    p.add_argument("--pool-producers", type=int, default=0,
                   help="diagnostic: also measure a partition-affine pool of this many producers (0 skips)")
    p.add_argument("--bodies", type=int, default=20_000, help="distinct pre-encoded request bodies (20000)")
    p.add_argument("--users", type=int, default=5000)
    p.add_argument("--movies", type=int, default=2000)
    return p


# -- the lean HTTP load generator -----------------------------------------------------------


def build_requests(host: str, population: Population, n: int) -> list[bytes]:
    """Pre-encoded requests (without a port in Host, so the same bytes go to the API and the bare endpoint)."""
    out, tokens = [], {}
    for i, (user, movie) in enumerate(population.pairs(n)):
        if user not in tokens:
            tokens[user] = authorization(user)
        body = msgspec.json.encode({
            "user_id": user, "movie_id": movie, "rating": population.rating(),
            "summary": f"summary {i}", "text": f"A benchmark review, number {i}, of {movie} by {user}.",
        })
        head = (
            f"POST /v1/reviews HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Authorization: {tokens[user]}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        out.append(head + body)
    return out


@dataclass
class LoadState:
    requests: list[bytes]
    connections: int
    measuring: bool = False
    stop: bool = False
    window_start: float = 0.0
    window_end: float = 0.0
    target: int | None = None
    accepted: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, accepted requests in the window
    statuses: Counter = field(default_factory=Counter)  # every answer in the window
    errors: Counter = field(default_factory=Counter)  # connection-level failures (whole run)
    sample_body: dict[int, str] = field(default_factory=dict)  # one body per non-202 status
    done: asyncio.Event | None = None
    total_sent: int = 0


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at < 0:
        raise ValueError(f"answer without Content-Length: {head[:200]!r}")
    end = lower.find(b"\r\n", at + 2)
    length = int(lower[at + 17 : end])
    body = await reader.readexactly(length) if length else b""
    close = b"\r\nconnection: close" in lower
    return status, body, close


async def _connection(index: int, host: str, port: int, state: LoadState) -> None:
    requests, n = state.requests, len(state.requests)
    k = index
    perf = time.perf_counter
    while not state.stop:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as error:
            state.errors[type(error).__name__] += 1
            await asyncio.sleep(0.1)
            continue
        try:
            while not state.stop:
                request = requests[k % n]
                k += state.connections
                t0 = perf()
                writer.write(request)
                status, body, close = await read_response(reader)
                t1 = perf()
                state.total_sent += 1
                if state.measuring and t0 >= state.window_start:
                    state.statuses[status] += 1
                    if status == 202:
                        state.accepted += 1
                        state.latencies.append(t1 - t0)
                        if state.target is not None and state.accepted >= state.target:
                            state.window_end = t1
                            state.measuring = False
                            state.stop = True
                            state.done.set()
                    elif status not in state.sample_body:
                        state.sample_body[status] = body[:300].decode(errors="replace")
                if close:
                    break
        except (OSError, asyncio.IncompleteReadError, ValueError) as error:
            state.errors[type(error).__name__] += 1
        finally:
            writer.close()


async def drive_load(host: str, port: int, requests: list[bytes], connections: int, warmup: float,
                     duration: float, target: int | None, label: str) -> dict:
    state = LoadState(requests=requests, connections=connections, target=target, done=asyncio.Event())
    tasks = [asyncio.create_task(_connection(i, host, port, state)) for i in range(connections)]
    with progress() as bar:
        task = bar.add_task(f"{label}: warm-up", total=warmup, info="")
        t_start = time.perf_counter()
        while (elapsed := time.perf_counter() - t_start) < warmup:
            bar.update(task, completed=elapsed, info=f"{state.total_sent:,} answers")
            await asyncio.sleep(0.25)
        bar.update(task, completed=warmup)
        state.window_start = time.perf_counter()
        state.measuring = True
        total = target if target is not None else duration
        task = bar.add_task(f"{label}: measuring", total=total, info="")
        while True:
            now = time.perf_counter()
            elapsed = now - state.window_start
            rate = state.accepted / elapsed if elapsed > 0 else 0.0
            bar.update(task, completed=state.accepted if target is not None else min(elapsed, duration),
                       info=f"{state.accepted:,} accepted, {rate:,.0f}/s")
            if target is None and elapsed >= duration:
                state.window_end = state.window_start + duration
                state.measuring = False
                state.stop = True
                break
            if target is not None and state.done.is_set():
                break
            if all(t.done() for t in tasks):
                state.window_end = now
                break
            await asyncio.sleep(0.25)
    await asyncio.wait(tasks, timeout=10)
    for t in tasks:
        t.cancel()
    window = state.window_end - state.window_start
    latencies = sorted(state.latencies)
    ms = lambda seconds: round(seconds * 1000, 2)  # noqa: E731
    return {
        "loop": label,
        "connections": connections,
        "window_s": round(window, 3),
        "accepted": state.accepted,
        "per_s": round(state.accepted / window, 1) if window > 0 else 0.0,
        "p50_ms": ms(percentile(latencies, 50)),
        "p90_ms": ms(percentile(latencies, 90)),
        "p99_ms": ms(percentile(latencies, 99)),
        "max_ms": ms(latencies[-1]) if latencies else None,
        "statuses": {str(k): v for k, v in sorted(state.statuses.items())},
        "non_202_samples": {str(k): v for k, v in state.sample_body.items()},
        "connection_errors": dict(state.errors),
    }


def run_loop(loop_name: str, coroutine):
    if loop_name == "uvloop":
        import uvloop

        return uvloop.run(coroutine)
    return asyncio.run(coroutine)


# -- baselines -------------------------------------------------------------------------------


async def producer_inflight(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]], concurrency: int,
                            seconds: float, linger_ms: int, producers: int = 1) -> dict:
    """`concurrency` loops of send_and_wait, configured as the API's KafkaEventLog (idempotent, acks=all).

    With producers > 1 (diagnostic): a partition-affine pool, as KafkaEventLog keeps one; each key is
    partitioned as usual (murmur2) and sent by the producer owning that partition (partition % producers),
    so per-key order holds and no two producers write one partition."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.partitioner import DefaultPartitioner

    pool = [AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=linger_ms,
                             max_batch_size=1 << 20, request_timeout_ms=30_000, retry_backoff_ms=100)
            for _ in range(producers)]
    for producer in pool:
        await producer.start()
    partitions = sorted(await pool[0].partitions_for(topic))
    partitioner = DefaultPartitioner()
    latencies: list[float] = []
    stop = False
    n = len(messages)

    async def loop(index: int) -> None:
        k = index
        while not stop:
            key, value = messages[k % n]
            k += concurrency
            t0 = time.perf_counter()
            if producers == 1:
                await pool[0].send_and_wait(topic, value, key=key)
            else:
                partition = partitioner(key, partitions, partitions)
                await pool[partition % producers].send_and_wait(topic, value, key=key, partition=partition)
            latencies.append(time.perf_counter() - t0)

    label = f"producer, {concurrency} in flight" + (f", pool of {producers}" if producers > 1 else "")
    try:
        with progress() as bar:
            task = bar.add_task(label, total=seconds, info="")
            started = time.perf_counter()
            tasks = [asyncio.create_task(loop(i)) for i in range(concurrency)]
            while (elapsed := time.perf_counter() - started) < seconds:
                bar.update(task, completed=elapsed, info=f"{len(latencies) / max(elapsed, 1e-9):,.0f}/s")
                await asyncio.sleep(0.25)
            done = len(latencies)
            elapsed = time.perf_counter() - started
            stop = True
            await asyncio.gather(*tasks)
            bar.update(task, completed=seconds)
    finally:
        for producer in pool:
            await producer.stop()
    ordered = sorted(latencies[:done])
    return {"concurrency": concurrency, "producers": producers, "seconds": round(elapsed, 3), "messages": done,
            "per_s": round(done / elapsed, 1), "p50_ms": round(percentile(ordered, 50) * 1000, 2),
            "p99_ms": round(percentile(ordered, 99) * 1000, 2), "linger_ms": linger_ms, "idempotent": True}


# -- the benchmark -----------------------------------------------------------------------------


def wait_ready(port: int, api: Child, timeout: float = 60.0, what: str = "the API", path: str = "/readyz") -> float:
    """Seconds from the API's start until `path` answers 200."""
    import httpx

    deadline = time.monotonic() + timeout
    with console.status(f"waiting for {what} to be ready ({path})…"):
        while time.monotonic() < deadline:
            if not api.alive():
                raise RuntimeError(f"{what} exited with {api.process.returncode}:\n{api.tail()}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code == 200:
                    return time.monotonic() - api.started
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"{what} was not ready within {timeout:.0f}s:\n{api.tail()}")


def measure_http(label: str, child: Child, port: int, requests: list[bytes], loops: list[str], args,
                 pids: dict[str, int], profile_name: str | None) -> list[dict]:
    """Drive `child` (the API or the bare endpoint) with the load generator once per loop."""
    runs = []
    for loop_name in loops:
        spy = PySpy(child.pid, args.profile_dir, f"{profile_name}-{loop_name}") if (
            args.profile_dir and profile_name) else None
        meter = CpuMeter(pids).start()
        result = run_loop(loop_name, drive_load(
            "127.0.0.1", port, requests, args.connections, args.warmup, args.duration, args.requests,
            f"{label} ({loop_name})"))
        result["loop"] = loop_name
        result["cpu_cores"] = meter.stop()
        if spy:
            result["profile"] = summarise_stacks(spy.stop(), API_CATEGORIES)
            result["profile"]["stacks"] = str(spy.path)
            print_profile(f"{label} profile ({loop_name} load generator)", result["profile"])
        runs.append(result)
        if not child.alive():
            raise RuntimeError(f"{label} died during the load:\n{child.tail()}")
    return runs


def run(args) -> dict:
    api_topic = fresh_topic("bench.ingest.api")
    raw_topic = fresh_topic("bench.ingest.raw")
    inflight_topic = fresh_topic("bench.ingest.inflight")
    pool_topic = fresh_topic("bench.ingest.pool")
    population = Population(args.users, args.movies)
    figures: dict = {"benchmark": "ingest", "targets": {
        "p99_ms": TARGET_P99_MS, "share_of_bare": TARGET_SHARE_OF_BARE,
        "connections": TARGET_CONNECTIONS}}
    loops = ["asyncio", "uvloop"] if args.loop == "both" else [args.loop]
    with local_stack("ingest", api_topic, args.partitions, args.keep) as (state_dir, info):
        bootstrap = info["kafka_bootstrap"]
        with console.status("encoding events and requests…"):
            messages = review_events(population, args.raw_messages, source="api")
            port, bare_port = free_port(), free_port()
            requests = build_requests("127.0.0.1", population, args.bodies)
        for topic in (raw_topic, inflight_topic, pool_topic):
            asyncio.run(create_topic(bootstrap, topic, args.partitions))

        console.log(f"baseline 1: raw batching producer, {len(messages):,} messages → {raw_topic}")
        figures["raw_producer"] = asyncio.run(
            produce_batched(bootstrap, raw_topic, messages, linger_ms=args.raw_linger_ms, label="raw producer"))
        if args.inflight_seconds > 0:
            console.log(f"baseline 2: idempotent producer with {args.connections} concurrent send_and_wait")
            figures["producer_inflight"] = asyncio.run(producer_inflight(
                bootstrap, inflight_topic, messages, args.connections, args.inflight_seconds, args.raw_linger_ms))
        if args.pool_producers > 1 and args.inflight_seconds > 0:
            console.log(f"diagnostic: partition-affine pool of {args.pool_producers} producers, "
                        f"{args.connections} concurrent send_and_wait")
            figures["producer_pool"] = asyncio.run(producer_inflight(
                bootstrap, pool_topic, messages, args.connections, args.inflight_seconds, args.raw_linger_ms,
                args.pool_producers))
        del messages

        work = state_dir / "bench-ingest"
        work.mkdir()
        env = child_env(state_dir, api_topic, args.partitions, work / "projections.db")
        services = service_pids(info)

        console.log(f"baseline 3: bare Starlette + uvicorn endpoint (no append), {args.connections} connections")
        bare = Child(["--port", str(bare_port)], env, work / "bare-endpoint.log", cwd=work,
                     module="bench.bare_endpoint")
        try:
            figures["bare_ready_s"] = round(wait_ready(bare_port, bare, what="the bare endpoint"), 2)
            bare_runs = measure_http("bare endpoint", bare, bare_port, requests, loops, args,
                                     {"bare endpoint": bare.pid, **services}, "bare")
        finally:
            bare.stop()

        api = Child(["api", "--port", str(port), "--workers", str(args.api_workers)], env, work / "api.log", cwd=work)
        try:
            figures["api_ready_s"] = round(wait_ready(port, api), 2)
            # With --api-workers, uvicorn's supervisor forks the API processes: measure them.
            workers = Path(f"/proc/{api.pid}/task/{api.pid}/children").read_text().split()
            api_pids = {"api": api.pid} if args.api_workers == 1 else {
                f"api worker {n}": int(pid) for n, pid in enumerate(workers, 1)}
            runs = measure_http("API", api, port, requests, loops, args, {**api_pids, **services}, "api")
        finally:
            api.stop()
    best = max(runs, key=lambda r: r["per_s"])
    figures["api_runs"] = runs
    figures["api"] = best
    figures["bare_endpoint_runs"] = bare_runs
    figures["bare_endpoint"] = bare = next(r for r in bare_runs if r["loop"] == best["loop"])
    figures["ratio_api_to_bare"] = round(best["per_s"] / bare["per_s"], 4) if bare["per_s"] else None
    raw = figures["raw_producer"]["per_s"]
    figures["ratio_api_to_raw_producer"] = round(best["per_s"] / raw, 4) if raw else None
    if "producer_inflight" in figures:
        inflight = figures["producer_inflight"]["per_s"]
        figures["ratio_api_to_producer_inflight"] = round(best["per_s"] / inflight, 4) if inflight else None
        if "producer_pool" in figures and inflight:
            figures["ratio_producer_pool_to_single"] = round(figures["producer_pool"]["per_s"] / inflight, 4)
    figures["meets_target"] = bool(
        args.connections == TARGET_CONNECTIONS
        and (best["p99_ms"] or 1e9) < TARGET_P99_MS
        and (figures["ratio_api_to_bare"] or 0.0) >= TARGET_SHARE_OF_BARE
    )
    return figures


def _http_rows(name: str, unit: str, r: dict) -> list[tuple[str, str]]:
    return [
        (f"{name} ({r['connections']} conns, {r['loop']} client)",
         f"{r['per_s']:,.0f} {unit}/s  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  max {r['max_ms']} ms"),
        ("  statuses / connection errors", f"{r['statuses']} / {r['connection_errors'] or 'none'}"),
        ("  CPU cores busy", ", ".join(f"{k} {v}" for k, v in r["cpu_cores"].items())),
    ]


def rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def rows(figures: dict) -> list[tuple[str, str]]:
    raw = figures["raw_producer"]
    out = [("raw producer (batched, acks=all)", f"{raw['per_s']:,.0f} msg/s  ({raw['messages']:,} in {raw['seconds']} s)")]
    if "producer_inflight" in figures:
        p = figures["producer_inflight"]
        out.append((f"producer (idempotent), {p['concurrency']} send_and_wait in flight",
                    f"{p['per_s']:,.0f} msg/s  p50 {p['p50_ms']} ms  p99 {p['p99_ms']} ms"))
    if "producer_pool" in figures:
        p = figures["producer_pool"]
        out.append((f"producer pool of {p['producers']} (partition-affine), {p['concurrency']} in flight",
                    f"{p['per_s']:,.0f} msg/s  p50 {p['p50_ms']} ms  p99 {p['p99_ms']} ms"))
    for r in figures["bare_endpoint_runs"]:
        out += _http_rows("bare endpoint (no append)", "answers", r)
    for r in figures["api_runs"]:
        out += _http_rows("API POST /v1/reviews", "accepted", r)
    out.append(("RATIO api / bare endpoint", f"{figures['ratio_api_to_bare']:.3f}"))
    out.append(("RATIO api / raw producer", f"{figures['ratio_api_to_raw_producer']:.3f}"))
    if "ratio_api_to_producer_inflight" in figures:
        out.append(("RATIO api / producer in flight", f"{figures['ratio_api_to_producer_inflight']:.3f}"))
    if "ratio_producer_pool_to_single" in figures:
        out.append(("RATIO producer pool / one producer", f"{figures['ratio_producer_pool_to_single']:.3f}"))
    out.append((f"target p99 < {TARGET_P99_MS:.0f} ms at {TARGET_CONNECTIONS} conns, ≥ {TARGET_SHARE_OF_BARE:.0%} of bare", "MET" if figures["meets_target"] else "NOT MET"))
    return out


def main(argv: list[str] | None = None) -> int:
    return run_benchmark("ingest", "ingest: POST /v1/reviews vs bare endpoint and raw producer",
                         parser().parse_args(argv), run, rows)


if __name__ == "__main__":
    raise SystemExit(main())
