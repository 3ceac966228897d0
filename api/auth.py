"""Accounts and access tokens over HTTP, the limits on signing in and opening accounts, and who may
write what.

Reads are public; writing a user's reviews needs a bearer token for that user (RFC 6750). Signing in
and opening an account each cost a password hash, so both are limited per client address (and a
sign-in per user id) before any hashing, on counts kept in the projection store, where every API
process of a deployment counts alike (`projections.store.Attempts`).
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api.problems import ProblemError
from api.tokens import InvalidToken, TokenSigner
from api.wire import invalid, json_response, read_json
from commands.accounts import (
    Accounts, AccountOpenedView, AccountsBehind, AccountTaken, Credentials, OpenAccount, PasswordsBusy,
)
from commands.user_ids import InvalidUserId
from events.log import LogUnavailable
from events.sealing import Forgotten
from projections.store import Attempts, Tally

REALM = 'Bearer realm="moviEharmony"'


class AccessToken(msgspec.Struct, frozen=True):
    access_token: str
    token_type: str
    expires_in: int  # seconds


@dataclass(frozen=True)
class Limit:
    """At most `free` attempts per key within `window` seconds. Beyond them, with `longest`, the n-th
    further attempt may come only once n waits of 1, 2, 4, ... seconds (each twice the last, up to
    `longest`) have passed since the window's first attempt: an attempt's place in the count alone
    says whether it may go, so attempts sent at once cannot all pass, and the waits stay at
    `longest` once there. Without `longest`, none until the oldest attempt leaves the window."""

    name: str  # of its keys
    free: int
    window: float
    longest: float = 0.0

    def key(self, *parts: str) -> str:
        return "\x1f".join((self.name, *parts))

    def wait(self, tally: Tally, now: float) -> float:
        """Seconds before the `tally.count`-th attempt of the window may be made (0: now)."""
        beyond = tally.count - self.free
        if beyond <= 0:
            return 0.0
        if not self.longest:
            return max(0.0, tally.first + self.window - now)
        doubling = min(beyond, math.ceil(math.log2(self.longest)))  # the waits shorter than `longest`
        return max(0.0, tally.first + 2.0 ** doubling - 1 + (beyond - doubling) * self.longest - now)


# Failed sign-ins are remembered for a day, longer than the longest wait, so the waits never start
# over at 1 s. Strict per (user id, client address); per user id from any address only at a much
# higher count, so a stranger failing elsewhere leaves the owner at an address of their own alone;
# per client address over any user ids (one password tried on many).
DAY = 86_400.0
PER_USER_AND_CLIENT = Limit("signin-user-client", free=5, window=DAY, longest=900.0)
PER_USER = Limit("signin-user", free=100, window=DAY, longest=900.0)
PER_CLIENT = Limit("signin-client", free=50, window=DAY, longest=900.0)


@dataclass
class Auth:
    """The API's account and token collaborators (`app.state.auth`)."""

    accounts: Accounts
    tokens: TokenSigner
    attempts: Attempts  # where every API process counts sign-ins and openings
    openings: Limit  # accounts a client address may open an hour
    private_history: bool = False  # reading a user's history needs their token too
    clock: Callable[[], float] = time.time


def openings_limit(per_hour: int) -> Limit:
    return Limit("open-client", free=per_hour, window=3600.0)


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


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


async def admit(auth: Auth, checks: list[tuple[Limit, str]], refusal: str) -> str:
    """Count an attempt against each (limit, key) and answer its id, or raise a 429 with the longest
    wait, the attempt taken back (a refused try is not counted)."""
    keys, now = [key for _, key in checks], auth.clock()

    def wait(tallies: list[Tally]) -> float:
        return max(limit.wait(tally, now) for (limit, _), tally in zip(checks, tallies))

    def too_many(seconds: float) -> ProblemError:
        return ProblemError(429, f"{refusal}: wait before trying again", {"Retry-After": str(math.ceil(seconds))})

    # What is counted already refuses without writing, so a flood of refused tries adds nothing.
    counted = await run_in_threadpool(auth.attempts.attempts, keys, now)
    if seconds := wait([Tally(t.count + 1, now if t.first is None else t.first) for t in counted]):
        raise too_many(seconds)
    attempt = uuid.uuid4().hex
    # Then counted before the hash, so tries in flight count: of N at once, the k-th added sees k.
    if seconds := wait(await run_in_threadpool(auth.attempts.add_attempt, keys, attempt, now,
                                               max(limit.window for limit, _ in checks))):
        await run_in_threadpool(auth.attempts.drop_attempt, keys, attempt)
        raise too_many(seconds)
    return attempt


def busy(error: Exception) -> ProblemError:
    return ProblemError(503, f"{error}; retry", {"Retry-After": "1"})


async def open_account(request: Request) -> Response:
    auth: Auth = request.app.state.auth
    command = await read_json(request, OpenAccount)
    key = auth.openings.key(client_address(request))
    attempt = await admit(auth, [(auth.openings, key)], "too many accounts opened from this address")
    try:
        await auth.accounts.open(command)
    except InvalidUserId as error:
        raise invalid(str(error), "user_id") from None
    except AccountTaken as error:
        raise ProblemError(409, str(error)) from None
    except Forgotten:
        raise ProblemError(409, f"user id {command.user_id!r} asked to be forgotten: choose another") from None
    except PasswordsBusy as error:  # nothing was hashed: not counted
        await run_in_threadpool(auth.attempts.drop_attempt, [key], attempt)
        raise busy(error) from None
    except (AccountsBehind, LogUnavailable) as error:
        raise busy(error) from None
    return json_response(AccountOpenedView(command.user_id), 201)


async def issue_token(request: Request) -> Response:
    auth: Auth = request.app.state.auth
    credentials = await read_json(request, Credentials)
    user, client = credentials.user_id, client_address(request)
    checks = [(PER_USER_AND_CLIENT, PER_USER_AND_CLIENT.key(user, client)), (PER_USER, PER_USER.key(user)),
              (PER_CLIENT, PER_CLIENT.key(client))]
    keys = [key for _, key in checks]
    attempt = await admit(auth, checks, "too many failed sign-ins")
    if await run_in_threadpool(request.app.state.forgetting.forgotten, [user]):
        raise ProblemError(401, "wrong user id or password", {"WWW-Authenticate": REALM})
    try:
        matches = await auth.accounts.check(credentials)
    except (AccountsBehind, PasswordsBusy) as error:  # not a failed try: no password was compared
        await run_in_threadpool(auth.attempts.drop_attempt, keys, attempt)
        raise busy(error) from None
    if not matches:  # the attempt stays counted: a failure
        raise ProblemError(401, "wrong user id or password", {"WWW-Authenticate": REALM})
    await run_in_threadpool(succeeded, auth.attempts, keys, attempt)
    return json_response(AccessToken(auth.tokens.issue(credentials.user_id), "bearer", auth.tokens.lifetime))


def succeeded(attempts: Attempts, keys: list[str], attempt: str) -> None:
    """A success is no failure, and forgives this address's failures for this user (not the user's
    from elsewhere, nor the address's for other users)."""
    attempts.drop_attempt(keys[1:], attempt)
    attempts.clear_attempts(keys[0])
