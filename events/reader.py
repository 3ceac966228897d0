"""Reading the review log from the start, for rebuilds, verification and benchmarks."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, NamedTuple

from aiokafka import AIOKafkaConsumer, TopicPartition


class LogRecord(NamedTuple):
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


async def read_log(
    bootstrap: str, topic: str, *, batch: int = 5000, idle_timeout: float = 10.0
) -> AsyncIterator[list[LogRecord]]:
    """Yield batches of every record from offset 0 up to the log end as it stood when reading began.

    The log end comes from the fetch high watermark: Tansu's ListOffsets under-reports it.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 << 20, fetch_max_bytes=32 << 20,
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            return
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends: dict[TopicPartition, int] = {}
        loop = asyncio.get_running_loop()
        last_progress = loop.time()
        while True:
            fetched = await consumer.getmany(timeout_ms=200, max_records=batch)
            for tp in partitions:
                if tp not in ends and consumer.highwater(tp) is not None:
                    ends[tp] = consumer.highwater(tp)
            out = [
                LogRecord(tp.partition, m.offset, m.key, m.value)
                for tp, messages in fetched.items()
                for m in messages
                if m.offset < ends.get(tp, m.offset + 1)
            ]
            if out:
                last_progress = loop.time()
                yield out
            if len(ends) == len(partitions) and all(
                await asyncio.gather(*(_reached(consumer, tp, end) for tp, end in ends.items()))
            ):
                return
            if loop.time() - last_progress > idle_timeout:
                raise TimeoutError(f"no progress reading {topic} for {idle_timeout:.0f}s")
    finally:
        await consumer.stop()


async def _reached(consumer: AIOKafkaConsumer, tp: TopicPartition, end: int) -> bool:
    return await consumer.position(tp) >= end
