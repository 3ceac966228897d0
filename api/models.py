"""Published model versions: the current one, which /v1/match serves, and any other by its name."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from api.bodies import ModelView
from api.problems import ProblemError
from api.wire import json_response
from projections.store import ProjectionStore


def model_view(store: ProjectionStore, version: str | None) -> Response:
    info = store.model(version)
    if info is None:
        raise ProblemError(404, "no model has been trained yet: run `harmony train`" if version is None
                           else f"no model version {version!r}")
    return json_response(ModelView(info.version, info.trained_at, info.watermark, info.metrics, info.params))


# Plain defs: Starlette runs them in its thread pool.
def current_model(request: Request) -> Response:
    return model_view(request.app.state.store, None)


def model_version(request: Request) -> Response:
    return model_view(request.app.state.store, request.path_params["version"])
