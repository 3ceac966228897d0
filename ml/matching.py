"""Movies for a group: every member's predicted ratings from the published factors, aggregated.

A member the model knows uses their published bias and vector. A member newer than the model
is *folded in*: their bias and vector are solved from their current reviews with the item side
fixed, the ridge problem ALS solves for one user (``reg`` scaled by the number of ratings for
the vector, ``reg_user`` for the bias, as in training). A member with no reviews the model can
use gets the baseline (``mu + b_i``).

Strategies (the usual ones of group recommendation):

* ``average``: the mean of the members' predictions, weighted by ``weights`` when given;
* ``least_misery``: the lowest member prediction (nobody hates it);
* ``most_pleasure``: the highest member prediction (someone loves it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml.factors import MAX_RATING, MIN_RATING
from ml.registry import decode_rows
from projections.store import ModelInfo, ProjectionStore

STRATEGIES = ("average", "least_misery", "most_pleasure")


@dataclass
class Items:
    """The item side of one published version, loaded once and kept by the reader."""

    info: ModelInfo
    ids: np.ndarray
    bias: np.ndarray
    factors: np.ndarray
    index: pd.Index

    @classmethod
    def load(cls, store: ProjectionStore, info: ModelInfo) -> "Items":
        ids, bias, factors = decode_rows(store.factors(info.version, "item"), info.rank)
        return cls(info, ids, bias, factors.astype(np.float64), pd.Index(ids))


@dataclass
class Member:
    user_id: str
    bias: float
    vector: np.ndarray
    folded_in: bool
    seen: set[str]


def fold_in(items: Items, ratings: dict[str, float]) -> tuple[float, np.ndarray]:
    """Bias and vector for a user the model has not seen, from their ratings (movie id -> rating)."""
    positions = items.index.get_indexer(list(ratings))
    known = positions >= 0
    rank = items.factors.shape[1]
    if not known.any():
        return 0.0, np.zeros(rank)
    positions = positions[known]
    values = np.fromiter(ratings.values(), dtype=float, count=len(ratings))[known]
    features = np.column_stack([items.factors[positions], np.ones(len(positions))])
    target = values - items.info.mu - items.bias[positions]
    reg = float(items.info.params.get("reg", 0.1)) * len(positions)
    penalty = np.full(rank + 1, reg)
    penalty[-1] = float(items.info.params.get("reg_user", 5.0))
    solution = np.linalg.solve(features.T @ features + np.diag(penalty), features.T @ target)
    return float(solution[-1]), solution[:-1]


def member(store: ProjectionStore, items: Items, user_id: str, reviews: dict[str, float]) -> Member:
    rows = store.factors(items.info.version, "user", [user_id])
    if rows:
        _, bias, vectors = decode_rows(rows, items.info.rank)
        return Member(user_id, float(bias[0]), vectors[0].astype(np.float64), False, set(reviews))
    bias, vector = fold_in(items, reviews)
    return Member(user_id, bias, vector, True, set(reviews))


def predictions(items: Items, members: list[Member]) -> np.ndarray:
    """(members, items) predicted ratings, on the rating scale."""
    vectors = np.stack([m.vector for m in members])
    biases = np.array([m.bias for m in members])
    raw = items.info.mu + biases[:, None] + items.bias[None, :] + vectors @ items.factors.T
    return np.clip(raw, MIN_RATING, MAX_RATING)


def aggregate(predicted: np.ndarray, strategy: str, weights: list[float] | None = None) -> np.ndarray:
    if strategy == "average":
        return np.average(predicted, axis=0, weights=weights)
    if strategy == "least_misery":
        return predicted.min(axis=0)
    if strategy == "most_pleasure":
        return predicted.max(axis=0)
    raise ValueError(f"unknown strategy {strategy!r}: one of {', '.join(STRATEGIES)}")


def best(items: Items, members: list[Member], strategy: str, weights: list[float] | None, limit: int,
         include_seen: bool) -> list[tuple[str, float, dict[str, float]]]:
    """The top ``limit`` movies: (movie id, group score, each member's predicted rating)."""
    predicted = predictions(items, members)
    scores = aggregate(predicted, strategy, weights)
    if not include_seen:
        seen = items.index.get_indexer(list(set().union(*(m.seen for m in members))))
        scores[seen[seen >= 0]] = -np.inf
    count = min(limit, int(np.isfinite(scores).sum()))
    top = np.argpartition(-scores, count - 1)[:count] if count else np.array([], dtype=int)
    top = top[np.lexsort((items.ids[top].astype(str), -scores[top]))]  # by score, ties by id: stable pages
    return [(str(items.ids[k]), float(scores[k]), {m.user_id: float(predicted[n, k]) for n, m in enumerate(members)})
            for k in top]
