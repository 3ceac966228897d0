"""The projection logic: fold a batch of events into the net `Changes` for the store.

Pure apart from two reads of the store's current state, so both adapters share it.
Exactly-once in effect: records at or below the stored checkpoint are skipped,
and so are events whose id was already applied (retried commands, re-imports).
"""

from __future__ import annotations

from typing import NamedTuple

from events.types import AnyEvent, MovieCatalogued, ReviewRetracted, ReviewSubmitted
from projections.store import CatalogueEntry, Changes, HistoryRow, ProjectionStore, ReviewKey, ReviewRow


class Record(NamedTuple):
    partition: int
    offset: int
    event: AnyEvent | None  # None: dead-lettered, only its offset counts


def halves(rating: float) -> int:
    """Ratings are half stars; summing them as integers keeps the mean exact."""
    return round(rating * 2)


def fold(store: ProjectionStore, records: list[Record]) -> Changes:
    done = store.checkpoint()
    changes = Changes(checkpoint={})
    fresh: list[Record] = []
    for record in records:
        if record.offset <= done.get(record.partition, -1):
            continue
        changes.checkpoint[record.partition] = max(record.offset, changes.checkpoint.get(record.partition, -1))
        if record.event is not None:
            fresh.append(record)
    seen = store.seen_event_ids([r.event.event_id for r in fresh])
    reviews = [r for r in fresh if isinstance(r.event, (ReviewSubmitted, ReviewRetracted))]
    ratings: dict[ReviewKey, float | None] = dict(
        store.current_ratings(list({(r.event.user_id, r.event.movie_id) for r in reviews}))
    )
    deltas: dict[str, list[int]] = {}
    for partition, offset, event in fresh:
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        if isinstance(event, MovieCatalogued):
            changes.catalogue[event.movie_id] = CatalogueEntry(
                event.movie_id, event.title, event.year, list(event.genres), event.image_url
            )
            continue
        key = (event.user_id, event.movie_id)
        old = ratings.get(key)
        delta = deltas.setdefault(event.movie_id, [0, 0])
        if old is not None:
            delta[0] -= 1
            delta[1] -= halves(old)
        if isinstance(event, ReviewSubmitted):
            delta[0] += 1
            delta[1] += halves(event.rating)
            ratings[key] = event.rating
            changes.deleted_reviews.discard(key)
            changes.put_reviews[key] = ReviewRow(
                event.user_id, event.movie_id, event.rating, event.summary, event.text,
                event.reviewed_at, event.event_id,
            )
        else:
            ratings[key] = None
            changes.put_reviews.pop(key, None)
            changes.deleted_reviews.add(key)
        changes.history.append(
            HistoryRow(
                event.user_id, event.event_id, type(event).__name__, event.occurred_at,
                event.recorded_at, partition, offset, event.payload(),
            )
        )
    changes.movie_deltas = {m: (d[0], d[1]) for m, d in deltas.items() if d != [0, 0]}
    return changes
