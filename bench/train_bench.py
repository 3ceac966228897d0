"""Training benchmark: archive replay + model fit on Spark beside a plain NumPy ALS (issues 4, 23).

    .venv/bin/python -m bench.train_bench [--ratings 1000000 5000000] [--rank 50] [--iterations 10]
        [--users N --movies N] [--spark-workers N [--executor-memory 4g]] [--json]
    .venv/bin/python -m bench.train_bench --ratings 20000000 --users 138493 --movies 27278   # ML-20M's shape

For each size N, on a local stack (its S3; with --spark-workers a Spark standalone master and N workers
too): N long-tail ratings from a rank-10 latent structure, written straight into archive segments as
ReviewSubmitted events (not timed); then timed: `ml.replay.replay` + `ml.training.fit` on Spark (local
mode, or the cluster), then `ml.registry.publish` to a SQLite store and S3 (reported apart), and on the
same ratings the bias baseline + `bench.numpy_als.als` (same objective, rank, regParam, iterations).
Peak RSS of the driver (this process and its JVM; in local mode the executors too) and of the
executors on the workers, and the driver's peak at the largest size over the smallest (each size
runs in a process and on a stack of its own); training RMSE.
Targets: the Spark path within 2x of the NumPy reference at 5M ratings, rank 50 (issue 4; issue 23
asks ≤ 1.5); the driver's peak flat in the data size, within 1.3x from 1M to 5M (issue 23).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from bench.common import (base_parser, console, fresh_topic, local_stack, progress, rss_mib, run_benchmark,
                          sqlite_store)

TARGET_RATIO = 2.0
TARGET_SIZE = 5_000_000
SEGMENT_RECORDS = 100_000
BUCKET = "bench-train"
USERS_PER_RATING, ITEMS_PER_RATING = 1 / 50, 1 / 200
USER_SKEW, ITEM_SKEW = 0.6, 0.9  # Zipf exponents of the popularity of users and movies
LATENT_RANK = 10


def parser():
    p = base_parser(__doc__)
    p.add_argument("--ratings", type=int, nargs="+", default=[1_000_000, 5_000_000], help="sizes (1M 5M)")
    p.add_argument("--rank", type=int, default=50)
    p.add_argument("--reg", type=float, default=0.1)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--users", type=int, help="users (default: one per 50 ratings; ML-20M's shape: 138493)")
    p.add_argument("--movies", type=int, help="movies (default: one per 200 ratings; ML-20M's shape: 27278)")
    p.add_argument("--no-reference", action="store_true",
                   help="skip the NumPy reference (it holds every rating in this process: ~15 GiB at 20M)")
    p.add_argument("--spark-workers", type=int, default=0,
                   help="train on a standalone cluster of this many workers the stack starts (default 0: local mode)")
    p.add_argument("--executor-memory", default="4g", help="each worker's executor, with --spark-workers")
    return p


# -- data -------------------------------------------------------------------------------------------


def generate(n: int, seed: int, n_users: int | None = None,
             n_items: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n unique (user, item) index pairs with long-tailed popularity, and their ratings; by default
    a user per 50 ratings and a movie per 200."""
    rng = np.random.default_rng(seed)
    n_users = n_users or max(1, int(n * USERS_PER_RATING))
    n_items = n_items or max(1, int(n * ITEMS_PER_RATING))
    user_cdf = np.cumsum(1 / np.arange(1, n_users + 1) ** USER_SKEW)
    item_cdf = np.cumsum(1 / np.arange(1, n_items + 1) ** ITEM_SKEW)
    codes = np.empty(0, np.int64)
    while len(codes) < n:  # draw, drop repeated pairs (keeping the first), until there are n
        draw = 2 * (n - len(codes))
        users = np.searchsorted(user_cdf, rng.random(draw) * user_cdf[-1])
        items = np.searchsorted(item_cdf, rng.random(draw) * item_cdf[-1])
        codes = np.concatenate([codes, users * n_items + items])
        _, first = np.unique(codes, return_index=True)
        codes = codes[np.sort(first)]
    users, items = np.divmod(codes[:n], n_items)
    scale = 0.45  # latent term std about 0.65
    p, q = rng.normal(0, scale, (n_users, LATENT_RANK)), rng.normal(0, scale, (n_items, LATENT_RANK))
    latent = sum(p[users, k] * q[items, k] for k in range(LATENT_RANK))
    raw = (3.5 + rng.normal(0, 0.3, n_users)[users] + rng.normal(0, 0.4, n_items)[items] + latent
           + rng.normal(0, 0.5, n))
    return users, items, np.clip(np.round(raw * 2) / 2, 0.5, 5.0)


