"""Decode a batch of raw log records, dead-letter the bad ones, fold the rest into the store.

Independent of Faust so the worker, rebuilds and tests share it. The store is synchronous (and
may be a network away): the projector calls it from a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, NamedTuple

from events.codec import DecodeError, decode
from events.reader import LogRecord, read_log
from projections.fold import Record, fold
from projections.store import ProjectionWriter


class DeadLetter(NamedTuple):
    record: LogRecord
    reason: str


def decode_batch(raw: list[LogRecord]) -> tuple[list[Record], list[DeadLetter]]:
    records: list[Record] = []
    dead: list[DeadLetter] = []
    for item in raw:
        try:
            if item.value is None:
                raise DecodeError("record has no value")
            event = decode(item.value)
        except DecodeError as error:
            dead.append(DeadLetter(item, str(error)))
            records.append(Record(item.partition, item.offset, None))
        else:
            records.append(Record(item.partition, item.offset, event))
    return records, dead


def apply_records(store: ProjectionWriter, records: list[Record]) -> None:
    """Fold one batch and commit it with its checkpoint (nothing to write if all were seen); fold
    it again if the checkpoint moved meanwhile (a rebalance overlap, a rebuild's swap)."""
    while True:
        changes = fold(store, records)
        if not changes.checkpoint or store.apply(changes):
            return


class LogProjector:
    """Projects batches handed over by a consumer, one at a time, never leaving a hole.

    Faust resumes from its group's committed offsets, which can be ahead of the store (a fresh
    store; a batch acked as Faust shut down before it was written). Whatever lies between the
    store's checkpoint and a batch is read straight from the log first, so the checkpoint only
    ever moves over records that were applied or dead-lettered.
    """

    def __init__(
        self, bootstrap: str, topic: str, store: ProjectionWriter,
        dead_letter: Callable[[DeadLetter], Awaitable[None]],
    ):
        self.bootstrap, self.topic, self.store = bootstrap, topic, store
        self.dead_letter = dead_letter
        self._one_at_a_time = asyncio.Lock()

    async def project(self, batch: list[LogRecord]) -> None:
        async with self._one_at_a_time:
            done = await asyncio.to_thread(self.store.checkpoint)
            holes: dict[int, tuple[int, int]] = {}
            for record in batch:
                if record.partition not in holes:
                    holes[record.partition] = (done.get(record.partition, -1) + 1, record.offset)
            holes = {p: hole for p, hole in holes.items() if hole[0] < hole[1]}
            if holes:
                await self._read_and_apply({p: a for p, (a, _) in holes.items()}, {p: b for p, (_, b) in holes.items()})
            await self._apply(batch)

    async def catch_up(self, until: dict[int, int]) -> None:
        """Apply everything from the checkpoint up to (not including) `until` per partition."""
        async with self._one_at_a_time:
            done = await asyncio.to_thread(self.store.checkpoint)
            await self._read_and_apply({p: done.get(p, -1) + 1 for p in until}, until)

    async def _read_and_apply(self, start: dict[int, int], end: dict[int, int]) -> None:
        async for chunk in read_log(self.bootstrap, self.topic, start=start, end=end):
            await self._apply(chunk)

    async def _apply(self, batch: list[LogRecord]) -> None:
        records, dead = decode_batch(batch)
        # Dead letters are acknowledged before the checkpoint moves past them: none is lost.
        for letter in dead:
            await self.dead_letter(letter)
        await asyncio.to_thread(apply_records, self.store, records)
