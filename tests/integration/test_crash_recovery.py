"""SIGKILL the projector mid-stream: nothing lost, nothing applied twice."""

from __future__ import annotations

import threading
import time

import pytest

from projections.sqlite_store import SQLiteStore
from tests.conftest import BOTH_STORES, wait_until
from tests.integration.helpers import applied, assert_store_equals_log, produce_events, review_stream

pytestmark = pytest.mark.integration

TOTAL = 20_000


@BOTH_STORES
def test_sigkill_mid_stream_then_restart_equals_fold_of_log(settings, services, live_store):
    events = review_stream(TOTAL, seed=42, catalogue=0.05)
    store = live_store
    # The first half is already in the log; the rest keeps arriving while the worker is killed.
    produce_events(settings.kafka_bootstrap, settings.topic, events[: TOTAL // 2])
    worker = services("worker")
    wait_until(lambda: applied(store) > 2_000, 90, f"worker made no progress: {worker.log()[-2000:]}", 0.02)
    late = threading.Thread(
        target=produce_events, args=(settings.kafka_bootstrap, settings.topic, events[TOTAL // 2 :])
    )
    late.start()
    worker.kill()
    at_kill = applied(store)
    assert at_kill < TOTAL, "the worker finished before it could be killed: make the stream longer"
    late.join()

    services("worker")
    wait_until(lambda: applied(store) == TOTAL, 180, "restarted worker caught up to the log end", 0.2)

    expected = assert_store_equals_log(settings.kafka_bootstrap, settings.topic, store)
    # The mix holds retractions and re-sent duplicates: the reviews view is not trivially the log.
    assert 0 < len(expected.reviews) < TOTAL and expected.movies


def test_fresh_store_behind_the_group_offsets_is_filled_from_the_log(settings, env, services, tmp_path):
    """Faust resumes from committed group offsets; a store that lacks those events must not get a gap."""
    from tests.conftest import Service

    events = review_stream(3_000, seed=5)
    produce_events(settings.kafka_bootstrap, settings.topic, events)
    first = SQLiteStore(settings.store_url.removeprefix("sqlite:///"))
    worker = services("worker")
    wait_until(lambda: applied(first) == len(events), 90, "first worker caught up")
    time.sleep(2)  # let Faust commit its group offsets (commit interval 1 s)
    worker.stop()

    fresh_path = tmp_path / "fresh.db"
    second = Service(["worker"], {**env, "HARMONY_STORE": f"sqlite:///{fresh_path}"}, tmp_path / "w2.log").start()
    try:
        fresh = SQLiteStore(fresh_path)
        wait_until(lambda: applied(fresh) == len(events), 90, f"fresh store filled: {second.log()[-1500:]}")
        assert fresh.contents() == first.contents()
    finally:
        second.stop()
