"""What operators watch: liveness, readiness (broker and store reachable) and the projector's lag."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api.bodies import Health, LagReport
from api.wire import json_response
from events.log import LogUnavailable
from projections.store import ProjectionStore


async def healthz(request: Request) -> Response:  # touches nothing, so it answers even when the store is slow
    return json_response(Health("ok"))


async def readyz(request: Request) -> Response:
    store: ProjectionStore = request.app.state.store
    checks = {}
    try:
        await request.app.state.event_log.ping()
        checks["broker"] = "ok"
    except LogUnavailable as error:
        checks["broker"] = str(error)
    try:
        await run_in_threadpool(store.ping)
        checks["store"] = "ok"
    except Exception as error:  # noqa: BLE001 - any failure means not ready
        checks["store"] = f"error: {error}"
    ready = all(v == "ok" for v in checks.values())
    response = json_response(Health("ready" if ready else "not ready", checks), 200 if ready else 503)
    if not ready:
        response.headers["Retry-After"] = "1"
    return response


def lag(request: Request) -> Response:  # plain def: Starlette runs it in its thread pool
    partitions = request.app.state.store.lag()
    return json_response(LagReport(partitions, sum(p.lag for p in partitions)))
