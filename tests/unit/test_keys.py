"""The SQLite key store against the key-store contract (tests/keystore_contract.py), and the promise
crypto-shredding rests on: a deleted key is gone from the bytes on disk."""

from __future__ import annotations

import random

import pytest

from keys.sqlite_keys import SQLiteKeys
from tests.keystore_contract import KeyStoreContract, row


class TestSQLiteKeys(KeyStoreContract):
    @pytest.fixture
    def records(self, tmp_path):
        self.handles = [SQLiteKeys(tmp_path / "keys.db")]
        yield self.handles[0]
        for handle in self.handles:
            handle.close()

    @pytest.fixture
    def another(self, tmp_path):
        another = SQLiteKeys(tmp_path / "another" / "keys.db")
        yield another
        another.close()

    def other_handle(self, records):
        [(_, _, path)] = records._db.execute("PRAGMA database_list").fetchall()
        self.handles.append(SQLiteKeys(path))
        return self.handles[-1]


def test_the_file_is_its_owners_only(tmp_path):
    SQLiteKeys(tmp_path / "keys.db").close()
    assert (tmp_path / "keys.db").stat().st_mode & 0o777 == 0o600


def test_deleted_keys_and_user_ids_are_nowhere_in_the_files(tmp_path):
    """secure_delete zeroes a deleted row where it lies, but a page split or merge can leave copies of
    rows in a page's unused space: users claimed in random order, many of them then deleted (pages
    merge), must be in no byte of the file or its WAL (on SQLite 3.40 some were, before VACUUM)."""
    records = SQLiteKeys(tmp_path / "keys.db")
    rng = random.Random(1)
    claimed = [row(f"user-{rng.randrange(10**9):09d}", f"{rng.getrandbits(128):032x}") for _ in range(1500)]
    for start in range(0, len(claimed), 7):
        records.claim(claimed[start:start + 7])
    doomed = rng.sample(claimed, 600)
    for gone in doomed:
        assert records.delete(gone.user_id) == gone
    files = {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.name.startswith("keys.db")}
    assert "keys.db" in files
    left = [(name, gone.user_id) for name, data in files.items() for gone in doomed
            for secret in (gone.user_id.encode(), gone.subject.encode(), gone.wrapped) if secret in data]
    assert left == []
    kept = next(r for r in claimed if r not in doomed)
    assert kept.wrapped in files["keys.db"]  # the others are still there
    records.close()
