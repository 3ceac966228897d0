"""Restart Kafka and SeaweedFS: events, group offsets and views survive; a POST meanwhile answers 503 quickly."""

from __future__ import annotations

import asyncio
import time

import pytest

from events.reader import read_log
from harmony import stack as launcher
from tests.conftest import wait_until
from tests.integration.helpers import committed_offsets, log_end

pytestmark = pytest.mark.integration


async def count_log(bootstrap: str, topic: str) -> int:
    return sum([len(batch) async for batch in read_log(bootstrap, topic)])


def test_events_and_views_survive_a_full_stack_restart(settings, api, start_worker, stack_dir, bearer):
    carla = bearer("carla")
    start_worker()
    receipts = [
        api.post("/v1/reviews", json={"user_id": "carla", "movie_id": f"m{i}", "rating": 1 + i / 2},
                 headers=carla).json()
        for i in range(8)
    ]
    before = api.get("/v1/users/carla/reviews", params={"after": receipts[-1]["token"]}).json()
    assert len(before["reviews"]) == 8
    group = f"harmony-projector.{settings.topic}"
    end = log_end(settings.kafka_bootstrap, settings.topic)
    wait_until(lambda: committed_offsets(settings.kafka_bootstrap, group, settings.topic) == end, 30,
               "the worker's group committed the log end")

    launcher.down(stack_dir)
    started = time.monotonic()
    late = {"user_id": "carla", "movie_id": "late", "rating": 3}
    refused = api.post("/v1/reviews", json=late, headers={**carla, "Idempotency-Key": "late-1"})
    assert refused.status_code == 503 and time.monotonic() - started < 6
    assert refused.headers["content-type"] == "application/problem+json"
    assert api.get("/readyz").status_code == 503
    # Reads are served from the projection while the broker is down.
    assert api.get("/v1/users/carla/reviews").json() == before

    info = launcher.up(stack_dir, settings.topic, 4)
    assert info["kafka_bootstrap"] == settings.kafka_bootstrap, "a restart keeps the broker's address"
    # A 503 means "may or may not be written": the API's producer may deliver the refused append
    # once the broker is back. Nothing else was lost or added, and the group's offsets survived.
    assert asyncio.run(count_log(settings.kafka_bootstrap, settings.topic)) in (8, 9)
    # An empty answer: the group coordinator is still loading the offsets topic after the restart.
    survived = wait_until(lambda: committed_offsets(settings.kafka_bootstrap, group, settings.topic), 30,
                          "the group coordinator answers again", interval=0.2)
    assert all(survived.get(partition, 0) >= offset for partition, offset in end.items())

    # The API reconnects by itself; the retry with the same key is applied once whatever happened.
    wait_until(lambda: api.get("/readyz").status_code == 200, 60, "API reconnected to the broker")
    retried = api.post("/v1/reviews", json=late, headers={**carla, "Idempotency-Key": "late-1"})
    assert retried.status_code == 202
    after = api.post("/v1/reviews", json={"user_id": "carla", "movie_id": "m-new", "rating": 5}, headers=carla)
    assert after.status_code == 202
    # The worker (killed with the broker gone or not) projects new writes.
    page = api.get("/v1/users/carla/reviews", params={"after": after.json()["token"], "limit": 100})
    if page.status_code == 503:  # the worker may still be rejoining its group after the restart
        page = wait_until(
            lambda: (r := api.get("/v1/users/carla/reviews", params={"after": after.json()["token"]})).status_code
            == 200 and r, 60, "worker resumed after the restart")
    movies = {r["movie_id"] for r in page.json()["reviews"]}
    assert movies == {f"m{i}" for i in range(8)} | {"late", "m-new"}
    history = api.get("/v1/users/carla/history", params={"limit": 100}).json()["events"]
    assert [e["event_id"] for e in history].count(retried.json()["event_id"]) == 1
    assert len(history) == 10
