"""Access tokens: JSON Web Tokens (RFC 7519) signed with HMAC-SHA256, naming the user (`sub`) and
when they expire (`exp`). Stateless: any API process with the key checks them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Callable

import msgspec

from events.errors import HarmonyError

_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
MIN_KEY = 32  # bytes: HS256 wants a key at least as long as its hash
CHECKED = 10_000  # tokens whose signature is remembered as checked


class Claims(msgspec.Struct, frozen=True):
    sub: str
    iat: int
    exp: int


class InvalidToken(HarmonyError):
    """Not a token of this API, tampered with, or expired; the message says which."""


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


class TokenSigner:
    def __init__(self, key: bytes, lifetime: int, clock: Callable[[], float] = time.time):
        if len(key) < MIN_KEY:
            raise ValueError(f"a token key needs at least {MIN_KEY} bytes")
        self._key, self.lifetime, self._clock = key, lifetime, clock
        self._checked: dict[str, Claims] = {}  # token -> its claims, signature checked

    def issue(self, user_id: str) -> str:
        now = int(self._clock())
        signed = _HEADER + b"." + _b64(msgspec.json.encode(Claims(user_id, now, now + self.lifetime)))
        return (signed + b"." + _b64(self._sign(signed))).decode()

    def subject(self, token: str) -> str:
        """The user the token is for, or InvalidToken."""
        # A client sends the same token with every request: its signature is checked once.
        claims = self._checked.get(token) or self._check(token)
        if claims.exp <= self._clock():
            raise InvalidToken("the token has expired: get a new one from POST /v1/tokens")
        return claims.sub

    def _check(self, token: str) -> Claims:
        header, _, rest = token.partition(".")
        claims, _, signature = rest.partition(".")
        try:
            good = hmac.compare_digest(_unb64(signature), self._sign(f"{header}.{claims}".encode()))
            if not good or header.encode() != _HEADER:
                raise InvalidToken("the token's signature is not valid")
            decoded = msgspec.json.decode(_unb64(claims), type=Claims)
        except (ValueError, msgspec.DecodeError):  # bad base64, not ASCII, not the claims' JSON
            raise InvalidToken("not an access token of this API") from None
        if len(self._checked) >= CHECKED:
            self._checked.clear()  # bounded memory; the busy tokens come back at once
        self._checked[token] = decoded
        return decoded

    def _sign(self, data: bytes) -> bytes:
        return hmac.digest(self._key, data, hashlib.sha256)
