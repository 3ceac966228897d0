"""Reading ranges of the review log: for rebuilds, verification, gap filling and benchmarks."""

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
    bootstrap: str,
    topic: str,
    *,
    start: dict[int, int] | None = None,
    end: dict[int, int] | None = None,
    batch: int = 10_000,
    idle_timeout: float = 10.0,
) -> AsyncIterator[list[LogRecord]]:
    """Yield batches of records from `start` (default offset 0) up to, not including, `end`
    (default: the log end as it stood when reading began), every partition unless `end` names some.

    The log end is the high watermark of the first fetch: no extra request to the broker.
    """
    start = start or {}
    if end is not None and all(start.get(p, 0) >= e for p, e in end.items()):
        return  # nothing to read
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 << 20, fetch_max_bytes=32 << 20,
    )
    await consumer.start()
    try:
        numbers = sorted(end) if end is not None else await topic_partitions(consumer, topic)
        partitions = [TopicPartition(topic, p) for p in numbers if end is None or start.get(p, 0) < end[p]]
        ends = {tp: end[tp.partition] for tp in partitions} if end is not None else {}
        if not partitions:
            return
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, start.get(tp.partition, 0))
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
            if len(ends) == len(partitions) and await _reached(consumer, ends):
                return
            if loop.time() - last_progress > idle_timeout:
                raise TimeoutError(f"no progress reading {topic} for {idle_timeout:.0f}s")
    finally:
        await stop_consumer(consumer)


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[int]:
    """The topic's partition numbers ([] if it does not exist). A consumer without a subscription
    has no metadata for any topic, so this asks the cluster."""
    cluster = await consumer._client.fetch_all_metadata()
    return sorted(cluster.partitions_for_topic(topic) or ())


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """Stop a consumer. aiokafka's stop re-raises the cancellation of an internal task that had not
    started yet (a consumer stopped right after it started); only a cancellation of ours propagates."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        if asyncio.current_task().cancelling():
            raise


async def _reached(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True

