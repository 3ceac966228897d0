"""The projection logic: fold a batch of events into the net `Changes` for the store.

Pure apart from two reads of the store's state (the checkpoint and which events were applied),
so every adapter shares it. The rules of the fold are `events.fold.ReviewFold`'s: records at or
below the stored checkpoint are skipped, and so are events already applied. Each row change
carries the offset of the event behind it, so a store can keep the newest one whatever the order
batches arrive in (see `Changes`).
"""

from __future__ import annotations

from typing import NamedTuple

from events.fold import ReviewFold
from events.types import AnyEvent, MovieCatalogued, ReviewSubmitted
from projections.store import CatalogueEntry, Changes, HistoryRow, ProjectionWriter, ReviewKey, ReviewRow


class Record(NamedTuple):
    partition: int
    offset: int
    event: AnyEvent | None  # None: dead-lettered, only its offset counts


def review_row(event: ReviewSubmitted) -> ReviewRow:
    return ReviewRow(event.movie_id, event.rating, event.summary, event.text, event.reviewed_at,
                     event.event_id, user_id=event.user_id)


def fold(store: ProjectionWriter, records: list[Record]) -> Changes:
    done = store.checkpoint()
    reviews = ReviewFold(review_row, done, store.seen_event_ids(
        [(r.event.key, r.event.event_id) for r in records
         if r.event is not None and r.offset > done.get(r.partition, -1)]))
    changes = Changes(since=done)
    versions: dict[ReviewKey, int] = {}
    for partition, offset, event in records:
        if not reviews.take(partition, offset) or event is None or not reviews.apply(event):
            continue
        if isinstance(event, MovieCatalogued):
            changes.catalogue[event.movie_id] = (offset, CatalogueEntry(
                event.movie_id, event.title, event.year, list(event.genres), event.image_url))
        else:
            versions[(event.user_id, event.movie_id)] = offset
            changes.history.append(HistoryRow(event.user_id, event.event_id, type(event).__name__,
                                              event.occurred_at, event.recorded_at, partition, offset,
                                              event.payload()))
    changes.checkpoint = {p: o for p, o in reviews.checkpoint.items() if o > done.get(p, -1)}
    changes.reviews = {key: (versions[key], row) for key, row in reviews.reviews.items()}
    return changes
