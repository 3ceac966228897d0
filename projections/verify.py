"""Checks that the archive holds exactly the log, and that a projection equals a fold of the log."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Iterable

from events.codec import DecodeError, decode
from events.reader import LogRecord, read_log
from events.sealing import Keys, Unreadable, record_subjects
from events.types import MovieCatalogued, ReviewEvent
from projections.maintenance import lease
from projections.rebuild import ends_after, fold_log
from projections.store import ProjectionStore

Fingerprints = dict[int, list[tuple[int, str]]]  # partition -> [(offset, digest of the value)]


def _fingerprint(into: Fingerprints, batch: list[LogRecord]) -> None:
    for record in batch:
        digest = hashlib.blake2b(record.value or b"", digest_size=12).hexdigest()
        into.setdefault(record.partition, []).append((record.offset, digest))


def first_difference(log: Fingerprints, archive: Fingerprints) -> str | None:
    """Name the first record where the archive and the log disagree, per partition in order."""
    for partition in sorted(set(log) | set(archive)):
        theirs, ours = log.get(partition, []), archive.get(partition, [])
        for index, (want, got) in enumerate(zip(theirs, ours)):
            if want != got:
                what = "different bytes" if want[0] == got[0] else f"offset {got[0]} where the log has {want[0]}"
                return f"partition {partition}, record {index}: archive has {what}"
        if len(theirs) > len(ours):
            return (f"partition {partition}: the archive ends before offset {theirs[len(ours)][0]}, the log at "
                    f"{theirs[-1][0]} ({len(theirs) - len(ours)} records not archived; is `harmony archiver` running?)")
        if len(ours) > len(theirs):
            return f"partition {partition}: the archive has {len(ours) - len(theirs)} records the log does not"
    return None


async def verify_archive(bootstrap: str, topic: str, archive: Iterable[list[LogRecord]],
                         end: dict[int, int] | None = None) -> dict:
    """Compare the archive with the log up to `end` (default: the log end now)."""
    log: Fingerprints = {}
    async for batch in read_log(bootstrap, topic, end=end):
        _fingerprint(log, batch)
    ends = end or {p: (records[-1][0] + 1 if records else 0) for p, records in log.items()}
    archived: Fingerprints = {}
    for batch in archive:
        _fingerprint(archived, [r for r in batch if r.offset < ends.get(r.partition, 0)])
    return {
        "records": sum(map(len, log.values())),
        "archived": sum(map(len, archived.values())),
        "difference": first_difference(log, archived),
    }


def first_view_difference(live: dict[str, list[tuple]], folded: dict[str, list[tuple]]) -> str | None:
    for view in folded:
        for index, (got, want) in enumerate(zip(live[view], folded[view])):
            if got != want:
                return f"{view} row {index}: store has {got!r}, a fold of the log gives {want!r}"
        if len(live[view]) != len(folded[view]):
            return f"{view}: store has {len(live[view])} rows, a fold of the log gives {len(folded[view])}"
    return None


async def changed_after(bootstrap: str, topic: str, checkpoint: dict[int, int],
                        keys: Keys | None) -> tuple[set, set]:
    """The review keys and movie ids that events after `checkpoint` (up to the log end) change."""
    reviews, movies = set(), set()
    async for batch in read_log(bootstrap, topic, start=ends_after(checkpoint)):
        if keys is not None:
            await asyncio.to_thread(keys.load, record_subjects(r.key for r in batch))
        for record in batch:
            try:
                event = decode(record.value or b"", keys)
            except (DecodeError, Unreadable):
                continue
            if isinstance(event, ReviewEvent):
                reviews.add((event.user_id, event.movie_id))
            elif isinstance(event, MovieCatalogued):
                movies.add(event.movie_id)
    return reviews, movies


def at_checkpoint(contents: dict[str, list[tuple]], checkpoint: dict[int, int], reviews: set, movies: set) -> dict:
    """The rows a store's contents must hold at `checkpoint`, leaving out what changed after it."""
    return {
        "reviews": [row for row in contents["reviews"] if (row[0], row[1]) not in reviews],
        "movies": [row for row in contents["movies"] if row[0] not in movies],
        "history": [row for row in contents["history"] if row[6] <= checkpoint.get(row[5], -1)],
        "checkpoints": contents["checkpoints"],
    }


async def verify_projection(bootstrap: str, topic: str, live: ProjectionStore, keys: Keys | None) -> dict:
    """Fold the log up to the store's checkpoint into a scratch store and compare every view, at that
    checkpoint: a store read while the projector writes (Cassandra has no snapshot) may already hold
    later changes, so rows that events after it change are left out of the comparison."""
    with lease(live, "verify"):
        snapshot = live.contents()
        checkpoint = dict(snapshot["checkpoints"])
        folded_store = live.scratch("verify")
        try:
            await fold_log(bootstrap, topic, folded_store, keys, ends_after(checkpoint))
            folded = folded_store.contents()
        finally:
            folded_store.close()
    reviews, movies = await changed_after(bootstrap, topic, checkpoint, keys)
    return {"applied": sum(ends_after(checkpoint).values()),
            "difference": first_view_difference(at_checkpoint(snapshot, checkpoint, reviews, movies),
                                                at_checkpoint(folded, checkpoint, reviews, movies))}
