"""Decode a batch of raw log records, dead-letter the bad ones, fold the rest into the store.

Independent of Faust so the worker, rebuilds and tests share it. The store is synchronous (and
may be a network away): the projector calls it from a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import AsyncIterator, Awaitable, Callable, NamedTuple

from events.codec import DecodeError, decode_sealed
from events.reader import LogRecord, read_log
from events.sealing import Keys, Unreadable, record_subjects
from events.types import SubjectForgotten
from projections.fold import LogGap, Record, after_checkpoint, fold
from projections.store import ProjectionWriter


class DeadLetter(NamedTuple):
    record: LogRecord
    reason: str


class Decoded(NamedTuple):
    records: list[Record]
    dead: list[DeadLetter]
    unreadable: int  # sealed records whose key is gone: skipped like dead letters, not sent anywhere


def _never() -> bool:  # the default of a catch-up's `stop`: read to the end
    return False


# Records read and decoded ahead of the store at most (about 400 bytes each in memory as read).
READ_AHEAD = 40_000


def decode_batch(raw: list[LogRecord], keys: Keys | None) -> Decoded:
    """Open and decode records in log order (synchronous: the keys of subjects not seen yet are read
    from the key store, so async code calls it in a worker thread). A forgetting seen here makes
    its subject's later records unreadable at once, before any store has applied it."""
    if keys is not None:
        keys.load(record_subjects(item.key for item in raw))
    records: list[Record] = []
    dead: list[DeadLetter] = []
    unreadable = 0
    for item in raw:
        try:
            if item.value is None:
                raise DecodeError("record has no value")
            event, subject = decode_sealed(item.value, keys)
        except DecodeError as error:
            dead.append(DeadLetter(item, str(error)))
            records.append(Record(item.partition, item.offset, None))
        except Unreadable:
            unreadable += 1
            records.append(Record(item.partition, item.offset, None))
        else:
            if type(event) is SubjectForgotten and keys is not None:
                keys.drop(event.subject)
            records.append(Record(item.partition, item.offset, event, subject))
    return Decoded(records, dead, unreadable)


async def read_ahead(
    chunks: AsyncIterator[list[LogRecord]], keys: Keys | None, most: int = READ_AHEAD,
) -> AsyncIterator[tuple[list[LogRecord], Decoded]]:
    """Each chunk with its decoding; the next ones are read and decoded while the caller works on
    the last (a store writes outside the GIL, in a worker thread). Chunks that arrived meanwhile are
    handed over as one until it holds `most` records: the slower the store, the bigger its commits,
    and a commit's cost is mostly the pages it touches, not its records (SQLite: 31 µs an event in
    batches of 5,000, 18 in batches of 40,000)."""
    queue: asyncio.Queue = asyncio.Queue(maxsize=4)

    async def fill() -> None:
        try:
            async for chunk in chunks:
                await queue.put((chunk, await asyncio.to_thread(decode_batch, chunk, keys)))
        except Exception:
            await queue.put(None)  # the consuming side stops at it, then meets the error
            raise
        await queue.put(None)

    filling = asyncio.create_task(fill())
    try:
        item = await queue.get()
        while item is not None:
            chunk, decoded = item
            item = queue.get_nowait() if not queue.empty() else False
            while item and len(chunk) < most:
                more, also = item
                chunk = chunk + more
                decoded = Decoded(decoded.records + also.records, decoded.dead + also.dead,
                                  decoded.unreadable + also.unreadable)
                item = queue.get_nowait() if not queue.empty() else False
            yield chunk, decoded
            if item is False:
                item = await queue.get()
        await filling
    finally:
        filling.cancel()


def commit(store: ProjectionWriter, records: list[Record]) -> bool:
    """Fold one batch and commit it with its checkpoint; False when the store refused it (the
    checkpoint moved meanwhile: a rebalance overlap, a rebuild's swap)."""
    changes = fold(store, records)
    return not changes.checkpoint or store.apply(changes)


def apply_records(store: ProjectionWriter, records: list[Record]) -> None:
    """Fold one batch and commit it, folding again while the store refuses it (a store no other
    process moves back: a scratch store, a test's)."""
    while not commit(store, records):
        pass


