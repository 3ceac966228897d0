"""The projection fold against the real SQLite store (a file in tmp_path)."""

from datetime import datetime, timedelta, timezone

import pytest

from events.codec import encode
from events.reader import LogRecord
from events.types import MovieCatalogued, ReviewRetracted, ReviewSubmitted
from projections.fold import Record
from projections.projector import apply_records, decode_batch
from projections.sqlite_store import SQLiteStore

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def sub(eid, user, movie, rating, minutes=0):
    at = T0 + timedelta(minutes=minutes)
    return ReviewSubmitted(event_id=eid, occurred_at=at, recorded_at=at, user_id=user, movie_id=movie,
                           rating=rating, reviewed_at=at)


def ret(eid, user, movie):
    return ReviewRetracted(event_id=eid, occurred_at=T0, recorded_at=T0, user_id=user, movie_id=movie)


@pytest.fixture
def store(tmp_path):
    return SQLiteStore(tmp_path / "p.db")


def records(*events, partition=0, start=0):
    return [Record(partition, start + i, e) for i, e in enumerate(events)]


def test_later_submission_replaces_and_stats_follow(store):
    apply_records(store, records(sub("a", "u", "m", 2.0), sub("b", "v", "m", 4.0), sub("c", "u", "m", 5.0)))
    [review] = [r for r in store.user_reviews("u", 10, None)]
    assert (review.rating, review.event_id) == (5.0, "c")
    movie = store.movie("m")
    assert (movie.review_count, movie.mean_rating) == (2, 4.5)


def test_retraction_removes_and_updates_stats_across_batches(store):
    apply_records(store, records(sub("a", "u", "m", 2.0), sub("b", "v", "m", 4.0)))
    apply_records(store, records(ret("c", "u", "m"), start=2))
    assert store.user_reviews("u", 10, None) == []
    assert (store.movie("m").review_count, store.movie("m").mean_rating) == (1, 4.0)
    apply_records(store, records(ret("d", "u", "m"), start=3))  # retracting nothing changes nothing
    assert store.movie("m").review_count == 1


def test_records_at_or_below_the_checkpoint_are_skipped(store):
    batch = records(sub("a", "u", "m", 2.0), sub("b", "u", "m", 3.0))
    apply_records(store, batch)
    apply_records(store, batch + records(sub("c", "u", "n", 1.0), start=2))  # a replayed batch plus one new
    assert store.movie("m").review_count == 1 and store.movie("m").mean_rating == 3.0
    assert store.checkpoint() == {0: 2}
    assert len(store.contents()["history"]) == 3


def test_an_event_seen_before_at_another_offset_is_not_applied_again(store):
    first = sub("a", "u", "m", 2.0)
    apply_records(store, records(first, sub("b", "u", "m", 4.0)))
    apply_records(store, records(first, start=2))  # re-sent retry of "a" must not undo "b"
    assert store.user_reviews("u", 10, None)[0].rating == 4.0
    assert store.checkpoint() == {0: 2}


def test_catalogue_fills_the_movie_view(store):
    apply_records(store, records(MovieCatalogued(event_id="x", occurred_at=T0, recorded_at=T0, movie_id="m",
                                                 title="Heat", year=1995, genres=("Crime", "Drama"))))
    movie = store.movie("m")
    assert (movie.title, movie.year, movie.genres, movie.review_count, movie.mean_rating) == (
        "Heat", 1995, ["Crime", "Drama"], 0, None)


def test_pages_are_newest_first_and_cursor_continues(store):
    apply_records(store, records(*[sub(f"e{i}", "u", f"m{i}", 3.0, minutes=i) for i in range(5)]))
    first = store.user_reviews("u", 2, None)
    assert [r.movie_id for r in first] == ["m4", "m3"]
    rest = store.user_reviews("u", 10, (first[-1].reviewed_at, first[-1].movie_id))
    assert [r.movie_id for r in rest] == ["m2", "m1", "m0"]


def test_undecodable_records_become_dead_letters_and_still_advance_the_checkpoint(store):
    raw = [LogRecord(0, 0, b"u", b"nonsense"), LogRecord(0, 1, b"u", encode(sub("a", "u", "m", 3.0)))]
    decoded, dead = decode_batch(raw)
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

        def executemany(self, sql, rows):
            if "history" in sql:
                raise RuntimeError("disk on fire")
            return original.executemany(sql, rows)

    monkeypatch.setattr(store, "_db", Failing())
    with pytest.raises(RuntimeError):
        apply_records(store, records(sub("b", "u", "m", 5.0), start=1))
    monkeypatch.setattr(store, "_db", original)
    assert store.contents() == before


def test_swap_in_replaces_views_atomically_at_the_same_checkpoint(store, tmp_path):
    apply_records(store, records(sub("a", "u", "m", 2.0), sub("b", "v", "m", 4.0)))
    fresh = SQLiteStore(tmp_path / "fresh.db")
    reader = SQLiteStore(store.path)  # another connection, like the API's
    with store.swap_in(fresh, ["reviews", "movies"]) as checkpoint:
        assert checkpoint == {0: 1}
        apply_records(fresh, records(sub("a", "u", "m", 2.0), sub("c", "v", "m", 5.0)))
        assert reader.movie("m").mean_rating == 3.0, "readers see the old views until the swap commits"
    assert reader.movie("m").mean_rating == 3.5
    assert [r.event_id for r in reader.user_reviews("v", 10, None)] == ["c"]


def test_swap_in_refuses_a_fresh_store_at_another_checkpoint(store, tmp_path):
    apply_records(store, records(sub("a", "u", "m", 2.0), sub("b", "v", "m", 4.0)))
    before = store.contents()
    fresh = SQLiteStore(tmp_path / "fresh.db")
    with pytest.raises(RuntimeError, match="fresh store at"):
        with store.swap_in(fresh, ["reviews"]):
            apply_records(fresh, records(sub("a", "u", "m", 2.0)))
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
    assert reviews.reviews == {("u", "n"): 4.0, ("u", "m"): None}  # in the order of the last change
