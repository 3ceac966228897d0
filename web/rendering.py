"""What every page shares: its templates and their filters, its headers, the visitor's session and
CSRF token in its context, readable failures, and reading a posted form."""

from __future__ import annotations

import logging
from datetime import datetime
from functools import wraps
from pathlib import Path
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from web.client import segment
from web.session import csrf_checked, csrf_seed, csrf_token, keep_csrf_seed, new_csrf_seed, safe_next, session_of
from web.static import static_url

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
MAX_FORM = 64 * 1024  # bytes of a posted form
SIGN_PAGES = ("/signin", "/signup")


def content_policy(*image_origins: str) -> str:
    """The pages' Content-Security-Policy: the site's own files only, and images also from these
    origins (a movie's poster)."""
    images = " ".join(("'self'", "data:", *image_origins))
    return f"default-src 'self'; img-src {images}; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"


HEADERS = {
    "Content-Security-Policy": content_policy(),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "private, no-cache",  # pages hold the visitor's CSRF token and name
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


def render(request: Request, name: str, status: int = 200, headers: dict[str, str] | None = None,
           **context) -> Response:
    kept = csrf_seed(request)
    seed = kept or new_csrf_seed()
    context = {"session": session_of(request), "csrf": csrf_token(request, seed), "back": back(request), **context}
    response = templates.TemplateResponse(request, name, context, status_code=status,
                                          headers={**HEADERS, **(headers or {})})
    if kept is None:
        keep_csrf_seed(request, response, seed)
    return response


def back(request: Request) -> str | None:
    """Where signing in from this page comes back to: the page itself, or where the sign-in page would."""
    if request.url.path in SIGN_PAGES:
        return safe_next(request.query_params.get("next"))
    return safe_next(this_page(request)) if request.method == "GET" else None


def this_page(request: Request) -> str:
    """The address of the page asked for, without the site's origin."""
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


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


async def posted_form(request: Request) -> dict[str, str]:
    """A posted form's fields, once its CSRF token is found right: else a 403 page, and nothing done."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM:
            raise PageError(413, "That form was too large to accept.")
        chunks.append(chunk)
    form = dict(parse_qsl(b"".join(chunks).decode("utf-8", "replace"), keep_blank_values=True))
    if not csrf_checked(request, form):
        log.warning("form refused: its CSRF token is missing or wrong", extra={"path": request.url.path})
        raise PageError(403, "This form could not be accepted: it is out of date, or it was sent from another "
                             "site. Nothing was changed. Reload the page and send it again (the site needs "
                             "cookies for that).")
    return form
