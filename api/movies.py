"""A movie: its catalogue entry and the statistics of its current reviews."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from api.problems import ProblemError
from api.wire import json_response
from projections.store import ProjectionStore


def movie(request: Request) -> Response:  # plain def: Starlette runs it in its thread pool
    store: ProjectionStore = request.app.state.store
    movie_id = request.path_params["movie_id"]
    row = store.movie(movie_id)
    if row is None:
        raise ProblemError(404, f"no movie {movie_id!r} in the catalogue or reviews")
    return json_response(row)
