"""Sealing cost benchmark (issue 25, item 6): what encrypting personal events costs catch-up and ingest,
clear and sealed measured in the same run.

    .venv/bin/python -m bench.sealing_cost [--events 200000] [--no-ingest] [--no-workers] [--json]

Catch-up: the same N ReviewSubmitted events go to one topic in clear (events.codec.encode, as before
sealing) and to another sealed (each user's under their own key: a keys.keyring.Keyring over
keys.sqlite_keys.SQLiteKeys in the run's state dir, `Sealer(keys).records`). Each is projected by
bench.catchup's offline fold (read → decode_batch → fold → SQLite apply; the sealed one decoded with
`decode_batch(raw, keys)`) and by one `harmony worker` (bench.catchup.measure_workers; both workers get
the same key store). Micro-figures: µs per event of encode vs seal, and of decode vs open.

Ingest: bench.ingest's load at 64 connections against the bare endpoint (baseline) and the API, on the same
local stack; accepted/s and the API's ratio to the bare endpoint. The API is measured twice in the same
process: in the first window every user's first write makes their key (a fresh key store), in the second
their subjects are known. The API's CPU µs per accepted request too. (The API before sealing, commit
1cae5d2, measured the same way on 6 December: after ÷ before 0.93 and 0.96, in the README.)

Target (issue 25): sealed ÷ clear ≥ 0.90 for catch-up's events/s.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from pathlib import Path

from bench.catchup import measure_workers, offline_fold, views_digest
from bench.common import (
    Population, add_backlog_arguments, base_parser, child_env, console, create_topic, fresh_topic, local_stack,
    produce_batched, ratio, review_events, run_benchmark, service_pids,
)
from bench.ingest import build_requests, serve

TARGET = 0.90  # sealed ÷ clear


def parser():
    p = base_parser(__doc__, partitions=12, profile=True)
    add_backlog_arguments(p)
    p.add_argument("--timeout", type=float, default=900.0, help="give up on a worker run after this many s (900)")
    p.add_argument("--no-workers", action="store_true", help="catch-up: the offline fold only, no `harmony worker`")
    p.add_argument("--no-ingest", action="store_true", help="skip the ingest part")
    p.add_argument("--micro", type=int, default=50_000, help="events timed one by one for the µs figures (50000)")
    p.add_argument("--connections", type=int, default=64, help="ingest: concurrent keep-alive connections (64)")
    p.add_argument("--duration", type=float, default=20.0, help="ingest: measured seconds after the warm-up (20)")
    p.add_argument("--warmup", type=float, default=3.0, help="ingest: warm-up seconds, not measured (3)")
    p.add_argument("--requests", type=int, default=None, help="ingest: a fixed number of accepted requests instead")
    p.add_argument("--bodies", type=int, default=20_000, help="ingest: distinct pre-encoded request bodies (20000)")
    p.add_argument("--ingest-partitions", type=int, default=6, help="ingest: partitions of the API's topic (6)")
    return p


# -- catch-up ---------------------------------------------------------------------------------


def keyring(directory: Path):
    """A real keyring over a SQLite key store in `directory`, as the composition root builds it, with
    its master key (base64)."""
    import dataclasses

    from harmony import bootstrap
    from harmony.settings import load

    master = base64.b64encode(os.urandom(32)).decode()
    settings = dataclasses.replace(load(), key_store_url=f"sqlite:///{directory / 'keys.db'}", master_key=master)
    return bootstrap.keyring(settings), master


def per_event_us(items: list, step) -> float:
    started = time.perf_counter()
    for item in items:
        step(item)
    return round((time.perf_counter() - started) / len(items) * 1e6, 2)


def micro(clear: list[tuple[bytes, bytes]], sealed: list[tuple[bytes, bytes]], events: list, keys) -> dict:
    """µs per event: encode vs seal (a Sealer over users whose subjects it knows), decode vs open."""
    from events.codec import Sealer, decode_sealed, encode

    with console.status(f"timing encode, seal, decode and open, {len(events):,} events each…"):
        sealer = Sealer(keys)
        started = time.perf_counter()
        asyncio.run(sealer.records(events))
        seal_us = round((time.perf_counter() - started) / len(events) * 1e6, 2)
        figures = {"events": len(events),
                   "encode_us": per_event_us(events, encode),
                   "seal_us": seal_us,
                   "decode_us": per_event_us([v for _, v in clear], lambda v: decode_sealed(v, None)),
                   "open_us": per_event_us([v for _, v in sealed], lambda v: decode_sealed(v, keys))}
    figures["seal_minus_encode_us"] = round(figures["seal_us"] - figures["encode_us"], 2)
    figures["open_minus_decode_us"] = round(figures["open_us"] - figures["decode_us"], 2)
    figures["clear_value_bytes"] = round(sum(len(v) for _, v in clear) / len(clear), 1)
    figures["sealed_value_bytes"] = round(sum(len(v) for _, v in sealed) / len(sealed), 1)
    return figures


def catchup(args, state_dir: Path, info: dict) -> dict:
    from events.codec import Sealer, decode

    bootstrap, services = info["kafka_bootstrap"], service_pids(info)
    keys, master = keyring(state_dir / "bench-sealing-keys")
    with console.status(f"generating {args.events:,} ReviewSubmitted events…"):
        clear = review_events(Population(args.users, args.movies), args.events)
        events = [decode(value) for _, value in clear]
    with console.status(f"sealing them under {args.users:,} users' keys (subjects made first)…"):
        started = time.perf_counter()
        sealed = asyncio.run(Sealer(keys).records(events))
        seal_s = time.perf_counter() - started
    figures: dict = {"seal_all_s": round(seal_s, 2), "subjects": len({k for k, _ in sealed})}
    topics = {"clear": fresh_topic("bench.sealing.clear"), "sealed": fresh_topic("bench.sealing.sealed")}
    for name, messages in (("clear", clear), ("sealed", sealed)):
        figures[f"produce_{name}"] = asyncio.run(produce_batched(
            bootstrap, topics[name], messages, linger_ms=args.linger_ms, partitions=args.partitions,
            label=f"fill the {name} topic"))
    figures["micro"] = micro(clear[:args.micro], sealed[:args.micro], events[:args.micro], keys)
    del clear, sealed, events

    names = ("clear", "sealed")
    for name in names:
        figures[f"offline_{name}"] = asyncio.run(offline_fold(
            bootstrap, topics[name], state_dir / f"offline-{name}.db", args.events, keys if name == "sealed" else None))
    figures["ratio_offline_sealed_to_clear"] = ratio(figures["offline_sealed"]["per_s"],
                                                     figures["offline_clear"]["per_s"])
    stores = {"offline": [state_dir / f"offline-{name}.db" for name in names]}
    if not args.no_workers:
        key_store = {"HARMONY_KEY_STORE": f"sqlite:///{state_dir / 'bench-sealing-keys' / 'keys.db'}",
                     "HARMONY_MASTER_KEY": master}  # both workers get the same key store
        for name in names:
            w = figures[f"worker_{name}"] = measure_workers(state_dir, f"worker-{name}", topics[name], 1, args,
                                                            services, key_store)
            w["cpu_us_per_event"] = round(w["cpu_cores_steady"]["worker"] / w["per_s"] * 1e6, 1)
        figures["ratio_worker_sealed_to_clear"] = ratio(figures["worker_sealed"]["per_s"],
                                                        figures["worker_clear"]["per_s"])
        stores["worker"] = [Path(figures[f"worker_{name}"]["store"]) for name in names]
    keys.records.close()
    with console.status("comparing the reviews views of the clear and sealed stores…"):
        for kind, (clear_path, sealed_path) in stores.items():
            # every event folded: the same reviews, whatever the log's bytes
            same = views_digest(clear_path)["reviews"] == views_digest(sealed_path)["reviews"]
            figures[f"same_reviews_{kind}"] = same
    return figures


# -- ingest -----------------------------------------------------------------------------------


def ingest(args, state_dir: Path, info: dict) -> dict:
    """bench.ingest's load on the bare endpoint, then on `harmony api` twice in the same process: in the
    first window every user's first write makes their key (a fresh key store), in the second their
    subjects are known; each window's ratio to the bare endpoint."""
    services = service_pids(info)
    with console.status("encoding requests…"):
        requests = build_requests(Population(args.users, args.movies), args.bodies)
    work = state_dir / "bench-sealing-ingest"
    work.mkdir()
    topic = fresh_topic("bench.sealing.ingest")
    asyncio.run(create_topic(info["kafka_bootstrap"], topic, args.ingest_partitions))
    env = {**child_env(state_dir, topic, args.ingest_partitions, work / "projections.db"),
           "HARMONY_KEY_STORE": f"sqlite:///{work / 'keys.db'}"}
    figures: dict = {"connections": args.connections}
    figures["bare_endpoint"] = serve("bare endpoint", [], env, work, requests, args, services,
                                     module="bench.bare_endpoint")
    figures["api"] = serve("api", ["api"], env, work, requests, args, services, windows=2)
    bare = figures["bare_endpoint"]["per_s"]
    figures["ratio_to_bare"] = ratio(figures["api"]["per_s"], bare)
    figures["ratio_to_bare_second_window"] = ratio(figures["api"]["second_window"]["per_s"], bare)
    return figures


# -- the run ----------------------------------------------------------------------------------


def run(args) -> dict:
    figures: dict = {"benchmark": "sealing_cost", "target_sealed_to_clear": TARGET, "events": args.events,
                     "users": args.users, "movies": args.movies, "partitions": args.partitions}
    with local_stack("sealing", fresh_topic("bench.sealing"), args.partitions, args.keep) as (state_dir, info):
        figures["catchup"] = catchup(args, state_dir, info)
        if not args.no_ingest:
            figures["ingest"] = ingest(args, state_dir, info)
    c = figures["catchup"]
    met = {"catchup_offline": (c["ratio_offline_sealed_to_clear"] or 0) >= TARGET}
    if "ratio_worker_sealed_to_clear" in c:
        met["catchup_worker"] = (c["ratio_worker_sealed_to_clear"] or 0) >= TARGET
    figures["meets_targets"] = met
    figures["meets_target"] = all(met.values())
    return figures


if __name__ == "__main__":
    raise SystemExit(run_benchmark("sealing_cost", __doc__, parser().parse_args(), run))
