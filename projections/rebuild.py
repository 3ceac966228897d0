"""Rebuild projections from the log (or the S3 archive) into a fresh store, then swap them in.

The fresh store (the live store's `scratch`) is folded up to the live store's checkpoint and
swapped in at once if the live checkpoint has not moved meanwhile (`swap_in` is a
compare-and-set); if it has, the fresh store catches up and tries again. The API serves the old
views until then, and the projector never waits.
"""

from __future__ import annotations

from typing import Callable, Iterable

from events.errors import HarmonyError
from events.reader import LogRecord, read_log
from projections.projector import apply_records, decode_batch
from projections.store import ProjectionStore

SWAP_ATTEMPTS = 100
Progress = Callable[[int], None]  # called with the number of records just read


async def fold_log(
    bootstrap: str, topic: str, store: ProjectionStore,
    end: dict[int, int] | None = None, progress: Progress = lambda n: None,
) -> int:
    """Apply the log from the store's checkpoint up to `end` (default: the log end) to `store`.
    Dead letters are only skipped here; the live worker already sent them. Answer the count read."""
    done = store.checkpoint()
    count = 0
    async for batch in read_log(bootstrap, topic, start={p: o + 1 for p, o in done.items()}, end=end):
        records, _ = decode_batch(batch)
        apply_records(store, records)
        count += len(batch)
        progress(len(batch))
    return count


def fold_batches(store: ProjectionStore, batches: Iterable[list[LogRecord]], end: dict[int, int],
                 progress: Progress = lambda n: None) -> int:
    """Apply archived batches, keeping only records before `end` per partition."""
    count = 0
    for batch in batches:
        wanted = [r for r in batch if r.offset < end.get(r.partition, 0)]
        records, _ = decode_batch(wanted)
        apply_records(store, records)
        count += len(wanted)
        progress(len(batch))
    return count


def ends_after(checkpoint: dict[int, int]) -> dict[int, int]:
    return {partition: offset + 1 for partition, offset in checkpoint.items()}


async def rebuild(
    live: ProjectionStore,
    bootstrap: str,
    topic: str,
    views: list[str],
    archive: Iterable[list[LogRecord]] | None = None,
    progress: Progress = lambda n: None,
) -> dict:
    """Rebuild `views` of `live` from offset 0 (of the archive when given, else of the log)."""
    fresh = live.scratch("rebuild")
    try:
        target = live.checkpoint()
        from_archive = fold_batches(fresh, archive, ends_after(target), progress) if archive is not None else 0
        from_log = 0
        for _ in range(SWAP_ATTEMPTS):
            from_log += await fold_log(bootstrap, topic, fresh, ends_after(target), progress)
            if live.swap_in(fresh, views, target):
                break
            target = live.checkpoint()  # the projector moved on meanwhile: catch up, try again
        else:
            raise HarmonyError(f"the projector kept moving: no swap in {SWAP_ATTEMPTS} attempts; try again")
        return {"views": views, "from_archive": from_archive, "from_log": from_log,
                "checkpoint": {str(p): o for p, o in sorted(fresh.checkpoint().items())}}
    finally:
        fresh.close()

