"""Movies for a group: each member's utility for every movie, combined by a strategy, explained.

A member's *utility* for a movie is how likely they are to pick it times how much they would
like it: ``max(affinity, 0) * (predicted - 0.5)``.

* ``predicted`` is the published rating model (:mod:`ml.factors`). A member the model knows uses
  their published bias and vector; a member newer than the model is *folded in*: their bias and
  vector are solved from their current reviews with the item side fixed (the ridge problem ALS
  solves for one user).
* ``affinity`` is the taste model (:mod:`ml.taste`), solved from the member's current reviews.

Ranked by predicted rating alone, a list fills with films a handful of people rated highly; the
affinity puts what people actually watch first (``harmony evaluate pairs`` measures both). Movies
with fewer than the model's ``min_reviews`` training ratings are never recommended.

A member with no review of a movie the model knows, and unknown to the model, gets the
*fallback*: the baseline rating ``mu + b_i`` and popularity as affinity (popular and well rated),
and is flagged as such.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from events.errors import HarmonyError
from ml import taste
from ml.factors import MAX_RATING, MIN_RATING, FactorModel
from ml.registry import decode_rows, taste_rank
from projections.store import CatalogueEntry, ModelInfo, ProjectionStore

# One line each: the API's OpenAPI description and the website show them.
STRATEGIES = {
    "average": "the mean of the members' utilities, weighted by `weights` if given",
    "least_misery": "the lowest member's utility: nobody is left out",
    "most_pleasure": "the highest member's utility: someone will love it",
    "multiplicative": "the product of the members' utilities: good only if good for everyone",
    "borda": "the sum of each member's rank points over the eligible movies (Borda count)",
    "fair": "GFAR (Kaya et al., RecSys 2020): each pick favours the members the list so far serves least",
}
DEFAULT_STRATEGY = "multiplicative"  # the best group nDCG@10 in `harmony evaluate pairs` (README)
LIKED = 4.0  # a member's own rating from which a movie explains a pick
REASONS = 3  # liked movies named per member and pick
FAIR_POOL = 100  # GFAR: each member's top movies that count as relevant to them


@dataclass(frozen=True)
class Items:
    """The item side of one model version and the catalogue facts about its movies; immutable,
    so a reader swaps the whole of it when the model changes."""

    version: str
    mu: float
    params: dict
    ids: np.ndarray  # str, the model's order
    bias: np.ndarray
    factors: np.ndarray  # (items, rank) float32
    counts: np.ndarray  # training ratings per movie
    taste: np.ndarray  # (items, taste rank) float32
    titles: list[str | None]
    years: np.ndarray  # float, nan when unknown
    genres: list[tuple[str, ...]]
    position: dict[str, int] = field(init=False)  # movie id -> its place in the arrays
    taste_gram: np.ndarray = field(init=False)
    unit_taste: np.ndarray = field(init=False)  # rows of length 1: cosine similarity by a product
    popularity: np.ndarray = field(init=False)  # the fallback affinity, counts scaled to [0, 1]
    evidenced: np.ndarray = field(init=False)  # movies with at least min_reviews training ratings
    baseline: np.ndarray = field(init=False)  # mu + b_i, float32: every prediction starts from it
    # Transposed copies, contiguous: a request's products stream them from memory (1.6x faster).
    factors_t: np.ndarray = field(init=False)
    taste_t: np.ndarray = field(init=False)
    by_genre: dict[str, np.ndarray] = field(init=False)  # genre -> movies with it (bool)

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "position", {str(id): k for k, id in enumerate(self.ids)})
        set_(self, "taste_gram", taste.gram(self.taste))
        norms = np.linalg.norm(self.taste, axis=1, keepdims=True)
        set_(self, "unit_taste", np.divide(self.taste, norms, out=np.zeros_like(self.taste), where=norms > 0))
        set_(self, "popularity", self.counts / max(int(self.counts.max(initial=0)), 1))
        set_(self, "evidenced", self.counts >= self.min_reviews)
        set_(self, "baseline", (self.mu + self.bias).astype(np.float32))
        set_(self, "factors_t", np.ascontiguousarray(self.factors.T))
        set_(self, "taste_t", np.ascontiguousarray(self.taste.T))
        names = sorted({genre for genres in self.genres for genre in genres})
        set_(self, "by_genre", {name: np.array([name in genres for genres in self.genres]) for name in names})

    @property
    def min_reviews(self) -> int:
        return int(self.params.get("min_reviews", 0))

    def positions(self, movie_ids) -> np.ndarray:
        """Each id's place in the arrays, -1 for a movie the model does not know."""
        get = self.position.get
        return np.fromiter((get(m, -1) for m in movie_ids), dtype=np.int64)

    @classmethod
    def of(cls, version: str, model: FactorModel, catalogue: dict[str, CatalogueEntry]) -> "Items":
        entries = [catalogue.get(str(id)) for id in model.item_ids]
        return cls(version, model.mu, model.params, model.item_ids.astype(str), model.item_bias,
                   model.item_factors.astype(np.float32), np.asarray(model.item_counts),
                   model.item_taste.astype(np.float32), [e.title if e else None for e in entries],
                   np.array([e.year if e and e.year is not None else np.nan for e in entries], dtype=float),
                   [tuple(e.genres) if e else () for e in entries])


