"""Answers from the current model: GET /v1/match (movies a group may like together, with the
reasons) and GET /v1/movies/{id}/similar (more like this)."""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import threading
import time

import anyio
import msgspec
import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api.bodies import Match, MatchedMovie, MemberScore, MovieRef, SimilarMovie, SimilarMovies, Strategies, Strategy
from api.forgetting import refuse_forgotten
from api.problems import ProblemError
from api.wire import USER_ID_RULE, int_param, json_response
from commands.types import CommandUserId
from ml import matching
from ml.registry import decode_rows
from projections.store import ProjectionStore

MAX_GROUP = 8  # users in one /v1/match
MAX_MATCH_LIMIT = 50  # movies in one answer
MAX_EXCLUDE = 100  # movie ids in `exclude`
MAX_SIMILAR = 50  # movies in one /v1/movies/{id}/similar
YEARS = (1800, 2200)  # what a year filter may say
REFRESH_EVERY = 1.0  # seconds between looks at which model is current
FIRST_BACKOFF, MAX_BACKOFF = 5.0, 300.0  # seconds before loading a version that failed again
DECIMAL = r"[0-9]+(?:\.[0-9]+)?|\.[0-9]+"  # a weight: float() would take "1_0", " 2", "inf"


log = logging.getLogger(__name__)
# One request reads and scores at a time per process, the others waiting their turn in order: scoring
# holds the GIL, and threads taking turns on it (every 5 ms, or whenever NumPy lets go) only stretch
# every request's latency. bench.match_bench, 1 process, 16 clients: 885 requests/s, p99 24-30 ms,
# against 640/s, p99 58-60 ms with the reads in the thread pool apart and 720/s, p99 69 ms before.
# The cost: a remote store's reads (Cassandra) wait their turn too; --workers overlaps them.
_SCORING = anyio.CapacityLimiter(1)

STRATEGIES = Strategies(matching.DEFAULT_STRATEGY, [Strategy(n, line) for n, line in matching.STRATEGIES.items()])


async def strategies(request: Request) -> Response:
    return json_response(STRATEGIES)


class ItemsCache:
    """The current version's item side, loaded once per version and replaced whole.

    Requests run in the thread pool. While one request looks for or loads a new version, the others
    go on with the previous one (its rows stay in the store), so a refresh stalls nobody; a request
    holds one `Items` from start to end, so it never mixes two versions. The version is read under
    the lock, so a look that started earlier cannot load an older version over a newer one. A version
    that fails to load is tried again only after a back-off (doubling to MAX_BACKOFF): meanwhile the
    loaded version goes on serving, or, with none, requests answer 503 with Retry-After.
    """

    def __init__(self):
        self._items: matching.Items | None = None
        self._fresh_until = float("-inf")
        self._failed: _Failure | None = None
        self._lock = threading.Lock()

    def fresh(self) -> matching.Items | None:
        """The loaded version if it was current a moment ago (no store read: fine on the event loop)."""
        items = self._items
        return items if items is not None and time.monotonic() < self._fresh_until else None

    def current(self, store: ProjectionStore) -> matching.Items:
        if (items := self.fresh()) is not None:
            return items
        items = self._items
        if not self._lock.acquire(blocking=items is None):
            return items  # another request is looking
        try:
            if self._items is None or time.monotonic() >= self._fresh_until:  # not done while we waited
                self._refresh(store)
            return self._items
        finally:
            self._lock.release()

    def _refresh(self, store: ProjectionStore) -> None:
        info = store.model()
        if info is None:
            raise ProblemError(503, "no model has been trained yet: run `harmony train`", {"Retry-After": "60"})
        if self._items is None or self._items.version != info.version:
            failed = self._failed
            if failed is None or failed.version != info.version or time.monotonic() >= failed.retry_at:
                self._load(store, info)
            elif self._items is None:
                raise failed.problem()
        self._fresh_until = time.monotonic() + REFRESH_EVERY

    def _load(self, store: ProjectionStore, info) -> None:
        try:
            self._items, self._failed = matching.load_items(store, info), None
        except Exception as error:  # a version that cannot be served, or the store failing midway
            last = self._failed
            backoff = (min(2 * last.backoff, MAX_BACKOFF) if last is not None and last.version == info.version
                       else FIRST_BACKOFF)
            self._failed = _Failure(info.version, str(error), backoff, time.monotonic() + backoff)
            log.warning("model %s did not load; next try in %g s", info.version, backoff,
                        exc_info=not isinstance(error, matching.ModelError))
            if self._items is None:
                raise self._failed.problem() from None


@dataclasses.dataclass(frozen=True)
class _Failure:
    version: str
    reason: str
    backoff: float
    retry_at: float  # time.monotonic()

    def problem(self) -> ProblemError:
        wait = max(math.ceil(self.retry_at - time.monotonic()), 1)
        return ProblemError(503, f"model {self.version} cannot be served ({self.reason}); next try in {wait} s",
                            {"Retry-After": str(wait)})


def _list_param(request: Request, name: str, most: int) -> list[str]:
    values = [v for v in request.query_params.get(name, "").split(",") if v]
    if len(values) > most:
        raise ProblemError(400, f"{name}: at most {most} values")
    return values


def _users(request: Request) -> list[str]:
    users = _list_param(request, "users", MAX_GROUP)
    if not 2 <= len(set(users)) == len(users):
        raise ProblemError(400, f"users: 2 to {MAX_GROUP} different user ids, comma-separated")
    try:
        return msgspec.convert(users, list[CommandUserId])
    except msgspec.ValidationError:
        raise ProblemError(400, f"users: each {USER_ID_RULE}") from None


