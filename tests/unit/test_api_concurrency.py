"""A slow projection-store read must not stall the event loop: /healthz answers while it is in flight."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from api.app import create_app
from commands.handlers import ReviewCommands
from commands.types import SubmitReview
from projections.sqlite_store import SQLiteStore
from tests.unit.fakes import MemoryLog, memory_auth, memory_forgetting
from tests.unit.test_api import project
from tests.unit.test_match import publish

SLOW = 1.5  # seconds the slow read blocks its thread at most (until released)


class SlowStore:
    """The real store, except that `method` blocks its caller's thread (a synchronous wait, like a
    slow query) until the test releases it, or for SLOW seconds."""

    def __init__(self, store: SQLiteStore, method: str):
        self._store, self._method = store, method
        self.entered, self.release = threading.Event(), threading.Event()
        self.left_at = float("inf")

    def __getattr__(self, name):
        found = getattr(self._store, name)
        if name != self._method:
            return found

        def slow(*args, **kwargs):
            self.entered.set()
            self.release.wait(SLOW)
            self.left_at = min(self.left_at, time.monotonic())
            return found(*args, **kwargs)

        return slow


@pytest.fixture
def seeded(tmp_path):
    """A store with one projected review of ana's and a published model; the log; ana's write token."""
    log, store = MemoryLog(), SQLiteStore(tmp_path / "p.db")
    receipt = asyncio.run(ReviewCommands(log).submit(SubmitReview("ana", "m3", 4.0)))
    project(log, store)
    publish(store)
    yield store, log, receipt.token
    store.close()


@pytest.mark.parametrize("path, method", [
    ("/v1/movies/m3", "movie"),
    ("/v1/users/ana/reviews", "user_reviews"),
    ("/v1/users/ana/reviews?after={token}", "checkpoint"),
    ("/v1/users/ana/history", "user_history"),
    ("/v1/projections/lag", "lag"),
    ("/v1/models/current", "model"),
    ("/v1/match?users=ana,ben", "factors"),
    ("/v1/match?users=ana,ben", "user_ratings"),
    ("/readyz", "ping"),
])
def test_healthz_answers_while_a_slow_store_read_is_in_flight(seeded, path, method):
    store, log, token = seeded
    slow_store = SlowStore(store, method)
    app = create_app(slow_store, log, ReviewCommands(log), memory_auth(log, slow_store),
                     memory_forgetting(log, slow_store, store.path.with_name("keys.db")))

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
            slow = asyncio.create_task(client.get(path.format(token=token)))
            while not slow_store.entered.is_set() and not slow.done():
                await asyncio.sleep(0.001)
            asked = time.monotonic()
            health = await client.get("/healthz")
            answered = time.monotonic()
            slow_store.release.set()
            return health, answered - asked, answered, await slow

    health, took, answered, response = asyncio.run(scenario())
    assert slow_store.entered.is_set(), f"{path} never called {method}()"
    assert health.status_code == 200
    assert answered < slow_store.left_at, f"/healthz waited for the slow {method}() of {path}: it ran on the loop"
    assert took < 0.3
    assert response.status_code == 200, response.text
