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

A request scores *candidates* only (:func:`score`): of the eligible movies, the group's
``CANDIDATES`` best by the product of the members' affinities (the default strategy's taste half)
and, for the strategies that can pick a movie one member would not, each member's best by
affinity; the strategy then ranks those exactly. ``borda`` and ``fair`` score every eligible
movie: their scores are ranks among them. The affinities are one cheap product (taste rank
20, over the version's movies with enough evidence, ``Items.pool``); the rating side and
everything after it run on a few hundred movies whatever the catalogue's size. ``harmony evaluate
pairs`` measures the default strategy against ``exhaustive`` scoring.

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
CANDIDATES = 100  # movies per member and for the group that a request scores exactly
ALL_MEMBERS = frozenset({"multiplicative", "least_misery"})  # 0 unless every member's utility is positive
BY_RANK = frozenset({"borda", "fair"})  # from each member's ranks over every eligible movie: no candidates


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
    names: list[str] = field(init=False)  # the ids as Python strings, for answers
    position: dict[str, int] = field(init=False)  # movie id -> its place in the arrays
    taste_gram: np.ndarray = field(init=False)
    unit_taste: np.ndarray = field(init=False)  # rows of length 1: cosine similarity by a product
    popularity: np.ndarray = field(init=False)  # the fallback affinity, counts scaled to [0, 1]
    evidenced: np.ndarray = field(init=False)  # movies with at least min_reviews training ratings
    baseline: np.ndarray = field(init=False)  # mu + b_i, float32: every prediction starts from it
    pool: np.ndarray = field(init=False)  # positions of the evidenced movies: all a request may pick from
    pool_taste_t: np.ndarray = field(init=False)  # their taste factors, transposed, contiguous: one product
    by_genre: dict[str, np.ndarray] = field(init=False)  # genre -> movies with it (bool)

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "names", self.ids.tolist())
        set_(self, "position", {id: k for k, id in enumerate(self.names)})
        set_(self, "taste_gram", taste.gram(self.taste))
        norms = np.linalg.norm(self.taste, axis=1, keepdims=True)
        set_(self, "unit_taste", np.divide(self.taste, norms, out=np.zeros_like(self.taste), where=norms > 0))
        set_(self, "popularity", self.counts / max(int(self.counts.max(initial=0)), 1))
        set_(self, "evidenced", self.counts >= self.min_reviews)
        set_(self, "baseline", (self.mu + self.bias).astype(np.float32))
        set_(self, "pool", np.flatnonzero(self.evidenced))
        set_(self, "pool_taste_t", np.ascontiguousarray(self.taste[self.pool].T))
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


def predictions(items: Items, members: list[Member], positions) -> np.ndarray:
    """(members, positions) predicted ratings, on the rating scale (float32, computed in place)."""
    vectors = np.stack([m.vector for m in members]).astype(np.float32)
    out = vectors @ np.take(items.factors, positions, axis=0).T  # take: 4x faster than [positions]
    out += np.take(items.baseline, positions)
    out += np.array([[m.bias] for m in members], dtype=np.float32)
    return np.clip(out, MIN_RATING, MAX_RATING, out=out)


def affinities(items: Items, members: list[Member], positions) -> np.ndarray:
    """(members, positions) taste scores; the fallback's is popularity."""
    vectors = np.stack([np.zeros(items.taste.shape[1]) if m.taste is None else m.taste for m in members])
    # The version's pool has its transposed copy (computed once); other positions are gathered.
    taste_t = items.pool_taste_t if positions is items.pool else np.take(items.taste, positions, axis=0).T
    out = vectors.astype(np.float32) @ taste_t
    for n, m in enumerate(members):
        if m.taste is None:
            out[n] = np.take(items.popularity, positions)
    return out


def utilities(predicted: np.ndarray, affinity: np.ndarray) -> np.ndarray:
    return np.maximum(affinity, 0.0) * (predicted - MIN_RATING)


def _pool(items: Items, filters: Filters) -> np.ndarray:
    return items.pool if filters.min_reviews is None else np.flatnonzero(items.counts >= filters.min_reviews)


