"""Movies: one movie's catalogue entry, statistics and reviews, and finding movies by title."""

from __future__ import annotations

from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response

from api.bodies import CatalogueEntries, Genres, MovieReviewsPage, MoviesPage
from api.problems import ProblemError
from api.wire import MAX_LIMIT, Offset, decode_cursor, encode_cursor, int_param, json_response, page_of
from projections import titles
from projections.store import ProjectionStore

MAX_QUERY = 100  # characters of a title search
MAX_SEARCH_LIMIT = 50
MAX_IDS = 100  # movie ids in one catalogue lookup

SearchCursor = tuple[Offset]  # how many results earlier pages held
MovieReviewsCursor = tuple[datetime, str]  # the last row's (reviewed_at, user_id)


# Plain defs: Starlette runs them in its thread pool.
def movie(request: Request) -> Response:
    store: ProjectionStore = request.app.state.store
    movie_id = request.path_params["movie_id"]
    row = store.movie(movie_id)
    if row is None:
        raise ProblemError(404, f"no movie {movie_id!r} in the catalogue or reviews")
    return json_response(row)


def movie_reviews(request: Request) -> Response:
    store: ProjectionStore = request.app.state.store
    movie_id = request.path_params["movie_id"]
    limit = int_param(request, "limit", 20, 1, MAX_LIMIT)
    cursor = request.query_params.get("cursor")
    after = decode_cursor(cursor, MovieReviewsCursor) if cursor is not None else None
    rows = store.movie_reviews(movie_id, limit + 1, after)
    if not rows and after is None and store.movie(movie_id) is None:
        raise ProblemError(404, f"no movie {movie_id!r} in the catalogue or reviews")
    page, next_cursor = page_of(rows, limit, lambda last: (last.reviewed_at, last.user_id))
    # Until the projector applies a forgetting, the store still holds the user's rows: never show them.
    gone = request.app.state.forgetting.forgotten_among([review.user_id for review in page])
    return json_response(MovieReviewsPage(movie_id, [r for r in page if r.user_id not in gone], next_cursor))


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
