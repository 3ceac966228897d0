"""What operators watch: liveness, readiness (broker and store reachable, projector alive) and the
projector's lag."""

from __future__ import annotations

from datetime import datetime, timezone

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api.bodies import Health, LagReport
from api.wire import json_response
from events.log import LogUnavailable
from projections.store import ProjectionStore

# The projector records its lag every 2 s while it runs (projections/worker.py's LAG_INTERVAL), through
# broker outages too; no record for this long means it stopped, and the views with it.
PROJECTOR_STALE_AFTER = 30.0  # seconds
# Before any projector ran (a fresh stack) the API is ready: writes wait in the log, reads are empty.
NO_PROJECTOR_YET = "no lag report yet"


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
        reported_at = await run_in_threadpool(store.lag_reported_at)
        checks["projector"] = projector_state(reported_at, datetime.now(timezone.utc))
    except Exception as error:  # noqa: BLE001 - any failure means not ready
        checks["store"] = f"error: {error}"
    ready = all(v in ("ok", NO_PROJECTOR_YET) for v in checks.values())
    response = json_response(Health("ready" if ready else "not ready", checks), 200 if ready else 503)
    if not ready:
        response.headers["Retry-After"] = "1"
    return response


def projector_state(reported_at: datetime | None, now: datetime) -> str:
    """The projector's check: ok if it recorded its lag lately, else what is wrong."""
    if reported_at is None:
        return NO_PROJECTOR_YET
    age = (now - reported_at).total_seconds()
    return "ok" if age <= PROJECTOR_STALE_AFTER else f"stale: no lag report for {age:.0f} s"


def lag(request: Request) -> Response:  # plain def: Starlette runs it in its thread pool
    partitions = request.app.state.store.lag()
    return json_response(LagReport(partitions, sum(p.lag for p in partitions)))
