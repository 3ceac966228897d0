"""Response bodies: msgspec types, so the OpenAPI document is generated from the same definitions."""

from __future__ import annotations

from datetime import datetime

import msgspec

from projections.store import PartitionLag


class ReviewView(msgspec.Struct):
    movie_id: str
    rating: float
    summary: str
    text: str
    reviewed_at: datetime
    event_id: str


class ReviewsPage(msgspec.Struct):
    user_id: str
    reviews: list[ReviewView]
    next_cursor: str | None


class MovieView(msgspec.Struct):
    movie_id: str
    title: str | None
    year: int | None
    genres: list[str]
    review_count: int
    mean_rating: float | None


class Health(msgspec.Struct):
    status: str
    checks: dict[str, str] = {}


class LagReport(msgspec.Struct):
    partitions: list[PartitionLag]
    total: int
