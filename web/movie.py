"""A movie's page: its catalogue entry and poster, its ratings as a histogram, its reviews newest
first, and the movies the model finds most like it."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from web.client import Answer, Api, segment
from web.rendering import PageError, content_policy, page, render
from web.session import token_of

REVIEWS_PER_PAGE = 10
SIMILAR = 8
HOST = re.compile(r"[a-z0-9.-]+")  # a host name as urlsplit gives it (lower case)


@page
async def movie_page(request: Request) -> Response:
    movie_id = request.path_params["movie_id"]
    cursor = request.query_params.get("cursor")
    path = f"/v1/movies/{segment(movie_id)}"
    async with Api(request, token_of(request)) as api:
        movie, reviews, entries, similar = await asyncio.gather(
            api.get(path), api.get(f"{path}/reviews", limit=REVIEWS_PER_PAGE, cursor=cursor),
            api.get("/v1/catalogue", ids=movie_id), api.get(f"{path}/similar", limit=SIMILAR))
    if movie.status == 404:
        raise PageError(404, f"We have no movie “{movie_id}”: nobody has catalogued or reviewed it.")
    for answer in (movie, reviews):
        if not answer.ok:
            raise PageError(answer.status, answer.detail)
    entry = entries.body["movies"][0] if entries.ok and entries.body["movies"] else {}
    image = poster(entry.get("image_url"))
    headers = {"Content-Security-Policy": content_policy(image[1])} if image else None
    return render(request, "movie.html", headers=headers, movie=movie.body, poster=image and image[0],
                  histogram=histogram(movie.body["ratings"]), reviews=reviews.body["reviews"],
                  next_cursor=reviews.body["next_cursor"], first_page=not cursor, similar=similar_movies(similar))


def histogram(ratings: list[dict]) -> list[dict]:
    """The API's counts per rating, highest rating first, each with its share of the reviews in %."""
    total = sum(r["count"] for r in ratings) or 1
    return [{**r, "share": round(100 * r["count"] / total)} for r in sorted(ratings, key=lambda r: -r["rating"])]


def similar_movies(answer: Answer) -> dict:
    """The nearest movies, or why there are none: a plain message when there is no model yet or the
    movie is not in it (both are normal states, not failures of the page)."""
    if answer.ok:
        return {"movies": answer.body["movies"], "model_version": answer.body["model_version"]}
    messages = {503: "No model has been trained yet, so we cannot tell which movies are like this one.",
                404: "The current model does not know this movie yet: it learns it from its reviews at its "
                     "next training."}
    return {"movies": [], "message": messages.get(answer.status, answer.detail)}


def poster(url: str | None) -> tuple[str, str] | None:
    """The catalogue's image address and its origin, if it is a plain http(s) URL; else no poster.
    The origin goes into this page's Content-Security-Policy, so it must be nothing but an origin."""
    parts = urlsplit(url or "")
    try:
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not HOST.fullmatch(parts.hostname or ""):
        return None
    return url, f"{parts.scheme}://{parts.hostname}" + (f":{port}" if port else "")