def _kept(items: Items, members: list[Member], filters: Filters, pool: np.ndarray) -> np.ndarray:
    """Which of the ``pool`` (bool) pass the filters and were not seen by a member."""
    keep = np.ones(len(pool), bool)
    if filters.genres:
        keep &= np.logical_or.reduce([items.by_genre[g][pool] for g in filters.genres if g in items.by_genre]
                                     or [np.zeros(len(pool), bool)])
    low, high = filters.years
    if low is not None:
        keep &= items.years[pool] >= low  # nan compares False: a movie without a year is left out
    if high is not None:
        keep &= items.years[pool] <= high
    leave_out = items.positions(filters.exclude)
    if not filters.include_seen:
        leave_out = np.concatenate([leave_out, *(m.reviewed for m in members)])
    if len(pool) and len(leave_out):
        at = np.minimum(np.searchsorted(pool, leave_out), len(pool) - 1)
        keep[at[pool[at] == leave_out]] = False
    return keep


def eligible(items: Items, members: list[Member], filters: Filters) -> np.ndarray:
    """Positions, ascending, of the movies that may be recommended: enough evidence, the filters,
    not seen by a member."""
    pool = _pool(items, filters)
    return pool[_kept(items, members, filters, pool)]


def candidates(affinity: np.ndarray, keep: np.ndarray, count: int, strategy: str) -> np.ndarray:
    """Indices (ascending) of kept columns of ``affinity``: the group's ``count`` best by the
    product of their affinities and, unless the strategy scores 0 whenever a member's affinity is
    not positive (``ALL_MEMBERS``), each member's ``count`` best."""
    if np.count_nonzero(keep) <= count:
        return np.flatnonzero(keep)
    clipped = np.maximum(affinity, 0.0)
    clipped *= keep
    rows = [clipped.prod(axis=0)] if strategy in ALL_MEMBERS else [*clipped, clipped.prod(axis=0)]
    chosen = np.zeros(len(keep), bool)
    for row in rows:
        positive = row[row > 0]  # partitioned without the zeros, whose ties slow NumPy's partition 6x
        if len(positive) > count:
            chosen |= row >= np.partition(positive, len(positive) - count)[len(positive) - count]
        else:  # all of them, and the first at 0 in position order
            chosen |= row > 0
            chosen[np.flatnonzero(keep & (row == 0))[:count - len(positive)]] = True
    return np.flatnonzero(chosen)


@dataclass(frozen=True)
class Scored:
    """A request's scored movies: positions (ascending), each member's prediction and affinity
    for them, and the picks among them."""

    positions: np.ndarray
    predicted: np.ndarray  # (members, positions)
    affinity: np.ndarray
    picks: list[Pick]

    def columns(self) -> np.ndarray:
        """Each pick's column in ``predicted`` and ``affinity``."""
        return np.searchsorted(self.positions, [p.position for p in self.picks])


def score(items: Items, members: list[Member], filters: Filters, strategy: str, weights: list[float] | None,
          limit: int, top: int | None = CANDIDATES) -> Scored:
    """The group's best ``limit`` eligible movies by ``strategy``, ranked exactly among the
    :func:`candidates`, ``top`` of each kind (None: among every eligible movie)."""
    positions = _pool(items, filters)
    keep = _kept(items, members, filters, positions)
    affinity = affinities(items, members, positions)  # all the pool's: one product, no gather
    chosen = np.flatnonzero(keep) if top is None or strategy in BY_RANK else candidates(affinity, keep, top, strategy)
    positions, affinity = positions[chosen], np.take(affinity, chosen, axis=1)
    predicted = predictions(items, members, positions)
    return Scored(positions, predicted, affinity,
                  rank(utilities(predicted, affinity), strategy, weights, positions, limit))


def _top(scores: np.ndarray, positions: np.ndarray, limit: int) -> list[Pick]:
    """The best ``limit`` by score, equal scores in the model's order (by id for a published
    model), so a shorter list is the start of a longer one. ``positions`` ascending."""
    count = min(limit, len(positions))
    cut = np.partition(scores, len(scores) - count)[len(scores) - count]
    best = np.flatnonzero(scores >= cut)  # every tie at the cut, in position order
    best = best[np.argsort(-scores[best], kind="stable")[:count]]
    return [Pick(int(positions[k]), float(scores[k])) for k in best]


