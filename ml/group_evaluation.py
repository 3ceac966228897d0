"""Offline evaluation of the lists two people get: ``harmony evaluate pairs PATH``.

Protocol, on each MovieLens fold (``u<n>.base`` / ``u<n>.test``):

* the model is trained on the ``.base`` by the code ``harmony train`` runs
  (:func:`ml.retrain.fit_for_publication`: tuning and the choice of ``min_reviews`` on its own
  holdout of the ``.base``, then a fit on all of it);
* pairs of users are drawn with a fixed seed among users in both parts, keeping pairs who both
  rated at least one movie of the ``.test`` (else no list could score anything);
* each pair gets a top-10 list over the whole catalogue, leaving out what either rated in the
  ``.base``, from the same code as the API (:mod:`ml.matching`), for every strategy, for the
  default strategy scored over every eligible movie instead of its candidates (``exhaustive``),
  and from three baselines: the most rated movies (``popularity``), ``random`` ones, and the
  2015 original (``original``: each member's top 5,000 predicted ratings rank-normalised,
  averaged, minus a small penalty for the members' disagreement; the rating model alone).

Figures per list kind, over the pairs:

* ``ndcg_min``: nDCG@10 whose gain for a listed movie is the lower of the two held-out ratings
  (0 unless both rated it); the ideal list is the pair's best ten such movies;
* ``ndcg_mean``: the same with the mean of the two held-out ratings (a missing one counts 0);
* ``liked_both``: of the listed movies both rated in the ``.test``, the share both rated 4 or more;
* ``disliked``: of the listed movies either rated in the ``.test``, the share someone rated below 3;
* ``coverage``: the share of the model's movies that some list shows;
* ``median_ratings``: the median number of ``.base`` ratings of the listed movies.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ml import matching
from ml.datasets import read_movielens_split, split_paths
from ml.factors import FactorModel
from ml.pair_metrics import BASELINES, EXHAUSTIVE, PAIRS, SEED, K, Lister, measure, pair_data, sample_pairs
from ml.retrain import fit_for_publication


def evaluate_fold(model: FactorModel, train: pd.DataFrame, test: pd.DataFrame, pairs: int = PAIRS,
                  seed: int = SEED) -> dict:
    """Every strategy and baseline on one fold's test pairs."""
    data = pair_data(model, train, test)
    sampled = sample_pairs(data, pairs, seed)
    lister = Lister(data)
    kinds = [*matching.STRATEGIES, EXHAUSTIVE, *BASELINES]
    return {"pairs": len(sampled), "min_reviews": data.items.min_reviews,
            "lists": {kind: measure(data, sampled, lister.lists(sampled, kind)) for kind in kinds}}


FIGURES = ("ndcg_min", "ndcg_mean", "liked_both", "disliked", "coverage", "median_ratings")


def evaluate_pairs_folder(spark, folder: Path, params, *, tune: bool, holdout: float, folds: int,
                          pairs: int = PAIRS, progress: Callable[[str], None] | None = None) -> dict:
    say = progress or (lambda message: None)
    results = []
    for n, (base, test) in enumerate(split_paths(folder, folds), start=1):
        train_frame, test_frame = read_movielens_split(base), read_movielens_split(test)
        say(f"fold u{n}: training on {base.name} as `harmony train` does")
        trained, _ = fit_for_publication(spark, train_frame, params, tune=tune, holdout=holdout, progress=say)
        model = trained.collect()  # a MovieLens fold: small
        trained.unpersist()
        say(f"fold u{n}: lists for {pairs} pairs, min_reviews {model.params.get('min_reviews', 0)}")
        results.append({"fold": f"u{n}", **evaluate_fold(model, train_frame, test_frame, pairs)})
    kinds = [*matching.STRATEGIES, EXHAUSTIVE, *BASELINES]
    mean = {kind: {figure: _mean([r["lists"][kind][figure] for r in results]) for figure in FIGURES} for kind in kinds}
    default, popularity = mean[matching.DEFAULT_STRATEGY]["ndcg_min"], mean["popularity"]["ndcg_min"]
    exhaustive = mean[EXHAUSTIVE]["ndcg_min"]
    return {"dataset": "movielens", "path": str(folder), "k": K, "default": matching.DEFAULT_STRATEGY,
            "default_vs_popularity_ndcg_min": default / popularity if popularity else None,
            "default_vs_exhaustive_ndcg_min": default / exhaustive if exhaustive else None,
            "folds": results, "mean": mean}


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def render(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Lists for pairs, {report['path']}: mean of {len(report['folds'])} folds, "
                        f"top {report['k']} (default: {report['default']})")
    table.add_column("list")
    for figure in FIGURES:
        table.add_column(figure, justify="right")
    for kind, figures in report["mean"].items():
        cells = ["-" if figures[f] is None else f"{figures[f]:.0f}" if f == "median_ratings" else f"{figures[f]:.4f}"
                 for f in FIGURES]
        table.add_row(kind + (" (default)" if kind == report["default"] else ""), *cells,
                      style="bold" if kind == report["default"] else None)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(table)
    if report["default_vs_popularity_ndcg_min"] is not None:
        console.print(f"default / popularity, ndcg_min: {report['default_vs_popularity_ndcg_min']:.2f}")
    if report["default_vs_exhaustive_ndcg_min"] is not None:
        console.print(f"default (candidates) / exhaustive, ndcg_min: {report['default_vs_exhaustive_ndcg_min']:.4f}")


def run(args, spark, params, holdout: float) -> int:
    from ml.training import stderr_progress

    report = evaluate_pairs_folder(spark, Path(args.path), params, tune=not args.no_tune, holdout=holdout,
                                   folds=args.folds, pairs=args.pairs, progress=stderr_progress)
    if args.json:
        print(json.dumps(report))
    else:
        render(report)
    sys.stdout.flush()
    return 0
