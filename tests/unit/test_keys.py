"""The SQLite key store against the key-store contract (tests/keystore_contract.py), and the promise
crypto-shredding rests on: a deleted key is gone from the bytes on disk."""

from __future__ import annotations

import os

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


def test_a_deleted_key_and_user_id_are_nowhere_in_the_files(tmp_path):
    records = SQLiteKeys(tmp_path / "keys.db")
    doomed = row("doomed-user-7f3a9c")
    records.claim([row(f"before{i}") for i in range(50)])
    records.claim([doomed])
    records.claim([row(f"after{i}") for i in range(50)])
    assert records.delete(doomed.user_id) == doomed
    files = [path for path in tmp_path.iterdir() if path.name.startswith("keys.db")]
    assert {path.name for path in files} >= {"keys.db", "keys.db-wal"}
    for path in files:
        data = path.read_bytes()
        assert doomed.user_id.encode() not in data and doomed.wrapped not in data, path.name
        assert b"before1" in data or path.name != "keys.db"  # the others are still there
    records.close()