def _filters(request: Request) -> matching.Filters:
    """The filters but the genres, which the model's catalogue decides (:func:`_genres`)."""
    low, high = (int_param(request, name, None, *YEARS) for name in ("year_from", "year_to"))
    if low is not None and high is not None and low > high:
        raise ProblemError(400, "year_from is after year_to")
    include_seen = request.query_params.get("include_seen", "false")
    if include_seen not in ("true", "false"):
        raise ProblemError(400, "include_seen: true or false")
    return matching.Filters(years=(low, high), exclude=frozenset(_list_param(request, "exclude", MAX_EXCLUDE)),
                            include_seen=include_seen == "true")


def _genres(request: Request, items: matching.Items) -> frozenset[str]:
    genres = _list_param(request, "genres", len(items.by_genre) or 1)
    if unknown := [g for g in genres if g not in items.by_genre]:
        raise ProblemError(400, f"genres: unknown {', '.join(map(repr, unknown))}; "
                                f"known: {', '.join(items.by_genre) or 'none'}")
    return frozenset(genres)


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


def _reads(store: ProjectionStore, items: matching.Items, users: list[str]) -> tuple[dict, dict]:
    """Each user's published factors (if the model knows them) and current reviews; 404 for a user with neither."""
    ids, biases, vectors = decode_rows(store.factors(items.version, "user", users), items.factors.shape[1])
    published = {id: (bias, vector) for id, bias, vector in zip(ids.tolist(), biases.tolist(), vectors)}
    ratings = {user: store.user_ratings(user) for user in users}
    unknown = [user for user in users if user not in published and not ratings[user]
               and not store.user_history(user, 1, None, None)]
    if unknown:
        raise ProblemError(404, f"unknown users (no reviews, not in the model): {', '.join(unknown)}")
    return published, ratings


async def match(request: Request) -> Response:
    store: ProjectionStore = request.app.state.store
    users = _users(request)
    strategy = request.query_params.get("strategy", matching.DEFAULT_STRATEGY)
    if strategy not in matching.STRATEGIES:
        raise ProblemError(400, f"strategy: one of {', '.join(matching.STRATEGIES)}")
    weights = _weights(request, strategy, users)
    limit = int_param(request, "limit", 10, 1, MAX_MATCH_LIMIT)
    filters = _filters(request)
    # Only a request known to be good asks for the model. A refresh reads the store in the thread pool,
    # apart from _SCORING, so that a version loading stalls nobody.
    cache: ItemsCache = request.app.state.items
    items = cache.fresh() or await run_in_threadpool(cache.current, store)
    filters = dataclasses.replace(filters, genres=_genres(request, items))

    def answer() -> Response:
        refuse_forgotten(request, users)
        published, ratings = _reads(store, items, users)
        members = [matching.member(items, user, ratings[user], published.get(user)) for user in users]
        scored = matching.score(items, members, filters, strategy, weights, limit)
        return json_response(Match(items.version, strategy, users,
                                   [m.user_id for m in members if m.source == "folded_in"],
                                   [m.user_id for m in members if m.source == "fallback"],
                                   matched_movies(items, members, scored)))

    return await anyio.to_thread.run_sync(answer, limiter=_SCORING)


async def similar_movies(request: Request) -> Response:
    movie_id = request.path_params["movie_id"]
    limit = int_param(request, "limit", 10, 1, MAX_SIMILAR)
    cache: ItemsCache = request.app.state.items
    items = cache.fresh() or await run_in_threadpool(cache.current, request.app.state.store)
    picks = await anyio.to_thread.run_sync(matching.similar, items, movie_id, limit, limiter=_SCORING)
    if picks is None:
        raise ProblemError(404, f"movie {movie_id!r} is not in model {items.version} (too few reviews when "
                                "it was trained, or newer)")
    return json_response(SimilarMovies(movie_id, items.version, [
        SimilarMovie(items.names[p.position], items.titles[p.position], _year(items, p.position),
                     list(items.genres[p.position]), round(p.score, 4)) for p in picks]))


def _year(items: matching.Items, position: int) -> int | None:
    year = items.years[position]
    return None if np.isnan(year) else int(year)


def matched_movies(items: matching.Items, members: list[matching.Member],
                   scored: matching.Scored) -> list[MatchedMovie]:
    """The picks as the API shows them: catalogue facts, each member's side and reasons."""
    picks = scored.picks
    reasons = [matching.because(items, m, picks) for m in members]
    liked = [matching.liked_genres(items, m) for m in members]
    columns = scored.columns()
    predicted, affinity = scored.predicted[:, columns].tolist(), scored.affinity[:, columns].tolist()

    def ref(position: int) -> MovieRef:
        return MovieRef(items.names[position], items.titles[position])

    movies = []
    for n, pick in enumerate(picks):
        k = pick.position
        movies.append(MatchedMovie(
            items.names[k], items.titles[k], _year(items, k), list(items.genres[k]),
            round(pick.score, 4),
            {m.user_id: MemberScore(round(predicted[j][n], 4), round(affinity[j][n], 4),
                                    [ref(r) for r in reasons[j][n]]) for j, m in enumerate(members)},
            [g for g in items.genres[k] if all(g in genres for genres in liked)]))
    return movies
