"""Fold the whole review log into a store: the reference a live projection must equal."""

from __future__ import annotations

from events.reader import read_log
from projections.projector import apply_records, decode_batch
from projections.store import ProjectionStore


async def fold_log(bootstrap: str, topic: str, store: ProjectionStore) -> int:
    """Apply every record of the log to `store` (dead letters are only skipped); answer the count read."""
    count = 0
    async for batch in read_log(bootstrap, topic):
        records, _ = decode_batch(batch)
        apply_records(store, records)
        count += len(batch)
    return count