def rank_points(utility: np.ndarray) -> np.ndarray:
    """(members, movies) Borda points: n - 1 for a member's best movie down to 0; equal
    utilities share their mean, so a member's indifference decides nothing."""
    points = np.empty(utility.shape)
    for n, row in enumerate(utility):
        _, inverse, counts = np.unique(row, return_inverse=True, return_counts=True)
        below = np.cumsum(counts) - counts  # movies worse than each distinct value
        points[n] = (below + (counts - 1) / 2)[inverse]
    return points


def _fair(utility: np.ndarray, positions: np.ndarray, limit: int) -> list[Pick]:
    """GFAR: a member finds a movie relevant with a probability falling linearly over their top
    ``FAIR_POOL``; each pick maximises the chance that a member not yet served finds it relevant."""
    pool = min(FAIR_POOL, len(positions))
    relevance = np.maximum(rank_points(utility) - (len(positions) - pool), 0.0) / pool
    unserved = np.ones(len(utility))
    left = np.ones(len(positions), bool)
    picks = []
    for _ in range(min(limit, len(positions))):
        gain = np.where(left, unserved @ relevance, -np.inf)
        best = int(np.argmax(gain))  # of equal gains, the first in the model's order
        if gain[best] <= 0:
            break
        picks.append(Pick(int(positions[best]), float(gain[best])))
        unserved *= 1.0 - relevance[:, best]
        left[best] = False
    return picks


def rank(utility: np.ndarray, strategy: str, weights: list[float] | None, positions: np.ndarray,
         limit: int) -> list[Pick]:
    """The group's best ``limit`` of the movies at ``positions`` (ascending), by ``strategy`` over
    the members' (members, positions) utilities."""
    if not len(positions):
        return []
    utility = utility.astype(np.float64, copy=False)  # NumPy partitions float32 4x slower
    if strategy == "fair":
        return _fair(utility, positions, limit)
    if strategy == "average":
        scores = np.average(utility, axis=0, weights=weights)
    elif strategy == "least_misery":
        scores = utility.min(axis=0)
    elif strategy == "most_pleasure":
        scores = utility.max(axis=0)
    elif strategy == "multiplicative":
        scores = utility.prod(axis=0)
    elif strategy == "borda":
        scores = rank_points(utility).sum(axis=0)
    else:
        raise ValueError(f"unknown strategy {strategy!r}: one of {', '.join(STRATEGIES)}")
    return _top(scores, positions, limit)


def because(items: Items, member: Member, picks: list[Pick]) -> list[list[int]]:
    """Per pick, up to ``REASONS`` positions of the member's own liked movies most like it
    (cosine similarity of taste factors, positive only), most similar first."""
    if not len(member.liked) or not picks:
        return [[] for _ in picks]
    similarity = (np.take(items.unit_taste, [p.position for p in picks], axis=0)
                  @ np.take(items.unit_taste, member.liked, axis=0).T)
    best = np.argsort(-similarity, axis=1, kind="stable")[:, :REASONS]
    alike = np.take_along_axis(similarity, best, axis=1) > 0
    return [liked[ok].tolist() for liked, ok in zip(member.liked[best], alike)]


def similar(items: Items, movie_id: str, limit: int) -> list[Pick] | None:
    """The ``limit`` movies with evidence most like this one (cosine similarity of taste factors:
    picked by the same people), positive similarity only; None if the model does not know it."""
    k = items.position.get(movie_id)
    if k is None:
        return None
    positions = items.pool[items.pool != k]
    similarity = np.take(items.unit_taste, positions, axis=0) @ items.unit_taste[k]
    return [pick for pick in _top(similarity, positions, limit) if pick.score > 0] if len(positions) else []


def liked_genres(items: Items, member: Member) -> set[str]:
    return {genre for k in member.liked.tolist() for genre in items.genres[k]}
