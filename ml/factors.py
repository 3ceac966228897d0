"""The published rating model: biases and factor vectors, and nothing else.

    predicted(u, i) = clip(mu + b_u + b_i + p_u . q_i, 0.5, 5)

An unseen user has no ``b_u`` and no ``p_u`` (likewise an unseen item), so it gets the rest of
the baseline. This is what the projection store holds and what the API scores with; training
(:mod:`ml.training`) reduces whatever it blends to this form, so the factors published are the
model, not an approximation of a different one served elsewhere.

Beside the rating model, two item-side facts for ranking (:mod:`ml.matching`): each item's
number of training ratings (its evidence) and its *taste* factors, an implicit-feedback model of
which movies a user picks to watch at all (:mod:`ml.taste`).

What publishing needs of a model (:class:`Published`) is its ``mu``, rank and parameters and its
rows a chunk at a time: a model still in Spark (:class:`ml.training.Trained`) streams them, one
on the driver (:class:`FactorModel`) slices its arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator, Protocol

import numpy as np
import pandas as pd

MIN_RATING, MAX_RATING = 0.5, 5.0


@dataclass
class FactorModel:
    mu: float
    user_ids: np.ndarray  # (n_users,) str
    item_ids: np.ndarray  # (n_items,) str
    user_bias: np.ndarray  # (n_users,)
    item_bias: np.ndarray  # (n_items,)
    user_factors: np.ndarray  # (n_users, rank)
    item_factors: np.ndarray  # (n_items, rank)
    item_counts: np.ndarray  # (n_items,) int: ratings in the training data
    item_taste: np.ndarray  # (n_items, taste rank) float32: implicit-feedback factors
    params: dict = field(default_factory=dict)  # the hyperparameters it was trained with

    @property
    def rank(self) -> int:
        return self.item_factors.shape[1]

    def index(self, users: Iterable, items: Iterable) -> tuple[np.ndarray, np.ndarray]:
        """Positions of ids in this model's arrays; -1 for an id it has not seen."""
        u = pd.Index(self.user_ids).get_indexer(pd.Index(list(users), dtype=object).astype(str))
        i = pd.Index(self.item_ids).get_indexer(pd.Index(list(items), dtype=object).astype(str))
        return u.astype(np.int64), i.astype(np.int64)

    def raw_predict(self, u: np.ndarray, i: np.ndarray, *, factors: bool = True) -> np.ndarray:
        """Unclipped predictions for indexed pairs (-1: unseen); without factors, the baseline."""
        known_u, known_i = u >= 0, i >= 0
        out = np.full(len(u), self.mu, dtype=np.float64)
        out[known_u] += self.user_bias[u[known_u]]
        out[known_i] += self.item_bias[i[known_i]]
        both = known_u & known_i
        if factors and both.any():
            out[both] += np.einsum("ij,ij->i", self.user_factors[u[both]], self.item_factors[i[both]])
        return out

    def predict(self, users: Iterable, items: Iterable) -> np.ndarray:
        return np.clip(self.raw_predict(*self.index(users, items)), MIN_RATING, MAX_RATING)

    def predict_baseline(self, users: Iterable, items: Iterable) -> np.ndarray:
        return np.clip(self.raw_predict(*self.index(users, items), factors=False), MIN_RATING, MAX_RATING)

    def chunks(self, kind: str, size: int) -> Iterator[tuple[list[str], np.ndarray, np.ndarray, np.ndarray]]:
        """(ids, biases, vectors, counts) of ``kind`` rows ("user", "item" or "taste"), ``size`` at a time."""
        ids = self.user_ids if kind == "user" else self.item_ids
        biases = {"user": self.user_bias, "item": self.item_bias, "taste": np.zeros(len(ids))}[kind]
        vectors = {"user": self.user_factors, "item": self.item_factors, "taste": self.item_taste}[kind]
        counts = np.zeros(len(ids), dtype=int) if kind == "user" else self.item_counts
        for start in range(0, len(ids), size):
            end = start + size
            yield [str(id) for id in ids[start:end]], biases[start:end], vectors[start:end], counts[start:end]


class Published(Protocol):
    mu: float
    params: dict

    @property
    def rank(self) -> int: ...

    def chunks(self, kind: str, size: int) -> Iterator[tuple[list[str], np.ndarray, np.ndarray, np.ndarray]]: ...
