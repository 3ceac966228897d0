"""Helpers for integration tests: generate events and write them straight into the log; fold the log
with the reference fold (tests/reference_fold.py) to compare a store with."""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from events.codec import DecodeError, decode, encode
from events.reader import LogRecord, read_log, stop_consumer, topic_partitions
from events.sealing import Unreadable, record_subjects
from events.types import AnyEvent, Event, MovieCatalogued, ReviewRetracted, ReviewSubmitted
from projections.store import ProjectionStore
from tests.conftest import Service, wait_until
from tests.reference_fold import Views, assert_same, reference_fold

EPOCH = datetime(2020, 1, 1, tzinfo=timezone.utc)
GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi")


def review_stream(count: int, seed: int = 1, users: int = 200, movies: int = 500,
                  catalogue: float = 0.0) -> list[Event]:
    """Submissions, replacements, retractions and re-sent duplicates, in a plausible mix; the same
    seed gives the same events (event ids included). A `catalogue` share of them are
    `MovieCatalogued`: a movie's first import, then renames (a new event id) and re-imports of a
    changed title under the movie's first event id (as the importer gives them). A re-sent copy
    may be of any earlier event, a catalogue one too (a copy is newer by log position)."""
    rng = random.Random(seed)

    def new_id() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    events: list[Event] = []
    submitted: list[tuple[str, str]] = []  # (user, movie) pairs given a review, for retractions
    imported: dict[str, str] = {}  # movie -> the event id of its first import
    for i in range(count):
        user, movie = f"u{rng.randrange(users)}", f"m{rng.randrange(movies)}"
        at = EPOCH + timedelta(minutes=i)
        roll = rng.random()
        if roll < 0.05 and events:
            events.append(rng.choice(events))  # a retried append: same event id again
        elif roll < 0.05 + catalogue:
            if movie not in imported:
                event_id = imported[movie] = new_id()
            elif rng.random() < 0.5:
                event_id = new_id()  # renamed by hand: a new event
            else:
                event_id = imported[movie]  # imported again from a changed file: the same event id
            events.append(MovieCatalogued(
                event_id=event_id, occurred_at=at, recorded_at=at, movie_id=movie,
                title=f"Movie {movie} take {i}", year=rng.choice([None, 1950 + rng.randrange(75)]),
                genres=tuple(rng.sample(GENRES, rng.randrange(3))),
                image_url=rng.choice([None, f"https://images.example/{movie}/{i}.jpg"])))
        elif roll < 0.15 + catalogue:
            if submitted and rng.random() < 0.5:
                user, movie = rng.choice(submitted)  # retract a review that was given
            events.append(ReviewRetracted(event_id=new_id(), occurred_at=at, recorded_at=at,
                                          user_id=user, movie_id=movie))
        else:
            submitted.append((user, movie))
            events.append(ReviewSubmitted(event_id=new_id(), occurred_at=at, recorded_at=at,
                                          user_id=user, movie_id=movie, rating=rng.randrange(1, 11) / 2,
                                          summary=f"s{i}", text=rng.choice(["", f"text {i}"]), reviewed_at=at))
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


async def _read_whole_log(bootstrap: str, topic: str) -> list[LogRecord]:
    return [record async for batch in read_log(bootstrap, topic) for record in batch]


def log_records(bootstrap: str, topic: str) -> list[tuple[int, int, AnyEvent | None]]:
    """The whole log as (partition, offset, event), opened with the test session's keys; None for a
    record that does not decode (what the projector dead-letters) or whose key is gone."""
    from harmony.bootstrap import keyring
    from harmony.settings import load

    records = asyncio.run(_read_whole_log(bootstrap, topic))
    keys = keyring(load())  # the session's state dir: its key store
    keys.load(record_subjects(r.key for r in records))

    def event(value: bytes | None) -> AnyEvent | None:
        try:
            return None if value is None else decode(value, keys)
        except (DecodeError, Unreadable):
            return None

    return [(r.partition, r.offset, event(r.value)) for r in records]


def fold_of_log(bootstrap: str, topic: str) -> Views:
    """The reference fold (tests/reference_fold.py) of the whole log: what every projection must equal."""
    return reference_fold(log_records(bootstrap, topic))


def assert_store_equals_log(bootstrap: str, topic: str, store: ProjectionStore) -> Views:
    """Assert the store's views and checkpoint equal the reference fold of the whole log (naming the
    first difference); answer that fold."""
    expected = fold_of_log(bootstrap, topic)
    assert_same(store.contents(), expected)
    return expected


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


STEADY_RATE = 400  # events a second a SteadyWriter appends


class SteadyWriter:
    """Appends events to the log at a steady rate from a thread of its own (acks=all), until stopped.
    `written` counts the records the broker acknowledged."""

    def __init__(self, bootstrap: str, topic: str, rate: int = STEADY_RATE, seed: int = 7, tick: float = 0.05):
        self.bootstrap, self.topic, self.rate, self.tick = bootstrap, topic, rate, tick
        self.events = review_stream(rate * 120, seed=seed, catalogue=0.05)  # two minutes' worth: plenty
        self.written = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steady-writer", daemon=True)

    def __enter__(self) -> "SteadyWriter":
        self._thread.start()
        wait_until(lambda: self.written or self.error, 30, "the writer wrote nothing")
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.stop()
        else:  # the test failed: stop writing, keep its error
            self._stop.set()
            self._thread.join()

    def stop(self) -> int:
        """Stop writing; answer the records written."""
        self._stop.set()
        self._thread.join()
        if self.error is not None:
            raise AssertionError(f"the steady writer failed: {self.error!r}")
        return self.written

    def _run(self) -> None:
        try:
            asyncio.run(self._write())
        except BaseException as error:  # noqa: BLE001 - reported by stop()
            self.error = error

    async def _write(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        await producer.start()
        try:
            started = time.monotonic()
            while not self._stop.is_set():
                due = int((time.monotonic() - started) * self.rate) + 1
                if due > len(self.events):
                    raise AssertionError("the steady writer ran out of events")
                batch = self.events[self.written:due]
                futures = [await producer.send(self.topic, encode(e), key=e.key.encode()) for e in batch]
                await asyncio.gather(*futures)
                self.written = due
                await asyncio.sleep(self.tick)
        finally:
            await producer.stop()


def wait_for(predicate, timeout: float, what: str, workers: list[Service], interval: float = 0.5):
    """wait_until, naming the end of each worker's log when it times out (read then, not before)."""
    try:
        return wait_until(predicate, timeout, what, interval)
    except AssertionError as error:
        raise AssertionError(f"{error}: " + " | ".join(w.log()[-1500:] for w in workers)) from None
