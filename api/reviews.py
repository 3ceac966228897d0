"""Reviews: the two commands, which append to the event log, and a user's current reviews, which
can wait for the projection to catch up with the caller's own write (read-your-writes)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Awaitable, Callable

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api.auth import authorize
from api.bodies import ReviewsPage
from api.forgetting import FORGOTTEN, refuse_forgotten
from api.problems import ProblemError
from api.wire import (
    MAX_LIMIT, decode_cursor, idempotency_key, int_param, invalid, json_response, page_of, path_user_id, read_json,
)
from commands.handlers import IdempotencyConflict, InvalidCommand, Lookup, Recorded
from commands.types import Receipt, RetractReview, SubmitReview
from events.log import LogUnavailable
from events.position import Position
from events.sealing import Forgotten
from projections.store import ProjectionStore, Review

log = logging.getLogger(__name__)

READ_WAIT = 5.0  # seconds a read with `after=` waits for the projection to catch up
ENDS_EVERY = 0.5  # seconds at least between two looks at the log's end, whatever the requests

ReviewsCursor = tuple[datetime, str]  # the last row's (reviewed_at, movie_id)


async def run_command(action, command, request: Request) -> Response:
    try:
        receipt: Receipt = await action(command, idempotency_key(request))
    except InvalidCommand as error:
        raise invalid(str(error), error.field) from None
    except IdempotencyConflict as error:
        raise ProblemError(409, str(error)) from None
    except Forgotten:
        raise ProblemError(404, FORGOTTEN) from None
    except LogUnavailable as error:
        log.warning("append failed", extra={"error": str(error)})
        raise ProblemError(
            503, "the event log is unavailable; nothing was accepted for sure: retry with the same "
            "Idempotency-Key", {"Retry-After": "1"},
        ) from None
    return json_response(receipt, 202)


# The commands await the producer: they stay on the event loop.
async def submit_review(request: Request) -> Response:
    command = await read_json(request, SubmitReview)
    authorize(request, command.user_id)
    return await run_command(request.app.state.commands.submit, command, request)


async def retract_review(request: Request) -> Response:
    authorize(request, request.path_params["user_id"])
    try:
        command = msgspec.convert(dict(request.path_params), RetractReview)
    except msgspec.ValidationError as error:
        raise invalid(str(error)) from None
    return await run_command(request.app.state.commands.retract, command, request)


def recorded_in(store: ProjectionStore) -> Lookup:
    """How the commands find a retried request's first sending: in the projection, off the event loop."""

    async def recorded(user_id: str, event_id: str) -> Recorded | None:
        row = await run_in_threadpool(store.user_event, user_id, event_id)
        if row is None:
            return None
        return Recorded(Position(row.partition, row.offset), row.recorded_at, row.payload.get("request_digest"))

    return recorded


class LogEnds:
    """The review log's end offsets as last read, read again (in the background, at most every
    ENDS_EVERY seconds) when a token lies past them: a token of a write lies before the end, one made
    up far past it would hold a request for READ_WAIT, polling the store."""

    def __init__(self, read: Callable[[], Awaitable[dict[int, int]]]):
        self._read = read
        self._ends: dict[int, int] = {}
        self._read_at = self._tried_at = float("-inf")  # event loop times the last good and last reads began
        self._reading: asyncio.Task | None = None

    def past_the_end(self, position: Position, since: float) -> bool:
        """Whether `position` lies past the log's end as a read begun at `since` or later found it;
        False while that is not known yet (a read is started if none was for ENDS_EVERY)."""
        if position.offset < self._ends.get(position.partition, 0):
            return False
        if self._read_at >= since:
            return True
        now = asyncio.get_running_loop().time()
        if self._reading is None and now - self._tried_at >= ENDS_EVERY:
            self._tried_at = now
            self._reading = asyncio.ensure_future(self._read_ends(now))
        return False

    async def _read_ends(self, began: float) -> None:
        try:
            async with asyncio.timeout(READ_WAIT):
                self._ends = await self._read()
            self._read_at = began
        except Exception as error:  # noqa: BLE001 - unknown: tokens wait as they would anyway
            log.warning("could not read the log's end", extra={"error": repr(error)})
        finally:
            self._reading = None


async def wait_for(store: ProjectionStore, ends: LogEnds, token: str) -> None:
    """Wait until the projection has applied the write behind `token`: polled, so the wait holds
    no thread, while each store read runs in the thread pool. A token past the log's end is a 400
    (every write's token lies before the end once it is acknowledged, so before it is answered)."""
    try:
        position = Position.from_token(token)
    except ValueError as error:  # from_token's own "not a position token"
        raise ProblemError(400, str(error)) from None
    loop = asyncio.get_running_loop()
    asked = loop.time()
    deadline = asked + READ_WAIT
    while (await run_in_threadpool(store.checkpoint)).get(position.partition, -1) < position.offset:
        if ends.past_the_end(position, asked):
            raise ProblemError(400, "after names a position past the log's end: not a token this API gave out")
        if loop.time() > deadline:
            raise ProblemError(
                503, f"the projection has not caught up with that write within {READ_WAIT:.0f}s",
                {"Retry-After": "1"},
            )
        await asyncio.sleep(0.02)


async def user_reviews(request: Request) -> Response:
    store: ProjectionStore = request.app.state.store
    user_id = path_user_id(request)
    limit = int_param(request, "limit", 20, 1, MAX_LIMIT)
    cursor = request.query_params.get("cursor")
    if (token := request.query_params.get("after")) is not None:
        await wait_for(store, request.app.state.log_ends, token)
    after = decode_cursor(cursor, ReviewsCursor) if cursor is not None else None

    def read() -> list:  # the key-store check and the store read in one trip to the thread pool
        refuse_forgotten(request, [user_id])
        return store.user_reviews(user_id, limit + 1, after)

    rows = await run_in_threadpool(read)
    page, next_cursor = page_of(rows, limit, lambda last: (last.reviewed_at, last.movie_id))
    return json_response(
        ReviewsPage(
            user_id=user_id,
            reviews=[Review(r.movie_id, r.rating, r.summary, r.text, r.reviewed_at, r.event_id) for r in page],
            next_cursor=next_cursor,
        )
    )
