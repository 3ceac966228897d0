"""Appending events to the review log: one long-lived, batching, acks=all producer."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from events.codec import encode
from events.position import Position
from events.types import Event


class LogUnavailable(RuntimeError):
    """The broker did not acknowledge in time; the event may or may not have been written."""


class KafkaEventLog:
    """Appends events keyed by their partition key, so a user's events keep their order.

    Sends are batched by the producer (linger) and each append waits for acks=all.
    Idempotent producing is off: aiokafka's InitProducerId is rejected by Tansu;
    duplicates from retries are removed downstream by event id.
    """

    def __init__(self, bootstrap: str, topic: str, *, timeout: float = 3.0, linger_ms: int = 5):
        self.topic = topic
        self.timeout = timeout
        self._options = dict(
            bootstrap_servers=bootstrap,
            acks="all",
            linger_ms=linger_ms,
            max_batch_size=1 << 20,
            request_timeout_ms=max(1000, int(timeout * 1000)),
            retry_backoff_ms=100,
        )
        self._producer: AIOKafkaProducer | None = None

    @property
    def connected(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        """Connect; a producer whose start failed is discarded, so start() can simply be retried."""
        if self._producer is None:
            producer = AIOKafkaProducer(**self._options)
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
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

    async def append(self, event: Event) -> Position:
        return (await self.append_many([event]))[0]

    async def append_many(self, events: list[Event]) -> list[Position]:
        """Send all events, then wait for every acknowledgement (or LogUnavailable)."""
        if self._producer is None:
            raise LogUnavailable("not connected to the broker")
        try:
            async with asyncio.timeout(self.timeout):
                futures = [
                    await self._producer.send(self.topic, encode(e), key=e.key.encode()) for e in events
                ]
                records = await asyncio.gather(*futures)
        except (TimeoutError, KafkaError) as error:
            raise LogUnavailable(f"broker did not acknowledge: {error!r}") from error
        return [Position(r.partition, r.offset) for r in records]
