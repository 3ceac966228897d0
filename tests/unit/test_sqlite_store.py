"""The SQLite adapter against the store contract (tests/store_contract.py), on files in tmp_path."""

from __future__ import annotations

import random
import sqlite3

import msgspec
import pytest

from projections.sqlite_store import SCHEMA_VERSION, SQLiteStore
from projections.projector import apply_records
from tests.fold_contract import FoldContract
from projections.titles import search
from projections.fold import Record
from tests.store_contract import StoreContract, catalogued, forgotten, records, sub


class TestSQLiteStore(StoreContract, FoldContract):
    fold_log_records = 12_000  # batches of 2,000 and 10,000 split it

    @pytest.fixture
    def store(self, tmp_path):
        store = SQLiteStore(tmp_path / "p.db")
        yield store
        store.close()

    def other_handle(self, store):
        return SQLiteStore(store.path)


def test_an_older_file_is_projected_again_and_keeps_its_models(tmp_path):
    path = tmp_path / "p.db"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE reviews (user_id TEXT, movie_id TEXT, rating REAL NOT NULL, summary TEXT, text TEXT,
                              reviewed_at TEXT, event_id TEXT, PRIMARY KEY (user_id, movie_id));
        CREATE TABLE checkpoints (partition INTEGER PRIMARY KEY, "offset" INTEGER NOT NULL);
        INSERT INTO checkpoints VALUES (0, 41);
        CREATE TABLE models (version TEXT PRIMARY KEY, info TEXT NOT NULL, current INTEGER NOT NULL DEFAULT 0);
        INSERT INTO models VALUES ('v1', '{}', 0);
    """)
    old.close()
    store = SQLiteStore(path)
    assert store.checkpoint() == {}, "the views start again from the log"
    assert store._db.execute("SELECT version FROM models").fetchall() == [("v1",)]
    assert store._db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    apply_records(store, records(sub("a", "u", "m", 2.0)))
    store.close()
    assert SQLiteStore(path).checkpoint() == {0: 0}, "a current file is kept as it is"


def test_a_catalogue_projected_before_title_search_is_indexed_when_the_file_is_opened(tmp_path):
    path = tmp_path / "p.db"
    store = SQLiteStore(path)
    apply_records(store, records(catalogued("a", "m", "Heat", 1995, ("Crime",))))
    store._db.executescript("DROP TABLE title_words; DROP TABLE genres;")  # as a file of schema 4 had it
    store.close()
    store = SQLiteStore(path)
    assert [e.movie_id for e in search(store, "hea", 0, 10)[1]] == ["m"] and store.genres() == ["Crime"]
    store.close()


def test_reviews_projected_before_movie_pages_get_the_index_and_their_reviewers_when_the_file_is_opened(tmp_path):
    path = tmp_path / "p.db"
    store = SQLiteStore(path)
    apply_records(store, records(sub("a", "Ana", "m", 2.0), sub("b", "ben", "m", 4.0)))
    store._db.executescript("DROP TABLE reviewers; DROP INDEX reviews_by_movie_newest; "  # as a file of schema 4 had it
                            "CREATE INDEX reviews_by_movie ON reviews (movie_id, rating);")
    store.close()
    store = SQLiteStore(path)
    indexes = {name for (name,) in store._db.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'reviews'")}
    assert "reviews_by_movie_newest" in indexes and "reviews_by_movie" not in indexes
    assert store.reviewers("a", 10) == ["Ana"]
    assert [r.user_id for r in store.movie_reviews("m", 10, None)] == ["ben", "Ana"]
    store.close()


def test_forgotten_users_leave_no_byte_in_the_file_after_the_pages_around_them_moved(tmp_path):
    """secure_delete zeroes a deleted row where it lies, but a page split or merge can leave copies of
    rows in a page's unused space: users reviewing in random order among others, then forgotten, must
    be in no byte of the file or its WAL (on SQLite 3.40 some were, before VACUUM)."""
    rng = random.Random(1)
    store = SQLiteStore(tmp_path / "p.db")
    doomed = [f"doomed-{n:02d}-x" for n in range(12)]
    users = doomed + [f"kept-{n:03d}" for n in range(120)]
    log = []
    for n in range(4000):
        review = sub(f"e{n}", rng.choice(users), f"m{rng.randrange(40)}", 3.0, minutes=n)
        review = msgspec.structs.replace(review, summary="s" * rng.randrange(80), text="t" * rng.randrange(400))
        log.append(Record(0, n, review, f"s-{review.user_id}"))
    log += records(*(forgotten(f"f-{user}", f"s-{user}") for user in doomed), start=len(log))
    for start in range(0, len(log), 100):
        apply_records(store, log[start:start + 100])
    assert store.user_reviews("kept-001", 1, None)  # the others stay
    files = {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.name.startswith("p.db")}
    assert [(name, user) for name, data in files.items() for user in doomed if user.encode() in data] == []
    store.close()
