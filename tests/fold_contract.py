"""The fold contract: however a log is cut into batches, a store folds it into the same views, and
those equal the reference fold (tests/reference_fold.py), which shares no code with the product's.

A store adapter's test class inherits `FoldContract` beside `StoreContract` and provides the same
`store` fixture (an empty store; the test folds into scratch stores made from it, closed afterwards).
`fold_log_records` sets the log's length: each record of it is one commit in the batches-of-1 run,
so a store a network away keeps it short.
"""

from __future__ import annotations

import random
import zlib
from collections import Counter

import pytest

from events.types import MovieCatalogued, ReviewRetracted
from projections.fold import Record
from projections.projector import apply_records
from projections.store import ProjectionStore
from tests.integration.helpers import review_stream
from tests.reference_fold import Views, assert_same, first_difference, normalise, reference_fold

BATCHES = (1, 7, 2_000, 10_000)
REREAD = 3  # the batches of 7 each read the 3 records before them again (as after a rebalance)


def generated_log(records: int, seed: int, partitions: int = 4, dead: float = 0.02) -> list[Record]:
    """`records` log records over `partitions`, each event in its key's partition (a user's reviews
    together, a movie's catalogue entries together): submissions, replacements, retractions,
    re-sent copies, catalogue imports, renames and re-imports under the same event id, and a
    `dead` share of records that did not decode (None)."""
    rng = random.Random(seed)
    offsets = [0] * partitions
    log: list[Record] = []

    def append(partition: int, event) -> None:
        log.append(Record(partition, offsets[partition], event))
        offsets[partition] += 1

    for event in review_stream(records, seed, users=40, movies=30, catalogue=0.15):
        if len(log) < records and rng.random() < dead:
            append(rng.randrange(partitions), None)
        if len(log) < records:
            append(zlib.crc32(event.key.encode()) % partitions, event)
    return log


def batchings(log: list, sizes=BATCHES) -> dict[str, list[list]]:
    """The log cut into batches of each size (sizes that cut it the same way as a smaller one are left out)."""
    cuts: dict[str, list[list]] = {}
    for size in sizes:
        if size >= len(log) and any(n >= len(log) for n in sizes[:sizes.index(size)]):
            continue
        reread = REREAD if size == 7 else 0
        cuts[f"batches of {size}" + (f" re-reading {reread}" if reread else "")] = [
            log[max(0, start - reread):start + size] for start in range(0, len(log), size)]
    return cuts


class FoldContract:
    fold_log_records = 400  # a store that commits fast can afford more: 12,000 cuts into 2,000s and 10,000s
    fold_seed = 21

    @pytest.fixture
    def store(self) -> ProjectionStore:
        raise NotImplementedError

    def test_any_batching_of_a_log_folds_to_the_reference(self, store):
        log = generated_log(self.fold_log_records, self.fold_seed)
        expected = reference_fold(log)
        self.assert_the_log_is_not_trivial(log, expected)

        folded: dict[str, dict[str, list[tuple]]] = {}
        for name, batches in batchings(log).items():
            scratch = store.scratch("prop")
            try:
                for batch in batches:
                    apply_records(scratch, batch)
                folded[name] = scratch.contents()
            finally:
                scratch.close()

        (first, contents), *others = folded.items()
        for name, other in others:
            if other != contents:
                difference = first_difference(normalise(other), normalise(contents), (name, first)) or next(
                    f"{view}: {name} has {mine}; {first} has {theirs}"
                    for view in contents for mine, theirs in zip(other[view] + [None], contents[view] + [None])
                    if mine != theirs)
                pytest.fail(f"folding in {name} differs from {first}: {difference}")
        assert_same(contents, expected, f"the store (folding in {first})")

    @staticmethod
    def assert_the_log_is_not_trivial(log: list[Record], expected: Views) -> None:
        events = [r.event for r in log if r.event is not None]
        ids = Counter(e.event_id for e in events)
        titles: dict[str, set[str]] = {}
        for e in events:
            if isinstance(e, MovieCatalogued):
                titles.setdefault(e.event_id, set()).add(e.title)
        assert len(expected.checkpoints) > 1, "one partition only"
        assert any(r.event is None for r in log), "no dead letter"
        assert any(n > 1 for n in ids.values()), "no re-sent copy"
        assert any(len(t) > 1 for t in titles.values()), "no re-import of a changed title under the same event id"
        assert len(titles) > len(expected.movies), "no rename under a new event id"
        assert any(isinstance(e, ReviewRetracted) and (e.user_id, e.movie_id) not in expected.reviews
                   for e in events), "no retraction"
        assert expected.reviews and expected.history
