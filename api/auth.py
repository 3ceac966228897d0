"""Accounts and access tokens over HTTP, the sign-in throttle, and who may write what.

Reads are public; writing a user's reviews needs a bearer token for that user (RFC 6750). Failed
sign-ins slow further tries down, per user id and per client address, in each API process.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from api.problems import ProblemError
from api.tokens import InvalidToken, TokenSigner
from api.wire import json_response, read_json
from commands.accounts import Accounts, AccountOpenedView, AccountsBehind, AccountTaken, Credentials, OpenAccount
from events.log import LogUnavailable

REALM = 'Bearer realm="moviEharmony"'


class AccessToken(msgspec.Struct, frozen=True):
    access_token: str
    token_type: str
    expires_in: int  # seconds


class Throttle:
    """Counts failures per key (a user id, a client address): after `free` failures within `window`
    seconds, each further try must wait twice as long as the last, up to `longest` seconds."""

    def __init__(self, free: int, window: float = 900.0, longest: float = 900.0, keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic):
        self.free, self.window, self.longest, self._keys, self._clock = free, window, longest, keys, clock
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()  # key -> (count, last failure)

    def wait(self, key: str) -> float:
        """Seconds before `key` may try again (0: now)."""
        count, last = self._failures.get(key, (0, 0.0))
        if count < self.free or self._clock() - last > self.window:
            return 0.0
        return max(0.0, last + min(self.longest, 2.0 ** (count - self.free)) - self._clock())

    def failed(self, key: str) -> None:
        count, last = self._failures.pop(key, (0, 0.0))
        now = self._clock()
        self._failures[key] = (1 if now - last > self.window else count + 1, now)
        if len(self._failures) > self._keys:  # bounded memory: forget the longest-quiet key
            self._failures.popitem(last=False)

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)


@dataclass
class Auth:
    """The API's account and token collaborators (`app.state.auth`)."""

    accounts: Accounts
    tokens: TokenSigner
    private_history: bool = False  # reading a user's history needs their token too
    per_user: Throttle = field(default_factory=lambda: Throttle(free=5))
    per_client: Throttle = field(default_factory=lambda: Throttle(free=50))


def authorize(request: Request, user_id: str) -> None:
    """Let the request act as `user_id`, or raise a 401 (no, or no valid, token) or a 403 (another user's)."""
    auth: Auth = request.app.state.auth
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ProblemError(401, "sign in first: send Authorization: Bearer <access_token> (POST /v1/tokens)",
                           {"WWW-Authenticate": REALM})
    try:
        subject = auth.tokens.subject(token.strip())
    except InvalidToken as error:
        raise ProblemError(401, str(error), {"WWW-Authenticate": f'{REALM}, error="invalid_token"'}) from None
    if subject != user_id:
        raise ProblemError(403, f"this token is for another user than {user_id!r}")


async def open_account(request: Request) -> Response:
    auth: Auth = request.app.state.auth
    command = await read_json(request, OpenAccount)
    try:
        await auth.accounts.open(command)
    except AccountTaken as error:
        raise ProblemError(409, str(error)) from None
    except (AccountsBehind, LogUnavailable) as error:
        raise ProblemError(503, f"{error}; retry", {"Retry-After": "1"}) from None
    return json_response(AccountOpenedView(command.user_id), 201)


async def issue_token(request: Request) -> Response:
    auth: Auth = request.app.state.auth
    credentials = await read_json(request, Credentials)
    client = f"client\x1f{request.client.host if request.client else ''}"
    user = f"user\x1f{credentials.user_id}"
    if wait := max(auth.per_user.wait(user), auth.per_client.wait(client)):
        raise ProblemError(429, "too many failed sign-ins: wait before trying again",
                           {"Retry-After": str(math.ceil(wait))})
    try:
        matches = await auth.accounts.check(credentials)
    except AccountsBehind as error:  # not a failed try: no password was compared
        raise ProblemError(503, f"{error}; retry", {"Retry-After": "1"}) from None
    if not matches:
        auth.per_user.failed(user)
        auth.per_client.failed(client)
        raise ProblemError(401, "wrong user id or password", {"WWW-Authenticate": REALM})
    auth.per_user.forget(user)
    return json_response(AccessToken(auth.tokens.issue(credentials.user_id), "bearer", auth.tokens.lifetime))
