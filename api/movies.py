"""Movies: one movie's catalogue entry and statistics, and finding movies by title."""

from __future__ import annotations

import logging
import threading
import time

from starlette.requests import Request
from starlette.responses import Response

from api.bodies import CatalogueEntries, Genres, MoviesPage
from api.problems import ProblemError
from api.wire import Offset, decode_cursor, encode_cursor, int_param, json_response
from projections.store import ProjectionStore
from projections.titles import TitleIndex, folded_words

MAX_QUERY = 100  # characters of a title search
MAX_SEARCH_LIMIT = 50
MAX_IDS = 100  # movie ids in one catalogue lookup
REFRESH_EVERY = 30.0  # seconds: a newly catalogued movie is found within about this long

SearchCursor = tuple[Offset]  # how many results earlier pages held

log = logging.getLogger(__name__)


class TitleCache:
    """The catalogue's title index, built from the catalogue projection.

    The first search builds it. A search that finds it older than REFRESH_EVERY starts a rebuild in
    a background thread and is answered from the index it has, so no request waits on a rebuild."""

    def __init__(self):
        self._index: TitleIndex | None = None
        self._built = float("-inf")
        self._rebuilding = False
        self._lock = threading.Lock()

    def current(self, store: ProjectionStore) -> TitleIndex:
        with self._lock:
            index = self._index
            if index is not None and not self._rebuilding and time.monotonic() - self._built >= REFRESH_EVERY:
                self._rebuilding = True
                threading.Thread(target=self._rebuild, args=(store,), name="title-index", daemon=True).start()
        if index is None:
            with self._lock:  # the first build: every search waits for it
                if self._index is None:
                    self._index, self._built = TitleIndex(store.catalogue()), time.monotonic()
                index = self._index
        return index

    def _rebuild(self, store: ProjectionStore) -> None:
        started = time.monotonic()  # what is catalogued while it reads is seen next time
        try:
            index = TitleIndex(store.catalogue())
        except Exception:  # noqa: BLE001 - searches go on with the index they have, tried again later
            log.exception("could not rebuild the title index")
            index = self._index
        with self._lock:
            self._index, self._built, self._rebuilding = index, started, False


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
    (start,) = decode_cursor(cursor, SearchCursor) if cursor is not None else (0,)
    total, found = request.app.state.titles.current(request.app.state.store).search(query, start, limit)
    end = start + limit
    return json_response(MoviesPage(query, total, found, encode_cursor((end,)) if end < total else None))


def catalogue_entries(request: Request) -> Response:
    ids = [m for m in request.query_params.get("ids", "").split(",") if m]
    if not 1 <= len(ids) <= MAX_IDS:
        raise ProblemError(400, f"ids: 1 to {MAX_IDS} movie ids, comma-separated")
    index = request.app.state.titles.current(request.app.state.store)
    return json_response(CatalogueEntries(index.entries(ids)))


def genres(request: Request) -> Response:
    index = request.app.state.titles.current(request.app.state.store)
    return json_response(Genres(index.genres()))
