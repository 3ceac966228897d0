"""Rebuild projections from the log (or the S3 archive) into a fresh store, then swap them in.

Under the store's maintenance lease, the fresh store (the live store's `scratch`) is folded up to
the live store's checkpoint, then once more up to where the projector has got meanwhile, and
swapped in. The projector never waits: whatever it applied after that last look (under a second
of the log on a busy store) it applies again from the swapped-in checkpoint. The API serves the
old views until the swap.
"""

from __future__ import annotations

import asyncio
from typing import Callable, Iterable

from events.reader import LogRecord, read_log
from events.sealing import Keys
from projections.maintenance import lease
from projections.projector import apply_records, decode_batch, read_ahead
from projections.store import ProjectionStore

Progress = Callable[[int], None]  # called with the number of records just read


async def fold_log(
    bootstrap: str, topic: str, store: ProjectionStore, keys: Keys | None,
    end: dict[int, int] | None = None, progress: Progress = lambda n: None,
) -> int:
    """Apply the log from the store's checkpoint up to `end` (default: the log end) to `store`.
    Dead letters and unreadable records are only skipped here; the live worker already sent and
    counted them. Answer the count read."""
    done = store.checkpoint()
    count = 0
    async for batch, decoded in read_ahead(
            read_log(bootstrap, topic, start={p: o + 1 for p, o in done.items()}, end=end), keys):
        await asyncio.to_thread(apply_records, store, decoded.records)
        count += len(batch)
        progress(len(batch))
    return count


def fold_batches(store: ProjectionStore, batches: Iterable[list[LogRecord]], end: dict[int, int],
                 keys: Keys | None, progress: Progress = lambda n: None) -> int:
    """Apply archived batches, keeping only records before `end` per partition."""
    count = 0
    for batch in batches:
        wanted = [r for r in batch if r.offset < end.get(r.partition, 0)]
        apply_records(store, decode_batch(wanted, keys).records)
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
    keys: Keys | None,
    archive: Iterable[list[LogRecord]] | None = None,
    progress: Progress = lambda n: None,
) -> dict:
    """Rebuild `views` of `live` from offset 0 (of the archive when given, else of the log)."""
    with lease(live, f"rebuild {'+'.join(views)}") as held:
        fresh = live.scratch("rebuild")
        try:
            target = ends_after(live.checkpoint())
            from_archive = fold_batches(fresh, archive, target, keys, progress) if archive is not None else 0
            from_log = await fold_log(bootstrap, topic, fresh, keys, target, progress)
            # The projector went on while the whole log was folded: catch up with where it is now,
            # which takes a moment, so the swap sets it back by at most that moment's events.
            from_log += await fold_log(bootstrap, topic, fresh, keys, ends_after(live.checkpoint()), progress)
            held.check()
            live.swap_in(fresh, views)
            return {"views": views, "from_archive": from_archive, "from_log": from_log,
                    "checkpoint": {str(p): o for p, o in sorted(fresh.checkpoint().items())}}
        finally:
            fresh.close()
