"""The Faust glue shared by the projection worker and the archiver.

`faust_app` gives both the same settings: no Faust state, offsets committed often. `run_beside`
lets a timer start long work and still come round every interval.

`skip_to` moves a Faust consumer past records handled without it. The worker and the archiver
read a large backlog straight from the log (far faster than Faust's per-event stream), then move
Faust's consumer past it. Faust commits only the end of a gapless run of acknowledged offsets
above its committed offset, so after a plain seek it would never commit again for that partition
(the skipped offsets are never acknowledged) and its list of acknowledged offsets would grow until
a restart, which then delivers everything since the last commit again. So a skip also commits the
new position for the group, and raises Faust's own committed mark first: acknowledgements of
records fetched before the seek then fall below the mark and are dropped, and a commit Faust makes
meanwhile cannot move the group back.

This reaches into faust-streaming 0.15's consumer (`_committed_offset`, `_commit`, its commit
lock `_commit_fut`); the test of the worker's catch-up checks the committed offsets end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Coroutine, Mapping

import faust
from faust.types import TP

log = logging.getLogger(__name__)


def faust_app(group: str, bootstrap: str, datadir: Path, batch_size: int, buffered_batches: int) -> faust.App:
    return faust.App(
        group,  # the app id is the consumer group
        broker=f"kafka://{bootstrap}",
        # Exactly-once in effect comes from the stores' checkpoints (the projection store, S3), not
        # from Kafka transactions.
        processing_guarantee="at_least_once",
        broker_session_timeout=10,  # a dead member's partitions move on within seconds
        broker_heartbeat_interval=2,
        broker_commit_every=batch_size,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        store="memory://",  # no Faust tables: state lives in the projection store or in S3
        datadir=str(datadir),  # Faust writes a folder per app under it
        topic_disable_leader=True,  # no leader election is needed, so no internal topic to replicate
        web_enabled=False,
        autodiscover=False,
        stream_buffer_maxsize=buffered_batches * batch_size,
    )


@contextlib.asynccontextmanager
async def crash_on_failure(what: str):
    """Crash-only: on a failure exit at once, before Faust acks or commits anything more. A
    restarted process goes on from its own checkpoint (the store's, S3's), reading any skipped
    range from the log."""
    try:
        yield
    except Exception:
        log.critical(f"{what} failed; exiting", exc_info=True)
        os._exit(70)


def run_beside(tasks: set[asyncio.Task], coroutine: Coroutine) -> None:
    """Run `coroutine` as a task of its own, kept in `tasks` while it runs: how a Faust timer starts
    long work (reading the log, waiting out an outage) and still comes round every interval."""
    task = asyncio.create_task(coroutine)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def skip_to(app: faust.App, positions: Mapping[TP, int]) -> None:
    """Move Faust's consumer to `positions` (every record before them is handled) and commit them."""
    consumer = app.consumer
    # Only forward, and only for partitions still assigned to this member.
    assigned = consumer.assignment()
    positions = {tp: offset for tp, offset in positions.items()
                 if tp in assigned and offset > (consumer._committed_offset[tp] or 0)}
    if not positions:
        return
    # Hold Faust's commit lock: no commit of its own runs (or starts) until this one is done.
    await consumer.maybe_wait_for_commit_to_finish()
    done = consumer._commit_fut = asyncio.get_running_loop().create_future()
    try:
        consumer._committed_offset.update(positions)
        await consumer.seek_wait(positions)
        await consumer._commit(positions)
    except Exception as error:  # noqa: BLE001 - an optimisation: correctness rests on the stores' checkpoints
        log.warning("could not move Faust's consumer forward", extra={"error": repr(error)})
    finally:
        consumer._commit_fut = None
        done.set_result(None)
