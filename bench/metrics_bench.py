"""Metrics benchmark: what counting requests (api.metrics) costs a cheap endpoint, and what a scrape costs.

    .venv/bin/python -m bench.metrics_bench [--requests 20000] [--rounds 5] [--scrapes 50] [--json]

In process, no server or broker: the API's route table as a Starlette app, bare and with api.metrics.install,
each called as an ASGI app with GET /healthz scopes; CPU time of this process (a shared machine disturbs it
less than wall time), --rounds rounds of --requests each, back to back: the medians of answers per CPU second
and of the rounds' ratios (with / without), and the cost per request. Then the median CPU time of --scrapes
GET /metrics after a few other requests (TRAFFIC, a series each), and the answer's size.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import uvloop
from starlette.applications import Starlette

from bench.common import base_parser, run_benchmark, sqlite_store

PARTITIONS = 6
# Requests before the scrapes, one series each: endpoints that need nothing but the store.
TRAFFIC = [("GET", "/v1/projections/lag"), ("GET", "/v1/strategies"), ("GET", "/v1/movies/m1"),
           ("GET", "/v1/nowhere"), ("POST", "/healthz"), ("DELETE", "/v1/strategies")]


def parser():
    p = base_parser(__doc__, partitions=None)
    p.add_argument("--requests", type=int, default=20_000, help="requests per round and app (20000)")
    p.add_argument("--rounds", type=int, default=5, help="rounds, each app once per round (5)")
    p.add_argument("--scrapes", type=int, default=50, help="scrapes of /metrics timed (50)")
    return p


def api_app(store, metrics: bool) -> Starlette:
    from api.app import ROUTES, openapi_document
    from api.metrics import install
    from api.problems import HANDLERS

    app = Starlette(routes=ROUTES, exception_handlers=HANDLERS)
    app.state.store = store
    app.state.openapi = openapi_document(private_history=False)  # install() adds /metrics to it
    if metrics:
        install(app)
    return app


def get(path: str) -> dict:
    path, _, query = path.partition("?")
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
            "headers": [(b"host", b"bench")], "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}


async def call(app: Starlette, scope: dict, times: int) -> tuple[float, bytes]:
    """CPU seconds this process spent on `times` requests, and the last answer's body."""
    body = bytearray()

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    started = time.process_time()  # not wall time: the machine is shared, the process runs one thread
    for _ in range(times):
        body.clear()
        await app(dict(scope), receive, send)  # the router writes into the scope: a fresh one each time
    return time.process_time() - started, bytes(body)


def fill(store) -> None:
    from projections.store import ModelInfo, PartitionLag

    store.record_lag([PartitionLag.of(p, 1000 * p, 1000 * p + 7) for p in range(PARTITIONS)])
    store.publish_model(ModelInfo("bench-1", datetime.now(timezone.utc), {}, {}, {}, 3.5, 8, "s3://bench/models/1"))


async def measure(args, store) -> dict:
    apps = {"without": api_app(store, metrics=False), "with": api_app(store, metrics=True)}
    healthz = get("/healthz")
    for app in apps.values():
        await call(app, healthz, 1000)  # warm up
    rates: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(args.rounds):
        for name, app in apps.items():
            seconds, _ = await call(app, healthz, args.requests)
            rates[name].append(args.requests / seconds)
    without, with_ = statistics.median(rates["without"]), statistics.median(rates["with"])
    ratio = statistics.median(w / wo for w, wo in zip(rates["with"], rates["without"]))

    app = apps["with"]
    for method, path in TRAFFIC:
        await call(app, {**get(path), "method": method}, 3)
    scrapes = []
    for _ in range(args.scrapes):
        seconds, body = await call(app, get("/metrics"), 1)
        scrapes.append(seconds)
    return {
        "requests_per_round": args.requests, "rounds": args.rounds,
        "healthz_per_cpu_s_without": round(without), "healthz_per_cpu_s_with": round(with_),
        "ratio_with_over_without": round(ratio, 3),
        "cost_per_request_cpu_us": round(1e6 * (1 / with_ - 1 / without), 1),
        "rounds_per_cpu_s": {name: [round(r) for r in values] for name, values in rates.items()},
        "scrape_cpu_ms_median": round(1000 * statistics.median(scrapes), 2),
        "scrape_bytes": len(body),
        "scrape_series": sum(1 for line in body.decode().splitlines() if line and not line.startswith("#")),
    }


def run(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="metrics-bench-") as work:
        store = sqlite_store(Path(work) / "p.db")
        try:
            fill(store)
            return {"benchmark": "metrics", **uvloop.run(measure(args, store))}
        finally:
            store.close()


if __name__ == "__main__":
    raise SystemExit(run_benchmark("metrics", __doc__, parser().parse_args(), run))
