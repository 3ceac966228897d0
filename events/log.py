"""Appending events to the review log: long-lived, batching, acks=all producers."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Callable, Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from events.codec import encode
from events.position import Position
from events.types import Event


class LogUnavailable(RuntimeError):
    """The broker did not acknowledge in time; the event may or may not have been written."""


class KafkaEventLog:
    """Appends events keyed by their partition key, so a user's events keep their order.

    Producers are idempotent (acks=all, with producer id and sequence numbers): a send the
    producer retries after a lost answer or a leader change is written once. An aiokafka
    producer has one request in flight per broker, so the log keeps a small pool of long-lived
    producers, each sending only to its own partitions: requests for different partitions
    overlap, and a partition's events still go through one producer in order. Sends are
    batched (linger) and each append waits for its acknowledgement.
    """

    MAX_PRODUCERS = 8

    def __init__(self, bootstrap: str, topic: str, *, timeout: float = 3.0, linger_ms: int = 5):
        self.topic = topic
        self.timeout = timeout
        self._options = dict(
            bootstrap_servers=bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=linger_ms,
            max_batch_size=1 << 20,
            request_timeout_ms=max(1000, int(timeout * 1000)),
            retry_backoff_ms=100,
        )
        self._producers: list[AIOKafkaProducer] = []
        self._partitions: list[int] = []
        self._partitioner = DefaultPartitioner()  # aiokafka's and Faust's: murmur2 of the key

    @property
    def connected(self) -> bool:
        return bool(self._producers)

    async def start(self) -> None:
        """Connect; producers whose start failed are discarded, so start() can simply be retried."""
        if self._producers:
            return
        started: list[AIOKafkaProducer] = []
        try:
            while not started or len(started) < min(len(self._partitions), self.MAX_PRODUCERS):
                producer = AIOKafkaProducer(**self._options)
                started.append(producer)
                await producer.start()
                if not self._partitions:
                    async with asyncio.timeout(self.timeout):
                        self._partitions = sorted(await producer.partitions_for(self.topic))
                    if not self._partitions:
                        raise LogUnavailable(f"topic {self.topic} does not exist yet (`harmony stack up` creates it)")
        except BaseException:
            await asyncio.gather(*(p.stop() for p in started), return_exceptions=True)
            raise
        self._producers = started

    async def stop(self) -> None:
        producers, self._producers = self._producers, []
        await asyncio.gather(*(p.stop() for p in producers))

    async def ping(self) -> None:
        """Raise LogUnavailable unless the broker answers a metadata request now."""
        if not self._producers:
            raise LogUnavailable("not connected to the broker")
        try:
            async with asyncio.timeout(min(self.timeout, 2.0)):
                await self._producers[0].client.fetch_all_metadata()
        except (TimeoutError, KafkaError, OSError) as error:
            raise LogUnavailable(f"broker unreachable: {error!r}") from error

    async def append(self, event: Event) -> Position:
        """Send one event and wait for its acknowledgement (or LogUnavailable)."""
        if not self._producers:
            raise LogUnavailable("not connected to the broker")
        key = event.key.encode()
        partition = self._partitioner(key, self._partitions, self._partitions)
        producer = self._producers[partition % len(self._producers)]
        try:
            async with asyncio.timeout(self.timeout):
                sent = await producer.send(self.topic, encode(event), key=key, partition=partition)
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
        if not self._producers:
            raise LogUnavailable("not connected to the broker")
        producer = self._producers[0]
        partitioner = self._partitioner
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
            appended = 0
            for event in events:
                key = event.key.encode()
                partition = partition_of.get(key)
                if partition is None:
                    if len(partition_of) >= 1 << 20:
                        partition_of.clear()
                    partition = partition_of[key] = partitioner(key, partitions, partitions)
                value = encode(event)
                builder = builders.get(partition)
                if builder is None:
                    builder = builders[partition] = producer.create_batch()
                if builder.append(key=key, value=value, timestamp=None) is None:
                    await submit(partition, builder)
                    builder = builders[partition] = producer.create_batch()
                    if builder.append(key=key, value=value, timestamp=None) is None:
                        raise ValueError(f"event {event.event_id} is larger than a record batch")
                appended += 1
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
