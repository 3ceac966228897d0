"""The pages: finding movies for two (the home page), a user's reviews and their audit trail, and
writing a review. Each page asks the API (`web.client`) and renders what it answers; the forms work
without JavaScript, which only adds suggestions as you type and character counts."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import date, datetime
from functools import wraps
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Receive, Scope, Send
from starlette.templating import Jinja2Templates

from web.client import Answer, Api, segment
from web.static import CachedStatic, static_url

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
REVIEWS_PER_PAGE = 10
EVENTS_PER_PAGE = 20
SUGGESTIONS = 8
IDS_PER_REQUEST = 100  # the most GET /v1/catalogue takes
MAX_FORM = 64 * 1024  # bytes of a posted form
API_PREFIX = "/v1/"  # addresses left to the API's 404 (a problem+json)
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


def stars(value: float) -> str:
    """4.5 -> '★★★★½'."""
    return "★" * int(value) + ("½" if value % 1 else "")


def rating(value: float) -> str:
    """3.0 -> '3', 3.5 -> '3.5'."""
    return f"{value:g}"


def when(value: str) -> str:
    """An RFC 3339 time as people read it, to the minute, in UTC."""
    return datetime.fromisoformat(value).strftime("%-d %b %Y, %H:%M UTC")


def day(value: str) -> str:
    return datetime.fromisoformat(value).strftime("%-d %b %Y")


templates = Jinja2Templates(directory=HERE / "templates")
templates.env.auto_reload = False  # templates ship with the code: no look at the disk on every render
templates.env.globals.update(static_url=static_url)
templates.env.filters.update(stars=stars, rating=rating, when=when, day=day, segment=segment)


def render(request: Request, name: str, status: int = 200, **context) -> Response:
    return templates.TemplateResponse(request, name, context, status_code=status, headers=HEADERS)


class PageError(Exception):
    """A page that cannot be shown: its status and a message for people."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def page(endpoint):
    """Show a PageError, or any failure, as a readable page: never a stack trace."""

    @wraps(endpoint)
    async def shown(request: Request) -> Response:
        try:
            return await endpoint(request)
        except PageError as error:
            return render(request, "error.html", error.status, message=error.message)
        except Exception:  # noqa: BLE001 - the page says sorry, the log has the details
            log.exception("page failed", extra={"path": request.url.path})
            return render(request, "error.html", 500, message="Something went wrong on our side. It has been "
                                                               "logged; please try again in a moment.")

    return shown


async def form_of(request: Request) -> dict[str, str]:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM:
            raise PageError(413, "That form was too large to accept.")
        chunks.append(chunk)
    return dict(parse_qsl(b"".join(chunks).decode("utf-8", "replace"), keep_blank_values=True))


# -- MovieSearch ---------------------------------------------------------------------------------

@page
async def home(request: Request) -> Response:
    query = request.query_params
    people = [user.strip() for user in query.getlist("user")]
    more = query.get("more", "")
    users = [u for u in people + [u.strip() for u in more.split(",")] if u]
    chosen = query.getlist("genre")
    async with Api(request) as api:
        strategies, genres = await asyncio.gather(api.get("/v1/strategies"), api.get("/v1/genres"))
        strategy = query.get("strategy") or strategies.body["default"]
        result = None
        if users:
            result = await api.get("/v1/match", users=",".join(users), strategy=strategy,
                                   genres=",".join(chosen), year_from=query.get("year_from"),
                                   year_to=query.get("year_to"), limit=query.get("limit"))
    people = (people + ["", ""])[:max(2, len(people))]
    return render(request, "match.html", 200 if result is None or result.ok else result.status,
                  people=people, more=more, strategy=strategy, strategies=strategies.body["strategies"],
                  genres=genres.body["genres"], chosen=chosen, year_from=query.get("year_from", ""),
                  year_to=query.get("year_to", ""), users=users, result=result)


# -- QueryUser -----------------------------------------------------------------------------------

@page
async def find_user(request: Request) -> Response:
    user = request.query_params.get("user_id", "").strip()
    if user:
        return RedirectResponse(f"/users/{segment(user)}", 303)
    return render(request, "find_user.html")


