"""The projector's decoding and batching, and the review fold's rules (the store's side is
tests/store_contract.py)."""

import pytest

from events.codec import encode
from events.reader import LogRecord
from projections.projector import apply_records, decode_batch
from projections.sqlite_store import SQLiteStore
from tests.store_contract import records, ret, sub


@pytest.fixture
def store(tmp_path):
    return SQLiteStore(tmp_path / "p.db")


def test_undecodable_records_become_dead_letters_and_still_advance_the_checkpoint(store):
    raw = [LogRecord(0, 0, b"u", b"nonsense"), LogRecord(0, 1, b"u", encode(sub("a", "u", "m", 3.0)))]
    decoded, dead, _ = decode_batch(raw, None)
    assert [d.record.offset for d in dead] == [0] and "undecodable" in dead[0].reason
    apply_records(store, decoded)
    assert store.checkpoint() == {0: 1} and store.movie("m").review_count == 1


def test_a_failed_write_leaves_no_partial_batch(store, monkeypatch):
    apply_records(store, records(sub("a", "u", "m", 2.0)))
    before = store.contents()
    original = store._db

    class Failing:
        def __getattr__(self, name):
            return getattr(original, name)

        def execute(self, sql, *args):
            if "INTO history" in sql:
                raise RuntimeError("disk on fire")
            return original.execute(sql, *args)

        def executemany(self, sql, rows):
            if "INTO history" in sql:
                raise RuntimeError("disk on fire")
            return original.executemany(sql, rows)

    monkeypatch.setattr(store, "_db", Failing())
    with pytest.raises(RuntimeError):
        apply_records(store, records(sub("b", "u", "m", 5.0), start=1))
    monkeypatch.setattr(store, "_db", original)
    assert store.contents() == before


def test_review_fold_takes_a_position_and_an_event_id_once():
    from events.fold import ReviewFold

    reviews = ReviewFold(lambda event: event.rating, checkpoint={0: 4})
    steps = [(0, 4, sub("a", "u", "m", 1.0)), (0, 5, sub("b", "u", "m", 2.0)), (0, 5, sub("c", "u", "m", 3.0)),
             (1, 0, sub("b", "u", "m", 2.0)), (1, 1, sub("d", "u", "n", 4.0)), (1, 2, ret("e", "u", "m"))]
    taken = [reviews.take(p, o) and reviews.apply(e) for p, o, e in steps]
    assert taken == [False, True, False, False, True, True]
    assert reviews.checkpoint == {0: 5, 1: 2}
    assert reviews.current() == {("u", "n"): 4.0}
    assert reviews.reviews == {("u", "n"): (1, 4.0), ("u", "m"): (2, None)}  # in the order of the last change
    assert list(reviews.reviews) == [("u", "n"), ("u", "m")]


def test_an_event_id_counts_at_its_first_position_so_the_same_record_again_is_applied():
    from events.fold import ReviewFold

    reviews = ReviewFold(lambda event: event.rating, first={"a": (0, 3), "b": (0, 1)})
    steps = [(0, 2, sub("b", "u", "m", 2.0)), (0, 3, sub("a", "u", "n", 1.0))]
    assert [reviews.take(p, o) and reviews.apply(e) for p, o, e in steps] == [False, True]
    assert reviews.current() == {("u", "n"): 1.0}


def test_catalogue_entries_are_states_the_newest_by_position_wins_whatever_the_event_id():
    from events.fold import ReviewFold
    from tests.store_contract import catalogued

    reviews = ReviewFold(lambda event: event.rating)
    steps = [(0, 0, catalogued("x", "m", "Heat")), (0, 1, catalogued("x", "m", "Heat (1995)"))]
    assert [reviews.take(p, o) and reviews.apply(e) for p, o, e in steps] == [True, True]


def test_a_replay_dead_letters_only_records_past_the_checkpoint(store):
    import asyncio

    from projections.projector import LogProjector

    bad = LogRecord(0, 1, b"u", b"nonsense")
    batch = [LogRecord(0, 0, b"u", encode(sub("a", "u", "m", 3.0))), bad]
    letters = []

    async def dead_letter(letter):
        letters.append(letter.record.offset)

    projector = LogProjector("unused:9092", "reviews", store, dead_letter, None)
    asyncio.run(projector.project(batch))
    asyncio.run(projector.project(batch + [LogRecord(0, 2, b"u", encode(sub("b", "u", "n", 3.0)))]))
    assert letters == [1], "the replayed bad record is dead-lettered once"
    assert store.checkpoint() == {0: 2}


def test_read_ahead_hands_over_what_arrived_meanwhile_as_one_batch_in_order_up_to_a_bound():
    import asyncio

    from projections.projector import read_ahead

    chunks = [[LogRecord(0, 3 * i + j, b"u", encode(sub(f"e{3 * i + j}", "u", "m", 3.0))) for j in range(3)]
              for i in range(5)]

    async def source():
        for chunk in chunks:
            yield chunk

    async def consume(most):
        handed = []
        async for batch, (records, dead, _) in read_ahead(source(), None, most=most):
            assert [r.offset for r in records] == [r.offset for r in batch] and not dead
            handed.append([r.offset for r in batch])
            await asyncio.sleep(0.01)  # a slow store: the next chunks arrive meanwhile
        return handed

    handed = asyncio.run(consume(most=6))
    assert [o for batch in handed for o in batch] == list(range(15)), "every record once, in order"
    assert len(handed) < len(chunks), "chunks that arrived while the store worked go together"
    assert all(len(batch) <= 6 for batch in handed[1:]), "no handover grows past the bound"


def test_read_ahead_passes_on_the_error_of_its_source_after_what_was_read():
    import asyncio

    from projections.projector import read_ahead

    async def source():
        yield [LogRecord(0, 0, b"u", encode(sub("a", "u", "m", 3.0)))]
        raise TimeoutError("the log stalled")

    async def consume():
        seen = []
        async for batch, _ in read_ahead(source(), None):
            seen.extend(r.offset for r in batch)
        return seen

    with pytest.raises(TimeoutError):
        asyncio.run(consume())
