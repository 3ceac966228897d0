"""Helpers for integration tests: write events straight into the log, fold the log for comparison."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from datetime import datetime, timedelta, timezone
from typing import Iterator

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from events.codec import encode
from events.reader import stop_consumer, topic_partitions
from events.types import Event, ReviewRetracted, ReviewSubmitted
from projections.rebuild import fold_log
from projections.store import ProjectionStore

EPOCH = datetime(2020, 1, 1, tzinfo=timezone.utc)


def review_stream(count: int, seed: int = 1, users: int = 200, movies: int = 500) -> list[Event]:
    """Submissions, replacements, retractions and re-sent duplicates, in a plausible mix."""
    rng = random.Random(seed)
    events: list[Event] = []
    for i in range(count):
        user, movie = f"u{rng.randrange(users)}", f"m{rng.randrange(movies)}"
        at = EPOCH + timedelta(minutes=i)
        roll = rng.random()
        if roll < 0.05 and events:
            events.append(rng.choice(events))  # a retried append: same event id again
        elif roll < 0.15:
            events.append(ReviewRetracted(event_id=str(uuid.uuid4()), occurred_at=at, recorded_at=at,
                                          user_id=user, movie_id=movie))
        else:
            events.append(ReviewSubmitted(event_id=str(uuid.uuid4()), occurred_at=at, recorded_at=at,
                                          user_id=user, movie_id=movie, rating=rng.randrange(1, 11) / 2,
                                          summary=f"s{i}", reviewed_at=at))
    return events


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    """Write raw (key, value) records as they are, acks=all."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def produce_events(bootstrap: str, topic: str, events: list[Event]) -> None:
    asyncio.run(produce(bootstrap, topic, [(e.key.encode(), encode(e)) for e in events]))


@contextlib.contextmanager
def fold_of_log(bootstrap: str, topic: str, like: ProjectionStore) -> Iterator[ProjectionStore]:
    """A fresh store of `like`'s kind holding the fold of the whole log: what every live projection
    must equal. Removed afterwards."""
    store = like.scratch("reference")
    try:
        asyncio.run(fold_log(bootstrap, topic, store))
        yield store
    finally:
        store.close()


def applied(store: ProjectionStore) -> int:
    """Records the store has applied: checkpoint offsets are the last applied, per partition."""
    return sum(offset + 1 for offset in store.checkpoint().values())


async def _log_end(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await topic_partitions(consumer, topic)]
        return {tp.partition: offset for tp, offset in (await consumer.end_offsets(partitions)).items() if offset}
    finally:
        await stop_consumer(consumer)


def log_end(bootstrap: str, topic: str) -> dict[int, int]:
    """The offset after the last record, per partition that has any (as a group commits them)."""
    return asyncio.run(_log_end(bootstrap, topic))


async def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}
    finally:
        await admin.close()


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """A consumer group's committed offsets (the next offset it will read), per partition."""
    return asyncio.run(_committed(bootstrap, group, topic))


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")
