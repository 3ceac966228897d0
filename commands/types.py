"""Command types. Field constraints come from the event types: one definition per fact."""

from __future__ import annotations

import msgspec

from events.position import Position
from typing import Annotated

from events.types import MovieId, Rating, Summary, Text, Timestamp, UserId

# What a command's id must be beyond the events' limits: not blank, neither "." nor ".." (clients and
# browsers resolve those away from a URL), free of "/" (a URL could not carry it back to read or
# retract) and of control characters. ECMA-262 as well, for the OpenAPI document.
_READABLE = msgspec.Meta(pattern=r"^(?!\s*$)(?!\.{1,2}$)[^/\x00-\x1f\x7f-\x9f]+(?![\s\S])",
                         description="not blank, '.' or '..'; no '/' and no control characters")
CommandUserId = Annotated[UserId, _READABLE]
CommandMovieId = Annotated[MovieId, _READABLE]


class SubmitReview(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Submit (or replace) the user's review of a movie."""

    user_id: CommandUserId
    movie_id: CommandMovieId
    rating: Rating
    summary: Summary = ""
    text: Text = ""
    reviewed_at: Timestamp | None = None


class RetractReview(msgspec.Struct, frozen=True):
    """Withdraw the user's review of a movie."""

    user_id: CommandUserId
    movie_id: CommandMovieId


class Receipt(msgspec.Struct, frozen=True):
    """What an accepted command answers: the event, where it landed, and a read-your-writes token."""

    event_id: str
    position: Position
    token: str