def write_archive(s3, topic: str, users: np.ndarray, items: np.ndarray, ratings: np.ndarray,
                  partitions: int, seed: int) -> int:
    """The ratings as ReviewSubmitted events in archive segments; answers the segments written."""
    from aiokafka.partitioner import DefaultPartitioner

    from archive.segments import put_segment
    from events.codec import encode
    from events.reader import LogRecord
    from events.types import ReviewSubmitted
    from harmony.settings import load

    level = load().archive_gzip_level  # as the archiver writes them
    rng = np.random.default_rng(seed + 1)  # event ids
    user_names = [f"user-{u:07d}".encode() for u in range(int(users.max()) + 1)]
    user_partition = [DefaultPartitioner()(key, list(range(partitions)), None) for key in user_names]
    start = datetime(2020, 1, 1, tzinfo=timezone.utc)
    buffers: list[list] = [[] for _ in range(partitions)]
    offsets = [0] * partitions
    with ThreadPoolExecutor(2) as pool, progress() as bar:
        task = bar.add_task("generate + archive", total=len(ratings), info="")
        uploads = []

        def flush(partition: int) -> None:
            uploads.append(pool.submit(put_segment, s3, BUCKET, topic, buffers[partition], level))
            buffers[partition] = []

        for k, (u, i, r) in enumerate(zip(users.tolist(), items.tolist(), ratings.tolist())):
            at = start + timedelta(seconds=k)
            event = ReviewSubmitted(
                event_id=str(uuid.UUID(bytes=rng.bytes(16), version=4)),
                occurred_at=at, recorded_at=at, user_id=user_names[u].decode(), movie_id=f"movie-{i:06d}",
                rating=r, reviewed_at=at, source="bench",
            )
            partition = user_partition[u]
            buffers[partition].append(LogRecord(partition, offsets[partition], user_names[u], encode(event)))
            offsets[partition] += 1
            if len(buffers[partition]) >= SEGMENT_RECORDS:
                flush(partition)
            if k % 50_000 == 0:
                bar.update(task, completed=k)
        for partition in range(partitions):
            if buffers[partition]:
                flush(partition)
        for upload in uploads:
            upload.result()
        bar.update(task, completed=len(ratings))
    return len(uploads)


# -- measuring --------------------------------------------------------------------------------------


