"""Fixtures of the unit tests: the API over an in-memory log and a real SQLite store."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from commands.handlers import ReviewCommands
from projections.sqlite_store import SQLiteStore
from tests.unit.fakes import MemoryLog


@pytest.fixture
def world(tmp_path):
    """A test client of the app, the log behind its commands and the store behind its queries."""
    log = MemoryLog()
    store = SQLiteStore(tmp_path / "p.db")
    with TestClient(create_app(store, log, ReviewCommands(log))) as client:
        yield client, log, store
    store.close()
