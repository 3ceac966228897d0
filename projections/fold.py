"""The projection logic: fold a batch of events into the net `Changes` for the store.

Pure apart from three reads of the store's state (checkpoint, applied event ids, current
ratings), so every adapter shares it. The rules of the fold are `events.fold.ReviewFold`'s:
records at or below the stored checkpoint are skipped, and so are events already applied.
"""

from __future__ import annotations

from typing import NamedTuple

from events.fold import ReviewFold
from events.types import AnyEvent, MovieCatalogued, ReviewSubmitted
from projections.store import CatalogueEntry, Changes, HistoryRow, ProjectionStore, ReviewRow


class Record(NamedTuple):
    partition: int
    offset: int
    event: AnyEvent | None  # None: dead-lettered, only its offset counts


def halves(rating: float) -> int:
    """Ratings are half stars; summing them as integers keeps the mean exact."""
    return round(rating * 2)


def review_row(event: ReviewSubmitted) -> ReviewRow:
    return ReviewRow(event.movie_id, event.rating, event.summary, event.text, event.reviewed_at,
                     event.event_id, user_id=event.user_id)


def fold(store: ProjectionStore, records: list[Record]) -> Changes:
    done = store.checkpoint()
    reviews = ReviewFold(review_row, done, store.seen_event_ids(
        [r.event.event_id for r in records if r.event is not None and r.offset > done.get(r.partition, -1)]))
    changes = Changes()
    for partition, offset, event in records:
        if not reviews.take(partition, offset) or event is None or not reviews.apply(event):
            continue
        if isinstance(event, MovieCatalogued):
            changes.catalogue[event.movie_id] = CatalogueEntry(
                event.movie_id, event.title, event.year, list(event.genres), event.image_url)
        else:
            changes.history.append(HistoryRow(event.user_id, event.event_id, type(event).__name__,
                                              event.occurred_at, event.recorded_at, partition, offset,
                                              event.payload()))
    changes.checkpoint = {p: o for p, o in reviews.checkpoint.items() if o > done.get(p, -1)}
    changes.put_reviews = reviews.current()
    changes.deleted_reviews = {key for key, row in reviews.reviews.items() if row is None}
    changes.movie_deltas = movie_deltas(store.current_ratings(list(reviews.reviews)), reviews.reviews)
    return changes


def movie_deltas(before: dict, after: dict) -> dict[str, tuple[int, int]]:
    """movie_id -> (change in review count, change in the sum of half stars), from each changed
    review's rating before the batch and its row after it."""
    deltas: dict[str, list[int]] = {}
    for key, row in after.items():
        old = before.get(key)
        delta = deltas.setdefault(key[1], [0, 0])
        if old is not None:
            delta[0] -= 1
            delta[1] -= halves(old)
        if row is not None:
            delta[0] += 1
            delta[1] += halves(row.rating)
    return {movie: (d[0], d[1]) for movie, d in deltas.items() if d != [0, 0]}