def descendants(root: int, exclude: set[int]) -> list[int]:
    """root and every process under it, leaving out the subtrees of `exclude`."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(child for child in children.get(pid, ()) if child not in exclude)
    return found


class PeakRss:
    """Peak RSS while the block runs, of the processes `pids()` names (summed), sampled every 0.2 s in a thread."""

    def __init__(self, pids: Callable[[], list[int]] = lambda: [os.getpid()]):
        self.pids = pids
        self._stop = threading.Event()

    def sample(self) -> float:
        return sum(filter(None, map(rss_mib, self.pids())))  # MiB

    def __enter__(self) -> "PeakRss":
        self.start = self.peak = self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, self.sample())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.sample())

    def figures(self) -> dict:
        return {"start_gib": round(self.start / 1024, 2), "peak_gib": round(self.peak / 1024, 2)}


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return round(float(np.sqrt(np.mean((a - b) ** 2))), 4)


# -- the benchmark ----------------------------------------------------------------------------------


def spark_path(spark, source, params, exclude: set[int], workers: list[int], store, s3) -> tuple[dict, object, object]:
    """Replay + fit + publish (to a SQLite store and S3, as `harmony train` does), timed; peak RSS of
    the driver (this process, its JVM and, in local mode, the executors it hosts) and of the
    executors a standalone cluster's `workers` run."""
    from ml import registry, training
    from ml.replay import replay

    with PeakRss(lambda: descendants(os.getpid(), exclude)) as driver, \
            PeakRss(lambda: [pid for root in workers for pid in descendants(root, set())[1:]]) as executors:
        started = time.perf_counter()
        replayed = replay(spark, source, {}, {}, progress=console.log)
        count = replayed.ratings.count()
        replayed_at = time.perf_counter()
        model = training.fit(spark, replayed.ratings, params)
        done = time.perf_counter()
        registry.publish(store, s3, BUCKET, f"models/{source.topic}/", model, trained_at=datetime.now(timezone.utc),
                         watermark=replayed.watermark, metrics={})
        published = time.perf_counter()
    figures = {
        "replay_s": round(replayed_at - started, 2), "fit_s": round(done - replayed_at, 2),
        "total_s": round(done - started, 2), "publish_s": round(published - done, 2),
        "ratings_replayed": count, "segments": replayed.segments,
        "rss_driver": driver.figures(), "rss_executors": executors.figures() if workers else None,
    }
    return figures, replayed, model


def numpy_path(frame: pd.DataFrame, params) -> tuple[dict, np.ndarray]:
    """Time the bias baseline + NumPy ALS on the residuals; answers the figures and the training fit."""
    from bench.numpy_als import als
    from ml.training import LocalRatings, fit_baseline

    u, users = pd.factorize(frame["user"])
    i, items = pd.factorize(frame["item"])
    r = frame["rating"].to_numpy(float)
    gc.collect()
    with PeakRss() as memory:
        started = time.perf_counter()
        baseline = fit_baseline(LocalRatings(u, i, r, len(users), len(items)), params.reg_user, params.reg_item)
        user_factors, item_factors = als(u, i, r - baseline.predict(u, i), len(users), len(items),
                                         rank=params.rank, reg=params.reg, iterations=params.max_iter,
                                         seed=params.seed)
        seconds = time.perf_counter() - started
    fitted = baseline.predict(u, i) + np.einsum("ij,ij->i", user_factors[u], item_factors[i])
    return {"seconds": round(seconds, 2), "rss_this_process": memory.figures()}, fitted


def one_size(spark, s3, info, keys, n: int, args, exclude: set[int], workers: list[int], store) -> dict:
    from ml.replay import ArchiveSource
    from ml.training import MAX_RATING, MIN_RATING, Params

    topic = fresh_topic("bench.train")
    users, items, ratings = generate(n, args.seed, args.users, args.movies)
    segments = write_archive(s3, topic, users, items, ratings, args.partitions, args.seed)
    figures = {"ratings": n, "users": int(users.max()) + 1, "movies": int(items.max()) + 1,
               "rating_mean": round(float(ratings.mean()), 3), "rating_std": round(float(ratings.std()), 3),
               "segments_written": segments}
    del users, items, ratings
    gc.collect()
    source = ArchiveSource(info["s3_endpoint"], BUCKET, topic, keys["access_key"], keys["secret_key"])
    params = Params(rank=args.rank, reg=args.reg, max_iter=args.iterations, seed=args.seed,
                    blend_knn=0.0, blend_user_knn=0.0)
    console.log(f"{n:,} ratings: Spark path (replay + fit)…")
    figures["spark"], replayed, model = spark_path(spark, source, params, exclude, workers, store, s3)
    console.log(f"{n:,} ratings: Spark {figures['spark']['total_s']} s")
    if args.no_reference:
        replayed.ratings.unpersist()
        return figures
    started = time.perf_counter()
    frame = replayed.ratings.toPandas()
    figures["collect_for_numpy_s"] = round(time.perf_counter() - started, 2)  # not timed in either path
    replayed.ratings.unpersist()
    figures["numpy"], numpy_fit = numpy_path(frame, params)
    truth = frame["rating"].to_numpy(float)
    figures["train_rmse"] = {"spark": rmse(model.collect().predict(frame["user"], frame["item"]), truth),
                             "numpy": rmse(np.clip(numpy_fit, MIN_RATING, MAX_RATING), truth)}
    figures["ratio_spark_to_numpy"] = round(figures["spark"]["total_s"] / figures["numpy"]["seconds"], 2)
    console.log(f"{n:,} ratings: NumPy {figures['numpy']['seconds']} s, "
                f"ratio {figures['ratio_spark_to_numpy']}")
    return figures


