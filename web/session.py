"""Who is signed in to the website, where they may be sent back to, and the proof that a posted
form came from one of the site's own pages.

The session cookie holds the API's access token, with the user id it was issued for (the site
says who is signed in without reading the token, which is the API's own business). It lives as
long as the token (Max-Age = expires_in), is HttpOnly, and SameSite=Lax keeps it off other
sites' posts.

Each form carries a CSRF token equal to the `csrf` cookie's (a double-submit cookie): another site
can make a browser post a form, but can neither read this site's cookies nor know the value. It
needs no key, so a form one API process rendered is accepted by every other. Over https both
cookies take the `__Host-` prefix, which browsers accept only from this very host, over https,
for the whole site: no neighbouring subdomain can plant a value.
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass
from urllib.parse import quote, unquote

from starlette.requests import Request
from starlette.responses import Response

SESSION = "session"
CSRF = "csrf"  # the cookie's name, and the form field's
_CSRF_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
# A path of this site: one "/" then no "/" or "\" (browsers read "//host" and "/\host" as another
# site), and no blanks or control characters (browsers drop tabs and newlines: "/\t/host").
_LOCAL_PATH = re.compile(r"/(?![/\\])[^\\\s\x00-\x1f\x7f]*")


@dataclass(frozen=True)
class Session:
    user: str
    token: str  # the API's access token for `user`


def _cookie(request: Request, name: str) -> str:
    return f"__Host-{name}" if _secure(request) else name


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _flags(request: Request) -> dict:
    return {"path": "/", "secure": _secure(request), "httponly": True, "samesite": "lax"}


def session_of(request: Request) -> Session | None:
    user, _, token = request.cookies.get(_cookie(request, SESSION), "").partition(":")
    return Session(unquote(user), token) if user and token else None


def token_of(request: Request) -> str | None:
    """The signed-in visitor's access token, for the API calls made on their behalf."""
    session = session_of(request)
    return session.token if session else None


def start(request: Request, response: Response, session: Session, lifetime: int) -> None:
    """Sign the visitor in for `lifetime` seconds (the token's)."""
    response.set_cookie(_cookie(request, SESSION), f"{quote(session.user, safe='')}:{session.token}",
                        max_age=lifetime, **_flags(request))


def end(request: Request, response: Response) -> None:
    response.delete_cookie(_cookie(request, SESSION), **_flags(request))


def csrf_token(request: Request) -> str | None:
    """The visitor's CSRF token, if they have a cookie with one."""
    token = request.cookies.get(_cookie(request, CSRF), "")
    return token if _CSRF_TOKEN.fullmatch(token) else None


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def keep_csrf_token(request: Request, response: Response, token: str) -> None:
    # For the browser's session: a page rendered after a restart gives a new one.
    response.set_cookie(_cookie(request, CSRF), token, **_flags(request))


def csrf_checked(request: Request, form: dict[str, str]) -> bool:
    """Whether the posted form carries the CSRF token of the visitor's cookie."""
    token = csrf_token(request)
    return token is not None and hmac.compare_digest(form.get(CSRF, "").encode(), token.encode())


def safe_next(path: str | None) -> str | None:
    """`path` if it is an address on this site to send someone to, else None (no open redirect)."""
    return path if path and _LOCAL_PATH.fullmatch(path) else None
