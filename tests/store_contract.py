"""The projection-store contract: every operation the projector, the API, rebuild, verify, training
and match use, as one abstract test case that every adapter's test class inherits.

A subclass provides the `store` fixture (an empty store) and `other_handle(store)` (a second
connection to the same store, as an API process has).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import msgspec
import numpy as np
import pytest

from events.types import MovieCatalogued, ReviewRetracted, ReviewSubmitted, SubjectForgotten
from ml import registry
from ml.factors import FactorModel
from projections.fold import LogGap, Record, fold
from projections.projector import apply_records
from projections.store import (
    FACTOR_KINDS, AccountRow, CatalogueEntry, FactorRow, ModelInfo, PartitionLag, ProjectionStore, RatingCount, Tally,
)
from projections.titles import TitleIndex, search
from tests.conftest import wait_until
from tests.unit.fakes import MemoryBucket

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def sub(eid, user, movie, rating, minutes=0):
    at = T0 + timedelta(minutes=minutes)
    return ReviewSubmitted(event_id=eid, occurred_at=at, recorded_at=at, user_id=user, movie_id=movie,
                           rating=rating, reviewed_at=at)


def imported(eid, user, movie, rating, written, minutes=0):
    """A review written at `written`, recorded by the log `minutes` after T0 (as an import records it)."""
    return ReviewSubmitted(event_id=eid, occurred_at=written, recorded_at=T0 + timedelta(minutes=minutes),
                           user_id=user, movie_id=movie, rating=rating, reviewed_at=written)


def ret(eid, user, movie, minutes=0):
    at = T0 + timedelta(minutes=minutes)
    return ReviewRetracted(event_id=eid, occurred_at=at, recorded_at=at, user_id=user, movie_id=movie)


def catalogued(eid, movie, title, year=None, genres=()):
    return MovieCatalogued(event_id=eid, occurred_at=T0, recorded_at=T0, movie_id=movie, title=title, year=year,
                           genres=genres)


def records(*events, partition=0, start=0):
    return [Record(partition, start + i, e) for i, e in enumerate(events)]


def sealed(*events, subject, partition=0, start=0):
    """Records of one user's events as the projector has them once opened: with their subject."""
    return [Record(partition, start + i, e, None if isinstance(e, SubjectForgotten) else subject)
            for i, e in enumerate(events)]


def forgotten(eid, subject):
    return SubjectForgotten(event_id=eid, occurred_at=T0, recorded_at=T0, subject=subject)


def small_model(seed: int) -> FactorModel:
    rng = np.random.default_rng(seed)
    return FactorModel(3.5, np.array(["ana", "ben", "cy"]), np.array(["m1", "m2"]), rng.normal(size=3),
                       rng.normal(size=2), rng.normal(size=(3, 4)).astype(np.float32),
                       rng.normal(size=(2, 4)).astype(np.float32), np.array([7, 2]),
                       rng.normal(size=(2, 3)).astype(np.float32), {"rank": 4, "taste_rank": 3})


