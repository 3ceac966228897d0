"""The accounts view: the accounts topic folded in memory, in each API process.

Small (one record per account) and read on every sign-in, so it lives in memory rather than in
the projection store; a process reads the topic from its start when it begins, then follows it.
The first AccountOpened of a user id holds it; a later one for the same id (the loser of a race
to open it) changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, NamedTuple

from events.codec import DecodeError, decode_account
from events.position import Position
from events.reader import LogRecord

log = logging.getLogger(__name__)

WAIT = 5.0  # seconds a caller waits for the view to read a record or catch up


class Account(NamedTuple):
    user_id: str
    event_id: str
    password_hash: str
    position: Position


class AccountsView:
    """`ends` answers the log end per partition now (the follower's), for catching up."""

    def __init__(self, ends: Callable[[], Awaitable[dict[int, int]]], wait: float = WAIT):
        self._ends, self._wait = ends, wait
        self._accounts: dict[str, Account] = {}
        self._read: dict[int, int] = {}  # partition -> the next offset to read
        self._moved = asyncio.Event()

    def apply(self, records: list[LogRecord]) -> None:
        for record in records:
            try:
                event = decode_account(record.value or b"")
            except DecodeError as error:  # skipped, never fatal: one bad record must not lock everyone out
                log.warning("skipped an account record", extra={"partition": record.partition,
                                                               "offset": record.offset, "reason": str(error)})
            else:
                self._accounts.setdefault(event.user_id, Account(
                    event.user_id, event.event_id, event.password_hash, Position(record.partition, record.offset)))
            self._read[record.partition] = record.offset + 1
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    def account(self, user_id: str) -> Account | None:
        return self._accounts.get(user_id)

    async def wait_for(self, position: Position) -> bool:
        return await self._until({position.partition: position.offset + 1})

    async def catch_up(self) -> bool:
        try:
            async with asyncio.timeout(self._wait):
                ends = await self._ends()
        except Exception as error:  # noqa: BLE001 - any failure to learn the end: not caught up
            log.warning("could not read the accounts' log end", extra={"error": repr(error)})
            return False
        return await self._until(ends)

    async def _until(self, ends: dict[int, int]) -> bool:
        try:
            async with asyncio.timeout(self._wait):
                while any(self._read.get(p, 0) < end for p, end in ends.items()):
                    await self._moved.wait()
        except TimeoutError:
            return False
        return True
