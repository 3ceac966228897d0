"""The key store in its own SQLite file (the embedded default): never the projection store's, which
a rebuild replaces and which holds nothing that cannot be derived from the log."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Iterator

from keys.records import SubjectRow
from projections.sqlite_scrub import scrub

SCHEMA = """
CREATE TABLE IF NOT EXISTS subjects (
    user_id TEXT PRIMARY KEY,
    subject TEXT NOT NULL UNIQUE,
    wrapped BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS forgotten (digest BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
"""
_CHUNK = 500  # ids per IN (...): below SQLite's variable limit


class SQLiteKeys:
    def __init__(self, path: str | Path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)  # keys, even wrapped: readable by their owner only
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        # A deleted key's bytes are overwritten where they lie (and the file rewritten: see delete).
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a key acknowledged is a key kept
        self._db.executescript(SCHEMA)

    def claim(self, rows: list[SubjectRow]) -> dict[str, SubjectRow]:
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT OR IGNORE INTO subjects (user_id, subject, wrapped) VALUES (?, ?, ?)", rows)
        return self.by_user([row.user_id for row in rows])

    def by_user(self, user_ids: list[str]) -> dict[str, SubjectRow]:
        return {row.user_id: row for row in self._select("user_id", user_ids)}

    def by_subject(self, subjects: list[str]) -> dict[str, SubjectRow]:
        return {row.subject: row for row in self._select("subject", subjects)}

    def _select(self, column: str, values: list[str]) -> list[SubjectRow]:
        found = []
        with self._lock:
            for start in range(0, len(values), _CHUNK):
                chunk = values[start:start + _CHUNK]
                found += self._db.execute(
                    f"SELECT user_id, subject, wrapped FROM subjects WHERE {column} IN ({','.join('?' * len(chunk))})",
                    chunk).fetchall()
        return [SubjectRow(*row) for row in found]

    def delete(self, user_id: str) -> SubjectRow | None:
        with self._lock:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                row = self._db.execute("SELECT user_id, subject, wrapped FROM subjects WHERE user_id = ?",
                                       (user_id,)).fetchone()
                self._db.execute("DELETE FROM subjects WHERE user_id = ?", (user_id,))
            scrub(self._db)
        return SubjectRow(*row) if row else None

    def add_forgotten(self, digests: list[bytes]) -> None:
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT OR IGNORE INTO forgotten (digest) VALUES (?)", [(d,) for d in digests])

    def forgotten(self, digests: list[bytes]) -> set[bytes]:
        found = set()
        with self._lock:
            for start in range(0, len(digests), _CHUNK):
                chunk = digests[start:start + _CHUNK]
                found.update(digest for (digest,) in self._db.execute(
                    f"SELECT digest FROM forgotten WHERE digest IN ({','.join('?' * len(chunk))})", chunk))
        return found

    def all_forgotten(self) -> list[bytes]:
        with self._lock:
            return [digest for (digest,) in self._db.execute("SELECT digest FROM forgotten ORDER BY digest")]

    def setting(self, name: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def put_setting(self, name: str, value: bytes, replace: bool = False) -> bytes:
        verb = "OR REPLACE" if replace else "OR IGNORE"
        with self._lock, self._db:
            self._db.execute(f"INSERT {verb} INTO settings (name, value) VALUES (?, ?)", (name, value))
        return self.setting(name)

    def rewrap(self, rows: list[SubjectRow]) -> None:
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("UPDATE subjects SET wrapped = ? WHERE subject = ?",
                                 [(row.wrapped, row.subject) for row in rows])

    def rows(self, batch: int = 10_000) -> Iterator[list[SubjectRow]]:
        after = ""
        while True:
            with self._lock:
                found = self._db.execute("SELECT user_id, subject, wrapped FROM subjects WHERE user_id > ? "
                                         "ORDER BY user_id LIMIT ?", (after, batch)).fetchall()
            if not found:
                return
            yield [SubjectRow(*row) for row in found]
            after = found[-1][0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
