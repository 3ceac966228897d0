"""The pages: finding movies for two (the home page), a user's reviews and their audit trail, and
writing a review (signed in: web/signin.py); a movie's page is web/movie.py. Each page asks the API
(`web.client`) and renders what it answers; the forms work without JavaScript, which only adds
suggestions as you type and character counts."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Receive, Scope, Send

from web import forget, signin
from web.client import Answer, Api, segment
from web.limits import input_limits
from web.movie import movie_page
from web.rendering import HERE, PageError, page, posted_form, render, this_page
from web.session import session_of, token_of
from web.static import CachedStatic

REVIEWS_PER_PAGE = 10
EVENTS_PER_PAGE = 20
SUGGESTIONS = 8
IDS_PER_REQUEST = 100  # the most GET /v1/catalogue takes
API_PREFIX = "/v1/"  # addresses left to the API's 404 (a problem+json)
REVIEW_FIELDS = ("q", "movie_id", "rating", "summary", "text", "key")  # what the review form carries back


# -- MovieSearch ---------------------------------------------------------------------------------

@page
async def home(request: Request) -> Response:
    query = request.query_params
    people = [user.strip() for user in query.getlist("user")]
    more = query.get("more", "")
    users = [u for u in people + [u.strip() for u in more.split(",")] if u]
    visitor = session_of(request)
    if not people and visitor is not None:  # signed in, Person 1 is you unless the address names people
        people = [visitor.user]
    chosen = query.getlist("genre")
    async with Api(request, token_of(request)) as api:
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
                  year_to=query.get("year_to", ""), users=users, result=result,
                  forgotten=forgotten_member(result, users), search=this_page(request))


def forgotten_member(result: Answer | None, users: list[str]) -> str | None:
    """The member the API refused the match for because they asked to be forgotten, if any."""
    if result is None or not forget.forgotten(result):
        return None
    # With several members the API's detail names the one: "ben: this user asked to be forgotten".
    named = result.detail.removesuffix(f": {forget.FORGOTTEN}")
    return named if named in users else users[0]


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
    visitor = session_of(request)
    mine = visitor is not None and visitor.user == user
    async with Api(request, token_of(request)) as api:
        answer = await api.get(f"/v1/users/{segment(user)}/reviews", limit=REVIEWS_PER_PAGE,
                               cursor=query.get("cursor"), after=query.get("after"))
        if answer.status == 503 and query.get("after"):
            # the write was accepted but is not visible yet: show the page and say so
            notice = "Your change was accepted and will show here in a moment; reload to see it."
            answer = await api.get(f"/v1/users/{segment(user)}/reviews", limit=REVIEWS_PER_PAGE)
        else:
            notice = {"submitted": "Your review was saved.", "retracted": "Your review was retracted."}.get(
                query.get("done", ""))
        if forget.forgotten(answer):
            return forget.forgotten_page(request, user)
        if not answer.ok:
            raise PageError(answer.status, answer.detail)
        reviews = answer.body["reviews"]
        if not reviews and not query.get("cursor") and not mine and not await known(api, user):
            raise PageError(404, f"We have no reviews by “{user}”. Check the user id, or write their first review.")
        movies = await titles(api, [r["movie_id"] for r in reviews])
    return render(request, "user.html", user=user, mine=mine, reviews=reviews, movies=movies, notice=notice,
                  next_cursor=answer.body["next_cursor"], first_page=not query.get("cursor"))


def end_of(day_text: str) -> str:
    """The end of a day (UTC) as the API's `as_of` or `written_by`."""
    try:
        return f"{date.fromisoformat(day_text).isoformat()}T23:59:59.999999Z"
    except ValueError:
        raise PageError(400, f"“{day_text}” is not a date: use the form YYYY-MM-DD.") from None


# The history page's clocks: the API parameter each asks with. "written": by the reviews' own dates
# (an import keeps its original date, a retraction counts from when it was made); "recorded": by
# when the log recorded each change (the audit: an import counts from the day it ran).
CLOCKS = {"written": "written_by", "recorded": "as_of"}


