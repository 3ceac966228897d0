"""A user's audit trail: every event about their reviews, and with `as_of` (by the time the log recorded
each event) or `written_by` (by the time it occurred: a review's own date) the reviews as they stood."""

from __future__ import annotations

from datetime import datetime

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api.auth import authorize
from api.bodies import HistoryEvent, HistoryPage
from api.forgetting import refuse_forgotten
from api.problems import ProblemError
from api.reviews import wait_for
from api.wire import MAX_LIMIT, Offset, decode_cursor, in_utc, int_param, json_response, page_of, path_user_id
from events.position import Position
from events.types import Timestamp
from projections.history import changes, reviews_at
from projections.store import ProjectionStore, Review

HistoryCursor = tuple[Offset, Offset]  # the last row's (partition, offset)


def time_param(request: Request, name: str) -> datetime | None:
    """An optional RFC 3339 query parameter; 400 when it is not one."""
    if (raw := request.query_params.get(name)) is None:
        return None
    try:
        moment = msgspec.convert(raw, Timestamp)
        in_utc(moment)
    except (msgspec.ValidationError, OverflowError):
        raise ProblemError(400, f"{name} must be an RFC 3339 time with a zone in the years 1 to 9999, "
                                f"not {raw!r}") from None
    return moment


async def user_history(request: Request) -> Response:
    store: ProjectionStore = request.app.state.store
    user_id = path_user_id(request)
    if request.app.state.auth.private_history:
        authorize(request, user_id)
    limit = int_param(request, "limit", 20, 1, MAX_LIMIT)
    cursor = request.query_params.get("cursor")
    before = decode_cursor(cursor, HistoryCursor) if cursor is not None else None
    as_of, written_by = time_param(request, "as_of"), time_param(request, "written_by")
    if as_of is not None and written_by is not None:
        raise ProblemError(400, "as_of and written_by are two clocks: give one of them, not both")
    if (token := request.query_params.get("after")) is not None:
        await wait_for(store, request.app.state.log_ends, token)
    return await run_in_threadpool(history_page, request, user_id, limit, before, as_of, written_by)


def history_page(request: Request, user_id: str, limit: int, before: HistoryCursor | None, as_of: datetime | None,
                 written_by: datetime | None) -> Response:
    """The key-store check and the page's reads, in one trip to the thread pool."""
    store: ProjectionStore = request.app.state.store
    refuse_forgotten(request, [user_id])
    # as_of: events by the time the log recorded them (the audit); written_by: by the time they
    # occurred (a review's own date, an import's original one), folded in log order all the same.
    at, clock = (written_by, "occurred") if written_by is not None else (as_of, "recorded")
    rows = store.user_history(user_id, limit + 1, before, at, clock=clock)
    page, next_cursor = page_of(rows, limit, lambda last: (last.partition, last.offset))
    # What an event changed depends on the movie's event before it: one look per movie of the page.
    prior = store.review_events_before(user_id, list({r.payload["movie_id"] for r in page}),
                                       (page[-1].partition, page[-1].offset), at, clock=clock) if next_cursor else {}
    done = changes(page, prior)
    reviews = None
    if at is not None:
        stood = reviews_at(store.user_history(user_id, 0, None, at, clock=clock))
        reviews = [msgspec.convert(r, Review, strict=False) for r in stood]
    return json_response(
        HistoryPage(
            user_id=user_id,
            events=[
                HistoryEvent(r.event_id, r.type, change, r.occurred_at, r.recorded_at,
                             Position(r.partition, r.offset), r.payload)
                for r, change in zip(page, done)
            ],
            next_cursor=next_cursor,
            as_of=as_of,
            written_by=written_by,
            reviews=reviews,
        )
    )
