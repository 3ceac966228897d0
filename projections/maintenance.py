"""The store's maintenance lease: one rebuild or verification at a time per store.

A maintenance command folds into a scratch store and may swap views in; two at once would fold
over each other's scratch stores or swap in half-folded views. The lease lives in the store, so
it holds across processes and machines; its holder renews it while it works, and a holder that
died loses it when it expires.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from typing import Iterator

from events.errors import HarmonyError
from projections.store import Maintenance

log = logging.getLogger(__name__)

LEASE_SECONDS = 60.0  # how long a holder that stopped renewing keeps others out


class Lease:
    def __init__(self, store: Maintenance, holder: str):
        self.store, self.holder = store, holder
        self.lost: str | None = None  # who took it while its renewal was late

    def check(self) -> None:
        """Raise if the lease was lost: what comes next (a swap) must not happen."""
        if self.lost is not None:
            raise HarmonyError(f"lost the maintenance lease to {self.lost}; nothing was swapped in")


@contextlib.contextmanager
def lease(store: Maintenance, what: str) -> Iterator[Lease]:
    """Hold the maintenance lease while the block runs, or raise naming who holds it."""
    held = Lease(store, f"{what} (pid {os.getpid()} on {socket.gethostname()}, {uuid.uuid4().hex[:8]})")
    taken = store.take_lease(held.holder, LEASE_SECONDS)
    if taken is not None:
        holder, until = taken
        raise HarmonyError(f"the store is being maintained by {holder} until {until:%Y-%m-%d %H:%M:%S} UTC; "
                           "try again when it is done")
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(LEASE_SECONDS / 4):
            try:
                taken = store.take_lease(held.holder, LEASE_SECONDS)
            except Exception as error:  # the store away for a moment: the next renewal may reach it
                log.warning("could not renew the maintenance lease", extra={"error": str(error)})
                continue
            if taken is not None:
                held.lost = taken[0]
                return

    renewal = threading.Thread(target=renew, name="maintenance-lease", daemon=True)
    renewal.start()
    try:
        yield held
    finally:
        stop.set()
        renewal.join()
        store.release_lease(held.holder)
