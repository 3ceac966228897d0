"""Following a small topic from given offsets and on as it grows, with no consumer group: how the
projection worker keeps the accounts view (every worker follows every partition: the view's writes
are idempotent)."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from events.reader import LogRecord, stop_consumer, topic_partitions

log = logging.getLogger(__name__)

RETRY_EVERY = 1.0


class LogFollower:
    """Feeds every record of `topic` from `start` (partition -> offset; 0 for those it lacks) on,
    batch by batch, to `apply`."""

    def __init__(self, bootstrap: str, topic: str, apply: Callable[[list[LogRecord]], Awaitable[None]],
                 start: dict[int, int]):
        self.bootstrap, self.topic, self.apply, self.start = bootstrap, topic, apply, start
        self._consumer: AIOKafkaConsumer | None = None

    async def run(self) -> None:
        """Follow until cancelled, reconnecting after a broker outage where it left off."""
        positions = {TopicPartition(self.topic, p): offset for p, offset in self.start.items()}
        while True:
            try:
                await self._follow(positions)
            except (KafkaError, OSError) as error:
                log.warning("following %s failed, retrying", self.topic, extra={"error": repr(error)})
                await asyncio.sleep(RETRY_EVERY)
            finally:
                consumer, self._consumer = self._consumer, None
                if consumer is not None:
                    await stop_consumer(consumer)

    async def _follow(self, positions: dict[TopicPartition, int]) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    auto_offset_reset="earliest")
        self._consumer = consumer
        await consumer.start()
        partitions = [TopicPartition(self.topic, p) for p in await topic_partitions(consumer, self.topic)]
        if not partitions:
            raise KafkaError(f"topic {self.topic} does not exist yet")
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, positions.get(tp, 0))
        while True:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=5000)
            records = [LogRecord(tp.partition, m.offset, m.key, m.value)
                       for tp, messages in fetched.items() for m in messages]
            if records:
                await self.apply(records)
                for tp, messages in fetched.items():
                    positions[tp] = messages[-1].offset + 1
