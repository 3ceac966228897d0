"""Response bodies: msgspec types, so the OpenAPI document is generated from the same definitions."""

from __future__ import annotations

from datetime import datetime

import msgspec

from events.position import Position
from projections.store import CatalogueEntry, PartitionLag, Review, ReviewRow


class ReviewsPage(msgspec.Struct):
    user_id: str
    reviews: list[Review]
    next_cursor: str | None


class HistoryEvent(msgspec.Struct):
    """One event of the audit trail; `change` says what it did: "submitted" (a first review of the
    movie, or one after a retraction), "replaced" (a review stood just before) or "retracted"."""

    event_id: str
    type: str
    change: str
    occurred_at: datetime
    recorded_at: datetime
    position: Position
    payload: dict


class HistoryPage(msgspec.Struct, omit_defaults=True):
    """Every event about the user's reviews, newest first; with `as_of`, only those the log recorded
    by then, with `written_by` only those that occurred by then (a review's own date), and
    `reviews` as they stood at that moment."""

    user_id: str
    events: list[HistoryEvent]
    next_cursor: str | None
    as_of: datetime | None = None
    written_by: datetime | None = None
    reviews: list[Review] | None = None


class Health(msgspec.Struct):
    status: str
    checks: dict[str, str] = {}


class LagReport(msgspec.Struct):
    partitions: list[PartitionLag]
    total: int


class ModelView(msgspec.Struct):
    """A published model version: when it was trained, on which events (the last archived offset
    per partition), how well it did on its holdout, and its hyperparameters."""

    version: str
    trained_at: datetime
    watermark: dict[int, int]
    metrics: dict
    params: dict


class MovieRef(msgspec.Struct):
    movie_id: str
    title: str | None


class MemberScore(msgspec.Struct):
    """One member's side of a pick: their predicted rating, their taste affinity (how likely they
    are to pick it; relative), and up to three of their own highly rated movies most like it."""

    predicted: float
    affinity: float
    because: list[MovieRef]


class MatchedMovie(msgspec.Struct):
    movie_id: str
    title: str | None
    year: int | None
    genres: list[str]
    score: float  # the strategy's group score: comparable within one answer only
    members: dict[str, MemberScore]
    shared_genres: list[str]  # the movie's genres that every member has liked a movie of


class Match(msgspec.Struct):
    """Movies the users may like together, best first. `folded_in` names the users the model was
    not trained on: their taste was solved from their current reviews. `fallback` names the users
    with no review the model can use: they get popular, well-rated movies instead."""

    model_version: str
    strategy: str
    users: list[str]
    folded_in: list[str]
    fallback: list[str]
    movies: list[MatchedMovie]


class MoviesPage(msgspec.Struct):
    """Catalogue entries whose titles match the query, best first: `total` of them in all."""

    query: str
    total: int
    movies: list[CatalogueEntry]
    next_cursor: str | None


class MovieReviewsPage(msgspec.Struct):
    """A page of a movie's current reviews, newest first, each with its reviewer."""

    movie_id: str
    reviews: list[ReviewRow]
    next_cursor: str | None


class SimilarMovie(msgspec.Struct):
    movie_id: str
    title: str | None
    year: int | None
    genres: list[str]
    similarity: float  # cosine of the two movies' taste factors, in (0, 1]


class SimilarMovies(msgspec.Struct):
    """Movies picked by the same people as this one, most alike first, from the current model."""

    movie_id: str
    model_version: str
    movies: list[SimilarMovie]


class Reviewers(msgspec.Struct):
    """Ids of users with reviews that start with the prefix (case ignored), in order."""

    prefix: str
    users: list[str]


class CatalogueEntries(msgspec.Struct):
    """The catalogue entries asked for, in the order asked; ids not catalogued are left out."""

    movies: list[CatalogueEntry]


class Genres(msgspec.Struct):
    genres: list[str]


class Strategy(msgspec.Struct):
    name: str
    description: str


class Strategies(msgspec.Struct):
    """How /v1/match can combine the members' utilities, and which it uses by default."""

    default: str
    strategies: list[Strategy]
