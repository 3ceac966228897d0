"""Appending events to the review log: one long-lived, batching, idempotent acks=all producer."""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner, murmur2

from events.codec import Sealer
from events.errors import HarmonyError
from events.position import Position
from events.reader import log_offsets
from events.topic import accounts_topic, deadletter_topic, review_topics
from events.types import Event


SEAL_CHUNK = 4096  # events sealed at once by append_bulk


class LogUnavailable(HarmonyError):
    """The broker did not acknowledge in time; the event may or may not have been written."""


class KeyPartitioner(DefaultPartitioner):
    """The producer's default partitioner (murmur2 of the key, as Kafka's and Faust's), remembering the
    hashes of recent keys: murmur2 is pure Python, about 5 µs for a 32-character subject, a tenth of
    an append's CPU, and the same users write again and again."""

    def __init__(self, keys: int = 1 << 16):
        self._hash = functools.lru_cache(maxsize=keys)(murmur2)

    def __call__(self, key, all_partitions, available):
        if key is None:
            return super().__call__(key, all_partitions, available)
        return all_partitions[(self._hash(key) & 0x7FFFFFFF) % len(all_partitions)]


@dataclass(frozen=True)
class LogConfig:
    """Where the review log is, as every process that reads or appends it needs to know."""

    bootstrap: str  # Kafka bootstrap servers, comma separated
    topic: str
    partitions: int  # used when the topic is created
    append_timeout: float  # seconds an append waits for its acknowledgement

    @property
    def deadletter_topic(self) -> str:
        return deadletter_topic(self.topic)

    @property
    def accounts_topic(self) -> str:
        return accounts_topic(self.topic)

    @property
    def topics(self):
        return review_topics(self.topic, self.partitions)