async def known(api: Api, user: str) -> bool:
    """Whether the user has any event at all (a user who retracted everything still has a history)."""
    answer = await api.get(f"/v1/users/{segment(user)}/history", limit=1)
    return answer.ok and bool(answer.body["events"])


async def titles(api: Api, movie_ids: list[str]) -> dict[str, dict]:
    """The catalogue entries of these movies, by id (those without one are left out)."""
    chunks = [movie_ids[n:n + IDS_PER_REQUEST] for n in range(0, len(movie_ids), IDS_PER_REQUEST)]
    answers = await asyncio.gather(*(api.get("/v1/catalogue", ids=",".join(chunk)) for chunk in chunks))
    return {entry["movie_id"]: entry for answer in answers if answer.ok for entry in answer.body["movies"]}


@page
async def user_reviews(request: Request) -> Response:
    user = request.path_params["user_id"]
    query = request.query_params
    async with Api(request) as api:
        answer = await api.get(f"/v1/users/{segment(user)}/reviews", limit=REVIEWS_PER_PAGE,
                               cursor=query.get("cursor"), after=query.get("after"))
        if answer.status == 503 and query.get("after"):
            # the write was accepted but is not visible yet: show the page and say so
            notice = "Your change was accepted and will show here in a moment; reload to see it."
            answer = await api.get(f"/v1/users/{segment(user)}/reviews", limit=REVIEWS_PER_PAGE)
        else:
            notice = {"submitted": "Your review was saved.", "retracted": "Your review was retracted."}.get(
                query.get("done", ""))
        if not answer.ok:
            raise PageError(answer.status, answer.detail)
        reviews = answer.body["reviews"]
        if not reviews and not query.get("cursor") and not await known(api, user):
            raise PageError(404, f"We have no reviews by “{user}”. Check the user id, or write their first review.")
        movies = await titles(api, [r["movie_id"] for r in reviews])
    return render(request, "user.html", user=user, reviews=reviews, movies=movies, notice=notice,
                  next_cursor=answer.body["next_cursor"], first_page=not query.get("cursor"))


def end_of(day_text: str) -> str:
    """The end of a day (UTC) as the API's `as_of`."""
    try:
        return f"{date.fromisoformat(day_text).isoformat()}T23:59:59.999999Z"
    except ValueError:
        raise PageError(400, f"“{day_text}” is not a date: use the form YYYY-MM-DD.") from None


@page
async def user_history(request: Request) -> Response:
    user = request.path_params["user_id"]
    query = request.query_params
    on = query.get("on", "")
    async with Api(request) as api:
        answer = await api.get(f"/v1/users/{segment(user)}/history", limit=EVENTS_PER_PAGE,
                               cursor=query.get("cursor"), as_of=end_of(on) if on else None)
        if not answer.ok:
            raise PageError(answer.status, answer.detail)
        events, stood = answer.body["events"], answer.body.get("reviews")
        if not events and not query.get("cursor") and not on:
            raise PageError(404, f"We have no history for “{user}”: they have never reviewed anything.")
        ids = dict.fromkeys([e["payload"]["movie_id"] for e in events] + [r["movie_id"] for r in stood or []])
        movies = await titles(api, list(ids))
    return render(request, "history.html", user=user, events=events, stood=stood, movies=movies, on=on,
                  next_cursor=answer.body["next_cursor"], first_page=not query.get("cursor"))


# -- EnterReview ---------------------------------------------------------------------------------

_limits: dict = {}  # the API's document does not change while the process runs: read it once


async def review_limits(api: Api) -> dict:
    """The review's field limits, as the API's OpenAPI document declares them."""
    if not _limits:
        _limits.update(read_limits((await api.get("/openapi.json")).body))
    return _limits


