"""Time travel over the audit trail: a user's reviews as they stood at some moment."""

from __future__ import annotations

import msgspec

from events.fold import ReviewFold
from events.types import AnyEvent, ReviewSubmitted
from projections.store import HistoryRow


def history_event(row: HistoryRow) -> AnyEvent:
    """The event an audit-trail row records."""
    return msgspec.convert({**row.payload, "type": row.type, "event_id": row.event_id,
                            "occurred_at": row.occurred_at, "recorded_at": row.recorded_at},
                           AnyEvent, strict=False)


def review_payload(event: ReviewSubmitted) -> dict:
    return {**event.payload(), "event_id": event.event_id}


def changes(events_newest_first: list[HistoryRow], before: dict[str, str]) -> list[str]:
    """What each event did to the user's reviews, newest first: "submitted" (a first review of the
    movie, or one after a retraction), "replaced" (a review stood just before) or "retracted".
    `before`: the type of the newest event of each movie before these (movies with none left out)."""
    standing = {movie for movie, type in before.items() if type == ReviewSubmitted.__name__}
    done = []
    for row in reversed(events_newest_first):
        movie = row.payload["movie_id"]
        if row.type == ReviewSubmitted.__name__:
            done.append("replaced" if movie in standing else "submitted")
            standing.add(movie)
        else:
            done.append("retracted")
            standing.discard(movie)
    return done[::-1]


def reviews_at(events_newest_first: list[HistoryRow]) -> list[dict]:
    """Fold a user's history (oldest first) into their current reviews, newest review first."""
    reviews = ReviewFold(review_payload)
    for row in reversed(events_newest_first):
        reviews.take(row.partition, row.offset)
        reviews.apply(history_event(row))
    return list(reversed(reviews.current().values()))