@page
async def user_history(request: Request) -> Response:
    user = request.path_params["user_id"]
    query = request.query_params
    on = query.get("on", "")
    clock = query.get("clock") or "written"
    if clock not in CLOCKS:
        raise PageError(400, f"“{clock}” is not a clock: choose “written” or “recorded”.")
    async with Api(request, token_of(request)) as api:
        answer = await api.get(f"/v1/users/{segment(user)}/history", limit=EVENTS_PER_PAGE,
                               cursor=query.get("cursor"), **{CLOCKS[clock]: end_of(on) if on else None})
        if forget.forgotten(answer):
            return forget.forgotten_page(request, user)
        if answer.status == 401:  # histories are private (HARMONY_PRIVATE_HISTORY=1): the owner's only
            return signin.sign_in_first(request, this_page(request), "private")
        if answer.status == 403:
            raise PageError(403, f"Only {user} can see the history of their reviews.")
        if not answer.ok:
            raise PageError(answer.status, answer.detail)
        events, stood = answer.body["events"], answer.body.get("reviews")
        if not events and not query.get("cursor") and not on:
            raise PageError(404, f"We have no history for “{user}”: they have never reviewed anything.")
        ids = dict.fromkeys([e["payload"]["movie_id"] for e in events] + [r["movie_id"] for r in stood or []])
        movies = await titles(api, list(ids))
    return render(request, "history.html", user=user, events=events, stood=stood, movies=movies, on=on,
                  clock=clock, next_cursor=answer.body["next_cursor"], first_page=not query.get("cursor"))


# -- EnterReview ---------------------------------------------------------------------------------

async def review_form(request: Request, api: Api, values: dict[str, str], status: int = 200,
                      errors: dict[str, str] | None = None, message: str | None = None) -> Response:
    limits = await input_limits(api)
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
    if session_of(request) is None:
        return signin.sign_in_first(request, this_page(request), "write")
    async with Api(request, token_of(request)) as api:
        return await review_form(request, api, dict(request.query_params))


@page
async def submit_review(request: Request) -> Response:
    values = await posted_form(request)
    visitor = session_of(request)
    again = "/review?" + urlencode({name: values[name] for name in REVIEW_FIELDS if values.get(name)})
    if visitor is None:  # the session ended (its cookie with it) since the form was shown
        return signin.sign_in_first(request, again, "expired")
    body: dict = {"user_id": visitor.user, "movie_id": values.get("movie_id", ""),
                  "summary": values.get("summary", ""), "text": values.get("text", "")}
    if rating := values.get("rating"):
        try:
            body["rating"] = float(rating)
        except ValueError:
            body["rating"] = rating  # the API says what is wrong with it
    async with Api(request, visitor.token) as api:
        answer = await api.call("POST", "/v1/reviews", json=signin.filled(body), key=values.get("key"))
        if answer.status == 401:
            return signin.sign_in_first(request, again, "expired")
        if answer.ok:
            return RedirectResponse(after_write(visitor.user, answer, "submitted"), 303)
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
    values = await posted_form(request)
    async with Api(request, token_of(request)) as api:
        answer = await api.call("DELETE", f"/v1/users/{segment(user)}/reviews/{segment(movie)}",
                                key=values.get("key"))
    if answer.status == 401:  # no session, or one the API no longer takes
        return signin.sign_in_first(request, f"/users/{segment(user)}", "expired")
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
        Route("/users/{user_id}/delete", forget.confirm, methods=["GET"]),
        Route("/users/{user_id}/delete", forget.delete_account, methods=["POST"]),
        Route("/deleted", forget.deleted, methods=["GET"]),
        Route("/movies/{movie_id}", movie_page, methods=["GET"]),
        Route("/review", new_review, methods=["GET"]),
        Route("/review", submit_review, methods=["POST"]),
        Route("/signin", signin.sign_in_form, methods=["GET"]),
        Route("/signin", signin.sign_in, methods=["POST"]),
        Route("/signup", signin.sign_up_form, methods=["GET"]),
        Route("/signup", signin.sign_up, methods=["POST"]),
        Route("/signout", signin.sign_out, methods=["POST"]),
        Mount("/static", CachedStatic(directory=HERE / "static"), name="static"),
    ]
