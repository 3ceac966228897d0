"""Projection workers sharing a 12-partition topic (one consumer group). Three under steady writes:
the partitions spread, no commit is refused while the group is settled, one worker is SIGKILLed,
and the survivors take its partitions over and end equal to a fold of the log. Two on a backlog:
the one joining while the first reads it straight from the log gets its share of it."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from events.topic import ensure_topics, review_topics
from harmony.settings import load
from harmony.supervisor import terminate
from tests.conftest import BOTH_STORES, Service, use_environment, wait_until
from tests.integration.helpers import (
    STEADY_RATE, SteadyWriter, applied, assert_store_equals_log, log_end, produce_events, review_stream, wait_for,
)

pytestmark = pytest.mark.integration

PARTITIONS = 12
BACKLOG = 300_000  # about 11 s of one worker's catch-up on a quiet machine: a rebalance takes about 5


def twelve_partitions(stack_dir, store_url, monkeypatch, env) -> str:
    """A new 12-partition topic (the session's have 4) that `env` and the settings point at."""
    topic = f"test.{uuid.uuid4().hex[:12]}"
    asyncio.run(ensure_topics(load().kafka_bootstrap, review_topics(topic, PARTITIONS)))
    env.update(use_environment(monkeypatch, stack_dir, store_url, HARMONY_TOPIC=topic,
                               HARMONY_PARTITIONS=str(PARTITIONS)))
    return topic


def stop_together(workers: list[Service]) -> None:
    """SIGTERM every worker at once, then wait for each (a Faust worker takes seconds to leave its
    group; the `services` fixture would stop them one after another)."""
    terminate([worker.process for worker in workers], 30)


def lag_reports(service: Service) -> list[set[int]]:
    """The partitions of each "projector lag" line a worker logged (JSON logs), oldest first."""
    reports = []
    for line in service.log().splitlines():
        if '"projector lag"' not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("msg") == "projector lag":
            reports.append({int(p) for p in entry["lag"]})
    return reports


def settled(workers: list[Service], partitions: int) -> list[set[int]] | None:
    """Each worker's partitions if the group is settled: every worker's last two lag reports name
    the same partitions, and these spread every partition over the workers, each to exactly one."""
    owned = []
    for worker in workers:
        reports = lag_reports(worker)
        if len(reports) < 2 or reports[-1] != reports[-2] or not reports[-1]:
            return None
        owned.append(reports[-1])
    every = [p for mine in owned for p in mine]
    return owned if sorted(every) == list(range(partitions)) else None


@BOTH_STORES
def test_three_workers_share_the_topic_and_survive_a_sigkill(stack_dir, store_url, env, monkeypatch, services,
                                                              live_store):
    topic = twelve_partitions(stack_dir, store_url, monkeypatch, env)
    settings = load()
    store = live_store

    with SteadyWriter(settings.kafka_bootstrap, topic) as writer:
        workers = [services("worker") for _ in range(3)]
        owned = wait_for(lambda: settled(workers, PARTITIONS), 90,
                         "the three workers never settled on disjoint partitions", workers)
        # Settled: each partition reported by one worker; the store has every partition's lag.
        wait_until(lambda: {lag.partition for lag in store.lag()} == set(range(PARTITIONS)), 10,
                   "the store has not every partition's lag")
        refused_at_settle = {lag.partition: lag.refused for lag in store.lag()}
        # Stay settled for two more lag reports under the writes: still no refusal, same owners.
        time.sleep(4.5)
        assert settled(workers, PARTITIONS) == owned, "a rebalance happened without a member leaving"
        refused_settled = {lag.partition: lag.refused for lag in store.lag()}
        assert all(owned), owned
        assert refused_at_settle == refused_settled == dict.fromkeys(range(PARTITIONS), 0), (
            f"commits refused while no rebalance happened: at settle {refused_at_settle}, "
            f"4.5 s later {refused_settled}")
        assert applied(store) > 0

        victim, *survivors = workers
        victim.kill()
        # Keep writing until the two survivors took the victim's partitions over between them.
        wait_for(lambda: settled(survivors, PARTITIONS), 60,
                 "the survivors never took the killed worker's partitions over", survivors)
        written = writer.stop()

    assert written >= STEADY_RATE * 8, f"only {written} events written: not a steady stream"
    end = log_end(settings.kafka_bootstrap, topic)
    assert sum(end.values()) == written and len(end) == PARTITIONS
    wait_for(lambda: applied(store) == written, 120,
             f"the store reached the log end ({written} records)", survivors, 0.2)
    assert store.checkpoint() == {p: offset - 1 for p, offset in end.items()}
    refused_after = {lag.partition: lag.refused for lag in store.lag()}
    stop_together(survivors)
    print(f"\nowners while settled: {owned}; written {written}; refused after the kill: {refused_after}")
    expected = assert_store_equals_log(settings.kafka_bootstrap, settings.topic, store)
    assert 0 < len(expected.reviews) < written and expected.movies and expected.history


def test_a_worker_joining_while_the_first_reads_a_backlog_gets_its_share(stack_dir, store_url, env, monkeypatch,
                                                                          services, live_store):
    """The first member of a group takes every partition and reads a backlog straight from the log. A
    rebalance waits for a member's agent, so a second worker used to get its partitions only once the
    whole backlog was applied (two workers caught up no faster than one): the read stops for it now."""
    topic = twelve_partitions(stack_dir, store_url, monkeypatch, env)
    settings = load()
    produce_events(settings.kafka_bootstrap, topic, review_stream(BACKLOG, seed=141))
    first = services("worker")
    wait_for(lambda: "reading the backlog straight from the log" in first.log(), 60,
             "the first worker never read the backlog straight from the log", [first])
    second = services("worker")
    wait_for(lambda: applied(live_store) == BACKLOG, 180, "the workers applied the backlog", [first, second], 0.2)
    stop_together([first, second])
    # Before, its partitions came with nothing left to read.
    assert "reading the backlog straight from the log" in second.log(), (
        f"the second worker read none of the backlog: {second.log()[-3000:]}")
    assert_store_equals_log(settings.kafka_bootstrap, topic, live_store)
