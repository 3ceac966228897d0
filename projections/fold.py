"""The projection logic: fold a batch of events into the net `Changes` for the store.

Pure apart from two reads of the store's state (the checkpoint and where events were first
applied), so every adapter shares it. The rules of the fold are `events.fold.ReviewFold`'s:
records at or below the stored checkpoint are skipped, and so are copies of events applied at an
earlier position. Each row change carries the offset of the event behind it, so a store can keep
the newest one whatever the order batches arrive in (see `Changes`).

The checkpoint only ever moves over records that were folded: a batch must go on from the stored
checkpoint without a jump in offsets (the topic is neither compacted nor transactional, so its
offsets have no holes), or the fold stops with `LogGap`.
"""

from __future__ import annotations

from typing import NamedTuple

from events.errors import HarmonyError
from events.fold import ReviewFold
from events.types import AnyEvent, MovieCatalogued, ReviewSubmitted, SubjectForgotten
from projections.store import CatalogueEntry, Changes, HistoryRow, ProjectionWriter, ReviewRow


class Record(NamedTuple):
    partition: int
    offset: int
    event: AnyEvent | None  # None: dead-lettered or unreadable, only its offset counts
    subject: str | None = None  # the subject it was sealed under (None: in clear)


class LogGap(HarmonyError):
    """Records of a partition are missing between the checkpoint (or the record before) and the next."""

    def __init__(self, partition: int, after: int, got: int):
        super().__init__(f"partition {partition}: offsets {after + 1} to {got - 1} are missing "
                         f"(after offset {after} came {got})")
        self.partition, self.after, self.got = partition, after, got


def review_row(event: ReviewSubmitted) -> ReviewRow:
    return ReviewRow(event.movie_id, event.rating, event.summary, event.text, event.reviewed_at,
                     event.event_id, user_id=event.user_id)


def after_checkpoint(done: dict[int, int], records: list) -> list:
    """The records (anything with a partition and an offset) a store at checkpoint `done` has not
    applied, checked to go on from it without a jump (raises `LogGap`)."""
    last = dict(done)
    fresh = []
    for record in records:
        partition, offset = record.partition, record.offset
        before = last.get(partition, -1)
        if offset <= before:
            continue
        if offset != before + 1:
            raise LogGap(partition, before, offset)
        last[partition] = offset
        fresh.append(record)
    return fresh


def fold(store: ProjectionWriter, records: list[Record]) -> Changes:
    done = store.checkpoint()
    fresh = after_checkpoint(done, records)
    reviews = ReviewFold(review_row, done, store.first_applied(
        [(r.event.key, r.event.event_id) for r in fresh
         if r.event is not None and not isinstance(r.event, MovieCatalogued)]) if fresh else {})
    changes = Changes(since=done)
    catalogue = changes.catalogue
    history = changes.history
    subjects = changes.subjects
    take, apply = reviews.take, reviews.apply
    for partition, offset, event, subject in fresh:
        take(partition, offset)
        if event is None or not apply(event):
            continue
        if type(event) is MovieCatalogued:
            catalogue[event.movie_id] = (offset, CatalogueEntry(
                event.movie_id, event.title, event.year, list(event.genres), event.image_url))
        elif type(event) is SubjectForgotten:
            changes.forgotten.append(event.subject)
        else:
            if subject is not None:
                subjects[subject] = event.user_id
            history.append(HistoryRow(event.user_id, event.event_id, type(event).__name__,
                                      event.occurred_at, event.recorded_at, partition, offset, event.payload()))
    changes.checkpoint = {p: o for p, o in reviews.checkpoint.items() if o > done.get(p, -1)}
    changes.reviews = reviews.reviews
    return changes
