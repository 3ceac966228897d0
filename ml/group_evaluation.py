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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ml import matching
from ml.factors import FactorModel

K = 10
PAIRS = 1000
SEED = 7
BASELINES = ("popularity", "random", "original")
EXHAUSTIVE = "exhaustive"  # the default strategy over every eligible movie, not its candidates only
ORIGINAL_TOP = 5000  # the original's rank-normalised list per member
ORIGINAL_PENALTY = 0.1  # and its weight on the members' disagreement
MIN_REVIEWS_GRID = (0, 5, 10, 20, 50, 100)  # what `choose_min_reviews` tries
MIN_CATALOGUE = 100  # movies a threshold must leave


@dataclass
class PairData:
    """What lists are made from and judged against."""

    items: matching.Items
    model: FactorModel
    train: dict[str, dict[str, float]]  # user -> movie -> rating, the part the model saw
    held: dict[str, dict[str, float]]  # the held-out part


def ratings_by_user(frame: pd.DataFrame) -> dict[str, dict[str, float]]:
    return {str(user): dict(zip(group["item"].astype(str), group["rating"].astype(float)))
            for user, group in frame.groupby("user", sort=False)}


def pair_data(model: FactorModel, train: pd.DataFrame, held: pd.DataFrame) -> PairData:
    return PairData(matching.Items.of("evaluation", model, {}), model, ratings_by_user(train), ratings_by_user(held))


def sample_pairs(data: PairData, count: int, seed: int = SEED) -> list[tuple[str, str]]:
    """Up to ``count`` different pairs of users in both parts who both held out some movie."""
    users = sorted(set(data.train) & set(data.held))
    rng = np.random.default_rng(seed)
    pairs: set[tuple[str, str]] = set()
    for _ in range(50 * count):
        if len(pairs) >= count or len(users) < 2:
            break
        a, b = sorted(rng.choice(users, 2, replace=False))
        if data.held[a].keys() & data.held[b].keys():
            pairs.add((str(a), str(b)))
    return sorted(pairs)


class Lister:
    """Top-10 lists for pairs; each user's member computed once."""

    def __init__(self, data: PairData):
        self.data = data
        self._users = pd.Index(data.model.user_ids)
        self._cache: dict[str, matching.Member] = {}

    def _member(self, user: str) -> matching.Member:
        if user not in self._cache:
            k = self._users.get_loc(user) if user in self._users else None
            published = None if k is None else (float(self.data.model.user_bias[k]), self.data.model.user_factors[k])
            self._cache[user] = matching.member(self.data.items, user, self.data.train.get(user, {}), published)
        return self._cache[user]

    def lists(self, pairs: list[tuple[str, str]], kind: str, min_reviews: int | None = None) -> list[np.ndarray]:
        """Positions of each pair's list; ``kind`` is a strategy, ``exhaustive`` or a baseline."""
        items = self.data.items
        rng = np.random.default_rng(SEED)
        out = []
        for pair in pairs:
            members = [self._member(user) for user in pair]
            if kind in BASELINES:  # every movie the pair has not rated; scores as a one-row "utility"
                positions = matching.eligible(items, members, matching.Filters(min_reviews=0))
                if kind == "popularity":
                    scores = items.counts[None, positions].astype(float)
                elif kind == "random":
                    scores = rng.random((1, len(items.ids)))[:, positions]
                else:
                    scores = _original(matching.predictions(items, members, positions))
                picks = matching.rank(scores, "average", None, positions, K)
            else:
                strategy, top = ((matching.DEFAULT_STRATEGY, None) if kind == EXHAUSTIVE
                                 else (kind, matching.CANDIDATES))
                picks = matching.score(items, members, matching.Filters(min_reviews=min_reviews), strategy, None, K,
                                       top).picks
            out.append(np.array([p.position for p in picks], dtype=int))
        return out


def _original(predicted: np.ndarray) -> np.ndarray:
    """The 2015 ranking's scores, as a one-row utility."""
    top = min(ORIGINAL_TOP, predicted.shape[1])
    scores = np.zeros((1, predicted.shape[1]))
    if top:
        normalised = np.maximum(matching.rank_points(predicted) - (predicted.shape[1] - top), 0) / top
        scores[0] = normalised.mean(axis=0) - ORIGINAL_PENALTY * np.ptp(normalised, axis=0)
    return scores