class KafkaEventLog:
    """Appends events keyed by their partition key, so a user's events keep their order: a personal
    event sealed and keyed by its user's subject (`sealer`), any other by its own key.

    One long-lived idempotent producer (acks=all, producer id and sequence numbers): a send it
    retries after a lost answer or a leader change is written once. Sends are batched (linger)
    and each append waits for its acknowledgement, or answers LogUnavailable after `timeout`.
    """

    def __init__(self, bootstrap: str, topic: str, *, timeout: float, sealer: Sealer, linger_ms: int = 5):
        self.topic = topic
        self.timeout = timeout
        self.sealer = sealer
        self._options = dict(
            bootstrap_servers=bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=linger_ms,
            max_batch_size=1 << 20,
            request_timeout_ms=max(1000, int(timeout * 1000)),
            retry_backoff_ms=100,
            partitioner=KeyPartitioner(),
        )
        self._producer: AIOKafkaProducer | None = None

    @property
    def connected(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        """Connect; a producer whose start failed is discarded, so start() can simply be retried."""
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(**self._options)
        try:
            await producer.start()
            async with asyncio.timeout(self.timeout):
                if not await producer.partitions_for(self.topic):
                    raise LogUnavailable(f"topic {self.topic} does not exist yet (`harmony stack up` creates it)")
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def ping(self) -> None:
        """Raise LogUnavailable unless the broker answers a metadata request now."""
        if self._producer is None:
            raise LogUnavailable("not connected to the broker")
        try:
            async with asyncio.timeout(min(self.timeout, 2.0)):
                await self._producer.client.fetch_all_metadata()
        except (TimeoutError, KafkaError, OSError) as error:
            raise LogUnavailable(f"broker unreachable: {error!r}") from error

    async def ends(self, topic: str | None = None) -> dict[int, int]:
        """Each partition's log end now (the offset its next record gets), of the review log or `topic`."""
        offsets = await log_offsets(self._options["bootstrap_servers"], topic or self.topic)
        return {partition: held.stop for partition, held in offsets.items()}

    async def append(self, event: Event, topic: str | None = None) -> Position:
        """Send one event (to the review log, or `topic`) and wait for its acknowledgement (or LogUnavailable)."""
        if self._producer is None:
            raise LogUnavailable("not connected to the broker")
        [(key, value)] = await self.sealer.records([event])
        try:
            async with asyncio.timeout(self.timeout):
                # The partitioner (murmur2 of the key, as Faust's) keeps a user's events in one partition.
                sent = await self._producer.send(topic or self.topic, value, key=key)
                record = await sent
        except (TimeoutError, KafkaError) as error:
            raise LogUnavailable(f"broker did not acknowledge: {error!r}") from error
        return Position(record.partition, record.offset)

    async def append_bulk(
        self, events: Iterable[Event], on_acked: Callable[[int], None] | None = None
    ) -> list[Position]:
        """Append a long stream of events at bulk speed; answer the last position written per partition.

        For imports. Events are encoded into one record batch per partition (aiokafka's batch
        API, up to max_batch_size each), partitioned by key exactly as `append` does, so a
        user's events keep their order. A full batch is queued at once (no linger): while the
        broker writes one request, the next batches fill, and a partition with a batch still
        queued makes the stream wait (back-pressure). `events` is consumed lazily, so it can be
        far larger than memory; it may raise, which stops the append (batches already queued
        are still delivered when the log is stopped). Every acknowledgement (acks=all) is
        awaited before this returns; `on_acked(n)` reports n more events acknowledged.
        Raises LogUnavailable if a batch is not acknowledged: batches acknowledged before it
        stay written, and a retry with the same event ids is removed downstream.
        """
        if self._producer is None:
            raise LogUnavailable("not connected to the broker")
        producer = self._producer
        partitioner = self._options["partitioner"]  # the producer's own: murmur2 of the key
        partition_of: dict[bytes, int] = {}
        builders: dict[int, object] = {}
        pending: deque[tuple[asyncio.Future, int, int]] = deque()
        last: dict[int, int] = {}

        def settle(future: asyncio.Future, count: int, partition: int) -> None:
            metadata = future.result()  # raises the batch's KafkaError
            last[partition] = max(last.get(partition, -1), metadata.offset + count - 1)
            if on_acked is not None:
                on_acked(count)

        async def submit(partition: int, builder) -> None:
            builder.close()  # a closed batch is drained at once, without linger
            async with asyncio.timeout(self.timeout):
                future = await producer.send_batch(builder, self.topic, partition=partition)
            pending.append((future, builder.record_count(), partition))
            while pending and pending[0][0].done():
                settle(*pending.popleft())

        try:
            async with asyncio.timeout(self.timeout):
                partitions = sorted(await producer.partitions_for(self.topic))
            events = iter(events)
            # Sealed a chunk at a time: one key-store lookup for the chunk's new users.
            while chunk := list(itertools.islice(events, SEAL_CHUNK)):
                for appended, (key, value) in enumerate(await self.sealer.records(chunk), 1):
                    partition = partition_of.get(key)
                    if partition is None:
                        if len(partition_of) >= 1 << 20:
                            partition_of.clear()
                        partition = partition_of[key] = partitioner(key, partitions, partitions)
                    builder = builders.get(partition)
                    if builder is None:
                        builder = builders[partition] = producer.create_batch()
                    if builder.append(key=key, value=value, timestamp=None) is None:
                        await submit(partition, builder)
                        builder = builders[partition] = producer.create_batch()
                        if builder.append(key=key, value=value, timestamp=None) is None:
                            raise ValueError(f"a record of {len(value)} bytes is larger than a record batch")
                    if appended % 256 == 0:
                        # Parsing runs on this loop too: let the sender and the sockets move on.
                        await asyncio.sleep(0)
            for partition, builder in builders.items():
                if builder.record_count():
                    await submit(partition, builder)
            while pending:
                future, count, partition = pending.popleft()
                async with asyncio.timeout(self.timeout):
                    await asyncio.wait([future])
                settle(future, count, partition)
        except (TimeoutError, KafkaError) as error:
            raise LogUnavailable(f"broker did not acknowledge: {error!r}") from error
        return [Position(p, offset) for p, offset in sorted(last.items())]
