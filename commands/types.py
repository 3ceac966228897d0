"""Command types. Field constraints come from the event types: one definition per fact."""

from __future__ import annotations

import msgspec

from events.position import Position
from events.types import MovieId, Rating, Summary, Text, Timestamp, UserId


class SubmitReview(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Submit (or replace) the user's review of a movie."""

    user_id: UserId
    movie_id: MovieId
    rating: Rating
    summary: Summary = ""
    text: Text = ""
    reviewed_at: Timestamp | None = None


class RetractReview(msgspec.Struct, frozen=True):
    """Withdraw the user's review of a movie."""

    user_id: UserId
    movie_id: MovieId


class Receipt(msgspec.Struct, frozen=True):
    """What an accepted command answers: the event, where it landed, and a read-your-writes token."""

    event_id: str
    position: Position
    token: str
