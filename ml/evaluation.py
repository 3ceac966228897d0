"""Offline evaluation of the rating model: fitted on training ratings, measured on held-out ones.

:func:`measure` computes the rating error (RMSE, MAE, and the baseline's RMSE) over every held-out
rating in Spark, and the ranking figures (:mod:`ml.metrics`) over a bounded random sample of
held-out users on the driver (all of them up to ``EVALUATED_USERS``), so measuring costs the
driver the same at any size. ``harmony evaluate movielens PATH --folds`` runs
:func:`evaluate_movielens_folds` on the official u1..u5 .base/.test splits of a
MovieLens-100K-layout folder.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ml import selection, training
from ml.datasets import FOLDS, read_movielens_split, split_paths
from ml.metrics import K, ranking_metrics

EVALUATED_USERS = 5000


def spark_frame(spark, ratings):
    """A Spark DataFrame of (user, item, rating) from a pandas one (or itself)."""
    return ratings if hasattr(ratings, "sparkSession") else spark.createDataFrame(ratings[["user", "item", "rating"]])


def sample_users(ratings, count: int = EVALUATED_USERS, seed: int = 42):
    """A DataFrame of up to ``count`` of the ratings' users, drawn by a hash of their id (the same
    draw for the same users however the data is partitioned)."""
    from pyspark.sql import functions as F

    return (ratings.select("user").distinct().orderBy(F.xxhash64("user", F.lit(seed)), "user").limit(count)
            .cache())


def of_users(ratings, users):
    """The ratings of a (small) DataFrame of users, as a pandas frame."""
    from pyspark.sql import functions as F

    return ratings.join(F.broadcast(users), "user").select("user", "item", "rating").toPandas()


def measure(trained: training.Trained, test) -> dict:
    """The model's error on every held-out (user, item, rating), and its ranking of a sample of users'
    held-out movies (ties by movie id)."""
    from pyspark.sql import functions as F

    scored = trained.predictions(test).cache()
    count, rmse, mae, baseline_rmse = scored.agg(
        F.count("*"), F.sqrt(F.avg((F.col("rating") - F.col("predicted")) ** 2)),
        F.avg(F.abs(F.col("rating") - F.col("predicted"))),
        F.sqrt(F.avg((F.col("rating") - F.col("baseline")) ** 2))).first()
    ranked = scored.join(F.broadcast(sample_users(test)), "user").toPandas().sort_values(["user", "item"])
    scored.unpersist()
    return {"test": count, "rmse": rmse, "mae": mae,
            **ranking_metrics(ranked["user"], ranked["rating"], ranked["predicted"]),
            "baseline_rmse": baseline_rmse}


def evaluate_split(spark, train, test, params, *, tune: bool,
                   progress: Callable[[str], None] | None = None) -> dict:
    """Fit on ``train`` (with ``tune``, tuning inside it only, starting from ``params``) and
    measure on ``test``; figures for the model and its baseline."""
    started = time.monotonic()
    train, test = spark_frame(spark, train), spark_frame(spark, test)
    trained = selection.fit(spark, train, params, tune_params=tune, progress=progress)
    figures = {"train": train.count(), **measure(trained, test), "params": trained.params,
               "factor_rank": trained.rank, "seconds": round(time.monotonic() - started, 1)}
    trained.unpersist()
    return figures


METRICS = ["rmse", "mae", f"ndcg@{K}", f"precision@{K}", "baseline_rmse"]


def evaluate_movielens_folds(spark, folder: Path, params, *, tune: bool, folds: int = FOLDS,
                             progress: Callable[[str], None] | None = None) -> dict:
    say = progress or (lambda message: None)
    results = []
    for n, (base, test) in enumerate(split_paths(folder, folds), start=1):
        say(f"fold u{n}: training on {base.name}")
        result = evaluate_split(spark, read_movielens_split(base), read_movielens_split(test), params,
                                tune=tune, progress=say)
        say(f"fold u{n}: RMSE {result['rmse']:.4f} ({result['seconds']} s)")
        results.append({"fold": f"u{n}", **result})
    mean = {metric: float(np.mean([result[metric] for result in results])) for metric in METRICS}
    return {"dataset": "movielens", "path": str(folder), "folds": results, "mean": mean}


def render(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"MovieLens {report['path']}: {len(report['folds'])} folds")
    for name in ["fold", "train", "test", "RMSE", "MAE", f"nDCG@{K}", f"P@{K}", "baseline RMSE", "rank", "λ", "s"]:
        table.add_column(name, justify="left" if name == "fold" else "right")
    for fold in report["folds"]:
        table.add_row(fold["fold"], str(fold["train"]), str(fold["test"]), f"{fold['rmse']:.4f}",
                      f"{fold['mae']:.4f}", f"{fold[f'ndcg@{K}']:.4f}", f"{fold[f'precision@{K}']:.4f}",
                      f"{fold['baseline_rmse']:.4f}", str(fold["params"]["rank"]), f"{fold['params']['reg']:g}",
                      f"{fold['seconds']:.0f}")
    mean = report["mean"]
    table.add_row("mean", "", "", f"{mean['rmse']:.4f}", f"{mean['mae']:.4f}", f"{mean[f'ndcg@{K}']:.4f}",
                  f"{mean[f'precision@{K}']:.4f}", f"{mean['baseline_rmse']:.4f}", "", "", "", style="bold")
    console = Console()
    if not console.is_terminal:  # a pipe or a file: do not squeeze the table into 80 columns
        console = Console(width=160)
    console.print(table)


def run(args, spark, params) -> int:
    """``harmony evaluate movielens PATH --folds``."""
    report = evaluate_movielens_folds(spark, Path(args.path), params, tune=not args.no_tune,
                                      progress=training.stderr_progress)
    if args.json:
        print(json.dumps(report))
    else:
        render(report)
    sys.stdout.flush()
    return 0
