"""The benchmarks' HTTP load: a closed loop of keep-alive HTTP/1.1 connections over pre-encoded requests.

Each connection sends the next request as soon as the last one is answered. httpx took about 4 ms of
CPU a request here, more than the API itself: it would have measured the client.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import Counter

from bench.common import CpuMeter, console, percentile, progress


def get(path: str, *headers: str) -> bytes:
    """A pre-encoded GET (no port in Host, so the same bytes go to any server)."""
    return "\r\n".join([f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *headers, "", ""]).encode()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body and whether the server closes the connection (bodies need a Content-Length)."""
    head = (await reader.readuntil(b"\r\n\r\n")).lower()
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        raise ValueError(f"answer without Content-Length: {head[:200]!r}")
    length = int(head[at + 17: head.find(b"\r\n", at + 2)])
    body = await reader.readexactly(length) if length else b""
    return int(head[9:12]), body, b"\r\nconnection: close" in head


async def drive(port: int, requests: list[bytes], connections: int, warmup: float, duration: float,
                count: int | None = None, ok: int = 200, label: str = "load") -> dict:
    """`connections` connections over `requests` in turn for `warmup` s, then measured for `duration` s
    (or until `count` answers were `ok`): answers of status `ok` per second and their latencies, the
    requests sent within the window only; one body kept per other status."""
    perf = time.perf_counter
    order = itertools.cycle(requests)
    latencies: list[float] = []
    statuses: Counter = Counter()
    failures: Counter = Counter()
    samples: dict[int, str] = {}
    start = perf() + warmup
    end = start + duration if count is None else math.inf

    async def connection(index: int) -> None:
        nonlocal end
        # Connect one by one: with several API workers, one busy worker takes fewer of the connections
        # after it (all at once, one worker could accept them all).
        await asyncio.sleep(index * min(warmup, 1.0) / connections)
        while perf() < end:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError as error:
                failures[type(error).__name__] += 1
                await asyncio.sleep(0.05)
                continue
            try:
                close = False
                while not close and (t0 := perf()) < end:
                    writer.write(next(order))
                    status, body, close = await read_response(reader)
                    if t0 < start:
                        continue
                    statuses[status] += 1
                    if status == ok:
                        latencies.append(perf() - t0)
                        if len(latencies) == count:
                            end = perf()
                    elif status not in samples:
                        samples[status] = body[:300].decode(errors="replace")
            except (OSError, asyncio.IncompleteReadError, ValueError) as error:
                failures[type(error).__name__] += 1
            finally:
                writer.close()

    tasks = [asyncio.create_task(connection(i)) for i in range(connections)]
    with progress() as bar:
        task = bar.add_task(label, total=count or warmup + duration, info="warm-up")
        while not all(t.done() for t in tasks):
            now = perf()
            if now > end + 10:  # an answer that never comes
                for t in tasks:
                    t.cancel()
                break
            if now > start:
                bar.update(task, completed=len(latencies) if count else now - start + warmup,
                           info=f"{len(latencies) / (now - start):,.0f}/s")
            await asyncio.wait(tasks, timeout=0.25)
    window = end - start
    latencies.sort()

    def ms(seconds: float) -> float:
        return round(seconds * 1000, 2)

    return {"connections": connections, "window_s": round(window, 3), "ok": len(latencies),
            "per_s": round(len(latencies) / window, 1), "p50_ms": ms(percentile(latencies, 50)),
            "p90_ms": ms(percentile(latencies, 90)), "p99_ms": ms(percentile(latencies, 99)),
            "max_ms": ms(latencies[-1]) if latencies else None,
            "errors": sum(n for status, n in statuses.items() if status != ok) + sum(failures.values()),
            "statuses": {str(k): v for k, v in sorted(statuses.items())}, "connection_errors": dict(failures),
            "samples": {str(k): v for k, v in samples.items()}}


def load(port: int, requests: list[bytes], connections: int, warmup: float, duration: float, **options) -> dict:
    """drive() on uvloop, the API's own event loop."""
    import uvloop

    return uvloop.run(drive(port, requests, connections, warmup, duration, **options))


def measure(child, port: int, requests: list[bytes], connections: int, warmup: float, duration: float,
            mine: dict[str, int], services: dict[str, int] = {}, label: str = "load", **options) -> dict:
    """load() on a server `child` (a bench.common.Child): with the CPU of its processes `mine` and of
    `services` (cores busy) and its own CPU µs per answer counted; other answers logged, the child checked
    alive after."""
    meter = CpuMeter({**mine, **services}).start()
    result = load(port, requests, connections, warmup, duration, label=label, **options)
    result["cpu_cores"] = meter.stop()
    cores = sum(result["cpu_cores"].get(name, 0) for name in mine)
    result["cpu_us_per_answer"] = round(cores / result["per_s"] * 1e6, 1) if result["per_s"] else None
    for status, sample in result["samples"].items():
        console.log(f"[red]{label}: {status} answer[/red]: {sample}")
    child.check(label)
    return result