class ModelError(HarmonyError):
    """The current model cannot be served (published before the taste model existed)."""


def load_items(store: ProjectionStore, info: ModelInfo) -> Items:
    """A published version's item side from the store, with the catalogue entries of its movies."""
    rows = store.factors(info.version, "item")
    ids, bias, factors = decode_rows(rows, info.rank)
    taste_ids, _, taste_factors = decode_rows(store.factors(info.version, "taste"), taste_rank(info))
    if not np.array_equal(ids, taste_ids):
        raise ModelError(f"model {info.version} has no taste factors: run `harmony train` again")
    model = FactorModel(info.mu, np.array([], dtype=str), ids, np.zeros(0), bias, np.zeros((0, info.rank)), factors,
                        np.array([row.count for row in rows], dtype=np.int64), taste_factors, dict(info.params))
    return Items.of(info.version, model, {entry.movie_id: entry for entry in store.catalogue()})


@dataclass(frozen=True)
class Member:
    user_id: str
    ratings: dict[str, float]  # their current reviews: movie id -> rating
    reviewed: np.ndarray  # positions of the reviewed movies the model knows
    liked: np.ndarray  # those of them rated LIKED or more
    bias: float
    vector: np.ndarray
    taste: np.ndarray | None  # None: no usable reviews, popularity stands in
    source: str  # "model", "folded_in" or "fallback"


@dataclass(frozen=True)
class Filters:
    genres: frozenset[str] = frozenset()  # movies with any of them; empty: every genre
    years: tuple[int | None, int | None] = (None, None)  # inclusive; a movie without a year fails a bound
    exclude: frozenset[str] = frozenset()
    include_seen: bool = False
    min_reviews: int | None = None  # None: the model's


@dataclass(frozen=True)
class Pick:
    position: int
    score: float


def fold_in_rating(items: Items, positions: np.ndarray, ratings: np.ndarray) -> tuple[float, np.ndarray]:
    """Bias and vector for a user the model has not seen, from their ratings of known movies
    (``reg`` scaled by the number of ratings for the vector, ``reg_user`` for the bias, as in training)."""
    rank = items.factors.shape[1]
    features = np.column_stack([items.factors[positions].astype(np.float64), np.ones(len(positions))])
    target = ratings - items.mu - items.bias[positions]
    penalty = np.full(rank + 1, float(items.params.get("reg", 0.1)) * len(positions))
    penalty[-1] = float(items.params.get("reg_user", 5.0))
    solution = np.linalg.solve(features.T @ features + np.diag(penalty), features.T @ target)
    return float(solution[-1]), solution[:-1]


def member(items: Items, user_id: str, ratings: dict[str, float],
           published: tuple[float, np.ndarray] | None) -> Member:
    """A member from their current reviews and, if the model knows them, their published factors."""
    positions = items.positions(ratings)
    values = np.fromiter(ratings.values(), dtype=float, count=len(ratings))
    known = positions >= 0
    reviewed, values = positions[known], values[known]
    liked = reviewed[values >= LIKED]
    user_taste = None
    if len(reviewed):
        user_taste = taste.fold_in(items.taste, items.taste_gram, reviewed,
                                   alpha=float(items.params.get("taste_alpha", 1.0)),
                                   reg=float(items.params.get("taste_reg", 0.1)))
    if published is not None:
        return Member(user_id, ratings, reviewed, liked, published[0], published[1], user_taste, "model")
    if len(reviewed):
        bias, vector = fold_in_rating(items, reviewed, values)
        return Member(user_id, ratings, reviewed, liked, bias, vector, user_taste, "folded_in")
    return Member(user_id, ratings, reviewed, liked, 0.0, np.zeros(items.factors.shape[1]), None, "fallback")


def predictions(items: Items, members: list[Member]) -> np.ndarray:
    """(members, items) predicted ratings, on the rating scale (float32, computed in place: this
    is most of a request's work)."""
    vectors = np.stack([m.vector for m in members]).astype(np.float32)
    out = vectors @ items.factors_t
    out += items.baseline
    out += np.array([[m.bias] for m in members], dtype=np.float32)
    return np.clip(out, MIN_RATING, MAX_RATING, out=out)


def affinities(items: Items, members: list[Member]) -> np.ndarray:
    """(members, items) taste scores; the fallback's is popularity."""
    vectors = np.stack([np.zeros(items.taste.shape[1]) if m.taste is None else m.taste for m in members])
    out = vectors.astype(np.float32) @ items.taste_t
    for n, m in enumerate(members):
        if m.taste is None:
            out[n] = items.popularity
    return out


