"""A malformed record in the log goes to the dead-letter topic; the projector keeps going."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from events.codec import encode
from events.topic import deadletter_topic
from projections.sqlite_store import SQLiteStore
from tests.conftest import wait_until
from tests.integration.helpers import applied, produce, review_stream

pytestmark = pytest.mark.integration

MALFORMED = [
    (b"u1", b"\xff\xfe not json"),
    (b"u1", b'{"type": "ReviewSubmitted", "schema_version": 1, "event_id": "x", "rating": 9}'),
    (b"u2", b'{"type": "MovieDeleted", "event_id": "y"}'),
    (None, b"[]"),
]


async def read_deadletters(bootstrap: str, topic: str, expected: int) -> list:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        found = []
        for _ in range(100):
            batch = await consumer.getmany(tp, timeout_ms=200)
            found += batch.get(tp, [])
            if len(found) >= expected:
                break
        return found
    finally:
        await consumer.stop()


def test_malformed_records_are_dead_lettered_and_projection_continues(settings, services):
    good = review_stream(50, seed=3)
    records = [(e.key.encode(), encode(e)) for e in good]
    mixed = records[:20] + MALFORMED + records[20:]
    asyncio.run(produce(settings.kafka_bootstrap, settings.topic, mixed))
    store = SQLiteStore(settings.store_url.removeprefix("sqlite:///"))
    worker = services("worker")
    wait_until(lambda: applied(store) == len(mixed), 90, f"worker stalled: {worker.log()[-2000:]}")

    letters = asyncio.run(read_deadletters(settings.kafka_bootstrap, deadletter_topic(settings.topic), len(MALFORMED)))
    assert sorted(m.value for m in letters) == sorted(value for _, value in MALFORMED)
    for letter in letters:
        headers = dict(letter.headers)
        assert headers["reason"], "a dead letter says why"
        assert headers["source"].decode().startswith(f"{settings.topic}/")
    reasons = b" ".join(dict(m.headers)["reason"] for m in letters).decode()
    assert "unknown event type 'MovieDeleted'" in reasons and "rating" in reasons

    # Valid events after the malformed ones were applied, and the worker is still alive and projecting.
    assert worker.process.poll() is None
    more = review_stream(10, seed=4)
    asyncio.run(produce(settings.kafka_bootstrap, settings.topic,
                        [(e.key.encode(), encode(e)) for e in more]))
    wait_until(lambda: applied(store) == len(mixed) + len(more), 60, "worker stopped after dead letters")
