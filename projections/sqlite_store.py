"""The embedded projection store: one SQLite file in WAL mode.

One writer (the projector) and any number of readers (API processes) share the
file; WAL lets readers go on while a batch commits.
"""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
import threading
import time
import uuid
from datetime import datetime, timezone
from itertools import chain
from pathlib import Path

import msgspec

from projections.timestamps import from_micros, micros
from projections.store import (
    AccountRow, CatalogueEntry, Changes, Clock, FactorRow, HistoryRow, ModelInfo, Movie, PartitionLag, RatingCount,
    ReviewRow, Tally,
)
from projections.sqlite_scrub import scrub
from projections.titles import LAST_CHAR, folded_words

log = logging.getLogger(__name__)

# Raised when the views' tables change: an older file's views are dropped and projected again
# from the log (the model registry's tables are kept).
SCHEMA_VERSION = 4

SCHEMA = """
CREATE TABLE IF NOT EXISTS reviews (
    user_id TEXT NOT NULL, movie_id TEXT NOT NULL, rating REAL NOT NULL,
    summary TEXT NOT NULL, text TEXT NOT NULL, reviewed_at INTEGER NOT NULL, event_id TEXT NOT NULL,
    PRIMARY KEY (user_id, movie_id)
) WITHOUT ROWID;
DROP INDEX IF EXISTS reviews_by_movie;
-- Reviewer suggestions: the ids of users given a review, by their casefolded id. Never removed on a
-- retraction: reviewers() checks the user still has a review (forgetting removes the row).
CREATE TABLE IF NOT EXISTS reviewers (folded TEXT NOT NULL, user_id TEXT NOT NULL, PRIMARY KEY (folded, user_id))
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS movies (
    movie_id TEXT PRIMARY KEY, title TEXT NOT NULL, year INTEGER, genres TEXT NOT NULL,
    image_url TEXT
) WITHOUT ROWID;
-- Title search: the words of each entry's folded title (projections.titles), and every genre.
CREATE TABLE IF NOT EXISTS title_words (
    word TEXT NOT NULL, movie_id TEXT NOT NULL, PRIMARY KEY (word, movie_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS title_words_by_movie ON title_words (movie_id);
CREATE TABLE IF NOT EXISTS genres (genre TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history (
    event_id TEXT NOT NULL, user_id TEXT NOT NULL, type TEXT NOT NULL,
    occurred_at INTEGER NOT NULL, recorded_at INTEGER NOT NULL,
    partition INTEGER NOT NULL, "offset" INTEGER NOT NULL, payload TEXT NOT NULL, movie_id TEXT NOT NULL
);  -- rowid order is arrival order: appends stay at the end of the table
CREATE INDEX IF NOT EXISTS history_by_user ON history (user_id, partition, "offset");  -- reads, forgetting
-- Where an event id was first applied (first_applied, user_event): one row per id.
CREATE UNIQUE INDEX IF NOT EXISTS history_by_event ON history (event_id);
CREATE TABLE IF NOT EXISTS checkpoints (
    partition INTEGER PRIMARY KEY, "offset" INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS factors (
    version TEXT NOT NULL, kind TEXT NOT NULL, id TEXT NOT NULL, bias REAL NOT NULL, vector BLOB NOT NULL,
    count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (version, kind, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS models (
    version TEXT PRIMARY KEY, info TEXT NOT NULL, current INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS models_current ON models (current) WHERE current = 1;
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at REAL NOT NULL
);
-- The accounts topic folded, with its own checkpoint: rebuilds and swaps leave them alone.
CREATE TABLE IF NOT EXISTS accounts (
    user_id TEXT PRIMARY KEY, event_id TEXT NOT NULL, password_hash TEXT NOT NULL,
    partition INTEGER NOT NULL, "offset" INTEGER NOT NULL, skeleton TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS accounts_by_skeleton ON accounts (skeleton);
CREATE TABLE IF NOT EXISTS accounts_checkpoints (
    partition INTEGER PRIMARY KEY, "offset" INTEGER NOT NULL
);
-- Attempts per key (the sign-in and opening limits), each kept until it expires (not a view).
CREATE TABLE IF NOT EXISTS attempts (
    key TEXT NOT NULL, attempt TEXT NOT NULL, at REAL NOT NULL, expires REAL NOT NULL, PRIMARY KEY (key, attempt)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS attempts_expiring ON attempts (expires);
-- Who each subject (the id naming a user in the log) is, as the projectors read it: what a
-- forgetting, which names only the subject, needs to find the user's rows (not a view).
CREATE TABLE IF NOT EXISTS subjects (subject TEXT PRIMARY KEY, user_id TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lag (
    partition INTEGER PRIMARY KEY, checkpoint INTEGER NOT NULL, high_watermark INTEGER NOT NULL,
    updated_at INTEGER NOT NULL, refused INTEGER NOT NULL
);
"""

