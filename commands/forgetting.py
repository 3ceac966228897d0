"""Forgetting a user: what `DELETE /v1/users/{id}` and `harmony users forget` do.

In order, each step safe to run again after a crash: the user id is retired (no new key is made
for it, and every read of it answers that it asked to be forgotten), a `SubjectForgotten` is
appended to the review log (keyed by the subject, so after the user's events: the projectors
delete their rows), the key and the mapping are deleted (every event sealed under the key is
unreadable from then on, in the log, the archive and any copy), then the user's published factor
rows and this process's caches of them go.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Callable, Protocol

from commands.handlers import EventAppender, utcnow
from commands.types import Receipt
from events.errors import HarmonyError
from events.types import SubjectForgotten


class ForgettingKeys(Protocol):
    """What forgetting needs of the keyring (keys.keyring.Keyring); synchronous, called in threads."""

    def subject_of(self, user_id: str) -> str | None: ...

    def forgotten_of(self, user_ids: list[str]) -> set[str]: ...

    def retire(self, user_id: str) -> None: ...

    def forget(self, user_id: str) -> str | None: ...


class FactorRows(Protocol):
    def forget_factors(self, user_id: str) -> None: ...


class NothingToForget(HarmonyError):
    """The user id has no key: nothing of it was ever written (or it was forgotten already)."""


class Forgetting:
    def __init__(self, log: EventAppender, keys: ForgettingKeys, factors: FactorRows,
                 caches: tuple[Callable[[str], None], ...] = (), clock=utcnow):
        self._log, self.keys, self._factors, self._caches, self._clock = log, keys, factors, caches, clock
        self._forgotten: set[str] = set()  # ids known forgotten: never unforgotten, so kept

    async def forget(self, user_id: str) -> Receipt:
        """Forget the user (see the module); raises NothingToForget, or LogUnavailable (then the id
        is retired already and a retry finishes the work)."""
        subject = await asyncio.to_thread(self.keys.subject_of, user_id)
        if subject is None:  # a retired id with its subject still there is one whose forgetting was cut short
            if self.forgotten([user_id]):
                raise NothingToForget("this user asked to be forgotten")
            raise NothingToForget(f"user {user_id!r} has nothing to forget")
        await asyncio.to_thread(self.keys.retire, user_id)
        self._forgotten.add(user_id)
        now = self._clock()
        event = SubjectForgotten(event_id=str(uuid.uuid4()), occurred_at=now, recorded_at=now, subject=subject)
        position = await self._log.append(event)
        await asyncio.to_thread(self.keys.forget, user_id)
        await asyncio.to_thread(self._factors.forget_factors, user_id)
        for drop in self._caches:
            drop(user_id)
        return Receipt(event_id=event.event_id, position=position, token=position.token())

    def forgotten(self, user_ids: list[str]) -> str | None:
        """The first of these user ids that asked to be forgotten, if any (synchronous: a key-store read)."""
        among = self.forgotten_among(user_ids)
        return next((user_id for user_id in user_ids if user_id in among), None)

    def forgotten_among(self, user_ids) -> set[str]:
        """Those of these user ids that asked to be forgotten (synchronous: one key-store read for the
        ids not known forgotten yet)."""
        unknown = [user_id for user_id in dict.fromkeys(user_ids) if user_id not in self._forgotten]
        self._forgotten |= self.keys.forgotten_of(unknown) if unknown else set()
        return self._forgotten.intersection(user_ids)
