"""Deleting personal data from a SQLite file for good: the projection store's and the key store's."""

from __future__ import annotations

import logging
import sqlite3
import time

log = logging.getLogger(__name__)


def scrub(db: sqlite3.Connection) -> None:
    """Leave no byte of deleted rows in the file or its WAL. secure_delete zeroes a deleted row where
    it lies, but a page split or merge before can have left copies of it in a page's unused space
    (tests/unit/test_sqlite_store.py and test_keys.py find some); only VACUUM rewrites every page.
    It costs a copy of the whole file (2.1 s for a 179 MiB store of 200,000 reviews), so it runs
    after deleting personal data only. Then the WAL, which held the old pages, is emptied (a reader
    holding an older snapshot can keep it a moment: tried a few times)."""
    try:
        db.execute("VACUUM")
    except sqlite3.OperationalError as error:  # another writer held the file past the busy timeout
        log.warning("the file could not be rewritten after deleting personal data: copies of deleted rows "
                    "may stay until the next deletion's rewrite", extra={"error": str(error)})
    for _ in range(20):
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if not busy:
            return
        time.sleep(0.05)
    log.warning("the WAL could not be emptied after deleting personal data: it is at the next checkpoint")