class StoreContract:
    @pytest.fixture
    def store(self) -> ProjectionStore:
        raise NotImplementedError

    def other_handle(self, store: ProjectionStore) -> ProjectionStore:
        raise NotImplementedError

    # -- the projector's side --------------------------------------------------------------

    def test_a_later_submission_replaces_and_statistics_follow(self, store):
        apply_records(store, records(sub("a", "u", "m", 2.0), sub("b", "v", "m", 4.0), sub("c", "u", "m", 5.0)))
        [review] = store.user_reviews("u", 10, None)
        assert (review.user_id, review.movie_id, review.rating, review.event_id) == ("u", "m", 5.0, "c")
        movie = store.movie("m")
        assert (movie.review_count, movie.mean_rating) == (2, 4.5)

    @pytest.mark.parametrize("text", ['quotes " and \\ , é, 😀, a\nnew line\t', "a NUL \x00 inside", ""])
    def test_what_users_wrote_comes_back_exactly(self, store, text):
        review = msgspec.structs.replace(sub("a", "ü", "m", 4.0), summary=text[:300], text=text * 3)
        apply_records(store, records(review, sub("b", "ü", "n", 1.0)))
        stored = {r.movie_id: r for r in store.user_reviews("ü", 10, None)}
        assert (stored["m"].summary, stored["m"].text, stored["n"].text) == (text[:300], text * 3, "")
        assert store.user_event("ü", "a").payload["text"] == text * 3

    def test_a_retraction_removes_the_review_across_batches(self, store):
        apply_records(store, records(sub("a", "u", "m", 2.0), sub("b", "v", "m", 4.0)))
        apply_records(store, records(ret("c", "u", "m"), start=2))
        assert store.user_reviews("u", 10, None) == []
        assert (store.movie("m").review_count, store.movie("m").mean_rating) == (1, 4.0)
        apply_records(store, records(ret("d", "u", "m"), start=3))  # retracting nothing changes nothing
        assert store.movie("m").review_count == 1
        assert store.movie("nothing") is None

    def test_a_movie_reviewed_then_retracted_in_a_later_batch_leaves_nothing_behind(self, store):
        # issue 13 saw this drift at ee2647b: a `movies` row left with review_count 0, which a fold
        # of the whole log does not have (verify differed; GET /v1/movies/M answered 200, not 404)
        apply_records(store, records(sub("a", "u", "new", 3.0)))
        apply_records(store, records(ret("b", "u", "new"), start=1))
        assert store.movie("new") is None
        fresh = store.scratch("contract")
        try:
            apply_records(fresh, records(sub("a", "u", "new", 3.0), ret("b", "u", "new")))
            assert store.contents() == fresh.contents()
        finally:
            fresh.close()

    def test_records_at_or_below_the_checkpoint_are_skipped(self, store):
        batch = records(sub("a", "u", "m", 2.0), sub("b", "u", "m", 3.0))
        apply_records(store, batch)
        apply_records(store, batch + records(sub("c", "u", "n", 1.0), start=2))  # replayed plus one new
        assert (store.movie("m").review_count, store.movie("m").mean_rating) == (1, 3.0)
        assert store.checkpoint() == {0: 2}
        assert len(store.contents()["history"]) == 3

    def test_an_event_seen_before_at_another_offset_is_not_applied_again(self, store):
        first = sub("a", "u", "m", 2.0)
        apply_records(store, records(first, sub("b", "u", "m", 4.0)))
        assert store.first_applied([("u", "a"), ("u", "b"), ("u", "z")]) == {"a": (0, 0), "b": (0, 1)}
        apply_records(store, records(first, start=2))  # a re-sent retry of "a" must not undo "b"
        assert store.user_reviews("u", 10, None)[0].rating == 4.0
        assert store.checkpoint() == {0: 2}

    def test_a_stale_batch_applied_after_a_newer_one_changes_nothing(self, store):
        """Two workers overlap in a rebalance: the old owner folded offsets 0-1 before the new owner
        applied 0-3, and writes last. Nothing moves back and nothing is counted twice."""
        log = records(sub("a", "u", "m", 2.0), sub("b", "u", "m", 4.0), ret("c", "u", "m"), sub("d", "v", "m", 5.0))
        stale, newest = fold(store, log[:2]), fold(store, log)
        assert store.apply(newest)
        expected = store.contents()
        assert not store.apply(stale), "folded on a checkpoint that has moved since"
        assert not store.apply(newest)  # and the new owner's batch once more
        assert store.contents() == expected
        assert store.checkpoint() == {0: 3}
        assert store.user_reviews("u", 10, None) == []
        assert (store.movie("m").review_count, store.movie("m").mean_rating) == (1, 5.0)

    def test_the_catalogue_fills_the_movie_view_and_a_newer_entry_wins(self, store):
        apply_records(store, records(catalogued("x", "m", "Heat", 1995, ("Crime", "Drama"))))
        movie = store.movie("m")
        assert (movie.title, movie.year, movie.genres, movie.review_count, movie.mean_rating, movie.ratings) == (
            "Heat", 1995, ["Crime", "Drama"], 0, None, [])
        newer = fold(store, records(catalogued("z", "m", "Hea"), catalogued("y", "m", "Heat (1995)", 1995), start=1))
        older = fold(store, records(catalogued("z", "m", "Hea"), start=1))
        assert store.apply(newer)
        assert not store.apply(older)
        assert store.movie("m").title == "Heat (1995)"

    def test_user_ratings_are_the_current_ones_and_the_catalogue_lists_every_entry(self, store):
        apply_records(store, records(sub("a", "u", "m", 2.0), sub("b", "u", "n", 4.5), sub("c", "u", "m", 3.0),
                                     sub("d", "v", "m", 1.0), ret("e", "u", "n"),
                                     catalogued("f", "m", "Heat", 1995, ("Crime", "Drama")), catalogued("g", "k", "Ran")))
        assert store.user_ratings("u") == {"m": 3.0}
        assert store.user_ratings("nobody") == {}
        assert sorted(store.catalogue(), key=lambda entry: entry.movie_id) == [
            CatalogueEntry("k", "Ran", None, [], None), CatalogueEntry("m", "Heat", 1995, ["Crime", "Drama"], None)]

    def test_checkpoints_are_per_partition_and_never_move_back_in_a_commit(self, store):
        apply_records(store, records(*[sub(f"a{i}", "u", f"m{i}", 2.0) for i in range(6)], partition=0)
                      + records(sub("b", "w", "m", 3.0), partition=3))
        assert store.checkpoint() == {0: 5, 3: 0}
        backwards = fold(store, [])
        backwards.checkpoint = {0: 1}
        store.apply(backwards)
        assert store.checkpoint() == {0: 5, 3: 0}

    def test_a_batch_that_jumps_over_offsets_is_refused_naming_them(self, store):
        apply_records(store, records(sub("a", "u", "m", 2.0)))
        with pytest.raises(LogGap, match="partition 0: offsets 1 to 2 are missing"):
            apply_records(store, records(sub("b", "u", "n", 2.0), start=3))
        with pytest.raises(LogGap, match="partition 0: offsets 2 to 2 are missing"):
            apply_records(store, records(sub("b", "u", "n", 2.0), start=1) + records(sub("c", "u", "k", 2.0), start=3))
        assert store.checkpoint() == {0: 0}

    def test_lag_is_recorded_and_read_back(self, store):
        store.record_lag([PartitionLag.of(0, 5, 10, refused=3), PartitionLag.of(1, -1, 0)])
        assert store.lag() == [PartitionLag(0, 5, 10, 4, 3), PartitionLag(1, -1, 0, 0, 0)]

    def test_lag_reported_at_is_the_newest_report(self, store):
        assert store.lag_reported_at() is None
        before = datetime.now(timezone.utc)
        store.record_lag([PartitionLag.of(0, 5, 10)])
        first = store.lag_reported_at()
        store.record_lag([PartitionLag.of(1, 2, 3)])  # another partition: the newest row counts
        after = datetime.now(timezone.utc)
        assert before <= first <= store.lag_reported_at() <= after

    # -- the read side ---------------------------------------------------------------------

    def test_pages_are_newest_first_and_a_cursor_continues(self, store):
        apply_records(store, records(*[sub(f"e{i}", "u", f"m{i}", 3.0, minutes=i) for i in range(5)]))
        first = store.user_reviews("u", 2, None)
        assert [r.movie_id for r in first] == ["m4", "m3"]
        rest = store.user_reviews("u", 10, (first[-1].reviewed_at, first[-1].movie_id))
        assert [r.movie_id for r in rest] == ["m2", "m1", "m0"]

    def test_a_movies_reviews_are_newest_first_ties_by_user_and_a_cursor_continues_across_them(self, store):
        apply_records(store, records(sub("a", "d", "m", 1.0, minutes=0), sub("b", "a", "m", 2.0, minutes=1),
                                     sub("c", "c", "m", 3.0, minutes=1), sub("d", "b", "m", 4.0, minutes=1),
                                     sub("e", "e", "m", 5.0, minutes=2), sub("f", "a", "other", 1.0, minutes=3)))
        pages, after = [], None
        while page := store.movie_reviews("m", 2, after):
            pages.append([(r.user_id, r.movie_id, r.rating, r.event_id) for r in page])
            after = (page[-1].reviewed_at, page[-1].user_id)
        assert pages == [[("e", "m", 5.0, "e"), ("c", "m", 3.0, "c")], [("b", "m", 4.0, "d"), ("a", "m", 2.0, "b")],
                         [("d", "m", 1.0, "a")]]
        assert store.movie_reviews("m", 10, None)[0] == store.user_reviews("e", 10, None)[0]
        assert store.movie_reviews("nothing", 10, None) == []

    def test_a_replacement_moves_a_review_up_a_movies_page_and_a_retraction_takes_it_and_its_count(self, store):
        apply_records(store, records(sub("a", "u", "m", 2.0, minutes=0), sub("b", "v", "m", 4.0, minutes=1),
                                     sub("c", "w", "m", 4.0, minutes=2), sub("d", "x", "m", 1.0, minutes=3),
                                     sub("e", "x", "m", 2.0, minutes=4)))  # replaced in the same batch
        assert store.movie("m").ratings == [RatingCount(2.0, 2), RatingCount(4.0, 2)]
        apply_records(store, records(sub("f", "u", "m", 5.0, minutes=5), ret("g", "w", "m", minutes=6), start=5))
        assert [(r.user_id, r.rating, r.event_id) for r in store.movie_reviews("m", 10, None)] == [
            ("u", 5.0, "f"), ("x", 2.0, "e"), ("v", 4.0, "b")]
        movie = store.movie("m")
        assert (movie.review_count, movie.mean_rating, movie.ratings) == (
            3, 11 / 3, [RatingCount(2.0, 1), RatingCount(4.0, 1), RatingCount(5.0, 1)])
        apply_records(store, records(ret("h", "u", "m"), ret("i", "v", "m"), ret("j", "x", "m"), start=7))
        assert store.movie_reviews("m", 10, None) == [] and store.movie("m") is None

    def test_reviewers_are_found_by_the_casefolded_start_of_their_id_in_order(self, store):
        users = ["ana", "Ana", "anatole", "ANDRE", "ben", "Straße", "Strasse", "aaa1", "aaa2", "aaa3", "aab"]
        apply_records(store, records(*[sub(f"s{n}", user, "m", 3.0) for n, user in enumerate(users)],
                                     sub("t", "ben", "n", 3.0)))
        # Users whose every review was retracted are no reviewers, one with a review left is.
        gone = ["aaa1", "aaa2", "aaa3", "ben"]
        apply_records(store, records(*[ret(f"r{n}", user, "m") for n, user in enumerate(gone)], start=len(users) + 1))
        assert store.reviewers("AN", 10) == ["Ana", "ana", "anatole", "ANDRE"]
        assert store.reviewers("an", 2) == ["Ana", "ana"]
        assert store.reviewers("ANAT", 10) == ["anatole"] and store.reviewers("andrex", 10) == []
        assert store.reviewers("a", 1) == ["aab"]  # past the retracted ones
        assert store.reviewers("a", 3) == ["aab", "Ana", "ana"]
        assert store.reviewers("B", 10) == ["ben"]
        assert store.reviewers("STRASS", 10) == store.reviewers("straß", 10) == ["Strasse", "Straße"]
        assert store.reviewers("", 10) == [] and store.reviewers("z", 10) == []

    def test_history_is_newest_first_with_a_cursor_and_as_of(self, store):
        apply_records(store, records(sub("a", "u", "m", 2.0, minutes=0), sub("b", "u", "m", 3.0, minutes=1),
                                     ret("c", "u", "m", minutes=2), sub("d", "v", "m", 1.0, minutes=3)))
        rows = store.user_history("u", 0, None, None)
        assert [(r.event_id, r.type, r.offset) for r in rows] == [
            ("c", "ReviewRetracted", 2), ("b", "ReviewSubmitted", 1), ("a", "ReviewSubmitted", 0)]
        assert rows[1].payload["rating"] == 3.0 and rows[1].recorded_at == T0 + timedelta(minutes=1)
        page = store.user_history("u", 2, None, None)
        assert [r.event_id for r in page] == ["c", "b"]
        assert [r.event_id for r in store.user_history("u", 2, (page[-1].partition, page[-1].offset), None)] == ["a"]
        assert [r.event_id for r in store.user_history("u", 0, None, T0 + timedelta(minutes=1))] == ["b", "a"]

    def test_the_newest_event_of_each_movie_before_a_position_tells_a_page_what_stood(self, store):
        apply_records(store, records(sub("a", "u", "m", 2.0, minutes=0), sub("b", "u", "n", 3.0, minutes=1),
                                     ret("c", "u", "m", minutes=2), sub("d", "v", "m", 1.0, minutes=3),
                                     sub("e", "u", "n", 4.0, minutes=4)))
        assert store.review_events_before("u", ["m", "n", "k"], (0, 4), None) == {
            "m": "ReviewRetracted", "n": "ReviewSubmitted"}
        assert store.review_events_before("u", ["m", "n"], (0, 2), None) == {"m": "ReviewSubmitted", "n": "ReviewSubmitted"}
        assert store.review_events_before("u", ["m"], (0, 0), None) == {}
        assert store.review_events_before("u", ["m", "n"], (0, 4), T0 + timedelta(seconds=30)) == {"m": "ReviewSubmitted"}

    def test_history_by_the_time_events_occurred_keeps_imports_at_their_own_dates(self, store):
        old = T0 - timedelta(days=10)
        apply_records(store, records(imported("a", "u", "m", 2.0, old, minutes=5), sub("b", "u", "n", 3.0, minutes=1),
                                     ret("c", "u", "n", minutes=2), imported("d", "u", "k", 4.0, old, minutes=6),
                                     imported("e", "v", "m", 1.0, old, minutes=6)))

        def ids(limit, before, as_of, clock):
            return [r.event_id for r in store.user_history("u", limit, before, as_of, clock=clock)]

        assert ids(0, None, T0, "occurred") == ["d", "a"]
        assert ids(0, None, T0, "recorded") == []
        assert ids(0, None, T0 + timedelta(minutes=1), "occurred") == ["d", "b", "a"]
        assert ids(0, None, T0 + timedelta(minutes=1), "recorded") == ["b"]
        assert ids(0, None, T0 + timedelta(minutes=5), "recorded") == ["c", "b", "a"]
        assert ids(0, None, old - timedelta(microseconds=1), "occurred") == []
        assert ids(1, None, T0, "occurred") == ["d"]
        assert ids(1, (0, 3), T0, "occurred") == ["a"]
        assert ids(0, None, None, "occurred") == ["d", "c", "b", "a"]

    def test_the_newest_event_before_a_position_by_the_time_it_occurred(self, store):
        old = T0 - timedelta(days=10)
        apply_records(store, records(imported("a", "u", "m", 2.0, old, minutes=5), sub("b", "u", "n", 3.0, minutes=1),
                                     ret("c", "u", "n", minutes=2), imported("d", "u", "k", 4.0, old, minutes=6)))
        before = store.review_events_before
        assert before("u", ["m", "n", "k"], (0, 4), T0 + timedelta(minutes=2), clock="occurred") == {
            "m": "ReviewSubmitted", "n": "ReviewRetracted", "k": "ReviewSubmitted"}
        assert before("u", ["m", "n"], (0, 4), T0 + timedelta(seconds=90), clock="occurred") == {
            "m": "ReviewSubmitted", "n": "ReviewSubmitted"}
        assert before("u", ["m", "n"], (0, 4), T0, clock="occurred") == {"m": "ReviewSubmitted"}
        assert before("u", ["m", "n"], (0, 4), T0 + timedelta(seconds=90), clock="recorded") == {"n": "ReviewSubmitted"}
        assert before("u", ["m"], (0, 0), T0, clock="occurred") == {}
        assert before("u", [], (0, 4), T0, clock="occurred") == {}

    def test_an_applied_event_is_found_by_its_user_and_id(self, store):
        apply_records(store, records(sub("a", "u", "m", 2.0), ret("b", "u", "m", minutes=1), sub("c", "v", "m", 1.0)))
        found = store.user_event("u", "b")
        assert (found.event_id, found.type, found.offset, found.recorded_at) == (
            "b", "ReviewRetracted", 1, T0 + timedelta(minutes=1))
        assert store.user_event("u", "c") is None  # another user's
        assert store.user_event("u", "zzz") is None

    def test_ping_answers(self, store):
        store.ping()

    # -- title search --------------------------------------------------------------------------

    def test_title_search_from_the_store_ranks_as_an_index_of_the_whole_catalogue(self, store):
        titles = {"sw": "Star Wars", "sk": "Star Kid", "st": "Star Trek: First Contact", "ls": "Lone Star",
                  "am": "Amélie", "sl": "Schindler's List", "wr": "Wars of the Roses, The", "ab": "A Bug's Life",
                  "st2": "Starship Troopers", "h": "Heat"}
        apply_records(store, records(*[catalogued(f"e{m}", m, t, 1990, ("Drama",)) for m, t in titles.items()],
                                     catalogued("r", "h", "Ronin", 1998, ("Crime",))))  # "h" renamed
        whole = TitleIndex(store.catalogue())
        for query in ("star", "sta", "star wa", "wars star", "a", "a bu", "AMEL", "schindlers", "heat", "ron",
                      "the roses", "st", "zzz", "s"):
            assert search(store, query, 0, 100) == whole.search(query, 0, 100), query
            assert search(store, query, 1, 2) == whole.search(query, 1, 2), query
        assert search(store, "heat", 0, 10) == (0, [])
        assert [e.title for e in search(store, "star", 0, 10)[1]] == [
            "Star Kid", "Star Wars", "Star Trek: First Contact", "Starship Troopers", "Lone Star"]
        assert sorted(e.movie_id for e in store.catalogue_entries(["h", "nope", "sw"])) == ["h", "sw"]
        assert store.genres() == ["Crime", "Drama"]

    # -- accounts ------------------------------------------------------------------------------

    def test_the_first_opening_of_a_user_id_holds_it_in_any_order_and_batches(self, store):
        first, second, other = (AccountRow("ana", "e1", "hash 1", 0, 3, "ana"), AccountRow("ana", "e2", "hash 2", 0, 7, "ana"),
                                AccountRow("ben", "e3", "hash 3", 0, 5, "ben"))
        assert store.account("ana") is None and store.accounts_checkpoint() == {}
        store.put_accounts([second, other], {0: 7})  # the later opening arrives first
        assert store.account("ana") == second
        store.put_accounts([first], {0: 3})  # the earlier one, in a batch of its own; the checkpoint stays
        store.put_accounts([second, first, other], {0: 7})  # everything again
        assert (store.account("ana"), store.account("ben"), store.account("cy")) == (first, other, None)
        assert store.accounts_checkpoint() == {0: 7}
        store.put_accounts([], {0: 9, 1: 0})
        assert self.other_handle(store).accounts_checkpoint() == {0: 9, 1: 0}
        assert self.other_handle(store).account("ana") == first

    def test_accounts_are_found_by_the_skeleton_of_their_user_id(self, store):
        opening = AccountRow("ana", "e1", "hash 1", 0, 3, "ana")
        store.put_accounts([opening, AccountRow("Ana", "e2", "hash 2", 0, 4, "ana"),  # look alike
                            AccountRow("ben", "e3", "hash 3", 0, 5, "ben"), opening], {0: 5})
        assert sorted(self.other_handle(store).accounts_with_skeleton("ana")) == ["Ana", "ana"]
        assert store.accounts_with_skeleton("cy") == []

    # -- attempts (the sign-in and opening limits) ------------------------------------------------

    def test_attempts_are_counted_per_key_by_every_handle_until_taken_back_or_expired(self, store):
        other, now = self.other_handle(store), float(int(time.time()))  # whole seconds: exact in any adapter
        assert store.attempts(["a", "b"], now) == [Tally(0, None), Tally(0, None)]
        assert store.add_attempt(["a", "b"], "t1", now - 2, 60) == [Tally(1, now - 2), Tally(1, now - 2)]
        assert other.add_attempt(["a"], "t2", now, 60) == [Tally(2, now - 2)]  # another process counts on
        assert store.attempts(["a", "b", "c"], now) == [Tally(2, now - 2), Tally(1, now - 2), Tally(0, None)]
        other.drop_attempt(["a", "b"], "t1")
        assert store.attempts(["a", "b"], now) == [Tally(1, now), Tally(0, None)]
        store.add_attempt(["b"], "t3", now, 60)
        other.clear_attempts("a")
        assert store.attempts(["a", "b"], now) == [Tally(0, None), Tally(1, now)]
        store.add_attempt(["short"], "t4", time.time(), 1)
        wait_until(lambda: other.attempts(["short"], time.time()) == [Tally(0, None)], 5, "no attempt expires")

    def test_attempts_added_at_once_from_many_handles_are_each_counted_with_those_before(self, store):
        """The k-th attempt to be added counts at least k: of N at once, at most `free` see `free` or fewer."""
        handles = [store, self.other_handle(store)]
        with ThreadPoolExecutor(8) as pool:
            counts = sorted(tally.count for [tally] in pool.map(
                lambda n: handles[n % 2].add_attempt(["k"], f"t{n}", time.time(), 60), range(16)))
        assert all(count >= k for k, count in enumerate(counts, 1)) and counts[-1] == 16

    # -- forgetting ------------------------------------------------------------------------

    def test_a_forgotten_subject_takes_every_row_of_its_user_and_nobody_elses(self, store):
        apply_records(store, sealed(sub("a", "u", "m", 2.0), sub("b", "u", "n", 4.0), subject="su")
                      + sealed(sub("c", "v", "m", 5.0), subject="sv", partition=1))
        apply_records(store, sealed(sub("e", "u", "m", 3.0, minutes=1), subject="su", start=2))  # moved on m's page
        store.put_accounts([AccountRow("u", "o1", "hash", 0, 0, "u", "su"), AccountRow("v", "o2", "hash", 0, 1, "v", "sv")],
                           {0: 1})
        apply_records(store, sealed(forgotten("f", "su"), subject="su", start=3))
        reader = self.other_handle(store)
        for handle in (store, reader):
            assert handle.user_reviews("u", 10, None) == [] and handle.user_history("u", 0, None, None) == []
            assert handle.user_event("u", "a") is None and handle.account("u") is None
            assert handle.movie("m").review_count == 1 and handle.movie("m").mean_rating == 5.0
            assert handle.movie("m").ratings == [RatingCount(5.0, 1)]
            assert [r.user_id for r in handle.movie_reviews("m", 10, None)] == ["v"]
            assert handle.movie("n") is None and handle.movie_reviews("n", 10, None) == []
            assert handle.reviewers("u", 10) == [] and handle.reviewers("v", 10) == ["v"]
            assert [r.movie_id for r in handle.user_reviews("v", 10, None)] == ["m"] and handle.account("v")
        assert store.checkpoint() == {0: 3, 1: 0}

    def test_a_forgetting_in_the_batch_of_the_users_first_events_takes_them_too(self, store):
        apply_records(store, sealed(sub("a", "u", "m", 2.0), forgotten("f", "su"), subject="su"))
        assert store.user_reviews("u", 10, None) == [] and store.user_history("u", 0, None, None) == []
        assert store.movie("m") is None and store.movie_reviews("m", 10, None) == [] and store.reviewers("u", 10) == []

    def test_a_forgotten_user_with_an_account_and_no_reviews_loses_the_account(self, store):
        store.put_accounts([AccountRow("u", "o1", "hash", 0, 0, "u", "su")], {0: 0})
        apply_records(store, records(forgotten("f", "su")))
        assert store.account("u") is None and store.accounts_with_skeleton("u") == []

    def test_forgetting_an_unknown_subject_changes_no_view(self, store):
        apply_records(store, sealed(sub("a", "u", "m", 2.0), subject="su"))
        before = store.contents()
        apply_records(store, records(forgotten("f", "nobody"), start=1))
        after = store.contents()
        assert {k: v for k, v in after.items() if k != "checkpoints"} == {k: v for k, v in before.items()
                                                                           if k != "checkpoints"}

    def test_forget_factors_deletes_the_users_rows_of_every_published_version(self, store):
        bucket = MemoryBucket()
        infos = [registry.publish(store, bucket, "models", "models/", small_model(n), trained_at=T0 + timedelta(days=n),
                                  watermark={}, metrics={}) for n in (1, 2)]
        store.forget_factors("ana")
        for info in infos:
            assert {row.id for row in store.factors(info.version, "user")} == {"ben", "cy"}
            assert {row.id for row in store.factors(info.version, "item")} == {"m1", "m2"}

    # -- the model registry ------------------------------------------------------------------

    def test_published_factors_give_back_the_same_predictions(self, store):
        bucket, model = MemoryBucket(), small_model(1)
        info = registry.publish(store, bucket, "models", "models/", model, trained_at=T0,
                                watermark={0: 41, 1: 7}, metrics={"rmse": 0.9})
        loaded_info, loaded = registry.load(store)
        assert loaded_info == info and store.model(info.version) == info
        users, items = ["ana", "cy", "ben", "nobody"], ["m2", "m1", "zz", "m1"]
        assert np.array_equal(loaded.predict(users, items), model.predict(users, items))
        assert np.array_equal(loaded.item_counts, model.item_counts)
        assert np.array_equal(loaded.item_taste, model.item_taste)
        assert {row.id for row in store.factors(info.version, "user", ["cy", "nobody"])} == {"cy"}

    def test_a_new_version_becomes_current_only_when_published(self, store):
        assert store.model() is None
        first = ModelInfo("v1", T0, {0: 1}, {}, {}, 3.5, 2, "s3://b/v1/")
        store.put_factors("v1", "item", [FactorRow("m1", 0.5, np.ones(2, np.float32).tobytes())])
        assert store.model() is None
        store.publish_model(first)
        store.put_factors("v2", "item", [FactorRow("m1", 0.1, np.zeros(2, np.float32).tobytes())])
        assert store.model() == first
        second = ModelInfo("v2", T0 + timedelta(days=1), {0: 2}, {}, {}, 3.6, 2, "s3://b/v2/")
        store.publish_model(second)
        assert store.model() == second and store.model("v1") == first
        assert [row.bias for row in store.factors("v1", "item")] == [0.5]

    def test_models_are_the_registry_rows_newest_first(self, store):
        assert store.models() == []
        infos = [ModelInfo(v, T0, {0: 1}, {}, {}, 3.5, 2, f"s3://b/{v}/") for v in ("v2", "v1", "v3")]
        for info in infos:
            store.publish_model(info)
        assert store.models() == [infos[2], infos[0], infos[1]]

    def test_drop_model_deletes_a_version_and_its_factor_rows_of_every_kind_but_never_the_current_one(self, store):
        rows = [FactorRow(f"id{n:02}", float(n), np.full(2, n, np.float32).tobytes(), n) for n in range(40)]
        for version in ("v1", "v2", "v3"):  # v3 never published: a publication that died
            for kind in FACTOR_KINDS:
                store.put_factors(version, kind, rows)
        first, second = (ModelInfo(v, T0, {0: 1}, {}, {}, 3.5, 2, f"s3://b/{v}/") for v in ("v1", "v2"))
        store.publish_model(first)
        store.publish_model(second)
        assert not store.drop_model("v2")
        assert store.drop_model("v1") and store.drop_model("v3") and store.drop_model("never-was")
        assert store.models() == [second] and store.model() == second and store.model("v1") is None
        assert all(store.factors(v, kind) == [] for v in ("v1", "v3") for kind in FACTOR_KINDS)
        assert all(store.factors("v2", kind) == rows for kind in FACTOR_KINDS)
        assert self.other_handle(store).models() == [second]  # committed, not only seen by this handle

    # -- rebuild and verify ------------------------------------------------------------------

    def test_swap_in_replaces_views_and_the_checkpoint(self, store):
        apply_records(store, records(sub("a", "u", "m", 2.0), sub("b", "v", "m", 4.0)))
        reader = self.other_handle(store)
        assert reader.movie("m").mean_rating == 3.0
        fresh = store.scratch("test")
        try:
            apply_records(fresh, records(sub("a", "u", "m", 2.0), sub("c", "w", "m", 5.0)))
            assert reader.movie("m").mean_rating == 3.0, "readers see the old views until the swap"
            store.swap_in(fresh, ["reviews", "movies", "history"])
            wait_until(lambda: reader.movie("m").mean_rating == 3.5, 5, "the reader sees the new views")
            assert [r.event_id for r in reader.user_reviews("w", 10, None)] == ["c"]
            assert [r.event_id for r in reader.movie_reviews("m", 10, None)] == ["c", "a"]
            assert reader.reviewers("v", 10) == [] and reader.reviewers("w", 10) == ["w"]
        finally:
            fresh.close()
        apply_records(store, records(sub("d", "x", "m", 2.0), start=2))  # the projector goes on, in the new views
        assert (store.movie("m").review_count, store.checkpoint()) == (3, {0: 2})
        assert [r.event_id for r in store.user_history("w", 0, None, None)] == ["c"]

    def test_a_swap_behind_the_projector_moves_the_checkpoint_back_and_a_batch_folded_before_is_refused(self, store):
        log = records(sub("a", "u", "m", 2.0), sub("b", "v", "m", 4.0), ret("c", "u", "m"), sub("d", "w", "n", 1.0))
        apply_records(store, log[:1])
        fresh = store.scratch("test")
        try:
            apply_records(fresh, log[:1])
            apply_records(store, log[1:3])  # the projector moved on while the rebuild folded
            pending = fold(store, log[3:])  # and folded its next batch on checkpoint 2
            store.swap_in(fresh, ["reviews", "movies", "history"])
            assert store.checkpoint() == {0: 0}
            assert not store.apply(pending), "folded on a checkpoint the swap replaced"
        finally:
            fresh.close()
        apply_records(store, log[1:])  # the projector reads the log again from the swapped-in checkpoint
        reference = store.scratch("reference")
        try:
            apply_records(reference, log)
            assert store.contents() == reference.contents()
        finally:
            reference.close()

    def test_a_swap_of_one_view_behind_the_projector_loses_nothing_in_any_view(self, store):
        """Issue 21: the applied event ids lived beside the reviews view, so after a history-only
        swap the history of the events applied again was never written."""
        log = records(sub("a", "u", "m", 2.0), sub("b", "u", "n", 4.0), ret("c", "u", "m"),
                      catalogued("d", "n", "Ran"), sub("a", "u", "m", 2.0))  # "a" again: a re-sent copy
        apply_records(store, log[:1])
        for view in ("history", "reviews", "movies"):
            fresh = store.scratch("test")
            try:
                apply_records(fresh, log[:1])
                apply_records(store, log[1:])
                store.swap_in(fresh, [view])
            finally:
                fresh.close()
            apply_records(store, log[1:])
            reference = store.scratch("reference")
            try:
                apply_records(reference, log)
                assert store.contents() == reference.contents(), f"after a swap of {view}"
                assert search(store, "ran", 0, 10) == (1, [CatalogueEntry("n", "Ran", None, [], None)]), view
            finally:
                reference.close()

    def test_partitions_commit_independently(self, store):
        """Workers owning different partitions never refuse each other's commits."""
        zero = fold(store, records(sub("a", "u", "m", 2.0), partition=0))
        one = fold(store, records(sub("b", "v", "m", 4.0), partition=1))
        assert store.apply(zero) and store.apply(one)
        assert store.checkpoint() == {0: 0, 1: 0}
        both = fold(store, records(sub("c", "u", "n", 1.0), partition=0, start=1)
                    + records(sub("d", "v", "n", 1.0), partition=1, start=1))
        assert store.apply(fold(store, records(sub("e", "v", "k", 3.0), partition=1, start=1)))
        assert not store.apply(both), "partition 1 moved since the fold"
        apply_records(store, records(sub("c", "u", "n", 1.0), partition=0, start=1))
        assert store.checkpoint() == {0: 1, 1: 1}
        assert store.user_ratings("v") == {"m": 4.0, "k": 3.0}

    def test_the_maintenance_lease_has_one_holder_until_it_expires_or_is_released(self, store):
        assert store.take_lease("rebuild 1", 30) is None
        assert store.take_lease("rebuild 1", 30) is None  # renewed by its holder
        holder, until = self.other_handle(store).take_lease("rebuild 2", 30)
        assert holder == "rebuild 1" and until > datetime.now(timezone.utc)
        store.release_lease("rebuild 2")  # not the holder's: nothing happens
        assert store.take_lease("rebuild 2", 30)[0] == "rebuild 1"
        store.release_lease("rebuild 1")
        assert store.take_lease("rebuild 2", 1) is None
        wait_until(lambda: store.take_lease("rebuild 3", 30) is None, 10, "an expired lease is free")

    def test_scratch_stores_have_names_of_their_own(self, store):
        first, second = store.scratch("rebuild"), store.scratch("rebuild")
        try:
            apply_records(first, records(sub("a", "u", "m", 2.0)))
            assert second.checkpoint() == {} and first.checkpoint() == {0: 0}
        finally:
            first.close()
            second.close()

    def test_a_scratch_store_starts_empty_and_equal_folds_have_equal_contents(self, store):
        batch = records(sub("a", "u", "m", 2.0), ret("b", "u", "m"), sub("c", "v", "n", 4.5),
                        catalogued("d", "n", "Ran", 1985))
        apply_records(store, batch)
        scratch = store.scratch("test")
        try:
            assert scratch.checkpoint() == {} and scratch.contents()["reviews"] == []
            apply_records(scratch, batch)
            assert scratch.contents() == store.contents()
        finally:
            scratch.close()