def utilities(predicted: np.ndarray, affinity: np.ndarray) -> np.ndarray:
    return np.maximum(affinity, 0.0) * (predicted - MIN_RATING)


def eligible(items: Items, members: list[Member], filters: Filters) -> np.ndarray:
    """Which movies may be recommended: enough evidence, the filters, not seen by a member."""
    mask = items.evidenced.copy() if filters.min_reviews is None else items.counts >= filters.min_reviews
    if filters.genres:
        mask &= np.logical_or.reduce([items.by_genre.get(g, np.zeros(len(mask), bool)) for g in filters.genres])
    low, high = filters.years
    if low is not None:
        mask &= items.years >= low  # nan compares False: a movie without a year is left out
    if high is not None:
        mask &= items.years <= high
    leave_out = items.positions(filters.exclude)
    if not filters.include_seen:
        leave_out = np.concatenate([leave_out, *(m.reviewed for m in members)])
    mask[leave_out[leave_out >= 0]] = False
    return mask


def _top(items: Items, scores: np.ndarray, candidates: np.ndarray, limit: int) -> list[Pick]:
    """The best ``limit`` candidates by score, equal scores in the model's order (by id for a
    published model), so a shorter list is the start of a longer one."""
    count = min(limit, len(candidates))
    if not count:
        return []
    cut = np.partition(scores[candidates], len(candidates) - count)[len(candidates) - count]
    best = candidates[scores[candidates] >= cut]  # every tie at the cut, in position order
    best = best[np.argsort(-scores[best], kind="stable")[:count]]
    return [Pick(int(k), float(scores[k])) for k in best]


def rank_points(utility: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """(members, candidates) Borda points: n - 1 for a member's best candidate down to 0; equal
    utilities share their mean, so a member's indifference decides nothing."""
    points = np.empty((len(utility), len(candidates)))
    for n, row in enumerate(utility[:, candidates]):
        _, inverse, counts = np.unique(row, return_inverse=True, return_counts=True)
        below = np.cumsum(counts) - counts  # candidates worse than each distinct value
        points[n] = (below + (counts - 1) / 2)[inverse]
    return points


def _fair(items: Items, utility: np.ndarray, candidates: np.ndarray, limit: int) -> list[Pick]:
    """GFAR: a member finds a movie relevant with a probability falling linearly over their top
    ``FAIR_POOL``; each pick maximises the chance that a member not yet served finds it relevant."""
    pool = min(FAIR_POOL, len(candidates))
    if not pool:
        return []
    relevance = np.maximum(rank_points(utility, candidates) - (len(candidates) - pool), 0.0) / pool
    unserved = np.ones(len(utility))
    left = np.ones(len(candidates), bool)
    picks = []
    for _ in range(min(limit, len(candidates))):
        gain = np.where(left, unserved @ relevance, -np.inf)
        best = int(np.argmax(gain))  # of equal gains, the first in the model's order
        if gain[best] <= 0:
            break
        picks.append(Pick(int(candidates[best]), float(gain[best])))
        unserved *= 1.0 - relevance[:, best]
        left[best] = False
    return picks


def rank(items: Items, utility: np.ndarray, strategy: str, weights: list[float] | None, mask: np.ndarray,
         limit: int) -> list[Pick]:
    """The group's best ``limit`` movies among ``mask``, by ``strategy`` over the members' utilities."""
    candidates = np.flatnonzero(mask)
    utility = utility.astype(np.float64, copy=False)  # NumPy partitions float32 4x slower
    if strategy == "fair":
        return _fair(items, utility, candidates, limit)
    if strategy == "average":
        scores = np.average(utility, axis=0, weights=weights)
    elif strategy == "least_misery":
        scores = utility.min(axis=0)
    elif strategy == "most_pleasure":
        scores = utility.max(axis=0)
    elif strategy == "multiplicative":
        scores = utility.prod(axis=0)
    elif strategy == "borda":
        scores = np.zeros(len(items.ids))
        if len(candidates):
            scores[candidates] = rank_points(utility, candidates).sum(axis=0)
    else:
        raise ValueError(f"unknown strategy {strategy!r}: one of {', '.join(STRATEGIES)}")
    return _top(items, scores, candidates, limit)


def because(items: Items, member: Member, picks: list[Pick]) -> list[list[int]]:
    """Per pick, up to ``REASONS`` positions of the member's own liked movies most like it
    (cosine similarity of taste factors, positive only), most similar first."""
    if not len(member.liked) or not picks:
        return [[] for _ in picks]
    similarity = items.unit_taste[[p.position for p in picks]] @ items.unit_taste[member.liked].T
    best = np.argsort(-similarity, axis=1, kind="stable")[:, :REASONS]
    return [[int(member.liked[k]) for k in row if similarity[n, k] > 0] for n, row in enumerate(best)]


def liked_genres(items: Items, member: Member) -> set[str]:
    return {genre for k in member.liked for genre in items.genres[k]}
