"""Following a small topic from its start and on as it grows, with no consumer group: how a
process keeps an in-memory view of it (the API's accounts)."""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from events.reader import LogRecord, stop_consumer, topic_partitions

log = logging.getLogger(__name__)

RETRY_EVERY = 1.0


class LogFollower:
    """Feeds every record of `topic`, from offset 0 on, to `apply`; `ends()` answers the log end
    now, so a reader can wait until the view has caught up with every record written so far."""

    def __init__(self, bootstrap: str, topic: str, apply: Callable[[list[LogRecord]], None]):
        self.bootstrap, self.topic, self.apply = bootstrap, topic, apply
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._following = asyncio.Event()  # set while the consumer is assigned

    async def run(self) -> None:
        """Follow until cancelled, reconnecting after a broker outage where the view left off."""
        positions: dict[TopicPartition, int] = {}
        while True:
            try:
                await self._follow(positions)
            except (KafkaError, OSError) as error:
                log.warning("following %s failed, retrying", self.topic, extra={"error": repr(error)})
                await asyncio.sleep(RETRY_EVERY)
            finally:
                self._following.clear()
                consumer, self._consumer = self._consumer, None
                if consumer is not None:
                    await stop_consumer(consumer)

    async def _follow(self, positions: dict[TopicPartition, int]) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    auto_offset_reset="earliest")
        self._consumer = consumer
        await consumer.start()
        self._partitions = [TopicPartition(self.topic, p) for p in await topic_partitions(consumer, self.topic)]
        if not self._partitions:
            raise KafkaError(f"topic {self.topic} does not exist yet")
        consumer.assign(self._partitions)
        for tp in self._partitions:
            consumer.seek(tp, positions.get(tp, 0))
        self._following.set()
        while True:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=5000)
            records = [LogRecord(tp.partition, m.offset, m.key, m.value)
                       for tp, messages in fetched.items() for m in messages]
            if records:
                self.apply(records)
                for tp, messages in fetched.items():
                    positions[tp] = messages[-1].offset + 1

    async def ends(self) -> dict[int, int]:
        """partition -> the offset the next record will get; waits until following (time it out)."""
        await self._following.wait()
        ends = await self._consumer.end_offsets(self._partitions)
        return {tp.partition: offset for tp, offset in ends.items()}
