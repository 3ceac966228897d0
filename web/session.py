"""Who is signed in to the website, where they may be sent back to, and the proof that a posted
form came from one of the site's own pages.

The session cookie holds the API's access token, with the user id it was issued for (the site
says who is signed in without reading the token, which is the API's own business). It lives as
long as the token (Max-Age = expires_in), is HttpOnly, and SameSite=Lax keeps it off other
sites' posts.

Each form carries a CSRF token: an HMAC, under the app's `state.csrf_key`, of the `csrf` cookie (a
random seed per browser) and the session cookie. Another site can make a browser post a form, but
can neither read this site's cookies nor compute the token. Whoever can set a cookie for the site
(a neighbouring subdomain, a network attacker on http) cannot make up a pair that passes, for want
of the key; a seed and token from their own visit pass only while the visitor is not signed in
(signing them in as the attacker, which only https's `__Host-` prefix prevents), never once they
are (the session is in the token). The seed is new at every sign-in and sign-out. Every API process of a deployment has
the same key, so a form one rendered is accepted by every other. Over https both cookies take the
`__Host-` prefix, which browsers accept only from this very host, over https, for the whole site.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from urllib.parse import quote, unquote

from starlette.requests import Request
from starlette.responses import Response

SESSION = "session"
CSRF = "csrf"  # the seed cookie's name, and the token's form field's
_CSRF_SEED = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
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
    """Sign the visitor in for `lifetime` seconds (the token's), with a new CSRF seed."""
    response.set_cookie(_cookie(request, SESSION), f"{quote(session.user, safe='')}:{session.token}",
                        max_age=lifetime, **_flags(request))
    keep_csrf_seed(request, response, new_csrf_seed())


def end(request: Request, response: Response) -> None:
    """Sign the visitor out, with a new CSRF seed."""
    response.delete_cookie(_cookie(request, SESSION), **_flags(request))
    keep_csrf_seed(request, response, new_csrf_seed())


def csrf_seed(request: Request) -> str | None:
    """The visitor's CSRF seed, if they have a cookie with one."""
    seed = request.cookies.get(_cookie(request, CSRF), "")
    return seed if _CSRF_SEED.fullmatch(seed) else None


def new_csrf_seed() -> str:
    return secrets.token_urlsafe(32)


def keep_csrf_seed(request: Request, response: Response, seed: str) -> None:
    # For the browser's session: a page rendered after a restart gives a new one.
    response.set_cookie(_cookie(request, CSRF), seed, **_flags(request))


def csrf_token(request: Request, seed: str) -> str:
    """The token the visitor's forms carry: bound to their seed and session by the app's key."""
    session = request.cookies.get(_cookie(request, SESSION), "")
    mac = hmac.new(request.app.state.csrf_key, f"{seed}\x1f{session}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def csrf_checked(request: Request, form: dict[str, str]) -> bool:
    """Whether the posted form carries the CSRF token of the visitor's seed and session."""
    seed = csrf_seed(request)
    return seed is not None and hmac.compare_digest(form.get(CSRF, "").encode(), csrf_token(request, seed).encode())


def safe_next(path: str | None) -> str | None:
    """`path` if it is an address on this site to send someone to, else None (no open redirect)."""
    return path if path and _LOCAL_PATH.fullmatch(path) else None