class LogProjector:
    """Projects batches handed over by a consumer, one at a time, never leaving a hole.

    Faust resumes from its group's committed offsets, which can be ahead of the store (a fresh
    store; a batch acked as Faust shut down before it was written; a rebuild's swap moved the
    checkpoint back). Whatever lies between the store's checkpoint and a batch is read straight
    from the log first, so the checkpoint only ever moves over records that were applied or
    dead-lettered; a hole the log itself has stops the projector (`LogGap`).
    """

    def __init__(
        self, bootstrap: str, topic: str, store: ProjectionWriter,
        dead_letter: Callable[[DeadLetter], Awaitable[None]], keys: Keys | None,
    ):
        self.bootstrap, self.topic, self.store = bootstrap, topic, store
        self.dead_letter = dead_letter
        self.keys = keys
        self.refused: dict[int, int] = {}  # partition -> commits the store refused
        self.unreadable = 0  # records skipped because their key is gone (forgotten users)
        self._one_at_a_time = asyncio.Lock()

    async def project(self, batch: list[LogRecord]) -> None:
        async with self._one_at_a_time:
            await self._apply(batch)

    async def catch_up(self, until: dict[int, int], stop: Callable[[], bool] = _never) -> bool:
        """Apply everything from the checkpoint up to (not including) `until` per partition: True once
        done, False when `stop()` turned true first (asked after each chunk read: a consumer group's
        rebalance waits for the catch-up of the member that had every partition)."""
        async with self._one_at_a_time:
            done = await asyncio.to_thread(self.store.checkpoint)
            return await self._read_and_apply({p: done.get(p, -1) + 1 for p in until}, until, stop)

    async def _read_and_apply(self, start: dict[int, int], end: dict[int, int],
                              stop: Callable[[], bool] = _never) -> bool:
        """Apply the log from `start` to `end`, which must hold every offset in between; False when
        `stop()` ended it first."""
        read = {p: o - 1 for p, o in start.items()}
        stopped = False

        async def checked():
            nonlocal stopped
            async with aclosing(read_log(self.bootstrap, self.topic, start=start, end=end)) as chunks:
                async for chunk in chunks:
                    after_checkpoint(read, chunk)  # the log's own holes
                    read.update((r.partition, r.offset) for r in chunk)
                    yield chunk
                    if stop():
                        stopped = True
                        return

        async for chunk, decoded in read_ahead(checked(), self.keys):
            await self._apply(chunk, decoded)
        if stopped:
            return False
        for partition, offset in end.items():
            if read.get(partition, -1) < offset - 1:
                raise LogGap(partition, read.get(partition, -1), offset)
        return True

    async def _apply(self, batch: list[LogRecord], decoded: Decoded | None = None) -> None:
        """Apply a batch (`decoded` already, or not) on the store's checkpoint. It may start after
        the checkpoint (the hole is read from the log first) or jump inside (the part after the
        jump goes on its own, so its hole is read from the log: one the log has too stops the
        projector)."""
        while True:
            done = await asyncio.to_thread(self.store.checkpoint)
            try:
                after_checkpoint(done, batch)
            except LogGap as gap:
                if gap.after == done.get(gap.partition, -1):
                    await self._read_and_apply({gap.partition: gap.after + 1}, {gap.partition: gap.got})
                else:
                    cut = next(i for i, r in enumerate(batch) if r.partition == gap.partition and r.offset == gap.got)
                    await self._apply(batch[:cut])
                    batch, decoded = batch[cut:], None
                continue
            # Only what the store has not applied is decoded (or dead-lettered): a replay sends no
            # dead letter again.
            # Decoded again on each try when not given: the checkpoint may have moved back meanwhile.
            fresh = decoded or await asyncio.to_thread(
                decode_batch, [r for r in batch if r.offset > done.get(r.partition, -1)], self.keys)
            records = [r for r in fresh.records if r.offset > done.get(r.partition, -1)]
            dead = [d for d in fresh.dead if d.record.offset > done.get(d.record.partition, -1)]
            if not records:
                return
            # Dead letters are acknowledged before the checkpoint moves past them: none is lost.
            for letter in dead:
                await self.dead_letter(letter)
            try:
                if await asyncio.to_thread(commit, self.store, records):
                    self.unreadable += fresh.unreadable
                    return
            except LogGap:  # the checkpoint moved back between the two reads (a swap): read the hole
                continue
            for partition in {r.partition for r in records}:
                self.refused[partition] = self.refused.get(partition, 0) + 1
