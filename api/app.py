"""The Starlette application: routes, their OpenAPI description and the broker connection's lifespan."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import logging
from datetime import datetime
from typing import Protocol

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.bodies import (
    Health, HistoryEvent, HistoryPage, LagReport, Match, MatchedMovie, MemberScore, ModelView, MovieView,
    ReviewsPage, ReviewView,
)
from api.openapi import Operation, Param, document
from api.problems import HANDLERS, ProblemError
from commands.handlers import IdempotencyConflict, InvalidCommand, ReviewCommands
from commands.types import Receipt, RetractReview, SubmitReview
from events.log import LogUnavailable
from events.position import Position
from events.types import Timestamp
from ml import matching
from projections.history import reviews_at
from projections.store import ProjectionStore

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
MAX_LIMIT = 100
MAX_GROUP = 8  # users in one /v1/match
MAX_MEMBER_REVIEWS = 100_000  # reviews read per user to fold them in and to leave out what they saw
READ_WAIT = 5.0  # seconds a read with `after=` waits for the projection to catch up
RECONNECT_EVERY = 1.0


class EventLogConnection(Protocol):
    connected: bool

    async def start(self) -> None: ...

    async def ping(self) -> None: ...

    async def stop(self) -> None: ...


def json_response(body: msgspec.Struct, status: int = 200) -> Response:
    return Response(msgspec.json.encode(body), status_code=status, media_type="application/json")


async def read_json(request: Request, into: type):
    """Decode a bounded JSON body into a command type, or raise a 4xx problem."""
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if content_type != "application/json":
        raise ProblemError(415, f"send application/json, not {content_type}")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise ProblemError(413, f"body larger than {MAX_BODY} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise ProblemError(413, f"body larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    try:
        return msgspec.json.decode(b"".join(chunks), type=into)
    except msgspec.ValidationError as error:
        raise ProblemError(422, str(error)) from None
    except msgspec.DecodeError as error:
        raise ProblemError(400, f"invalid JSON: {error}") from None


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ProblemError(400, f"{name} must be an integer from {low} to {high}")
    return int(raw)


ReviewsCursor = tuple[datetime, str]  # the last row's (reviewed_at, movie_id)
HistoryCursor = tuple[int, int]  # the last row's (partition, offset)


def encode_cursor(key: tuple) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(key)).decode()


def decode_cursor(cursor: str, kind: type):
    try:
        return msgspec.json.decode(base64.urlsafe_b64decode(cursor.encode()), type=kind)
    except (ValueError, msgspec.DecodeError):
        raise ProblemError(400, "cursor is not one this API gave out") from None


def create_app(store: ProjectionStore, event_log: EventLogConnection, commands: ReviewCommands) -> Starlette:
    async def run_command(action, command, request: Request) -> Response:
        try:
            receipt: Receipt = await action(command, request.headers.get("idempotency-key"))
        except InvalidCommand as error:
            raise ProblemError(422, str(error)) from None
        except IdempotencyConflict as error:
            raise ProblemError(409, str(error)) from None
        except LogUnavailable as error:
            log.warning("append failed", extra={"error": str(error)})
            raise ProblemError(
                503, "the event log is unavailable; nothing was accepted for sure: retry with the same "
                "Idempotency-Key", {"Retry-After": "1"},
            ) from None
        return json_response(receipt, 202)

    async def submit_review(request: Request) -> Response:
        return await run_command(commands.submit, await read_json(request, SubmitReview), request)

    async def retract_review(request: Request) -> Response:
        try:
            command = msgspec.convert(dict(request.path_params), RetractReview)
        except msgspec.ValidationError as error:
            raise ProblemError(422, str(error)) from None
        return await run_command(commands.retract, command, request)

    async def wait_for(token: str) -> None:
        """Read-your-writes: wait until the projection has applied the write behind `token`."""
        try:
            position = Position.from_token(token)
        except ValueError as error:
            raise ProblemError(400, str(error)) from None
        deadline = asyncio.get_running_loop().time() + READ_WAIT
        while store.checkpoint().get(position.partition, -1) < position.offset:
            if asyncio.get_running_loop().time() > deadline:
                raise ProblemError(
                    503, f"the projection has not caught up with that write within {READ_WAIT:.0f}s",
                    {"Retry-After": "1"},
                )
            await asyncio.sleep(0.02)

    async def user_reviews(request: Request) -> Response:
        user_id = request.path_params["user_id"]
        limit = int_param(request, "limit", 20, 1, MAX_LIMIT)
        cursor = request.query_params.get("cursor")
        if token := request.query_params.get("after"):
            await wait_for(token)
        rows = store.user_reviews(user_id, limit + 1, decode_cursor(cursor, ReviewsCursor) if cursor else None)
        page, more = rows[:limit], len(rows) > limit
        last = page[-1] if page else None
        return json_response(
            ReviewsPage(
                user_id=user_id,
                reviews=[ReviewView(r.movie_id, r.rating, r.summary, r.text, r.reviewed_at, r.event_id) for r in page],
                next_cursor=encode_cursor((last.reviewed_at, last.movie_id)) if more else None,
            )
        )

    async def user_history(request: Request) -> Response:
        user_id = request.path_params["user_id"]
        limit = int_param(request, "limit", 20, 1, MAX_LIMIT)
        cursor = request.query_params.get("cursor")
        before = decode_cursor(cursor, HistoryCursor) if cursor else None
        as_of = None
        if raw := request.query_params.get("as_of"):
            try:
                as_of = msgspec.convert(raw, Timestamp)
            except msgspec.ValidationError:
                raise ProblemError(400, f"as_of must be an RFC 3339 time with a zone, not {raw!r}") from None
        rows = store.user_history(user_id, limit + 1, before, as_of)
        page, more = rows[:limit], len(rows) > limit
        reviews = None
        if as_of is not None:
            stood = reviews_at(store.user_history(user_id, 0, None, as_of))
            reviews = [msgspec.convert(r, ReviewView, strict=False) for r in stood]
        return json_response(
            HistoryPage(
                user_id=user_id,
                events=[
                    HistoryEvent(r.event_id, r.type, r.occurred_at, r.recorded_at, Position(r.partition, r.offset),
                                 r.payload)
                    for r in page
                ],
                next_cursor=encode_cursor((page[-1].partition, page[-1].offset)) if more else None,
                as_of=as_of,
                reviews=reviews,
            )
        )

    async def movie(request: Request) -> Response:
        row = store.movie(request.path_params["movie_id"])
        if row is None:
            raise ProblemError(404, f"no movie {request.path_params['movie_id']!r} in the catalogue or reviews")
        return json_response(MovieView(**msgspec.structs.asdict(row)))

    async def lag(request: Request) -> Response:
        partitions = store.lag()
        return json_response(LagReport(partitions, sum(p.lag for p in partitions)))

    def model_view(version: str | None) -> Response:
        info = store.model(version)
        if info is None:
            raise ProblemError(404, "no model has been trained yet: run `harmony train`" if version is None
                               else f"no model version {version!r}")
        return json_response(ModelView(info.version, info.trained_at, info.watermark, info.metrics, info.params))

    async def current_model(request: Request) -> Response:
        return model_view(None)

    async def model_version(request: Request) -> Response:
        return model_view(request.path_params["version"])

    items_cache: dict[str, matching.Items] = {}  # the current version's item side, loaded once

    def current_items() -> matching.Items:
        info = store.model()
        if info is None:
            raise ProblemError(503, "no model has been trained yet: run `harmony train`", {"Retry-After": "60"})
        if info.version not in items_cache:
            items_cache.clear()
            items_cache[info.version] = matching.Items.load(store, info)
        return items_cache[info.version]

    async def match(request: Request) -> Response:
        users = [u for u in request.query_params.get("users", "").split(",") if u]
        if not 2 <= len(set(users)) == len(users) <= MAX_GROUP:
            raise ProblemError(400, f"users: 2 to {MAX_GROUP} different user ids, comma-separated")
        strategy = request.query_params.get("strategy", "average")
        if strategy not in matching.STRATEGIES:
            raise ProblemError(400, f"strategy: one of {', '.join(matching.STRATEGIES)}")
        weights = None
        if raw := request.query_params.get("weights"):
            try:
                weights = [float(w) for w in raw.split(",")]
            except ValueError:
                raise ProblemError(400, "weights: numbers, comma-separated") from None
            if strategy != "average" or len(weights) != len(users) or not all(0 < w < float("inf") for w in weights):
                raise ProblemError(400, "weights: one positive number per user, with strategy=average")
        limit = int_param(request, "limit", 10, 1, MAX_LIMIT)
        include_seen = request.query_params.get("include_seen", "false")
        if include_seen not in ("true", "false"):
            raise ProblemError(400, "include_seen: true or false")
        items = current_items()
        members = [
            matching.member(store, items, user, {r.movie_id: r.rating
                                                 for r in store.user_reviews(user, MAX_MEMBER_REVIEWS, None)})
            for user in users
        ]
        ranked = matching.best(items, members, strategy, weights, limit, include_seen == "true")
        movies = []
        for movie_id, score, predicted in ranked:
            row = store.movie(movie_id)
            movies.append(MatchedMovie(movie_id, row.title if row else None, round(score, 4),
                                       {user: MemberScore(round(p, 4)) for user, p in predicted.items()}))
        return json_response(Match(items.info.version, strategy, users, [m.user_id for m in members if m.folded_in],
                                   movies))

    async def healthz(request: Request) -> Response:
        return json_response(Health("ok"))

    async def readyz(request: Request) -> Response:
        checks = {}
        try:
            await event_log.ping()
            checks["broker"] = "ok"
        except LogUnavailable as error:
            checks["broker"] = str(error)
        try:
            store.ping()
            checks["store"] = "ok"
        except Exception as error:  # noqa: BLE001 - any failure means not ready
            checks["store"] = f"error: {error}"
        ready = all(v == "ok" for v in checks.values())
        return json_response(Health("ready" if ready else "not ready", checks), 200 if ready else 503)

    async def openapi(request: Request) -> Response:
        return Response(msgspec.json.encode(spec), media_type="application/json")

    user = Param("user_id", "path", "opaque user id")
    film = Param("movie_id", "path", "opaque movie id")
    key = Param("Idempotency-Key", "header", "makes a retried request have exactly one effect")
    operations = [
        (Operation("POST", "/v1/reviews", "Submit or replace a review", 202, Receipt, SubmitReview, (key,),
                   (400, 409, 413, 415, 422, 503)), submit_review),
        (Operation("DELETE", "/v1/users/{user_id}/reviews/{movie_id}", "Retract a review", 202, Receipt, None,
                   (user, film, key), (409, 422, 503)), retract_review),
        (Operation("GET", "/v1/users/{user_id}/reviews", "A user's current reviews, newest first", 200,
                   ReviewsPage, None,
                   (user, Param("limit", "query", f"page size, 1 to {MAX_LIMIT}", {"type": "integer"}),
                    Param("cursor", "query", "next_cursor of the previous page"),
                    Param("after", "query", "a command's token: wait until that write is visible")),
                   (400, 503)), user_reviews),
        (Operation("GET", "/v1/users/{user_id}/history", "Audit trail: every event about the user's reviews", 200,
                   HistoryPage, None,
                   (user, Param("limit", "query", f"page size, 1 to {MAX_LIMIT}", {"type": "integer"}),
                    Param("cursor", "query", "next_cursor of the previous page"),
                    Param("as_of", "query", "RFC 3339 time: only events recorded by then, plus the reviews "
                          "as they stood", {"type": "string", "format": "date-time"})),
                   (400,)), user_history),
        (Operation("GET", "/v1/movies/{movie_id}", "A movie's catalogue entry and review statistics", 200,
                   MovieView, None, (film,), (404,)), movie),
        (Operation("GET", "/v1/projections/lag", "Events the projector is behind the log, per partition", 200,
                   LagReport), lag),
        (Operation("GET", "/v1/match", "Movies the users may like to watch together", 200, Match, None,
                   (Param("users", "query", f"2 to {MAX_GROUP} user ids, comma-separated", required=True),
                    Param("strategy", "query", "how members' predictions combine",
                          {"type": "string", "enum": list(matching.STRATEGIES), "default": "average"}),
                    Param("weights", "query", "one positive weight per user (strategy=average)"),
                    Param("limit", "query", f"movies, 1 to {MAX_LIMIT} (10)", {"type": "integer"}),
                    Param("include_seen", "query", "also movies a member has reviewed",
                          {"type": "boolean", "default": False})),
                   (400, 503)), match),
        (Operation("GET", "/v1/models/current", "The model the API serves", 200, ModelView, None, (), (404,)),
         current_model),
        (Operation("GET", "/v1/models/{version}", "A published model version, current or not", 200, ModelView, None,
                   (Param("version", "path", "a model version"),), (404,)), model_version),
        (Operation("GET", "/healthz", "Liveness", 200, Health), healthz),
        (Operation("GET", "/readyz", "Readiness: broker and store reachable", 200, Health, None, (), (503,)),
         readyz),
    ]
    spec = document([op for op, _ in operations], "moviEharmony", "1")
    routes = [Route(op.path, handler, methods=[op.method]) for op, handler in operations]
    routes.append(Route("/openapi.json", openapi, methods=["GET"]))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        # What exists at start-up lives as long as the process: keep it out of the garbage
        # collector's full passes, which otherwise stall every request in flight (the p99).
        gc.freeze()
        connecting = asyncio.create_task(keep_connecting(event_log))
        try:
            yield
        finally:
            connecting.cancel()
            await event_log.stop()

    return Starlette(routes=routes, exception_handlers=HANDLERS, lifespan=lifespan)


async def keep_connecting(event_log: EventLogConnection) -> None:
    """Connect to the broker, retrying, so the API serves reads (and 503s) while the broker is down."""
    while not event_log.connected:
        try:
            await event_log.start()
            log.info("connected to the event log")
        except Exception as error:  # noqa: BLE001 - keep trying whatever the failure
            log.warning("event log unreachable, retrying", extra={"error": repr(error)})
            await asyncio.sleep(RECONNECT_EVERY)
