"""Lists for pairs of users and how good they are against held-out ratings: the measuring that
``harmony evaluate pairs`` (:mod:`ml.group_evaluation`) and the choice of ``min_reviews``
(:mod:`ml.selection`) share. The figures are defined in :mod:`ml.group_evaluation`.
"""

from __future__ import annotations

from dataclasses import dataclass

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
