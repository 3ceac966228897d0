"""Fixtures of the unit tests: the API over an in-memory log and a real SQLite store."""

from __future__ import annotations

import numpy as np
import pytest
from starlette.testclient import TestClient

from api.app import create_app
from commands.handlers import ReviewCommands
from projections.sqlite_store import SQLiteStore
from tests.unit.fakes import MemoryLog, memory_auth, memory_forgetting


@pytest.fixture
def world(tmp_path):
    """A test client of the app, the log behind its commands and the store behind its queries."""
    log = MemoryLog()
    store = SQLiteStore(tmp_path / "p.db")
    with TestClient(create_app(store, log, ReviewCommands(log), memory_auth(log, store),
                                   memory_forgetting(log, store, tmp_path / "keys.db"))) as client:
        yield client, log, store
    store.close()


@pytest.fixture
def small_defaults(monkeypatch):
    """--no-tune fits the settings' parameters, and the taste model its defaults; make both cheap
    here (this checks the commands, not the model)."""
    from dataclasses import replace

    from harmony import bootstrap

    monkeypatch.setenv("HARMONY_ALS_RANK", "4")
    monkeypatch.setenv("HARMONY_ALS_MAX_ITER", "5")
    params = bootstrap.training_params
    monkeypatch.setattr(bootstrap, "training_params",
                        lambda settings: replace(params(settings), taste_rank=4, taste_max_iter=3))


@pytest.fixture
def movielens(tmp_path):
    """u1..u5 .base/.test: tab-separated user item rating ts, from a small low-rank matrix."""
    rng = np.random.default_rng(11)
    p, q = rng.normal(0, 0.7, (40, 2)), rng.normal(0, 0.7, (30, 2))
    rows = [(u, i, int(np.clip(round(3.4 + p[u] @ q[i] + rng.normal(0, 0.3)), 1, 5)), 880000000 + u * 100 + i)
            for u in range(40) for i in range(30) if rng.random() < 0.5]
    fold_of = rng.integers(0, 5, len(rows))
    for n in range(5):
        with open(tmp_path / f"u{n + 1}.base", "w") as base, open(tmp_path / f"u{n + 1}.test", "w") as test:
            for row, fold in zip(rows, fold_of):
                (test if fold == n else base).write("\t".join(str(x + 1 if k < 2 else x)
                                                              for k, x in enumerate(row)) + "\n")
    return tmp_path, len(rows)
