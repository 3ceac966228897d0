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

    def issue(self, user_id: str) -> str:
        now = int(self._clock())
        signed = _HEADER + b"." + _b64(msgspec.json.encode(Claims(user_id, now, now + self.lifetime)))
        return (signed + b"." + _b64(self._sign(signed))).decode()

    def subject(self, token: str) -> str:
        """The user the token is for, or InvalidToken."""
        header, _, rest = token.partition(".")
        claims, _, signature = rest.partition(".")
        try:
            good = hmac.compare_digest(_unb64(signature), self._sign(f"{header}.{claims}".encode()))
            if not good or header.encode() != _HEADER:
                raise InvalidToken("the token's signature is not valid")
            decoded = msgspec.json.decode(_unb64(claims), type=Claims)
        except (ValueError, msgspec.DecodeError):  # bad base64, not ASCII, not the claims' JSON
            raise InvalidToken("not an access token of this API") from None
        if decoded.exp <= self._clock():
            raise InvalidToken("the token has expired: get a new one from POST /v1/tokens")
        return decoded.sub

    def _sign(self, data: bytes) -> bytes:
        return hmac.new(self._key, data, hashlib.sha256).digest()
