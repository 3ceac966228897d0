"""Time travel over the audit trail: a user's reviews as they stood at some moment."""

from __future__ import annotations

from projections.store import HistoryRow


def reviews_at(events_newest_first: list[HistoryRow]) -> list[dict]:
    """Replay a user's history (oldest first) into their current reviews, newest review first."""
    current: dict[str, dict] = {}
    for row in reversed(events_newest_first):
        movie = row.payload["movie_id"]
        if row.type == "ReviewSubmitted":
            current.pop(movie, None)
            current[movie] = {**row.payload, "event_id": row.event_id}
        else:
            current.pop(movie, None)
    return list(reversed(current.values()))