def read_limits(spec: dict) -> dict:
    body = spec["paths"]["/v1/reviews"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    fields = spec["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]["properties"]
    rating = fields["rating"]
    steps = round((rating["maximum"] - rating["minimum"]) / rating["multipleOf"])
    return {"ratings": [rating["minimum"] + n * rating["multipleOf"] for n in range(steps + 1)],
            "summary": fields["summary"]["maxLength"], "text": fields["text"]["maxLength"]}


async def review_form(request: Request, api: Api, values: dict[str, str], status: int = 200,
                      errors: dict[str, str] | None = None, message: str | None = None) -> Response:
    limits = await review_limits(api)
    found, q = [], values.get("q", "").strip()
    if q:
        answer = await api.get("/v1/movies", q=q, limit=SUGGESTIONS)
        if answer.ok:
            found = answer.body["movies"]
        else:
            errors = {**(errors or {}), "q": answer.detail}
    chosen = values.get("movie_id", "")
    if chosen and chosen not in [m["movie_id"] for m in found]:
        answer = await api.get(f"/v1/movies/{segment(chosen)}")
        found.insert(0, answer.body if answer.ok else {"movie_id": chosen, "title": None, "year": None})
    return render(request, "review.html", status, values=values, found=found, limits=limits, errors=errors or {},
                  message=message, key=values.get("key") or uuid.uuid4().hex)


@page
async def new_review(request: Request) -> Response:
    async with Api(request) as api:
        return await review_form(request, api, dict(request.query_params))


@page
async def submit_review(request: Request) -> Response:
    values = await form_of(request)
    body: dict = {"user_id": values.get("user_id", "").strip(), "movie_id": values.get("movie_id", ""),
                  "summary": values.get("summary", ""), "text": values.get("text", "")}
    if rating := values.get("rating"):
        try:
            body["rating"] = float(rating)
        except ValueError:
            body["rating"] = rating  # the API says what is wrong with it
    body = {name: value for name, value in body.items() if value != ""}  # missing: the API says so
    async with Api(request) as api:
        answer = await api.call("POST", "/v1/reviews", json=body, key=values.get("key"))
        if answer.ok:
            return RedirectResponse(after_write(body["user_id"], answer, "submitted"), 303)
        errors = answer.field_errors()
        message = (None if errors else answer.detail) if answer.status == 422 else unavailable(answer)
        return await review_form(request, api, values, answer.status, errors, message)


def unavailable(answer: Answer) -> str:
    if answer.status == 503:
        return ("We could not save your review just now: the service is briefly unavailable. Nothing was "
                "saved; send the form again in a moment.")
    return answer.detail


def after_write(user: str, receipt: Answer, done: str) -> str:
    return f"/users/{segment(user)}?" + urlencode({"after": receipt.body["token"], "done": done})


@page
async def retract_review(request: Request) -> Response:
    user, movie = request.path_params["user_id"], request.path_params["movie_id"]
    values = await form_of(request)
    async with Api(request) as api:
        answer = await api.call("DELETE", f"/v1/users/{segment(user)}/reviews/{segment(movie)}",
                                key=values.get("key"))
    if not answer.ok:
        raise PageError(answer.status, unavailable(answer) if answer.status == 503 else answer.detail)
    return RedirectResponse(after_write(user, answer, "retracted"), 303)


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    """What the app answers when no route matches the address: a page, or the API's own 404
    problem for API addresses and for anything but a GET."""
    request = Request(scope, receive)
    if request.method not in ("GET", "HEAD") or request.url.path.startswith(API_PREFIX):
        raise HTTPException(404)
    await render(request, "error.html", 404, message="There is no page at this address.")(scope, receive, send)


def routes() -> list[BaseRoute]:
    return [
        Route("/", home, methods=["GET"]),
        Route("/users", find_user, methods=["GET"]),
        Route("/users/{user_id}", user_reviews, methods=["GET"]),
        Route("/users/{user_id}/history", user_history, methods=["GET"]),
        Route("/users/{user_id}/reviews/{movie_id}/retract", retract_review, methods=["POST"]),
        Route("/review", new_review, methods=["GET"]),
        Route("/review", submit_review, methods=["POST"]),
        Mount("/static", CachedStatic(directory=HERE / "static"), name="static"),
    ]
