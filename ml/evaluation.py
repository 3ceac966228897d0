"""Offline evaluation: rating error (RMSE, MAE) and ranking quality (nDCG@10, precision@10).

Ranking protocol (cheap, well defined, the usual one for explicit-rating test sets): for each
test user, the candidates are the items that user rated in the test set; they are ranked by
predicted score (descending; ties keep the test-file order). An item is relevant when its
held-out rating is >= 4. Users with no relevant held-out item are skipped (nDCG is undefined
for them); the metrics are the mean over the remaining users.

* precision@k = relevant items in the top k / min(k, number of candidates)
  (a user with fewer than k candidates is judged on the list actually ranked).
* nDCG@k with binary gains: DCG = sum over the top k of rel / log2(position + 1), positions
  from 1; IDCG is the DCG of the best ordering (all relevant candidates first).

``harmony evaluate movielens PATH --folds`` runs :func:`evaluate_movielens_folds` on the
official u1..u5 .base/.test splits of a MovieLens-100K-layout folder.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from events.errors import HarmonyError

RELEVANT = 4.0
K = 10
FOLDS = 5


def rmse(truth, predicted) -> float:
    truth, predicted = np.asarray(truth, float), np.asarray(predicted, float)
    return float(np.sqrt(np.mean((truth - predicted) ** 2)))


def mae(truth, predicted) -> float:
    truth, predicted = np.asarray(truth, float), np.asarray(predicted, float)
    return float(np.mean(np.abs(truth - predicted)))


def ranking_metrics(users, truth, predicted, k: int = K, threshold: float = RELEVANT) -> dict[str, float]:
    """Mean nDCG@k and precision@k over users (see the module docstring), and how many users counted."""
    frame = pd.DataFrame({"user": np.asarray(users), "truth": np.asarray(truth, float),
                          "score": np.asarray(predicted, float)})
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ndcgs, precisions = [], []
    for _, group in frame.groupby("user", sort=False):
        relevant = (group["truth"].to_numpy() >= threshold).astype(float)
        if not relevant.any():
            continue
        order = np.argsort(-group["score"].to_numpy(), kind="stable")[:k]
        gains = relevant[order]
        ideal = np.sort(relevant)[::-1][:k]
        ndcgs.append(float(gains @ discounts[:len(gains)]) / float(ideal @ discounts[:len(ideal)]))
        precisions.append(float(gains.sum()) / len(gains))
    if not ndcgs:
        return {f"ndcg@{k}": float("nan"), f"precision@{k}": float("nan"), "ranked_users": 0}
    return {f"ndcg@{k}": float(np.mean(ndcgs)), f"precision@{k}": float(np.mean(precisions)),
            "ranked_users": len(ndcgs)}


def read_movielens_split(path: Path) -> pd.DataFrame:
    """A MovieLens-100K split file: tab-separated user, item, rating, timestamp; ids kept as strings."""
    frame = pd.read_csv(path, sep="\t", header=None, names=["user", "item", "rating", "ts"],
                        dtype={"user": str, "item": str, "rating": float, "ts": str})
    if frame["rating"].isna().any():
        raise HarmonyError(f"{path}: a row without a rating")
    return frame.drop(columns="ts")


def split_paths(folder: Path, folds: int) -> list[tuple[Path, Path]]:
    """The official u1..u<folds> .base/.test pairs of a MovieLens-100K-layout folder, all present."""
    folder = Path(folder)
    paths = [(folder / f"u{n}.base", folder / f"u{n}.test") for n in range(1, folds + 1)]
    missing = [str(path) for pair in paths for path in pair if not path.is_file()]
    if missing:
        raise HarmonyError(f"not a MovieLens-100K folder with official splits: missing {', '.join(missing)}")
    return paths


def evaluate_split(spark, train: pd.DataFrame, test: pd.DataFrame, params, *, tune: bool,
                   progress: Callable[[str], None] | None = None) -> dict:
    """Fit on ``train`` (with ``tune``, tuning inside it only, starting from ``params``) and
    score ``test``; figures for the model and its baseline."""
    from ml import training

    from ml.group_evaluation import choose_min_reviews

    started = time.monotonic()
    model = training.fit(spark, train, params, tune_params=tune, progress=progress)
    predicted = model.predict(test["user"], test["item"])
    baseline = model.predict_baseline(test["user"], test["item"])
    truth = test["rating"].to_numpy(float)
    model.params["min_reviews"], pairs = choose_min_reviews(model, train, test)
    return {
        "train": len(train), "test": len(test),
        "rmse": rmse(truth, predicted), "mae": mae(truth, predicted),
        **ranking_metrics(test["user"], truth, predicted),
        "baseline_rmse": rmse(truth, baseline),
        "pairs": pairs,
        "params": model.params, "factor_rank": model.rank,
        "seconds": round(time.monotonic() - started, 1),
    }


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
    from ml.training import stderr_progress

    report = evaluate_movielens_folds(spark, Path(args.path), params, tune=not args.no_tune,
                                      progress=stderr_progress)
    if args.json:
        print(json.dumps(report))
    else:
        render(report)
    sys.stdout.flush()
    return 0
