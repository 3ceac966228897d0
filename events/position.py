"""Where an event sits in the log, and the opaque read-your-writes token that carries it."""

from __future__ import annotations

import base64

import msgspec


class Position(msgspec.Struct, frozen=True):
    partition: int
    offset: int

    def token(self) -> str:
        return base64.urlsafe_b64encode(f"{self.partition}.{self.offset}".encode()).decode().rstrip("=")

    @classmethod
    def from_token(cls, token: str) -> "Position":
        """Parse a token made by `token()`; ValueError if it is not one."""
        try:
            text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            partition, offset = text.split(".")
            position = cls(int(partition), int(offset))
        except (ValueError, UnicodeDecodeError) as error:
            raise ValueError(f"not a position token: {token!r}") from error
        if position.partition < 0 or position.offset < 0:
            raise ValueError(f"not a position token: {token!r}")
        return position