# Indexes only the read side uses. A scratch store is only folded into, compared and copied from:
# it goes without them (each costs a rebuild 1-2 µs an event).
READ_INDEXES = """
CREATE INDEX IF NOT EXISTS reviews_newest ON reviews (user_id, reviewed_at DESC, movie_id DESC);
-- A movie's page of reviews, and its statistics (rating covered): derived from its current reviews,
-- never counted up, so nothing to double-count. It replaces reviews_by_movie (movie_id, rating).
CREATE INDEX IF NOT EXISTS reviews_by_movie_newest ON reviews (movie_id, reviewed_at DESC, user_id DESC, rating);
CREATE INDEX IF NOT EXISTS history_by_review ON history (user_id, movie_id, partition, "offset");
"""

# Every view's contents in a stable order, to compare two stores (the port's REBUILDABLE and the
# checkpoints).
VIEWS = {
    "reviews": "SELECT * FROM reviews ORDER BY user_id, movie_id",
    "movies": "SELECT movie_id, title, year, genres, image_url FROM movies ORDER BY movie_id",
    "history": "SELECT event_id, user_id, type, occurred_at, recorded_at, partition, \"offset\", payload "
               "FROM history ORDER BY event_id",
    "checkpoints": "SELECT * FROM checkpoints ORDER BY partition",
}
# The tables of each view a rebuild can replace (title search is derived from the catalogue).
VIEW_TABLES = {"reviews": ("reviews", "reviewers"), "movies": ("movies", "title_words", "genres"),
               "history": ("history",)}
# Dropped and projected again when SCHEMA_VERSION rises.
_PROJECTED_TABLES = (*(t for tables in VIEW_TABLES.values() for t in tables), "checkpoints", "lag",
                     "accounts", "accounts_checkpoints")

CHECKPOINT = 'SELECT partition, "offset" FROM main.checkpoints'

# The history column each clock of `as_of` compares (a filter among one user's rows, by history_by_user).
CLOCK_COLUMNS = {"recorded": "recorded_at", "occurred": "occurred_at"}

PAGE_SIZE = 32768
WAL_CHECKPOINT_BYTES = 80 * 2**20  # the WAL is copied into the file once it holds this much

# SQLite caps the number of bound parameters per statement; stay well under it.
_CHUNK = 500


def _history_row(user_id, event_id, type, occurred, recorded, partition, offset, payload) -> HistoryRow:
    return HistoryRow(user_id, event_id, type, from_micros(occurred), from_micros(recorded), partition, offset,
                      msgspec.json.decode(payload))


def _chunks(items: list, size: int = _CHUNK):
    for start in range(0, len(items), size):
        yield items[start : start + size]


# Rows per INSERT OR IGNORE: a statement of 64 rows costs less CPU than `executemany`'s step, reset and
# GIL hand-off per row (the history's: 5-8% of the apply). Not for the reviews' REPLACE: measured slower.
_ROWS_PER_INSERT = 64


@functools.cache
def _insert_or_ignore_sql(table: str, width: int, rows: int) -> str:
    one = "(" + ",".join("?" * width) + ")"
    return f"INSERT OR IGNORE INTO {table} VALUES {','.join([one] * rows)}"


