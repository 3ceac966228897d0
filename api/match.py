"""GET /v1/match: movies a group may like together, from the current model, with the reasons."""

from __future__ import annotations

import re
import threading
import time

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from api.bodies import Match, MatchedMovie, MemberScore, MovieRef, Strategies, Strategy
from api.problems import ProblemError
from api.wire import int_param, json_response
from ml import matching
from ml.registry import decode_rows
from projections.store import ProjectionStore

MAX_GROUP = 8  # users in one /v1/match
MAX_MATCH_LIMIT = 50  # movies in one answer
MAX_EXCLUDE = 100  # movie ids in `exclude`
YEARS = (1800, 2200)  # what a year filter may say
REFRESH_EVERY = 1.0  # seconds between looks at which model is current
DECIMAL = r"[0-9]+(?:\.[0-9]+)?|\.[0-9]+"  # a weight: float() would take "1_0", " 2", "inf"


STRATEGIES = Strategies(matching.DEFAULT_STRATEGY, [Strategy(n, line) for n, line in matching.STRATEGIES.items()])


async def strategies(request: Request) -> Response:
    return json_response(STRATEGIES)


class ItemsCache:
    """The current version's item side, loaded once per version and replaced whole.

    Requests run in the thread pool. While one request loads a new version, the others go on
    with the previous one (its rows stay in the store), so a refresh stalls nobody; a request
    holds one `Items` from start to end, so it never mixes two versions.
    """

    def __init__(self):
        self._items: matching.Items | None = None
        self._fresh_until = float("-inf")
        self._lock = threading.Lock()

    def current(self, store: ProjectionStore) -> matching.Items:
        items = self._items
        if items is not None and time.monotonic() < self._fresh_until:
            return items
        info = store.model()
        if info is None:
            raise ProblemError(503, "no model has been trained yet: run `harmony train`", {"Retry-After": "60"})
        if items is not None and items.version == info.version:
            self._fresh_until = time.monotonic() + REFRESH_EVERY
            return items
        if not self._lock.acquire(blocking=items is None):
            return items  # another request is loading the new version
        try:
            if self._items is None or self._items.version != info.version:
                try:
                    self._items = matching.load_items(store, info)
                except matching.ModelError as error:
                    raise ProblemError(503, str(error), {"Retry-After": "60"}) from None
            self._fresh_until = time.monotonic() + REFRESH_EVERY
            return self._items
        finally:
            self._lock.release()


def _list_param(request: Request, name: str, most: int) -> list[str]:
    values = [v for v in request.query_params.get(name, "").split(",") if v]
    if len(values) > most:
        raise ProblemError(400, f"{name}: at most {most} values")
    return values


def _filters(request: Request, items: matching.Items) -> matching.Filters:
    genres = _list_param(request, "genres", len(items.by_genre) or 1)
    if unknown := [g for g in genres if g not in items.by_genre]:
        raise ProblemError(400, f"genres: unknown {', '.join(map(repr, unknown))}; "
                                f"known: {', '.join(items.by_genre) or 'none'}")
    low, high = (int_param(request, name, None, *YEARS) for name in ("year_from", "year_to"))
    if low is not None and high is not None and low > high:
        raise ProblemError(400, "year_from is after year_to")
    include_seen = request.query_params.get("include_seen", "false")
    if include_seen not in ("true", "false"):
        raise ProblemError(400, "include_seen: true or false")
    return matching.Filters(frozenset(genres), (low, high), frozenset(_list_param(request, "exclude", MAX_EXCLUDE)),
                            include_seen == "true")


def _weights(request: Request, strategy: str, users: list[str]) -> list[float] | None:
    raw = request.query_params.get("weights")
    if raw is None:
        return None
    if not all(re.fullmatch(DECIMAL, w) for w in raw.split(",")):
        raise ProblemError(400, "weights: numbers, comma-separated")
    weights = [float(w) for w in raw.split(",")]
    if strategy != "average" or len(weights) != len(users) or not all(0 < w < float("inf") for w in weights):
        raise ProblemError(400, "weights: one positive number per user, with strategy=average")
    return weights


def _members(store: ProjectionStore, items: matching.Items, users: list[str]) -> list[matching.Member]:
    rank = items.factors.shape[1]
    published = {row.id: row for row in store.factors(items.version, "user", users)}
    ratings = {user: store.user_ratings(user) for user in users}
    unknown = [user for user in users if user not in published and not ratings[user]
               and not store.user_history(user, 1, None, None)]
    if unknown:
        raise ProblemError(404, f"unknown users (no reviews, not in the model): {', '.join(unknown)}")
    members = []
    for user in users:
        row = published.get(user)
        factors = None
        if row is not None:
            _, bias, vectors = decode_rows([row], rank)
            factors = (float(bias[0]), vectors[0])
        members.append(matching.member(items, user, ratings[user], factors))
    return members


def match(request: Request) -> Response:  # plain def: the store reads and the scoring run in the thread pool
    store: ProjectionStore = request.app.state.store
    users = _list_param(request, "users", MAX_GROUP)
    if not 2 <= len(set(users)) == len(users):
        raise ProblemError(400, f"users: 2 to {MAX_GROUP} different user ids, comma-separated")
    strategy = request.query_params.get("strategy", matching.DEFAULT_STRATEGY)
    if strategy not in matching.STRATEGIES:
        raise ProblemError(400, f"strategy: one of {', '.join(matching.STRATEGIES)}")
    weights = _weights(request, strategy, users)
    limit = int_param(request, "limit", 10, 1, MAX_MATCH_LIMIT)
    items = request.app.state.items.current(store)
    filters = _filters(request, items)
    members = _members(store, items, users)
    predicted, affinity = matching.predictions(items, members), matching.affinities(items, members)
    picks = matching.rank(items, matching.utilities(predicted, affinity), strategy, weights,
                          matching.eligible(items, members, filters), limit)
    return json_response(Match(items.version, strategy, users, [m.user_id for m in members if m.source == "folded_in"],
                               [m.user_id for m in members if m.source == "fallback"],
                               matched_movies(items, members, picks, predicted, affinity)))


def matched_movies(items: matching.Items, members: list[matching.Member], picks: list[matching.Pick],
                   predicted, affinity) -> list[MatchedMovie]:
    """The picks as the API shows them: catalogue facts, each member's side and reasons."""
    reasons = [matching.because(items, m, picks) for m in members]
    liked = [matching.liked_genres(items, m) for m in members]

    def ref(position: int) -> MovieRef:
        return MovieRef(str(items.ids[position]), items.titles[position])

    movies = []
    for n, pick in enumerate(picks):
        k = pick.position
        year = items.years[k]
        movies.append(MatchedMovie(
            str(items.ids[k]), items.titles[k], None if np.isnan(year) else int(year), list(items.genres[k]),
            round(pick.score, 4),
            {m.user_id: MemberScore(round(float(predicted[j, k]), 4), round(float(affinity[j, k]), 4),
                                    [ref(r) for r in reasons[j][n]]) for j, m in enumerate(members)},
            [g for g in items.genres[k] if all(g in genres for genres in liked)]))
    return movies
