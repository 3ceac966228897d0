"""The Starlette application: the route table with its OpenAPI description, the collaborators on
`app.state`, and the broker connection's lifespan.

Endpoints that read the (synchronous) projection store are plain `def`s, which Starlette runs in
its thread pool, or push their store calls there: a slow read never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
import gc
import logging
from typing import Protocol

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from api.auth import AccessToken, Auth, issue_token, open_account
from api.bodies import (
    CatalogueEntries, Genres, Health, HistoryPage, LagReport, Match, ModelView, MovieReviewsPage, MoviesPage, Reviewers,
    ReviewsPage, SimilarMovies, Strategies,
)
from api.forgetting import forget_user
from api.health import healthz, lag, readyz
from api.history import user_history
from api.match import (
    DECIMAL, MAX_EXCLUDE, MAX_GROUP, MAX_MATCH_LIMIT, MAX_SIMILAR, YEARS, ItemsCache, match, similar_movies, strategies,
)
from api.models import current_model, model_version
from api.movies import MAX_IDS, MAX_QUERY, MAX_SEARCH_LIMIT, catalogue_entries, genres, movie, movie_reviews, search_movies
from api.openapi import Link, Operation, Param, document
from api.problems import HANDLERS
from api.reviewers import MAX_PREFIX, MAX_REVIEWERS, reviewers
from api.reviews import READ_WAIT, LogEnds, retract_review, submit_review, user_reviews
from api.wire import MAX_KEY, MAX_LIMIT
from commands.accounts import AccountOpenedView, Credentials, OpenAccount
from commands.forgetting import Forgetting
from commands.handlers import ReviewCommands
from commands.types import Receipt, SubmitReview
from events.types import UserId, max_length
from ml import matching
from projections.store import Movie, ProjectionStore

log = logging.getLogger(__name__)

RECONNECT_EVERY = 1.0


class EventLogConnection(Protocol):
    connected: bool

    async def start(self) -> None: ...

    async def ping(self) -> None: ...

    async def stop(self) -> None: ...

    async def ends(self) -> dict[int, int]: ...


MATCH_DESCRIPTION = (
    "A member's utility for a movie is how likely they are to pick it (taste, from who reviewed what) times "
    "how much they would like it (the predicted rating). Movies with too little evidence, and those a member "
    "reviewed, are left out. A member with no usable reviews gets popular, well-rated movies (`fallback`); "
    "users with no reviews at all who are not in the model are a 404. Strategies:\n\n"
    + "\n".join(f"* `{name}`: {line}" for name, line in matching.STRATEGIES.items()))
# A path segment: no '/', and not '.' or '..', which clients resolve away before sending.
SEGMENT = r"^(?!\.{1,2}$)[^/]+$"
ID = {"type": "string", "minLength": 1, "maxLength": max_length(UserId), "pattern": SEGMENT}
USER = Param("user_id", "path", "opaque user id (not '.' or '..', no '/')", ID)
FILM = Param("movie_id", "path", "opaque movie id (not '.' or '..', no '/')", ID)


def bounded(low: int, high: int) -> dict:
    return {"type": "integer", "minimum": low, "maximum": high}


def listed(low: int, high: int, item: str = "[^,]+") -> dict:
    """A comma-separated list of `low` to `high` items."""
    return {"type": "string", "pattern": f"^{item}(?:,{item}){{{low - 1},{high - 1}}}$"}


def cursor(description: str) -> Param:
    return Param("cursor", "query", description, {"type": "string", "minLength": 1})


AFTER = Param("after", "query", "a command's token: wait until that write is visible (a token past the log's end: "
              f"400; not visible within {READ_WAIT:.0f} s: 503 with Retry-After)", {"type": "string", "minLength": 1})
KEY = Param("Idempotency-Key", "header", f"makes a retried request have exactly one effect (1 to {MAX_KEY} "
            "visible ASCII characters)", {"type": "string", "minLength": 1, "maxLength": MAX_KEY,
                                          "pattern": "^[ -~]+$"})
OPERATIONS = [
    (Operation("POST", "/v1/accounts", "Open an account for a user id", 201, AccountOpenedView, OpenAccount, (),
               (400, 409, 413, 415, 422, 429, 503),
               "The user id must not have an account yet, nor look like one's (409). A new id follows RFC 8265's "
               "UsernameCasePreserved profile, is in one script and is not only dots (else 422 naming why). An "
               "imported user's id (reviews, no account) is opened only by an operator (409). Then get a token from POST /v1/tokens. A client address may ask to open only so many accounts "
               "an hour (429 with Retry-After); while too many passwords are being hashed, 503 with Retry-After.",
               links=(Link("SignIn", "issue_token", "sign in with the new account", body="$request.body"),)),
     open_account),
    (Operation("POST", "/v1/tokens", "Sign in: an access token for writing as the user", 200, AccessToken,
               Credentials, (), (400, 401, 413, 415, 422, 429, 503),
               "Send the token as `Authorization: Bearer <access_token>`. Failed sign-ins slow further ones "
               "down (429 with Retry-After): strictly per user id and client, per user id alone only after "
               "many more. While the accounts are not all read or too many passwords are being hashed (a 503 "
               "with Retry-After), a try is not counted as failed.",
               links=(Link("SubmitReview", "submit_review", "write a review as the user, with the token",
                           body={"user_id": "$request.body#/user_id"}),)), issue_token),
    (Operation("POST", "/v1/reviews", "Submit or replace a review", 202, Receipt, SubmitReview, (KEY,),
               (400, 404, 409, 413, 415, 422, 503), "Needs a token for the review's user (404: the user asked to be "
               "forgotten).", signed_in=True,
               links=(Link("ReadReviews", "user_reviews", "the user's reviews, once this one is among them",
                           {"user_id": "$request.body#/user_id", "after": "$response.body#/token"}),
                      Link("Retract", "retract_review", "retract the review",
                           {"user_id": "$request.body#/user_id", "movie_id": "$request.body#/movie_id"}),
                      Link("Movie", "movie", "the movie's statistics", {"movie_id": "$request.body#/movie_id"}),
                      Link("History", "user_history", "the user's audit trail, once this event is in it",
                           {"user_id": "$request.body#/user_id", "after": "$response.body#/token"}))),
     submit_review),
    (Operation("DELETE", "/v1/users/{user_id}/reviews/{movie_id}", "Retract a review", 202, Receipt, None,
               (USER, FILM, KEY), (400, 404, 409, 422, 503), "Needs a token for the user.", signed_in=True,
               links=(Link("ReadReviews", "user_reviews", "the user's reviews, once the retraction shows",
                           {"user_id": "$request.path.user_id", "after": "$response.body#/token"}),)),
     retract_review),
    (Operation("DELETE", "/v1/users/{user_id}", "Forget the user: their account, reviews and history", 202, Receipt,
               None, (USER,), (400, 404, 503),
               "Needs a token for the user. The user id is retired at once (every read of it answers 404 "
               "\"this user asked to be forgotten\"); their key is deleted, so every event they wrote is "
               "unreadable in the log and its archive; the projections then delete their reviews, history and "
               "account, and the next model is trained without them. Cannot be undone.", signed_in=True),
     forget_user),
    (Operation("GET", "/v1/users/{user_id}/reviews", "A user's current reviews, newest first", 200,
               ReviewsPage, None,
               (USER, Param("limit", "query", f"page size, 1 to {MAX_LIMIT}", bounded(1, MAX_LIMIT)),
                cursor("next_cursor of the previous page"),
                AFTER),
               (400, 404, 503), "404: the user asked to be forgotten.",
               links=(Link("NextPage", "user_reviews", "the next page",
                           {"user_id": "$request.path.user_id", "cursor": "$response.body#/next_cursor"}),)),
     user_reviews),
    (Operation("GET", "/v1/users/{user_id}/history", "Audit trail: every event about the user's reviews", 200,
               HistoryPage, None,
               (USER, Param("limit", "query", f"page size, 1 to {MAX_LIMIT}", bounded(1, MAX_LIMIT)),
                cursor("next_cursor of the previous page"),
                Param("as_of", "query", "RFC 3339 time: only events the log recorded by then, plus the "
                      "reviews as they stood (the audit)", {"type": "string", "format": "date-time"}),
                Param("written_by", "query", "RFC 3339 time: only events that occurred by then (a review "
                      "by when it was written, an import by its original date, a retraction by when it was "
                      "made), plus the reviews as they stood by those dates",
                      {"type": "string", "format": "date-time"}),
                AFTER),
               (400, 404, 503), "Newest first by log position. One clock at a time: `as_of` (when the log recorded "
               "each event) or `written_by` (when it occurred), both: 400. 404: the user asked to be forgotten.",
               links=(Link("NextPage", "user_history", "the next page",
                           {"user_id": "$request.path.user_id", "cursor": "$response.body#/next_cursor"}),)),
     user_history),
    (Operation("GET", "/v1/movies", "Find movies by title", 200, MoviesPage, None,
               (Param("q", "query", f"words of the title, or their starts: case and accents do not matter "
                      f"(1 to {MAX_QUERY} characters)", {"type": "string", "minLength": 1, "maxLength": MAX_QUERY},
                      required=True),
                Param("limit", "query", f"page size, 1 to {MAX_SEARCH_LIMIT} (10)", bounded(1, MAX_SEARCH_LIMIT)),
                cursor("next_cursor of the previous page (with the same q)")),
               (400,), "Whole titles first, then titles that begin with the query, then titles holding each "
               "word whole, then the rest. A one-letter word matches only that word. Served from the catalogue "
               "projection: a newly catalogued movie is found once projected.",
               links=(Link("NextPage", "search_movies", "the next page",
                           {"q": "$request.query.q", "cursor": "$response.body#/next_cursor"}),
                      Link("Movie", "movie", "the first movie's statistics",
                           {"movie_id": "$response.body#/movies/0/movie_id"}))), search_movies),
    (Operation("GET", "/v1/catalogue", "Catalogue entries by movie id", 200, CatalogueEntries, None,
               (Param("ids", "query", f"1 to {MAX_IDS} movie ids, comma-separated", listed(1, MAX_IDS),
                      required=True),), (400,),
               "From the catalogue projection, as the title search."), catalogue_entries),
    (Operation("GET", "/v1/genres", "Every genre in the catalogue", 200, Genres), genres),
    (Operation("GET", "/v1/movies/{movie_id}", "A movie's catalogue entry and review statistics", 200,
               Movie, None, (FILM,), (404,), "`ratings` is the histogram: each rating given, lowest first, with "
               "how many current reviews give it.",
               links=(Link("Reviews", "movie_reviews", "the movie's reviews", {"movie_id": "$request.path.movie_id"}),
                      Link("Similar", "similar_movies", "movies like it",
                           {"movie_id": "$request.path.movie_id"}))), movie),
    (Operation("GET", "/v1/movies/{movie_id}/reviews", "A movie's current reviews, newest first", 200,
               MovieReviewsPage, None,
               (FILM, Param("limit", "query", f"page size, 1 to {MAX_LIMIT} (20)", bounded(1, MAX_LIMIT)),
                cursor("next_cursor of the previous page")),
               (400, 404), "Each review names its user; a user who asked to be forgotten is left out at once "
               "(a page may then hold fewer than `limit`). 404: a movie neither catalogued nor reviewed.",
               links=(Link("NextPage", "movie_reviews", "the next page",
                           {"movie_id": "$request.path.movie_id", "cursor": "$response.body#/next_cursor"}),)),
     movie_reviews),
    (Operation("GET", "/v1/movies/{movie_id}/similar", "More like this: movies picked by the same people", 200,
               SimilarMovies, None,
               (FILM, Param("limit", "query", f"movies, 1 to {MAX_SIMILAR} (10)", bounded(1, MAX_SIMILAR))),
               (400, 404, 503), "Nearest movies by the cosine of the current model's taste factors (learnt from "
               "who reviewed what), among movies with enough reviews to be matched. 404: the model does not "
               "know the movie; 503: no model has been trained yet."), similar_movies),
    (Operation("GET", "/v1/users", "User ids that start with a prefix, of users with reviews", 200, Reviewers, None,
               (Param("prefix", "query", f"the start of a user id, case ignored (1 to {MAX_PREFIX} characters)",
                      {"type": "string", "minLength": 1, "maxLength": MAX_PREFIX}, required=True),
                Param("limit", "query", f"user ids, 1 to {MAX_REVIEWERS} (10)", bounded(1, MAX_REVIEWERS))),
               (400,), "For suggesting a friend's id as it is typed; ordered by the id with case ignored. User "
               "ids are public already, through their reviews."), reviewers),
    (Operation("GET", "/v1/projections/lag", "Events the projector is behind the log, per partition", 200,
               LagReport), lag),
    (Operation("GET", "/v1/match", "Movies the users may like to watch together", 200, Match, None,
               (Param("users", "query", f"2 to {MAX_GROUP} different user ids, comma-separated", listed(2, MAX_GROUP),
                      required=True),
                Param("strategy", "query", "how the members' utilities combine (see the description)",
                      {"type": "string", "enum": list(matching.STRATEGIES), "default": matching.DEFAULT_STRATEGY}),
                Param("weights", "query", "one positive weight per user, comma-separated (strategy=average)",
                      listed(2, MAX_GROUP, f"(?:{DECIMAL})")),
                Param("limit", "query", f"movies, 1 to {MAX_MATCH_LIMIT} (10)", bounded(1, MAX_MATCH_LIMIT)),
                Param("genres", "query", "only movies with one of these genres, comma-separated"),
                Param("year_from", "query", "only movies released in or after this year", bounded(*YEARS)),
                Param("year_to", "query", "only movies released in or before this year", bounded(*YEARS)),
                Param("exclude", "query", f"movie ids to leave out, comma-separated (at most {MAX_EXCLUDE})"),
                Param("include_seen", "query", "also movies a member has reviewed",
                      {"type": "boolean", "default": False})),
               (400, 404, 503), MATCH_DESCRIPTION), match),
    (Operation("GET", "/v1/strategies", "The ways /v1/match can combine the members' utilities", 200, Strategies),
     strategies),
    (Operation("GET", "/v1/models/current", "The model the API serves", 200, ModelView, None, (), (404,)),
     current_model),
    (Operation("GET", "/v1/models/{version}", "A published model version, current or not", 200, ModelView, None,
               (Param("version", "path", "a model version", {"type": "string", "minLength": 1, "pattern": SEGMENT}),),
               (404,)), model_version),
    (Operation("GET", "/healthz", "Liveness", 200, Health), healthz),
    (Operation("GET", "/readyz", "Readiness: broker and store reachable, projector alive (lag reported within 30 s)",
               200, Health, plain_errors=(503,)),
     readyz),
]


def openapi_document(private_history: bool) -> bytes:
    operations = [replace(op, operation_id=handler.__name__,
                          signed_in=op.signed_in or (private_history and handler is user_history))
                  for op, handler in OPERATIONS]
    return msgspec.json.encode(document(operations, "moviEharmony", "1"))


async def openapi(request: Request) -> Response:
    return Response(request.app.state.openapi, media_type="application/json")


ROUTES = [Route(op.path, handler, methods=[op.method]) for op, handler in OPERATIONS]
ROUTES.append(Route("/openapi.json", openapi, methods=["GET"]))


@contextlib.asynccontextmanager
async def lifespan(app: Starlette):
    # What exists at start-up lives as long as the process: keep it out of the garbage
    # collector's full passes, which otherwise stall every request in flight (the p99).
    gc.freeze()
    running = [asyncio.create_task(keep_connecting(app.state.event_log))]
    try:
        yield
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await app.state.event_log.stop()


async def keep_connecting(event_log: EventLogConnection) -> None:
    """Connect to the broker, retrying, so the API serves reads (and 503s) while the broker is down."""
    while not event_log.connected:
        try:
            await event_log.start()
            log.info("connected to the event log")
        except Exception as error:  # noqa: BLE001 - keep trying whatever the failure
            log.warning("event log unreachable, retrying", extra={"error": repr(error)})
            await asyncio.sleep(RECONNECT_EVERY)


def create_app(store: ProjectionStore, event_log: EventLogConnection, commands: ReviewCommands, auth: Auth,
               forgetting: Forgetting, *, site: list[BaseRoute] = (), not_found: ASGIApp | None = None) -> Starlette:
    """The API, and the `site` routes (the website, a client of the API) beside it if given;
    `not_found` answers addresses no route matches (by default a 404 problem)."""
    app = Starlette(routes=ROUTES + list(site), exception_handlers=HANDLERS, lifespan=lifespan)
    if not_found is not None:
        app.router.default = not_found
    app.state.store = store
    app.state.event_log = event_log
    app.state.log_ends = LogEnds(event_log.ends)  # what read-your-writes tokens are checked against
    app.state.commands = commands
    app.state.auth = auth
    app.state.forgetting = forgetting
    app.state.openapi = openapi_document(auth.private_history)
    app.state.items = ItemsCache()  # the current model's item side, shared by /v1/match requests
    return app