def run(args) -> dict:
    # Each size in a process of its own: what one size leaves in the driver (its JVM heap, the NumPy
    # reference's frames) must not count against the next.
    figures = one_process(args) if len(args.ratings) == 1 else each_in_its_process(args)
    peaks = [size["spark"]["rss_driver"]["peak_gib"] for size in figures["sizes"].values()]
    # The driver must not grow with the data (issue 23): its peak at the largest size over the smallest.
    figures["driver_peak_ratio_largest_to_smallest"] = round(peaks[-1] / peaks[0], 2) if len(peaks) > 1 else None
    at_target = figures["sizes"].get(str(TARGET_SIZE))
    figures["meets_target"] = (None if at_target is None or args.rank != 50
                               else at_target.get("ratio_spark_to_numpy", float("inf")) <= TARGET_RATIO)
    return figures


def each_in_its_process(args) -> dict:
    figures: dict = {}
    for n in args.ratings:
        argv = [sys.executable, "-m", "bench.train_bench", "--json", "--ratings", str(n)]
        for name, value in vars(args).items():  # the other options as given
            flag = f"--{name.replace('_', '-')}"
            if value is True and name != "json":
                argv.append(flag)
            elif value is not None and not isinstance(value, bool) and name != "ratings":
                argv += [flag, str(value)]
        one = json.loads(subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=True).stdout)
        figures = figures or one
        figures["sizes"] |= one["sizes"]
    return figures


def one_process(args) -> dict:
    from archive.segments import ensure_bucket, s3_client
    from harmony.settings import load
    from ml.spark import session

    settings = load()
    figures: dict = {"benchmark": "train", "rank": args.rank,
                     "reg": args.reg, "iterations": args.iterations, "seed": args.seed,
                     "target": f"Spark within {TARGET_RATIO}x of NumPy at {TARGET_SIZE:,} ratings, rank 50",
                     "spark_workers": args.spark_workers, "sizes": {}}
    cluster = {"spark_workers": args.spark_workers, "spark_memory": args.executor_memory} if args.spark_workers else {}
    with local_stack("train", fresh_topic("bench.train"), args.partitions, args.keep, **cluster) as (state, info):
        keys = json.loads((state / "credentials.json").read_text())
        s3 = s3_client(info["s3_endpoint"], keys["access_key"], keys["secret_key"])
        ensure_bucket(s3, BUCKET)
        exclude = {service["pid"] for service in info["services"].values()}
        workers = [service["pid"] for name, service in info["services"].items() if name.startswith("spark-worker")]
        master = info["spark"]["master"] if args.spark_workers else settings.spark_master
        figures["spark_master"] = master
        started = time.perf_counter()
        with console.status(f"starting Spark ({master})…"):
            spark = session(master, settings.spark_driver_memory, executor_memory=args.executor_memory)
        figures["spark_session_start_s"] = round(time.perf_counter() - started, 2)
        store = sqlite_store(state / "projections.db")
        try:
            for n in args.ratings:
                figures["sizes"][str(n)] = one_size(spark, s3, info, keys, n, args, exclude, workers, store)
        finally:
            store.close()
            spark.stop()
    return figures


if __name__ == "__main__":
    raise SystemExit(run_benchmark("train", __doc__, parser().parse_args(), run))
