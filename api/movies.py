"""Movies: one movie's catalogue entry and statistics, and finding movies by title."""

from __future__ import annotations

import threading
import time

from starlette.requests import Request
from starlette.responses import Response

from api.bodies import Genres, MoviesPage
from api.problems import ProblemError
from api.wire import decode_cursor, encode_cursor, int_param, json_response
from projections.store import ProjectionStore
from projections.titles import TitleIndex, folded_words

MAX_QUERY = 100  # characters of a title search
MAX_SEARCH_LIMIT = 50
REFRESH_EVERY = 10.0  # seconds: a newly catalogued movie is found within this long

SearchCursor = tuple[int]  # how many results earlier pages held


class TitleCache:
    """The catalogue's title index, built from the catalogue projection and rebuilt when it is older
    than REFRESH_EVERY. One request rebuilds it while the others search the previous one."""

    def __init__(self):
        self._index: TitleIndex | None = None
        self._built = float("-inf")
        self._lock = threading.Lock()

    def _stale(self) -> bool:
        return time.monotonic() - self._built >= REFRESH_EVERY

    def current(self, store: ProjectionStore) -> TitleIndex:
        index = self._index
        if index is not None and not self._stale():
            return index
        if not self._lock.acquire(blocking=index is None):
            return index  # another request is rebuilding it
        try:
            if self._index is None or self._stale():
                started = time.monotonic()  # what is catalogued while it reads is seen next time
                self._index = TitleIndex(store.catalogue())
                self._built = started
            return self._index
        finally:
            self._lock.release()


# Plain defs: Starlette runs them in its thread pool.
def movie(request: Request) -> Response:
    store: ProjectionStore = request.app.state.store
    movie_id = request.path_params["movie_id"]
    row = store.movie(movie_id)
    if row is None:
        raise ProblemError(404, f"no movie {movie_id!r} in the catalogue or reviews")
    return json_response(row)


def search_movies(request: Request) -> Response:
    query = request.query_params.get("q", "")
    if not query.strip() or len(query) > MAX_QUERY:
        raise ProblemError(400, f"q: part of a title, 1 to {MAX_QUERY} characters")
    if not folded_words(query):
        raise ProblemError(400, "q: has no letters or digits to look for")
    limit = int_param(request, "limit", 10, 1, MAX_SEARCH_LIMIT)
    cursor = request.query_params.get("cursor")
    (start,) = decode_cursor(cursor, SearchCursor) if cursor else (0,)
    if start < 0:
        raise ProblemError(400, "cursor is not one this API gave out")
    found = request.app.state.titles.current(request.app.state.store).search(query)
    end = start + limit
    return json_response(MoviesPage(query, len(found), found[start:end],
                                    encode_cursor((end,)) if end < len(found) else None))


def genres(request: Request) -> Response:
    index = request.app.state.titles.current(request.app.state.store)
    return json_response(Genres(index.genres()))