def _insert_or_ignore(db: sqlite3.Connection, table: str, rows: list[tuple]) -> None:
    """Insert the rows whose key `table` does not hold yet (of two with one key, the first)."""
    for chunk in _chunks(rows, _ROWS_PER_INSERT):
        db.execute(_insert_or_ignore_sql(table, len(chunk[0]), len(chunk)), list(chain.from_iterable(chunk)))


_genres = msgspec.json.Decoder(list[str]).decode  # faster than json.loads: a search reads thousands


def _forget(db: sqlite3.Connection, subjects: list[str]) -> None:
    """Delete every row of the users these subjects name, and the subjects' rows."""
    for chunk in _chunks(subjects):
        marks = ",".join("?" * len(chunk))
        users = [(user,) for (user,) in db.execute(f"SELECT user_id FROM subjects WHERE subject IN ({marks})", chunk)]
        for table in ("reviews", "history", "accounts", "subjects"):
            db.executemany(f"DELETE FROM {table} WHERE user_id = ?", users)
        db.executemany("DELETE FROM reviewers WHERE folded = ? AND user_id = ?", [(u.casefold(), u) for (u,) in users])


def _entry(movie_id, title, year, genres, image_url) -> CatalogueEntry:
    return CatalogueEntry(movie_id, title, year, _genres(genres), image_url)


def _execute_each(db: sqlite3.Connection, script: str) -> None:
    """Run a script's statements one by one: `executescript` would commit the transaction they are in."""
    for statement in filter(str.strip, script.split(";")):
        db.execute(statement)


def _index_reviewers(db: sqlite3.Connection, users: set[str]) -> None:
    _insert_or_ignore(db, "reviewers", [(user.casefold(), user) for user in users])


def _index_titles(db: sqlite3.Connection, entries: list[CatalogueEntry]) -> None:
    """Make these entries findable by the words of their current titles, and their genres listed."""
    db.executemany("DELETE FROM title_words WHERE movie_id = ?", [(e.movie_id,) for e in entries])
    _insert_or_ignore(db, "title_words", [(word, e.movie_id) for e in entries for word in set(folded_words(e.title))])
    _insert_or_ignore(db, "genres", [(g,) for e in entries for g in e.genres])


