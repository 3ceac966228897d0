"""Appending events to the review log: one long-lived, batching, idempotent acks=all producer
(librdkafka's, through confluent-kafka: its per-message cost is a few microseconds of C, where
aiokafka's is about 25 µs of Python on the event loop)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from events.codec import encode
from events.errors import HarmonyError
from events.position import Position
from events.topic import accounts_topic, deadletter_topic, review_topics
from events.types import Event

log = logging.getLogger(__name__)

POLL = 0.1  # seconds the delivery thread waits for reports when there are none


class LogUnavailable(HarmonyError):
    """The broker did not acknowledge in time; the event may or may not have been written."""


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
    """Appends events keyed by their partition key, so a user's events keep their order.

    One long-lived idempotent producer (acks=all, producer id and sequence numbers): a send it
    retries after a lost answer or a leader change is written once. Keys are partitioned by
    murmur2, as Kafka's Java client, aiokafka and Faust do. Sends are batched (linger); a thread
    serves the delivery reports and hands each lot to the event loop in one call, where every
    append waits for its own, or answers LogUnavailable after `timeout`.
    """

    def __init__(self, bootstrap: str, topic: str, *, timeout: float, linger_ms: int = 5):
        self.topic = topic
        self.timeout = timeout
        self._options = {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": linger_ms,
            "partitioner": "murmur2_random",
            "message.timeout.ms": max(1000, int(timeout * 1000)),
            "retry.backoff.ms": 100,
            "logger": log,
        }
        self._producer: Producer | None = None
        self._reports: Reports | None = None

    @property
    def connected(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        """Connect; a producer whose start failed is discarded, so start() can simply be retried."""
        if self._producer is not None:
            return
        producer = Producer(self._options)
        try:
            await self._topic_metadata(producer)
        except BaseException:
            await asyncio.to_thread(producer.flush, 0)
            raise
        self._producer = producer
        self._reports = Reports(producer, asyncio.get_running_loop())

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        reports, self._reports = self._reports, None
        if producer is not None:
            await asyncio.to_thread(producer.flush, self.timeout)  # what is queued is still delivered
            reports.close()

    async def ping(self) -> None:
        """Raise LogUnavailable unless the broker answers a metadata request now."""
        if self._producer is None:
            raise LogUnavailable("not connected to the broker")
        await self._topic_metadata(self._producer, min(self.timeout, 2.0))

    async def _topic_metadata(self, producer: Producer, timeout: float | None = None) -> None:
        timeout = self.timeout if timeout is None else timeout
        try:
            metadata = await asyncio.to_thread(producer.list_topics, self.topic, timeout)
        except KafkaException as error:
            raise LogUnavailable(f"broker unreachable: {error.args[0].str()}") from None
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise LogUnavailable(f"topic {self.topic} does not exist yet (`harmony stack up` creates it)")

    async def append(self, event: Event, topic: str | None = None) -> Position:
        """Send one event (to the review log, or `topic`) and wait for its acknowledgement (or LogUnavailable)."""
        if self._producer is None:
            raise LogUnavailable("not connected to the broker")
        delivered = self._reports.loop.create_future()
        try:
            self._producer.produce(topic or self.topic, encode(event), event.key.encode(),
                                   on_delivery=self._reports.to(delivered))
        except BufferError:
            raise LogUnavailable("the producer's queue is full: the broker is not keeping up") from None
        try:
            async with asyncio.timeout(self.timeout):
                return await delivered
        except TimeoutError:
            raise LogUnavailable(f"broker did not acknowledge within {self.timeout:g}s") from None

    async def append_bulk(
        self, events: Iterable[Event], on_acked: Callable[[int], None] | None = None
    ) -> list[Position]:
        """Append a long stream of events at bulk speed; answer the last position written per partition.

        For imports. `events` is consumed lazily, so it can be far larger than memory; it may
        raise, which stops the append (what was queued is still delivered when the log is
        stopped). A full producer queue makes the stream wait (back-pressure). Every
        acknowledgement (acks=all) is awaited before this returns; `on_acked(n)` reports n more
        events acknowledged. Raises LogUnavailable if an event is not acknowledged: those
        acknowledged before it stay written, and a retry with the same event ids is removed
        downstream. A user's events keep their order (one partition, an idempotent producer).
        """
        if self._producer is None:
            raise LogUnavailable("not connected to the broker")
        producer, tally = self._producer, Tally()
        sent = reported = 0

        def report() -> None:
            nonlocal reported
            if tally.failure is not None:
                raise LogUnavailable(f"broker did not acknowledge: {tally.failure}")
            if on_acked is not None and tally.acked > reported:
                on_acked(tally.acked - reported)
            reported = tally.acked

        for event in events:
            value, key = encode(event), event.key.encode()
            while True:
                try:
                    producer.produce(self.topic, value, key, on_delivery=tally.delivered)
                    break
                except BufferError:  # the local queue is full: wait for the broker
                    await asyncio.sleep(0.005)
                    report()
            sent += 1
            if sent % 512 == 0:
                await asyncio.sleep(0)  # parsing runs on this loop too: let the reports through
                report()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while tally.acked + tally.failed < sent:
            before = tally.acked
            report()
            await asyncio.sleep(0.01)
            if tally.acked > before:
                deadline = loop.time() + self.timeout  # the timeout is for a stall, not for the whole stream
            elif loop.time() > deadline:
                raise LogUnavailable(f"broker did not acknowledge within {self.timeout:g}s")
        report()
        return [Position(p, offset) for p, offset in sorted(tally.last.items())]


class Reports:
    """Delivery reports, served by a thread and handed to the event loop a lot at a time (one
    wake-up of the loop per lot, not one per message)."""

    def __init__(self, producer: Producer, loop: asyncio.AbstractEventLoop):
        self.producer, self.loop = producer, loop
        # Appended to by whichever thread serves reports (this one's poll, or stop()'s flush).
        self._reports: deque[tuple[asyncio.Future, KafkaError | None, int, int]] = deque()
        self._closing = False
        self._thread = threading.Thread(target=self._serve, name="kafka-delivery-reports", daemon=True)
        self._thread.start()

    def to(self, future: asyncio.Future) -> Callable[[KafkaError | None, Message], None]:
        """The on_delivery callback that settles `future` (called during poll, off the loop)."""
        return lambda error, message: self._reports.append((future, error, message.partition(), message.offset()))

    def _serve(self) -> None:
        reports = self._reports
        while not self._closing:
            self.producer.poll(POLL)
            if reports:
                lot = [reports.popleft() for _ in range(len(reports))]
                try:
                    self.loop.call_soon_threadsafe(_settle, lot)
                except RuntimeError:  # the loop is closed: nobody is waiting any more
                    return

    def close(self) -> None:
        self._closing = True
        self._thread.join()


def _settle(lot: list[tuple[asyncio.Future, KafkaError | None, int, int]]) -> None:
    for future, error, partition, offset in lot:
        if future.done():  # its append timed out
            continue
        if error is None:
            future.set_result(Position(partition, offset))
        else:
            future.set_exception(LogUnavailable(f"broker did not acknowledge: {error.str()}"))


class Tally:
    """What a bulk append's delivery reports said so far (updated in the reports' thread)."""

    def __init__(self):
        self.acked = self.failed = 0
        self.failure: str | None = None
        self.last: dict[int, int] = {}

    def delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.failed += 1
            self.failure = self.failure or error.str()
            return
        partition = message.partition()
        self.last[partition] = max(self.last.get(partition, -1), message.offset())
        self.acked += 1
