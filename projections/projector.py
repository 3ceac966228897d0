"""Decode a batch of raw log records, dead-letter the bad ones, fold the rest into the store.

Independent of Faust so the worker, rebuilds and tests share it.
"""

from __future__ import annotations

from typing import NamedTuple

from events.codec import DecodeError, decode
from events.reader import LogRecord
from projections.fold import Record, fold
from projections.store import ProjectionStore


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


def apply_records(store: ProjectionStore, records: list[Record]) -> None:
    """Fold one batch and commit it with its checkpoint (nothing to write if all were seen)."""
    changes = fold(store, records)
    if changes.checkpoint:
        store.apply(changes)