class SQLiteStore:
    def __init__(self, path: str | Path, scratch: bool = False):
        """`scratch`: a throw-away store (rebuilds, verification) that skips journaling and syncing
        and removes its file when closed."""
        self.path = Path(path)
        self._scratch = scratch
        if scratch:
            _open_scratch.add(str(self.path))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Shared by the API's threads; the lock keeps one statement sequence at a time.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.Lock()
        # The API's only writes (attempts) may wait for the projector's commit: on a connection of
        # their own, so reads meanwhile do not wait behind them.
        self._attempts_db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._attempts_lock = threading.Lock()
        self._attempts_db.execute("PRAGMA synchronous=NORMAL")  # a power loss may forget the last attempts
        for db in (self._db, self._attempts_db):  # a forgotten user's deleted rows are overwritten, not left
            db.execute("PRAGMA secure_delete=ON")
        # Pages of 32 KiB, not SQLite's 4 KiB: a batch's commit touches fewer of them (a quarter less
        # CPU to apply 200k events; a page of a user's reviews reads as fast). Set as the file is made.
        self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        if scratch:
            self._db.execute("PRAGMA journal_mode=OFF")
            self._db.execute("PRAGMA synchronous=OFF")
        else:
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL loses at most the last commits on power loss, never on a process crash; the
            # checkpoint is lost with them, so the projector re-applies them from the log.
            self._db.execute("PRAGMA synchronous=NORMAL")
        # Bigger cache and rarer WAL checkpoints: batches commit often and each checkpoint syncs.
        self._db.execute("PRAGMA cache_size=-131072")
        (page_size,) = self._db.execute("PRAGMA page_size").fetchone()  # an older file's may differ
        self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_BYTES // page_size}")
        self._migrate()

    def _migrate(self) -> None:
        # In one write transaction: processes opening a new file at once (several workers, an API)
        # must not drop the tables another has just made.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            (version,) = self._db.execute("PRAGMA user_version").fetchone()
            indexed = self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'title_words'").fetchone()
            directory = self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'reviewers'").fetchone()
            if version < SCHEMA_VERSION:
                if self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'reviews'").fetchone():
                    log.warning("projection schema changed: dropping the views; the worker projects them "
                                "again from the log", extra={"path": str(self.path), "from": version})
                for table in _PROJECTED_TABLES:
                    self._db.execute(f"DROP TABLE IF EXISTS {table}")
            accounts = {name for _, name, *_ in self._db.execute("PRAGMA table_info(accounts)")}
            if accounts and "skeleton" not in accounts:  # from before skeletons: the worker reads the topic again
                self._db.execute("DROP TABLE accounts")
                self._db.execute("DROP TABLE accounts_checkpoints")
            _execute_each(self._db, SCHEMA + ("" if self._scratch else READ_INDEXES))
            columns = {name for _, name, *_ in self._db.execute("PRAGMA table_info(factors)")}
            if "count" not in columns:  # a registry from before factor rows had counts: keep it
                self._db.execute("ALTER TABLE factors ADD COLUMN count INTEGER NOT NULL DEFAULT 0")
            if not indexed:  # a catalogue projected before title search was the store's: index it once
                _index_titles(self._db, [_entry(*row) for row in self._db.execute(
                    "SELECT movie_id, title, year, genres, image_url FROM movies")])
            if not directory:  # reviews projected before reviewer suggestions: list their users once
                _index_reviewers(self._db, {user for (user,) in self._db.execute("SELECT user_id FROM reviews")})
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    # -- projector side ---------------------------------------------------------------

    def checkpoint(self) -> dict[int, int]:
        with self._lock:
            return dict(self._db.execute(CHECKPOINT))

    def first_applied(self, events: list[tuple[str, str]]) -> dict[str, tuple[int, int]]:
        event_ids = [event_id for _, event_id in events]
        first: dict[str, tuple[int, int]] = {}
        with self._lock:
            for chunk in _chunks(event_ids):
                marks = ",".join("?" * len(chunk))
                first.update((e, (p, o)) for e, p, o in self._db.execute(
                    f'SELECT event_id, partition, "offset" FROM history WHERE event_id IN ({marks})', chunk))
        return first

    def apply(self, changes: Changes) -> bool:
        db = self._db
        with self._lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                stored = dict(db.execute(CHECKPOINT))
                if any(stored.get(p, -1) != changes.since.get(p, -1) for p in changes.checkpoint):
                    db.execute("ROLLBACK")
                    return False
                # Folded on the stored checkpoint, so every change is newer than the row it replaces.
                db.executemany(
                    "INSERT OR REPLACE INTO reviews VALUES (?,?,?,?,?,?,?)",
                    [(user, movie, r.rating, r.summary, r.text, micros(r.reviewed_at), r.event_id)
                     for (user, movie), (_, r) in changes.reviews.items() if r is not None],
                )
                db.executemany(
                    "DELETE FROM reviews WHERE user_id = ? AND movie_id = ?",
                    [key for key, (_, r) in changes.reviews.items() if r is None],
                )
                _index_reviewers(db, {user for (user, _), (_, r) in changes.reviews.items() if r is not None})
                entries = [c for _, c in changes.catalogue.values()]
                db.executemany(
                    "INSERT OR REPLACE INTO movies VALUES (?,?,?,?,?)",
                    [(c.movie_id, c.title, c.year, json.dumps(c.genres), c.image_url) for c in entries],
                )
                _index_titles(db, entries)
                _insert_or_ignore(
                    db, "history",
                    [
                        (h.event_id, h.user_id, h.type, micros(h.occurred_at), micros(h.recorded_at),
                         h.partition, h.offset, msgspec.json.encode(h.payload).decode(), h.payload["movie_id"])
                        for h in changes.history
                    ],
                )
                _insert_or_ignore(db, "subjects", list(changes.subjects.items()))
                _forget(db, changes.forgotten)
                db.executemany(
                    "INSERT OR REPLACE INTO checkpoints VALUES (?, ?)",
                    [(p, max(o, stored.get(p, -1))) for p, o in changes.checkpoint.items()],
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            if changes.forgotten and not self._scratch:
                scrub(db)
        return True

    def record_lag(self, lags: list[PartitionLag]) -> None:
        now = micros(datetime.now(timezone.utc))
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO lag VALUES (?,?,?,?,?)",
                [(lag.partition, lag.checkpoint, lag.high_watermark, now, lag.refused) for lag in lags],
            )

    # -- read side ----------------------------------------------------------------------

    def user_reviews(self, user_id: str, limit: int, after: tuple[datetime, str] | None) -> list[ReviewRow]:
        return self._reviews_page("user_id", "movie_id", user_id, limit, after)

    def movie_reviews(self, movie_id: str, limit: int, after: tuple[datetime, str] | None) -> list[ReviewRow]:
        return self._reviews_page("movie_id", "user_id", movie_id, limit, after)

    def _reviews_page(self, key: str, other: str, value: str, limit: int,
                      after: tuple[datetime, str] | None) -> list[ReviewRow]:
        """The current reviews whose `key` column is `value`, newest first by (reviewed_at, `other`)."""
        query = f"SELECT user_id, movie_id, rating, summary, text, reviewed_at, event_id FROM reviews WHERE {key} = ?"
        params: list = [value]
        if after is not None:
            query += f" AND (reviewed_at, {other}) < (?, ?)"
            params += [micros(after[0]), after[1]]
        query += f" ORDER BY reviewed_at DESC, {other} DESC LIMIT ?"
        params.append(limit)
        with self._lock:
            rows = self._db.execute(query, params).fetchall()
        return [ReviewRow(m, r, s, t, from_micros(at), e, user_id=u) for u, m, r, s, t, at, e in rows]

    def reviewers(self, prefix: str, limit: int) -> list[str]:
        folded = prefix.casefold()
        if not folded:
            return []
        with self._lock:
            return [user for (user,) in self._db.execute(
                "SELECT user_id FROM reviewers WHERE folded >= ? AND folded < ? AND EXISTS "
                "(SELECT 1 FROM reviews WHERE reviews.user_id = reviewers.user_id) ORDER BY folded, user_id LIMIT ?",
                (folded, folded + LAST_CHAR, limit))]

    def user_ratings(self, user_id: str) -> dict[str, float]:
        with self._lock:
            return dict(self._db.execute("SELECT movie_id, rating FROM reviews WHERE user_id = ?", (user_id,)))

    def catalogue(self) -> list[CatalogueEntry]:
        with self._lock:
            rows = self._db.execute("SELECT movie_id, title, year, genres, image_url FROM movies").fetchall()
        return [_entry(*row) for row in rows]

    def catalogue_entries(self, movie_ids: list[str]) -> list[CatalogueEntry]:
        rows = []
        with self._lock:
            for chunk in _chunks(movie_ids):
                rows += self._db.execute("SELECT movie_id, title, year, genres, image_url FROM movies "
                                         f"WHERE movie_id IN ({','.join('?' * len(chunk))})", chunk).fetchall()
        return [_entry(*row) for row in rows]

    def titled(self, words: list[str], whole: bool) -> list[CatalogueEntry]:
        each = "SELECT movie_id FROM title_words WHERE " + ("word = ?" if whole else "word >= ? AND word < ?")
        params = [p for word in words for p in ((word,) if whole else (word, word + LAST_CHAR))]
        with self._lock:
            rows = self._db.execute("SELECT movie_id, title, year, genres, image_url FROM movies WHERE movie_id IN "
                                    f"({' INTERSECT '.join([each] * len(words))})", params).fetchall()
        return [_entry(*row) for row in rows]

    def genres(self) -> list[str]:
        with self._lock:
            return [genre for (genre,) in self._db.execute("SELECT genre FROM genres ORDER BY genre")]

    def movie(self, movie_id: str) -> Movie | None:
        with self._lock:
            entry = self._db.execute(
                "SELECT title, year, genres FROM movies WHERE movie_id = ?", (movie_id,)).fetchone()
            ratings = [RatingCount(*row) for row in self._db.execute(
                "SELECT rating, count(*) FROM reviews WHERE movie_id = ? GROUP BY rating ORDER BY rating", (movie_id,))]
        if entry is None and not ratings:
            return None
        title, year, genres = entry or (None, None, "[]")
        count = sum(r.count for r in ratings)
        mean = sum(r.rating * r.count for r in ratings) / count if count else None
        return Movie(movie_id, title, year, json.loads(genres), count, mean, ratings)

    def user_history(
        self, user_id: str, limit: int, before: tuple[int, int] | None, as_of: datetime | None,
        clock: Clock = "recorded",
    ) -> list[HistoryRow]:
        query = (
            'SELECT user_id, event_id, type, occurred_at, recorded_at, partition, "offset", payload '
            "FROM history WHERE user_id = ?"
        )
        params: list = [user_id]
        if before is not None:
            query += ' AND (partition, "offset") < (?, ?)'
            params += list(before)
        if as_of is not None:
            query += f" AND {CLOCK_COLUMNS[clock]} <= ?"
            params.append(micros(as_of))
        query += ' ORDER BY partition DESC, "offset" DESC'
        if limit:
            query += " LIMIT ?"
            params.append(limit)
        with self._lock:
            rows = self._db.execute(query, params).fetchall()
        return [_history_row(*row) for row in rows]

    def review_events_before(self, user_id: str, movie_ids: list[str], before: tuple[int, int],
                             as_of: datetime | None, clock: Clock = "recorded") -> dict[str, str]:
        query = ('SELECT type FROM history WHERE user_id = ? AND movie_id = ? AND (partition, "offset") < (?, ?)'
                 + (f" AND {CLOCK_COLUMNS[clock]} <= ?" if as_of is not None else "")
                 + ' ORDER BY partition DESC, "offset" DESC LIMIT 1')
        found = {}
        with self._lock:
            for movie_id in movie_ids:
                params = (user_id, movie_id, *before) + ((micros(as_of),) if as_of is not None else ())
                if (row := self._db.execute(query, params).fetchone()) is not None:
                    found[movie_id] = row[0]
        return found

    def user_event(self, user_id: str, event_id: str) -> HistoryRow | None:
        with self._lock:
            row = self._db.execute(
                'SELECT user_id, event_id, type, occurred_at, recorded_at, partition, "offset", payload '
                "FROM history WHERE event_id = ? AND user_id = ?", (event_id, user_id)).fetchone()
        return _history_row(*row) if row else None

    def lag(self) -> list[PartitionLag]:
        with self._lock:
            rows = self._db.execute(
                "SELECT partition, checkpoint, high_watermark, refused FROM lag ORDER BY partition"
            ).fetchall()
        return [PartitionLag.of(p, c, h, r) for p, c, h, r in rows]

    def lag_reported_at(self) -> datetime | None:
        with self._lock:
            (newest,) = self._db.execute("SELECT max(updated_at) FROM lag").fetchone()
        return None if newest is None else from_micros(newest)

    # -- accounts -----------------------------------------------------------------------

    def put_accounts(self, openings: list[AccountRow], checkpoint: dict[int, int]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    'INSERT INTO accounts VALUES (?,?,?,?,?,?) ON CONFLICT (user_id) DO UPDATE SET '
                    'event_id = excluded.event_id, password_hash = excluded.password_hash, '
                    'partition = excluded.partition, "offset" = excluded."offset" '
                    'WHERE (excluded.partition, excluded."offset") < (accounts.partition, accounts."offset")',
                    [(a.user_id, a.event_id, a.password_hash, a.partition, a.offset, a.skeleton) for a in openings])
                _insert_or_ignore(self._db, "subjects",
                                  [(a.subject, a.user_id) for a in openings if a.subject is not None])
                self._db.executemany(
                    'INSERT INTO accounts_checkpoints VALUES (?, ?) ON CONFLICT (partition) DO UPDATE SET '
                    '"offset" = max("offset", excluded."offset")', list(checkpoint.items()))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def account(self, user_id: str) -> AccountRow | None:
        with self._lock:
            row = self._db.execute('SELECT user_id, event_id, password_hash, partition, "offset", skeleton '
                                   "FROM accounts WHERE user_id = ?", (user_id,)).fetchone()
        return None if row is None else AccountRow(*row)

    def accounts_with_skeleton(self, skeleton: str) -> list[str]:
        with self._lock:
            return [user_id for (user_id,) in self._db.execute(
                "SELECT user_id FROM accounts WHERE skeleton = ?", (skeleton,))]

    def accounts_checkpoint(self) -> dict[int, int]:
        with self._lock:
            return dict(self._db.execute('SELECT partition, "offset" FROM accounts_checkpoints'))

    # -- attempts -----------------------------------------------------------------------

    def attempts(self, keys: list[str], at: float) -> list[Tally]:
        with self._attempts_lock:
            return self._tallies(keys, at)

    def add_attempt(self, keys: list[str], attempt: str, at: float, window: float) -> list[Tally]:
        db = self._attempts_db
        with self._attempts_lock:
            db.execute("BEGIN IMMEDIATE")  # one writer at a time, in every process: counts are exact
            try:
                db.execute("DELETE FROM attempts WHERE expires <= ?", (at,))
                db.executemany("INSERT OR REPLACE INTO attempts VALUES (?,?,?,?)",
                               [(key, attempt, at, at + window) for key in keys])
                tallies = self._tallies(keys, at)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return tallies

    def _tallies(self, keys: list[str], at: float) -> list[Tally]:
        query = "SELECT count(*), min(at) FROM attempts WHERE key = ? AND expires > ?"
        return [Tally(*self._attempts_db.execute(query, (key, at)).fetchone()) for key in keys]

    def drop_attempt(self, keys: list[str], attempt: str) -> None:
        with self._attempts_lock:
            self._attempts_db.executemany("DELETE FROM attempts WHERE key = ? AND attempt = ?",
                                          [(key, attempt) for key in keys])

    def clear_attempts(self, key: str) -> None:
        with self._attempts_lock:
            self._attempts_db.execute("DELETE FROM attempts WHERE key = ?", (key,))

    # -- model side ---------------------------------------------------------------------

    def put_factors(self, version: str, kind: str, rows: list[FactorRow]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO factors VALUES (?,?,?,?,?,?)",
                                     [(version, kind, row.id, row.bias, row.vector, row.count) for row in rows])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def publish_model(self, info: ModelInfo) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("UPDATE models SET current = 0 WHERE current = 1")
                self._db.execute("INSERT INTO models VALUES (?, ?, 1)",
                                 (info.version, msgspec.json.encode(info).decode()))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def model(self, version: str | None = None) -> ModelInfo | None:
        with self._lock:
            if version is None:
                row = self._db.execute("SELECT info FROM models WHERE current = 1").fetchone()
            else:
                row = self._db.execute("SELECT info FROM models WHERE version = ?", (version,)).fetchone()
        return None if row is None else msgspec.json.decode(row[0], type=ModelInfo)

    def factors(self, version: str, kind: str, ids: list[str] | None = None) -> list[FactorRow]:
        query = "SELECT id, bias, vector, count FROM factors WHERE version = ? AND kind = ?"
        with self._lock:
            if ids is None:
                rows = self._db.execute(query + " ORDER BY id", (version, kind)).fetchall()
            else:
                rows = []
                for chunk in _chunks(ids):
                    marks = ",".join("?" * len(chunk))
                    rows += self._db.execute(f"{query} AND id IN ({marks})", (version, kind, *chunk)).fetchall()
        return [FactorRow(*row) for row in rows]

    def models(self) -> list[ModelInfo]:
        with self._lock:
            rows = self._db.execute("SELECT info FROM models ORDER BY version DESC").fetchall()
        return [msgspec.json.decode(info, type=ModelInfo) for (info,) in rows]

    def drop_model(self, version: str) -> bool:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # the check and both deletes at once
            try:
                current = self._db.execute("SELECT 1 FROM models WHERE version = ? AND current = 1",
                                           (version,)).fetchone() is not None
                if not current:
                    self._db.execute("DELETE FROM models WHERE version = ?", (version,))
                    self._db.execute("DELETE FROM factors WHERE version = ?", (version,))
                self._db.execute("COMMIT")
                return not current
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def forget_factors(self, user_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM factors WHERE version IN (SELECT version FROM models) "
                             "AND kind = 'user' AND id = ?", (user_id,))
        with self._attempts_lock:  # rewritten over the other connection: this process's reads go on meanwhile
            scrub(self._attempts_db)

    def contents(self) -> dict[str, list[tuple]]:
        """Every view's rows and the checkpoints in a stable order, from one snapshot."""
        with self._lock:
            self._db.execute("BEGIN")  # one read transaction: views and checkpoint agree
            try:
                return {view: self._db.execute(query).fetchall() for view, query in VIEWS.items()}
            finally:
                self._db.execute("COMMIT")

    def index_for_reads(self) -> None:
        """Build the read side's indexes (a scratch store is folded without them): sorted once, after
        the rows, and then the swap copies tables and indexes page by page, as they are."""
        with self._lock:
            _execute_each(self._db, READ_INDEXES)

    def swap_in(self, fresh: "SQLiteStore", views: list[str]) -> None:
        """Copy `views` and the checkpoint over from `fresh` in one transaction; readers keep their
        snapshot and see the old views until the commit."""
        fresh.index_for_reads()
        with self._lock:
            self._db.execute("ATTACH DATABASE ? AS fresh", (str(fresh.path),))  # not allowed inside a transaction
            try:
                # The write lock of the live database only: BEGIN IMMEDIATE would also lock the
                # attached fresh one.
                self._db.execute("BEGIN")
                try:
                    for table in [*(t for view in views for t in VIEW_TABLES[view]), "checkpoints"]:
                        self._db.execute(f"DELETE FROM main.{table}")
                        self._db.execute(f"INSERT INTO main.{table} SELECT * FROM fresh.{table}")
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            finally:
                self._db.execute("DETACH DATABASE fresh")

    def take_lease(self, holder: str, seconds: float) -> tuple[str, datetime] | None:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT holder, expires_at FROM leases WHERE name = 'maintenance'").fetchone()
                if row is not None and row[0] != holder and row[1] > now:
                    return row[0], datetime.fromtimestamp(row[1], timezone.utc)
                self._db.execute("INSERT OR REPLACE INTO leases VALUES ('maintenance', ?, ?)", (holder, now + seconds))
                return None
            finally:
                self._db.execute("COMMIT")

    def release_lease(self, holder: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM leases WHERE name = 'maintenance' AND holder = ?", (holder,))

    def ping(self) -> None:
        with self._lock:
            self._db.execute("SELECT 1").fetchone()

    def scratch(self, name: str) -> "SQLiteStore":
        prefix = f"{self.path.name}.{name}-"
        for leftover in self.path.parent.glob(f"{prefix}*"):
            if not leftover.name.endswith(("-wal", "-shm")) and str(leftover) not in _open_scratch:
                SQLiteStore._remove(leftover)
        return SQLiteStore(self.path.parent / f"{prefix}{uuid.uuid4().hex[:12]}", scratch=True)

    def close(self) -> None:
        with self._lock, self._attempts_lock:
            self._db.close()
            self._attempts_db.close()
        if self._scratch:
            _open_scratch.discard(str(self.path))
            self._remove(self.path)

    @staticmethod
    def _remove(path: Path) -> None:
        for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            file.unlink(missing_ok=True)


_open_scratch: set[str] = set()  # scratch stores this process has open: not leftovers
