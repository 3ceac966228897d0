"""Reading ranges of the review log straight from the brokers, with no consumer group.

`read_log` reads a bounded range once: for rebuilds, verification, gap filling and benchmarks.
`LogTail` keeps one consumer open between reads, and a range can end at the log end as it
grows: the archiver's catch-ups. `log_offsets` tells where each partition's log starts and ends:
what a complete archive must cover.
"""

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
    consumer = await _start_consumer(bootstrap)
    try:
        numbers = sorted(end) if end is not None else await topic_partitions(consumer, topic)
        partitions = [TopicPartition(topic, p) for p in numbers if end is None or start.get(p, 0) < end[p]]
        ends = {tp: end[tp.partition] for tp in partitions} if end is not None else {}
        if not partitions:
            return
        _assign(consumer, {tp: start.get(tp.partition, 0) for tp in partitions})
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
                yield out
                last_progress = loop.time()  # the caller's time on a batch is not the log's idleness
            if len(ends) == len(partitions) and await _reached(consumer, ends):
                return
            if loop.time() - last_progress > idle_timeout:
                raise TimeoutError(f"no progress reading {topic} for {idle_timeout:.0f}s")
    finally:
        await stop_consumer(consumer)


class LogTail:
    """Reads ranges of partitions with one consumer kept open between reads. Unlike read_log, a
    range can end at the log end as it grows: reading stops when the position reaches the high
    watermark of the latest fetch."""

    def __init__(self, bootstrap: str, topic: str, batch: int = 5000, idle_timeout: float = 10.0):
        self.bootstrap, self.topic, self.batch, self.idle_timeout = bootstrap, topic, batch, idle_timeout
        self._consumer: AIOKafkaConsumer | None = None

    async def read(self, start: dict[int, int], end: dict[int, int | None]) -> AsyncIterator[list[LogRecord]]:
        """Yield batches of records from start[p] up to end[p] (None: the log end). The records
        are aiokafka's ConsumerRecords, which have LogRecord's fields by name (no copy each)."""
        if self._consumer is None:
            self._consumer = await _start_consumer(self.bootstrap)
        consumer = self._consumer
        partitions = {TopicPartition(self.topic, p): end[p] for p in start}
        _assign(consumer, {tp: start[tp.partition] for tp in partitions})
        active = set(partitions)
        loop = asyncio.get_running_loop()
        last_progress = loop.time()
        try:
            while active:
                fetched = await consumer.getmany(*active, timeout_ms=200, max_records=self.batch)
                out = []
                for tp, messages in fetched.items():
                    stop = partitions[tp]
                    if stop is not None and messages[-1].offset >= stop:
                        messages = [m for m in messages if m.offset < stop]
                    out.extend(messages)
                if out:
                    yield out
                    last_progress = loop.time()  # the caller's time on a batch is not the log's idleness
                # A bounded range is done at its end. Ranges to the log end stay read together
                # until every one of them is at the high watermark at once.
                at_end = set()
                for tp in active:
                    limit = partitions[tp] if partitions[tp] is not None else consumer.highwater(tp)
                    if limit is not None and await consumer.position(tp) >= limit:
                        at_end.add(tp)
                active -= {tp for tp in at_end if partitions[tp] is not None}
                if all(partitions[tp] is None for tp in active) and at_end >= active:
                    break
                if active and loop.time() - last_progress > self.idle_timeout:
                    raise TimeoutError(f"no progress reading {self.topic} for {self.idle_timeout:.0f}s")
        finally:
            consumer.pause(*partitions)  # no prefetching between reads

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await stop_consumer(consumer)


async def _start_consumer(bootstrap: str) -> AIOKafkaConsumer:
    """A started consumer without a group, reading from the positions it is given, in big fetches."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 << 20, fetch_max_bytes=32 << 20,
    )
    try:
        await consumer.start()
    except BaseException:  # a consumer whose start failed still holds a client: close it
        await stop_consumer(consumer)
        raise
    return consumer


def _assign(consumer: AIOKafkaConsumer, positions: dict[TopicPartition, int]) -> None:
    consumer.assign(list(positions))
    for tp, offset in positions.items():
        consumer.seek(tp, offset)


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[int]:
    """The topic's partition numbers ([] if it does not exist). A consumer without a subscription
    has no metadata for any topic, so this asks the cluster."""
    cluster = await consumer._client.fetch_all_metadata()
    return sorted(cluster.partitions_for_topic(topic) or ())


async def log_offsets(bootstrap: str, topic: str) -> dict[int, range]:
    """The offsets each partition of the topic holds now: from the log start offset (0 unless the
    broker deleted records) up to, not including, the log end. {} if the topic does not exist."""
    consumer = await _start_consumer(bootstrap)
    try:
        partitions = [TopicPartition(topic, p) for p in await topic_partitions(consumer, topic)]
        if not partitions:
            return {}
        starts = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        return {tp.partition: range(starts[tp], ends[tp]) for tp in partitions}
    finally:
        await stop_consumer(consumer)


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

