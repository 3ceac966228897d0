"""Moving a Faust consumer past records that were handled without it.

The worker and the archiver read a large backlog straight from the log (far faster than Faust's
per-event stream), then move Faust's consumer past it. Faust commits only the end of a gapless
run of acknowledged offsets above its committed offset, so after a plain seek it would never
commit again for that partition (the skipped offsets are never acknowledged) and its list of
acknowledged offsets would grow until a restart, which then delivers everything since the last
commit again. So a skip also commits the new position for the group, and raises Faust's own
committed mark first: acknowledgements of records fetched before the seek then fall below the
mark and are dropped, and a commit Faust makes meanwhile cannot move the group back.

This reaches into faust-streaming 0.15's consumer (`_committed_offset`, `_commit`, its commit
lock `_commit_fut`); the test of the worker's catch-up checks the committed offsets end to end.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Mapping

from faust.types import TP

log = logging.getLogger(__name__)


async def skip_to(app, positions: Mapping[TP, int]) -> None:
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
