"""Command handlers: a valid command becomes one event appended to the log.

Handlers never read projections: what they decide, they decide from the command.
An `Idempotency-Key` makes the event id deterministic, so a retried request
carries the same event and projectors apply it once; within one process a
retry also gets the first answer back without appending again.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from typing import Callable, Protocol

from commands.types import Receipt, RetractReview, SubmitReview
from events.errors import HarmonyError
from events.position import Position
from events.types import Event, ReviewRetracted, ReviewSubmitted

IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1c4b8e-2a4e-4f57-9d1e-6d0e8a9b2c11")
EARLIEST_REVIEW = datetime(1900, 1, 1, tzinfo=timezone.utc)
CLOCK_SKEW = timedelta(days=1)


class EventAppender(Protocol):
    async def append(self, event: Event) -> Position: ...


class InvalidCommand(HarmonyError):
    """A command that is well-formed but not acceptable; the message says why, `field` about which."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


class IdempotencyConflict(HarmonyError):
    """The same Idempotency-Key was used before with a different request."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class ReviewCommands:
    def __init__(
        self,
        log: EventAppender,
        clock: Callable[[], datetime] = utcnow,
        remembered_keys: int = 10_000,
    ):
        self._log = log
        self._clock = clock
        self._limit = remembered_keys
        self._answers: OrderedDict[str, tuple[str, asyncio.Future[Receipt]]] = OrderedDict()

    async def submit(self, command: SubmitReview, idempotency_key: str | None = None) -> Receipt:
        now = self._clock()
        reviewed_at = command.reviewed_at or now
        if not EARLIEST_REVIEW <= reviewed_at <= now + CLOCK_SKEW:
            raise InvalidCommand(f"reviewed_at {reviewed_at.isoformat()} is not between 1900 and now", "reviewed_at")

        def event(event_id: str) -> Event:
            return ReviewSubmitted(
                event_id=event_id, occurred_at=reviewed_at, recorded_at=now,
                user_id=command.user_id, movie_id=command.movie_id, rating=command.rating,
                summary=command.summary, text=command.text, reviewed_at=reviewed_at,
            )

        return await self._append("submit", command, idempotency_key, event)

    async def retract(self, command: RetractReview, idempotency_key: str | None = None) -> Receipt:
        now = self._clock()

        def event(event_id: str) -> Event:
            return ReviewRetracted(
                event_id=event_id, occurred_at=now, recorded_at=now,
                user_id=command.user_id, movie_id=command.movie_id,
            )

        return await self._append("retract", command, idempotency_key, event)

    async def _append(
        self,
        kind: str,
        command: SubmitReview | RetractReview,
        key: str | None,
        make_event: Callable[[str], Event],
    ) -> Receipt:
        if key is None:
            return await self._write(make_event(str(uuid.uuid4())))
        scope = f"{kind}\x1f{command.user_id}\x1f{key}"
        fingerprint = hashlib.sha256(repr(command).encode()).hexdigest()
        remembered = self._answers.get(scope)
        if remembered is not None:
            if remembered[0] != fingerprint:
                raise IdempotencyConflict("this Idempotency-Key was already used with a different request")
            try:
                return await asyncio.shield(remembered[1])
            except Exception:
                pass  # the first attempt failed: this retry writes the same event again
        event = make_event(str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, scope)))
        answer = asyncio.ensure_future(self._write(event))
        self._remember(scope, fingerprint, answer)
        return await asyncio.shield(answer)

    def _remember(self, scope: str, fingerprint: str, answer: asyncio.Future[Receipt]) -> None:
        self._answers[scope] = (fingerprint, answer)
        self._answers.move_to_end(scope)
        while len(self._answers) > self._limit:
            self._answers.popitem(last=False)

    async def _write(self, event: Event) -> Receipt:
        position = await self._log.append(event)
        return Receipt(event_id=event.event_id, position=position, token=position.token())

