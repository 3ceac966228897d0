"""Sealing cost benchmark (issue 25, item 6): what encrypting personal events costs catch-up and ingest,
before and after measured in the same run.

    .venv/bin/python -m bench.sealing_cost [--events 200000] [--rounds 1] [--no-ingest] [--no-workers] [--json]

Catch-up: the same N ReviewSubmitted events go to one topic in clear (events.codec.encode, as before
sealing) and to another sealed (each user's under their own key: a keys.keyring.Keyring over
keys.sqlite_keys.SQLiteKeys in the run's state dir, `Sealer(keys).records`). Each is projected by
bench.catchup's offline fold (read → decode_batch → fold → SQLite apply; the sealed one decoded with
`decode_batch(raw, keys)`) and by one `harmony worker` (bench.catchup.measure_workers; both workers get
the same key store). Micro-figures: µs per event of encode vs seal, and of decode vs open.

Ingest: bench.ingest's load at 64 connections against the bare endpoint (baseline), the API as it was
before sealing (a git worktree of --before, 1cae5d2, run with PYTHONPATH there) and the API of this
checkout, all on the same local stack; accepted/s and each API's ratio to the bare endpoint. Each API is
measured twice in the same process: in the first window every user's first write makes their key (a fresh
key store each round), in the second their subjects are known. The API's CPU µs per accepted request too.

Target (issue 25): sealed ÷ clear ≥ 0.90, for catch-up's events/s and for ingest's ratio to bare.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench.catchup import measure_workers, offline_fold, views_digest
from bench.common import (
    PROJECT_ROOT, Child, Population, add_backlog_arguments, base_parser, child_env, console, create_topic,
    fresh_topic, free_port, local_stack, produce_batched, review_events, run_benchmark, service_pids,
)
from bench.ingest import build_requests, measure

TARGET = 0.90  # sealed ÷ clear
BEFORE_SEALING = "1cae5d2"  # the commit before issue 25's sealing work


def parser():
    p = base_parser(__doc__.split("\n\n")[0], partitions=12, profile=True)
    add_backlog_arguments(p)
    p.add_argument("--timeout", type=float, default=900.0, help="give up on a worker run after this many s (900)")
    p.add_argument("--no-workers", action="store_true", help="catch-up: the offline fold only, no `harmony worker`")
    p.add_argument("--no-ingest", action="store_true", help="skip the ingest part")
    p.add_argument("--micro", type=int, default=50_000, help="events timed one by one for the µs figures (50000)")
    p.add_argument("--before", default=BEFORE_SEALING, help=f"the commit of the API before sealing ({BEFORE_SEALING})")
    p.add_argument("--rounds", type=int, default=1,
                   help="ingest: rounds of bare, before and after (1); ratios are averaged over them")
    p.add_argument("--connections", type=int, default=64, help="ingest: concurrent keep-alive connections (64)")
    p.add_argument("--duration", type=float, default=20.0, help="ingest: measured seconds after the warm-up (20)")
    p.add_argument("--warmup", type=float, default=3.0, help="ingest: warm-up seconds, not measured (3)")
    p.add_argument("--requests", type=int, default=None, help="ingest: a fixed number of accepted requests instead")
    p.add_argument("--bodies", type=int, default=20_000, help="ingest: distinct pre-encoded request bodies (20000)")
    p.add_argument("--one-window", action="store_true",
                   help="ingest: measure each API once (default: twice in the same process, see run_child)")
    p.add_argument("--ingest-partitions", type=int, default=6, help="ingest: partitions of the API topics (6)")
    return p


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


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


@contextlib.contextmanager
def environment(**values: str):
    """Set variables for the children (bench.common.child_env copies this process's environment)."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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
        asyncio.run(create_topic(bootstrap, topics[name], args.partitions))
        figures[f"produce_{name}"] = asyncio.run(produce_batched(
            bootstrap, topics[name], messages, linger_ms=args.linger_ms, label=f"fill the {name} topic"))
    figures["micro"] = micro(clear[:args.micro], sealed[:args.micro], events[:args.micro], keys)
    del clear, sealed, events

    with environment(HARMONY_KEY_STORE=f"sqlite:///{state_dir / 'bench-sealing-keys' / 'keys.db'}",
                     HARMONY_MASTER_KEY=master):
        for name in ("clear", "sealed"):
            figures[f"offline_{name}"] = asyncio.run(offline_fold(
                bootstrap, topics[name], state_dir / f"offline-{name}.db", args.events, keys if name == "sealed" else None))
        if not args.no_workers:
            for name in ("clear", "sealed"):
                w = figures[f"worker_{name}"] = measure_workers(state_dir, f"worker-{name}", topics[name], 1,
                                                                args, services)
                w["cpu_us_per_event"] = round(w["cpu_cores_steady"]["worker"] / w["per_s"] * 1e6, 1)
    keys.records.close()
    with console.status("comparing the reviews views of the clear and sealed stores…"):
        stores = {name: Path(figures[f"worker_{name}"]["store"]) if not args.no_workers else None
                  for name in ("clear", "sealed")}
        for kind, paths in (("offline", {name: state_dir / f"offline-{name}.db" for name in stores}),
                            ("worker", stores)):
            if None not in paths.values():  # every event folded: the same reviews, whatever the log's bytes
                figures[f"same_reviews_{kind}"] = (views_digest(paths["clear"])["reviews"]
                                                   == views_digest(paths["sealed"])["reviews"])
    figures["ratio_offline_sealed_to_clear"] = ratio(figures["offline_sealed"]["per_s"],
                                                     figures["offline_clear"]["per_s"])
    if not args.no_workers:
        figures["ratio_worker_sealed_to_clear"] = ratio(figures["worker_sealed"]["per_s"],
                                                        figures["worker_clear"]["per_s"])
    return figures


# -- ingest -----------------------------------------------------------------------------------


@contextlib.contextmanager
def worktree(commit: str):
    """A git worktree of `commit` outside the repository, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="harmony-pre-sealing-"))
    git = ["git", "-C", str(PROJECT_ROOT)]
    subprocess.run([*git, "worktree", "add", "--detach", str(path), commit], check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(path)], capture_output=True)
        subprocess.run([*git, "worktree", "prune"], capture_output=True)


def run_child(label: str, work: Path, args_: list[str], env: dict, module: str, requests, args, services,
              windows: int = 1) -> dict:
    """A fresh child under bench.ingest's load; with `windows` 2, measured again in the same process (by then
    the sealing API knows every user's subject: the first window pays for making or loading them)."""
    port = free_port()
    child = Child([*args_, "--port", str(port)], env, work / f"{label.replace(' ', '-')}.log", cwd=work,
                  module=module)
    try:
        ready = round(child.ready(port), 2)
        figures = {"ready_s": ready, **measure(label, child, port, requests, args, {label: child.pid, **services})}
        if windows > 1:
            figures["second_window"] = measure(f"{label}, again", child, port, requests, args,
                                               {label: child.pid, **services})
        for window in (figures, figures.get("second_window")):
            if window:  # the child's CPU per accepted request: steadier than the rate on a busy machine
                window["cpu_us_per_accepted"] = round(window["cpu_cores"][label] / window["per_s"] * 1e6, 1)
        return figures
    finally:
        child.stop()


def ingest(args, state_dir: Path, info: dict) -> dict:
    bootstrap, services = info["kafka_bootstrap"], service_pids(info)
    with console.status("encoding requests…"):
        requests = build_requests(Population(args.users, args.movies), args.bodies)
    figures: dict = {"connections": args.connections, "before_commit": args.before, "rounds": []}
    with worktree(args.before) as old_tree:
        figures["before_tree"] = str(old_tree)
        for n in range(1, args.rounds + 1):
            work = state_dir / f"bench-sealing-ingest-{n}"
            work.mkdir()
            one: dict = {}
            bare_env = child_env(state_dir, "unused", args.ingest_partitions, work / "bare.db")
            one["bare_endpoint"] = run_child("bare endpoint", work, [], bare_env, "bench.bare_endpoint", requests,
                                             args, services)
            for name in ("before", "after"):
                topic = fresh_topic(f"bench.sealing.ingest.{name}")
                asyncio.run(create_topic(bootstrap, topic, args.ingest_partitions))
                (work / name).mkdir()
                env = child_env(state_dir, topic, args.ingest_partitions, work / name / "projections.db")
                if name == "before":
                    env["PYTHONPATH"] = str(old_tree)  # the old checkout's code, nothing of this one
                else:  # a key store of its own each round: every user's first write makes their key
                    env["HARMONY_KEY_STORE"] = f"sqlite:///{work / name / 'keys.db'}"
                one[f"api_{name}"] = run_child(f"API {name} sealing", work / name, ["api"], env, "harmony",
                                               requests, args, services, windows=1 if args.one_window else 2)
            bare = one["bare_endpoint"]["per_s"]
            for suffix, pick in (("", lambda r: r), ("_second_window", lambda r: r.get("second_window"))):
                if pick(one["api_after"]) is None:
                    continue
                one[f"ratio_before_to_bare{suffix}"] = ratio(pick(one["api_before"])["per_s"], bare)
                one[f"ratio_after_to_bare{suffix}"] = ratio(pick(one["api_after"])["per_s"], bare)
                one[f"ratio_after_to_before{suffix}"] = ratio(one[f"ratio_after_to_bare{suffix}"],
                                                             one[f"ratio_before_to_bare{suffix}"])
            figures["rounds"].append(one)
    for suffix in ("", "_second_window"):
        if f"ratio_after_to_bare{suffix}" not in figures["rounds"][0]:
            continue
        for key in (f"ratio_before_to_bare{suffix}", f"ratio_after_to_bare{suffix}"):
            figures[key] = round(sum(r[key] for r in figures["rounds"]) / len(figures["rounds"]), 4)
        figures[f"ratio_after_to_before{suffix}"] = ratio(figures[f"ratio_after_to_bare{suffix}"],
                                                          figures[f"ratio_before_to_bare{suffix}"])
    return figures


# -- the run ----------------------------------------------------------------------------------


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run(args) -> dict:
    figures: dict = {"benchmark": "sealing_cost", "target_sealed_to_clear": TARGET, "events": args.events,
                     "users": args.users, "movies": args.movies, "partitions": args.partitions,
                     "load_average_at_start": load_average()}
    with local_stack("sealing", fresh_topic("bench.sealing"), args.partitions, args.keep) as (state_dir, info):
        figures["catchup"] = catchup(args, state_dir, info)
        if not args.no_ingest:
            figures["ingest"] = ingest(args, state_dir, info)
    figures["load_average_at_end"] = load_average()
    c = figures["catchup"]
    met = {"catchup_offline": (c["ratio_offline_sealed_to_clear"] or 0) >= TARGET}
    if "ratio_worker_sealed_to_clear" in c:
        met["catchup_worker"] = (c["ratio_worker_sealed_to_clear"] or 0) >= TARGET
    if "ingest" in figures:
        met["ingest"] = (figures["ingest"]["ratio_after_to_before"] or 0) >= TARGET
    figures["meets_targets"] = met
    figures["meets_target"] = all(met.values())
    return figures


def rows(figures: dict) -> list[tuple[str, str]]:
    c, m = figures["catchup"], figures["catchup"]["micro"]
    out = [("backlog", f"{figures['events']:,} ReviewSubmitted, {figures['users']:,} users × {figures['movies']:,} "
                       f"movies, {figures['partitions']} partitions; {c['subjects']:,} subjects"),
           ("load average at start / end", f"{figures['load_average_at_start']} / {figures['load_average_at_end']}"),
           ("µs per event: encode → seal", f"{m['encode_us']} → {m['seal_us']} (+{m['seal_minus_encode_us']})"),
           ("µs per event: decode → open", f"{m['decode_us']} → {m['open_us']} (+{m['open_minus_decode_us']})"),
           ("bytes per value: clear → sealed", f"{m['clear_value_bytes']} → {m['sealed_value_bytes']}")]
    for name in ("clear", "sealed"):
        o = c[f"offline_{name}"]
        out += [(f"offline fold, {name} (read+decode+fold+apply)", f"{o['per_s']:,.0f} events/s ({o['seconds']} s)"),
                ("  µs per event", ", ".join(f"{k} {v}" for k, v in o["stage_us_per_event"].items()))]
    out.append(("RATIO offline fold sealed / clear", f"{c['ratio_offline_sealed_to_clear']:.3f}"))
    out += [(f"  same reviews view, {kind} clear and sealed", "yes" if c[f"same_reviews_{kind}"] else "NO")
            for kind in ("offline", "worker") if f"same_reviews_{kind}" in c]
    if "worker_clear" in c:
        for name in ("clear", "sealed"):
            w = c[f"worker_{name}"]
            out += [(f"1 worker, {name}: steady (from first apply)", f"{w['per_s']:,.0f} events/s ({w['steady_s']} s), "
                                                                      f"worker CPU {w['cpu_us_per_event']} µs/event"),
                    ("  CPU cores busy, steady part", ", ".join(f"{k} {v}" for k, v in w["cpu_cores_steady"].items()))]
        out.append(("RATIO 1 worker sealed / clear", f"{c['ratio_worker_sealed_to_clear']:.3f}"))
    if "ingest" in figures:
        i = figures["ingest"]
        for n, r in enumerate(i["rounds"], 1):
            for key, name in (("bare_endpoint", "bare endpoint"), ("api_before", f"API before sealing ({i['before_commit']})"),
                              ("api_after", "API with sealing (this checkout)")):
                x = r[key]
                for window, y in (("", x), (", 2nd window", x.get("second_window"))):
                    if y is not None:
                        out.append((f"round {n}: {name}{window}, {y['connections']} conns",
                                    f"{y['per_s']:,.0f} accepted/s  p50 {y['p50_ms']} ms  p99 {y['p99_ms']} ms  "
                                    f"CPU {y['cpu_us_per_accepted']} µs/accepted  statuses {y['statuses']}"))
            for suffix, window in (("", "1st window"), ("_second_window", "2nd window")):
                if f"ratio_after_to_before{suffix}" in r:
                    out.append((f"round {n}: ratio to bare, before / after, {window}",
                                f"{r[f'ratio_before_to_bare{suffix}']:.3f} / {r[f'ratio_after_to_bare{suffix}']:.3f} "
                                f"(after ÷ before {r[f'ratio_after_to_before{suffix}']:.3f})"))
        out.append(("RATIO ingest after / before (ratios to bare), 1st window", f"{i['ratio_after_to_before']:.3f}"))
        if "ratio_after_to_before_second_window" in i:
            out.append(("RATIO ingest after / before, 2nd window (subjects known)",
                        f"{i['ratio_after_to_before_second_window']:.3f}"))
    out.append((f"target sealed ÷ clear ≥ {TARGET}",
                ", ".join(f"{k} {'MET' if v else 'NOT MET'}" for k, v in figures["meets_targets"].items())))
    return out


def main(argv: list[str] | None = None) -> int:
    return run_benchmark("sealing_cost", "sealing cost: catch-up and ingest, clear vs sealed",
                         parser().parse_args(argv), run, rows)


if __name__ == "__main__":
    raise SystemExit(main())
