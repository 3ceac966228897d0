"""Command handlers: a valid command becomes one event appended to the log.

Handlers decide from the command alone. An `Idempotency-Key` (scoped to the user and the kind
of command) makes the event id deterministic, so a retried request carries the same event and
projectors apply it once, and the event records the digest of its request. A retry then gets the
first answer back without appending again: from this process's memory while the first is in
flight or recent, else from the projection once the first is applied (after a restart too); the
same key with another request is a conflict. A key expires KEY_LIFETIME after its first use: the
next use of it is a new request, whose event id derives from the key and the expired event's id.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from typing import Awaitable, Callable, NamedTuple, Protocol

import msgspec

from commands.types import Receipt, RetractReview, SubmitReview
from events.errors import HarmonyError
from events.position import Position
from events.types import Event, ReviewRetracted, ReviewSubmitted

IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1c4b8e-2a4e-4f57-9d1e-6d0e8a9b2c11")
EARLIEST_REVIEW = datetime(1900, 1, 1, tzinfo=timezone.utc)
CLOCK_SKEW = timedelta(days=1)
KEY_LIFETIME = timedelta(hours=24)


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


class Recorded(NamedTuple):
    """An event the projection has applied, as idempotency needs it."""

    position: Position
    recorded_at: datetime
    request_digest: str | None


# (user id, event id) -> the applied event, or None (not applied yet, or never written).
Lookup = Callable[[str, str], Awaitable[Recorded | None]]


async def nothing_recorded(user_id: str, event_id: str) -> None:
    return None


def request_digest(command: msgspec.Struct) -> str:
    """What a retry with the same Idempotency-Key must match: the SHA-256 of the command's canonical
    JSON, so the same request spelt otherwise is the same request. Keys sorted; times in UTC (the
    same instant at another offset); fields at their default left out (a field a later release adds
    with a default leaves the digests of earlier requests as they were)."""
    fields = {}
    for field in msgspec.structs.fields(command):
        value = getattr(command, field.name)
        if value == field.default:
            continue
        fields[field.encode_name] = value.astimezone(timezone.utc) if isinstance(value, datetime) else value
    return hashlib.sha256(msgspec.json.encode(fields, order="sorted")).hexdigest()


def _digest_before_canonical(command: msgspec.Struct) -> str:
    """The digest events written before request_digest carry: a retry of such a request, within its
    key's lifetime, still finds its first answer instead of a conflict."""
    return hashlib.sha256(repr(command).encode()).hexdigest()


class ReviewCommands:
    def __init__(
        self,
        log: EventAppender,
        recorded: Lookup = nothing_recorded,
        clock: Callable[[], datetime] = utcnow,
        remembered_keys: int = 10_000,
    ):
        self._log = log
        self._recorded = recorded
        self._clock = clock
        self._limit = remembered_keys
        self._answers: OrderedDict[str, tuple[str, datetime, asyncio.Future[Receipt]]] = OrderedDict()

    async def submit(self, command: SubmitReview, idempotency_key: str | None = None) -> Receipt:
        now = self._clock()
        reviewed_at = command.reviewed_at or now
        if not EARLIEST_REVIEW <= reviewed_at <= now + CLOCK_SKEW:
            raise InvalidCommand(f"reviewed_at {reviewed_at.isoformat()} is not between 1900 and now", "reviewed_at")

        def event(event_id: str, digest: str | None) -> Event:
            return ReviewSubmitted(
                event_id=event_id, occurred_at=reviewed_at, recorded_at=now,
                user_id=command.user_id, movie_id=command.movie_id, rating=command.rating,
                summary=command.summary, text=command.text, reviewed_at=reviewed_at, request_digest=digest,
            )

        return await self._append("submit", command, idempotency_key, event)

    async def retract(self, command: RetractReview, idempotency_key: str | None = None) -> Receipt:
        now = self._clock()

        def event(event_id: str, digest: str | None) -> Event:
            return ReviewRetracted(
                event_id=event_id, occurred_at=now, recorded_at=now,
                user_id=command.user_id, movie_id=command.movie_id, request_digest=digest,
            )

        return await self._append("retract", command, idempotency_key, event)

    async def _append(
        self,
        kind: str,
        command: SubmitReview | RetractReview,
        key: str | None,
        make_event: Callable[[str, str | None], Event],
    ) -> Receipt:
        if key is None:
            return await self._write(make_event(str(uuid.uuid4()), None))
        scope = f"{kind}\x1f{command.user_id}\x1f{key}"
        digest = request_digest(command)
        now = self._clock()
        remembered = self._answers.get(scope)
        if remembered is not None and now - remembered[1] <= KEY_LIFETIME:
            if remembered[0] != digest:
                raise IdempotencyConflict("this Idempotency-Key was already used with a different request")
            try:
                return await asyncio.shield(remembered[2])
            except Exception:
                pass  # the first attempt failed: this retry writes the same event again
        # Remembered before anything is awaited, so a concurrent retry in this process waits on this one.
        answer = asyncio.ensure_future(self._first_or_write(command, scope, digest, now, make_event))
        self._remember(scope, digest, now, answer)
        try:
            return await asyncio.shield(answer)
        except IdempotencyConflict:
            if self._answers.get(scope, (None, None, None))[2] is answer:
                del self._answers[scope]  # the key belongs to the first request, not to this one
            raise

    async def _first_or_write(self, command: SubmitReview | RetractReview, scope: str, digest: str, now: datetime,
                              make_event: Callable[[str, str | None], Event]) -> Receipt:
        """The key's first answer if the projection has applied it (another process, a restart),
        following the key's expired uses to its current one; else a write of the event."""
        event_id = str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, scope))
        while (first := await self._recorded(command.user_id, event_id)) is not None:
            if now - first.recorded_at > KEY_LIFETIME:
                event_id = str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{scope}\x1f{event_id}"))
                continue
            if first.request_digest not in (digest, _digest_before_canonical(command)):
                raise IdempotencyConflict("this Idempotency-Key was already used with a different request")
            return Receipt(event_id=event_id, position=first.position, token=first.position.token())
        return await self._write(make_event(event_id, digest))

    def forget_user(self, user_id: str) -> None:
        """Drop what this process remembers of the user's requests (they asked to be forgotten)."""
        for scope in [scope for scope in self._answers if scope.split("\x1f")[1] == user_id]:
            del self._answers[scope]

    def _remember(self, scope: str, digest: str, now: datetime, answer: asyncio.Future[Receipt]) -> None:
        self._answers[scope] = (digest, now, answer)
        self._answers.move_to_end(scope)
        while len(self._answers) > self._limit:
            self._answers.popitem(last=False)

    async def _write(self, event: Event) -> Receipt:
        position = await self._log.append(event)
        return Receipt(event_id=event.event_id, position=position, token=position.token())
