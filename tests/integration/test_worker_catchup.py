"""The worker reads a large backlog straight from the log, then moves Faust past it: the consumer
group's committed offsets must follow to the log end (no commit stall), and memory must not grow
with the number of events."""

from __future__ import annotations

import pytest

from projections.sqlite_store import SQLiteStore
from tests.conftest import wait_until
from tests.integration.helpers import applied, committed_offsets, log_end, produce_events, review_stream, rss_mib

pytestmark = pytest.mark.integration

CATCH_UP_LAG = 1_000
ROUND = 16_000  # 4,000 a partition: far beyond the catch-up threshold


@pytest.fixture
def env(env, monkeypatch):
    monkeypatch.setenv("HARMONY_CATCH_UP_LAG", str(CATCH_UP_LAG))
    return {**env, "HARMONY_CATCH_UP_LAG": str(CATCH_UP_LAG)}


def test_group_offsets_reach_the_log_end_after_catch_ups(settings, start_worker):
    worker = start_worker()
    store = SQLiteStore(settings.store_url.removeprefix("sqlite:///"))
    group = f"harmony-projector.{settings.topic}"
    # Later rounds re-send the first round's events (new offsets, event ids already applied), so the
    # store stays the same size and the worker's memory shows only what it keeps per record read.
    events = review_stream(ROUND, seed=11)
    memory = []
    for n in range(4):
        produce_events(settings.kafka_bootstrap, settings.topic, events)
        end = log_end(settings.kafka_bootstrap, settings.topic)
        wait_until(lambda: applied(store) == sum(end.values()), 120, f"round {n} projected: {worker.log()[-1500:]}")
        wait_until(lambda: committed_offsets(settings.kafka_bootstrap, group, settings.topic) == end, 30,
                   f"round {n}: the group's committed offsets reach the log end {end}", interval=0.5)
        memory.append(rss_mib(worker.process.pid))
    catch_ups = worker.log().count("reading the backlog straight from the log")
    assert catch_ups >= 4, "the direct read from the log was not exercised"
    # 48,000 records read after the first round: holding on to them (or to Faust's acks of them)
    # would cost far more than SQLite's page cache and the allocator's noise.
    assert memory[-1] - memory[1] < 20, f"worker RSS grew with the records read: {memory} MiB"
