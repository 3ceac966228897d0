"""The accounts view: the accounts topic folded into the projection store, and how the API reads it.

The projection worker follows the topic from the store's accounts checkpoint (`follow_accounts`)
and writes each batch with its checkpoint; the first AccountOpened of a user id (the lowest log
position) holds it, and a later one (the loser of a race to open it) changes nothing. API
processes read the store (`StoredAccounts`): one starts in no time, whatever the number of accounts.
Each opening is kept with its id's `skeleton`, so a new id that looks like an account's is found.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import unicodedata
from typing import Awaitable, Callable, Protocol

from confusable_homoglyphs.confusables import confusables_data

from events.codec import DecodeError, decode_account
from events.follow import LogFollower
from events.position import Position
from events.reader import LogRecord
from events.sealing import Keys, Unreadable, record_subjects
from projections.store import AccountRow, AccountsView, ReadModels

log = logging.getLogger(__name__)

WAIT = 5.0  # seconds a caller waits for the view to read a record or catch up
POLL = 0.02  # seconds between looks at the view's checkpoint while waiting


@functools.cache
def _prototypes() -> dict[str, str]:
    """Unicode TR 39's confusables (confusables.txt, as confusable_homoglyphs keeps it): char ->
    the prototype it looks like. The package keeps each pair both ways; a prototype is the side
    with several look-alikes, or of several characters (a source is one). Of a pair of single
    characters alone either side will do, so the lower: the pair still maps to one string."""
    alike: dict[str, set[str]] = {}
    for char, homoglyphs in confusables_data.items():  # right-to-left ones come wrapped in LRMs
        alike.setdefault(char.strip("\u200e"), set()).update(h["c"].strip("\u200e") for h in homoglyphs)
    table = {}
    for char, (other, *more) in alike.items():
        if len(char) == 1 and not more and (len(other) > 1 or len(alike[other]) > 1 or other < char):
            table[char] = other
    # A prototype of several characters may hold the other side of such a pair: map it too.
    return {char: "".join(table.get(c, c) for c in prototype) for char, prototype in table.items()}


def _tr39(text: str) -> str:
    table = _prototypes()
    return unicodedata.normalize("NFD", "".join(table.get(c, c) for c in unicodedata.normalize("NFD", text)))


def skeleton(user_id: str) -> str:
    """What `user_id` looks like: TR 39's skeleton, case-folded too ("Ana", "ana" and "аnа" with
    Cyrillic a's look alike; case-folded after the skeleton as well, so "I" still looks like "l")."""
    return _tr39(_tr39(user_id).casefold())


def fold_accounts(records: list[LogRecord], keys: Keys | None) -> tuple[list[AccountRow], dict[int, int]]:
    """The openings these records hold, and the checkpoint (partition -> last offset) they reach.
    Synchronous: the keys of subjects not seen yet are read from the key store."""
    if keys is not None:
        keys.load(record_subjects(record.key for record in records))
    openings, checkpoint = [], {}
    for record in records:
        try:
            event, subject = decode_account(record.value or b"", keys)
        except Unreadable:
            pass  # a forgotten user's opening
        except DecodeError as error:  # skipped, never fatal: one bad record must not lock everyone out
            log.warning("skipped an account record", extra={"partition": record.partition,
                                                           "offset": record.offset, "reason": str(error)})
        else:
            openings.append(AccountRow(event.user_id, event.event_id, event.password_hash,
                                       record.partition, record.offset, skeleton(event.user_id), subject))
        checkpoint[record.partition] = max(record.offset, checkpoint.get(record.partition, -1))
    return openings, checkpoint


async def follow_accounts(bootstrap: str, topic: str, store: AccountsView, keys: Keys | None) -> None:
    """Apply the accounts topic to the store from its accounts checkpoint on, until cancelled."""

    def fold_and_put(records: list[LogRecord]) -> None:
        store.put_accounts(*fold_accounts(records, keys))

    async def apply(records: list[LogRecord]) -> None:
        await asyncio.to_thread(fold_and_put, records)

    done = await asyncio.to_thread(store.accounts_checkpoint)
    await LogFollower(bootstrap, topic, apply, {p: offset + 1 for p, offset in done.items()}).run()


class AccountsReads(AccountsView, ReadModels, Protocol):
    """The views opening an account looks at: the accounts, and the review history (an imported user)."""


class StoredAccounts:
    """The accounts view as an API process reads it (`commands.accounts.AccountBook`). `ends`
    answers the accounts topic's log end per partition now, for catching up."""

    def __init__(self, store: AccountsReads, ends: Callable[[], Awaitable[dict[int, int]]], wait: float = WAIT):
        self._store, self._ends, self._wait = store, ends, wait

    async def account(self, user_id: str) -> AccountRow | None:
        return await asyncio.to_thread(self._store.account, user_id)

    async def lookalikes(self, user_id: str) -> list[str]:
        return await asyncio.to_thread(self._store.accounts_with_skeleton, skeleton(user_id))

    async def has_reviews(self, user_id: str) -> bool:
        return bool(await asyncio.to_thread(self._store.user_history, user_id, 1, None, None))

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
        """Whether the view's checkpoint reaches `ends` (partition -> next offset) within the wait."""
        deadline = asyncio.get_running_loop().time() + self._wait
        while True:
            done = await asyncio.to_thread(self._store.accounts_checkpoint)
            if all(done.get(p, -1) + 1 >= end for p, end in ends.items()):
                return True
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(POLL)
