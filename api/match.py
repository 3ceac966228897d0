"""GET /v1/match: movies a group may like together, scored from the current model's factors."""

from __future__ import annotations

import threading

from starlette.requests import Request
from starlette.responses import Response

from api.bodies import Match, MatchedMovie, MemberScore
from api.problems import ProblemError
from api.wire import MAX_LIMIT, int_param, json_response
from ml import matching
from projections.store import ProjectionStore

MAX_GROUP = 8  # users in one /v1/match
MAX_MEMBER_REVIEWS = 100_000  # reviews read per user to fold them in and to leave out what they saw


class ItemsCache:
    """The current version's item side, loaded once. Requests run in the thread pool: the lock
    makes a new version load once, not once per request that sees it first."""

    def __init__(self):
        self._items: matching.Items | None = None
        self._lock = threading.Lock()

    def current(self, store: ProjectionStore) -> matching.Items:
        info = store.model()
        if info is None:
            raise ProblemError(503, "no model has been trained yet: run `harmony train`", {"Retry-After": "60"})
        with self._lock:
            if self._items is None or self._items.info.version != info.version:
                self._items = matching.Items.load(store, info)
            return self._items


def match(request: Request) -> Response:  # plain def: the store reads and the scoring run in the thread pool
    store: ProjectionStore = request.app.state.store
    users = [u for u in request.query_params.get("users", "").split(",") if u]
    if not 2 <= len(set(users)) == len(users) <= MAX_GROUP:
        raise ProblemError(400, f"users: 2 to {MAX_GROUP} different user ids, comma-separated")
    strategy = request.query_params.get("strategy", "average")
    if strategy not in matching.STRATEGIES:
        raise ProblemError(400, f"strategy: one of {', '.join(matching.STRATEGIES)}")
    weights = None
    if raw := request.query_params.get("weights"):
        try:
            weights = [float(w) for w in raw.split(",")]
        except ValueError:  # float() of a non-number
            raise ProblemError(400, "weights: numbers, comma-separated") from None
        if strategy != "average" or len(weights) != len(users) or not all(0 < w < float("inf") for w in weights):
            raise ProblemError(400, "weights: one positive number per user, with strategy=average")
    limit = int_param(request, "limit", 10, 1, MAX_LIMIT)
    include_seen = request.query_params.get("include_seen", "false")
    if include_seen not in ("true", "false"):
        raise ProblemError(400, "include_seen: true or false")
    items = request.app.state.items.current(store)
    members = [
        matching.member(store, items, user, {r.movie_id: r.rating
                                             for r in store.user_reviews(user, MAX_MEMBER_REVIEWS, None)})
        for user in users
    ]
    ranked = matching.best(items, members, strategy, weights, limit, include_seen == "true")
    movies = []
    for movie_id, score, predicted in ranked:
        row = store.movie(movie_id)
        movies.append(MatchedMovie(movie_id, row.title if row else None, round(score, 4),
                                   {user: MemberScore(round(p, 4)) for user, p in predicted.items()}))
    return json_response(Match(items.info.version, strategy, users, [m.user_id for m in members if m.folded_in],
                               movies))
