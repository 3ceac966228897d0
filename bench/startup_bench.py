"""Start-up benchmark: how long a new `harmony api` process takes to answer /readyz 200 over a big
store, and how much memory it holds.

    .venv/bin/python -m bench.startup_bench [--accounts 1000000] [--movies 100000] [--starts 3] [--json]

A local stack (SeaweedFS + Kafka: /readyz pings the broker) and a SQLite store filled through the
port: --accounts accounts (one cheap argon2 hash shared by all, written with `put_accounts` as the
worker writes them) and --movies catalogue entries (bench.site_bench's long-tailed titles, applied as
the projector applies a batch, so the title index is written too). Then --starts times: a new
`harmony api` child, the seconds from its spawn to the first /readyz 200, its RSS then and after
the first requests (a sign-in of one of the accounts, and --queries title searches typed as a
person would, whose p50/p99 are reported).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import httpx

from bench.common import (
    Child, base_parser, child_env, console, free_port, local_stack, percentile, rss_mib, run_benchmark, sqlite_store,
)
from bench.site_bench import catalogue, typed_queries

TOPIC = "startup"
PASSWORD = "the benchmark's password"
BATCH = 50_000  # accounts per put_accounts


def parser():
    p = base_parser(__doc__, partitions=None)
    p.add_argument("--accounts", type=int, default=1_000_000, help="accounts in the store (1000000)")
    p.add_argument("--movies", type=int, default=100_000, help="catalogue entries in the store (100000)")
    p.add_argument("--starts", type=int, default=3, help="API processes started one after another (3)")
    p.add_argument("--queries", type=int, default=200, help="title searches after each start (200)")
    return p


def fill(store, accounts: int, movies: int) -> list[str]:
    """Write the accounts and the catalogue; answer the titles."""
    from argon2 import PasswordHasher

    from projections.store import AccountRow, Changes

    password_hash = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    for start in range(0, accounts, BATCH):
        end = min(start + BATCH, accounts)
        store.put_accounts([AccountRow(f"user-{n}", f"event-{n}", password_hash, 0, n, f"user-{n}") for n in range(start, end)],
                           {0: end - 1})
    entries = catalogue(movies, 3000, 42)
    store.apply(Changes(since=store.checkpoint(), catalogue={e.movie_id: (n, e) for n, e in enumerate(entries)},
                        checkpoint={0: len(entries) - 1}))
    return [e.title for e in entries]


def start_once(env: dict, logs: Path, queries: list[str]) -> dict:
    port = free_port()
    child = Child(["api", "--port", str(port)], env, logs / f"api-{port}.log")
    try:
        ready_s = child.ready(port, timeout=120)
        rss_ready = rss_mib(child.pid)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            started = time.monotonic()
            signed_in = client.post("/v1/tokens", json={"user_id": "user-1", "password": PASSWORD})
            sign_in_ms = (time.monotonic() - started) * 1000
            assert signed_in.status_code == 200, signed_in.text
            took = []
            for query in queries:
                started = time.monotonic()
                assert client.get("/v1/movies", params={"q": query}).status_code == 200
                took.append((time.monotonic() - started) * 1000)
            took.sort()
        return {"ready_s": round(ready_s, 2), "rss_ready_mib": rss_ready, "rss_after_mib": rss_mib(child.pid),
                "sign_in_ms": round(sign_in_ms, 1), "search_p50_ms": round(percentile(took, 50), 1),
                "search_p99_ms": round(percentile(took, 99), 1)}
    finally:
        child.stop()


def run(args) -> dict:
    with local_stack("startup", TOPIC, 1, keep=args.keep) as (directory, _):
        path = directory / "store.db"
        started = time.monotonic()
        with console.status(f"writing {args.accounts:,} accounts and {args.movies:,} movies into the store…"):
            store = sqlite_store(path)
            titles = fill(store, args.accounts, args.movies)
            store.close()
        store_mib = round(path.stat().st_size / 2**20)
        console.log(f"store filled in {time.monotonic() - started:.0f}s: {store_mib} MiB")
        env = child_env(directory, TOPIC, 1, path)
        queries = typed_queries(titles, args.queries, 7)
        starts = []
        for n in range(args.starts):
            starts.append(start_once(env, directory, queries))
            console.log(f"start {n + 1}: {starts[-1]}")
    return {"accounts": args.accounts, "movies": args.movies, "store_mib": store_mib,
            "ready_s": statistics.median(s["ready_s"] for s in starts),
            "ready_s_max": max(s["ready_s"] for s in starts),
            "rss_mib": max(s["rss_after_mib"] for s in starts), "starts": starts}


if __name__ == "__main__":
    raise SystemExit(run_benchmark("startup", __doc__, parser().parse_args(), run))