def _dcg(gains) -> float:
    gains = np.asarray(gains, dtype=float)
    return float((gains / np.log2(np.arange(2, len(gains) + 2))).sum())


def measure(data: PairData, pairs: list[tuple[str, str]], lists: list[np.ndarray]) -> dict:
    ids = data.items.ids
    ndcg_min, ndcg_mean, shown = [], [], []
    liked = [0, 0]
    disliked = [0, 0]
    for (a, b), listed in zip(pairs, lists):
        held_a, held_b = data.held[a], data.held[b]
        movies = [str(ids[k]) for k in listed]
        shown.extend(listed)
        both = held_a.keys() & held_b.keys()
        ideal_min = sorted((min(held_a[m], held_b[m]) for m in both), reverse=True)[:K]
        ideal_mean = sorted(((held_a.get(m, 0) + held_b.get(m, 0)) / 2 for m in held_a.keys() | held_b.keys()),
                            reverse=True)[:K]
        ndcg_min.append(_dcg([min(held_a.get(m, 0), held_b.get(m, 0)) for m in movies]) / _dcg(ideal_min))
        ndcg_mean.append(_dcg([(held_a.get(m, 0) + held_b.get(m, 0)) / 2 for m in movies]) / _dcg(ideal_mean))
        for m in movies:
            if m in held_a and m in held_b:
                liked[1] += 1
                liked[0] += held_a[m] >= 4 and held_b[m] >= 4
            if m in held_a or m in held_b:
                disliked[1] += 1
                disliked[0] += held_a.get(m, 5) < 3 or held_b.get(m, 5) < 3
    return {
        "ndcg_min": float(np.mean(ndcg_min)) if ndcg_min else 0.0,
        "ndcg_mean": float(np.mean(ndcg_mean)) if ndcg_mean else 0.0,
        "liked_both": liked[0] / liked[1] if liked[1] else None,
        "disliked": disliked[0] / disliked[1] if disliked[1] else None,
        "coverage": len(set(shown)) / max(len(ids), 1),
        "median_ratings": float(np.median(data.items.counts[shown])) if shown else None,
    }


def choose_min_reviews(model: FactorModel, train: pd.DataFrame, held: pd.DataFrame,
                       grid=MIN_REVIEWS_GRID, pairs: int = PAIRS) -> tuple[int, dict]:
    """The evidence threshold whose lists for held-out pairs get the best ``ndcg_min`` with the
    default strategy (the smallest on a tie; 0 when no pair can be judged), and the figures. A
    threshold must leave ``MIN_CATALOGUE`` movies, or half of a smaller catalogue, to choose from."""
    data = pair_data(model, train, held)
    sampled = sample_pairs(data, pairs)
    if not sampled:
        return 0, {}
    lister = Lister(data)
    enough = min(MIN_CATALOGUE, len(data.items.counts) // 2)
    figures = {m: measure(data, sampled, lister.lists(sampled, matching.DEFAULT_STRATEGY, m))["ndcg_min"]
               for m in grid if m == 0 or (data.items.counts >= m).sum() >= enough}
    grid = list(figures)
    best = max(grid, key=lambda m: (figures[m], -m))
    # String keys: the figures go into the registry row's JSON and must read back equal.
    return best, {"pairs": len(sampled), "ndcg_min_by_min_reviews": {str(m): v for m, v in figures.items()}}


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
    from ml.evaluation import read_movielens_split, split_paths
    from ml.retrain import fit_for_publication

    say = progress or (lambda message: None)
    results = []
    for n, (base, test) in enumerate(split_paths(folder, folds), start=1):
        train_frame, test_frame = read_movielens_split(base), read_movielens_split(test)
        say(f"fold u{n}: training on {base.name} as `harmony train` does")
        model, _ = fit_for_publication(spark, train_frame, params, tune=tune, holdout=holdout, progress=say)
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
