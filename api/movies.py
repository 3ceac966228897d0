"""Movies: one movie's catalogue entry and statistics, and finding movies by title."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from api.bodies import CatalogueEntries, Genres, MoviesPage
from api.problems import ProblemError
from api.wire import Offset, decode_cursor, encode_cursor, int_param, json_response
from projections import titles
from projections.store import ProjectionStore

MAX_QUERY = 100  # characters of a title search
MAX_SEARCH_LIMIT = 50
MAX_IDS = 100  # movie ids in one catalogue lookup

SearchCursor = tuple[Offset]  # how many results earlier pages held


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
    if not titles.folded_words(query):
        raise ProblemError(400, "q: has no letters or digits to look for")
    limit = int_param(request, "limit", 10, 1, MAX_SEARCH_LIMIT)
    cursor = request.query_params.get("cursor")
    (start,) = decode_cursor(cursor, SearchCursor) if cursor is not None else (0,)
    total, found = titles.search(request.app.state.store, query, start, limit)
    end = start + limit
    return json_response(MoviesPage(query, total, found, encode_cursor((end,)) if end < total else None))


def catalogue_entries(request: Request) -> Response:
    ids = [m for m in request.query_params.get("ids", "").split(",") if m]
    if not 1 <= len(ids) <= MAX_IDS:
        raise ProblemError(400, f"ids: 1 to {MAX_IDS} movie ids, comma-separated")
    found = {entry.movie_id: entry for entry in request.app.state.store.catalogue_entries(ids)}
    return json_response(CatalogueEntries([found[m] for m in ids if m in found]))


def genres(request: Request) -> Response:
    return json_response(Genres(request.app.state.store.genres()))
