"""Accounts: opening one (an event on the accounts topic) and checking a user's password.

Who holds a user id is decided by the accounts topic's order: the first AccountOpened for an id
holds it. Opening therefore appends, waits until the account book (the view of that topic in the
projection store) has read its own event, and then looks whose event holds the id: a concurrent
opening that came first wins and this one is told the id is taken, in every API process alike.
A new id must follow the rule for new ids (commands/user_ids.py) and look like no account's id;
an id with reviews but no account (an imported user) is opened only by an operator.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Protocol

import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from commands.handlers import utcnow
from commands.types import CommandUserId
from commands.user_ids import check_new_user_id
from events.errors import HarmonyError
from events.position import Position
from events.types import AccountOpened, Event, UserId

MAX_PASSWORD = 1024  # characters: enough for any passphrase, bounded work for the hasher
Password = Annotated[str, msgspec.Meta(min_length=8, max_length=MAX_PASSWORD,
                                       description=f"8 to {MAX_PASSWORD} characters")]


class OpenAccount(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Open an account for a user id no one holds yet."""

    user_id: CommandUserId
    password: Password


class Credentials(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A user id and its password, to get an access token."""

    user_id: UserId
    password: Annotated[str, msgspec.Meta(max_length=MAX_PASSWORD)]


class AccountOpenedView(msgspec.Struct, frozen=True):
    """What opening an account answers."""

    user_id: str


class Account(Protocol):
    event_id: str  # of the AccountOpened that holds the id
    password_hash: str


class AccountBook(Protocol):
    """The accounts as the topic holds them, as far as the view has read it (projections/accounts.py)."""

    async def account(self, user_id: str) -> Account | None: ...

    async def lookalikes(self, user_id: str) -> list[str]:
        """The user ids of the accounts whose id looks like `user_id` (the same confusable skeleton)."""

    async def has_reviews(self, user_id: str) -> bool:
        """Whether the user has any review event (an imported user has, with no account)."""

    async def wait_for(self, position: Position) -> bool:
        """Wait until the book has read the record at `position`; False if that took too long."""

    async def catch_up(self) -> bool:
        """Wait until the book has read every record written so far; False if it could not."""


class AccountAppender(Protocol):
    async def append(self, event: Event, topic: str | None = None) -> Position: ...


class AccountTaken(HarmonyError):
    """Someone holds that user id already."""


class AccountsBehind(HarmonyError):
    """The account book could not confirm an outcome in time: try again."""


class PasswordsBusy(HarmonyError):
    """Every password hashing slot is taken and enough requests wait for one: try again in a moment."""


QUEUED_PER_SLOT = 4  # requests that may wait for a hashing slot, per slot: about a second's wait at most


class Passwords:
    """argon2id (argon2-cffi's defaults, RFC 9106's second recommended option: 64 MiB, 3 passes,
    4 lanes; about 0.25 s on one core here), computed in threads, at most `slots` at once: a flood
    of sign-ups or sign-ins waits briefly or is refused (PasswordsBusy) instead of taking every
    core and 64 MiB a request."""

    def __init__(self, slots: int, hasher: PasswordHasher | None = None):
        self._hasher = hasher or PasswordHasher()
        # Checked when no account exists, so a missing user id costs the time a wrong password does.
        self._decoy = self._hasher.hash(uuid.uuid4().hex)
        self._slots = asyncio.Semaphore(slots)
        self._queue, self._queued = slots * QUEUED_PER_SLOT, 0

    async def hash(self, password: str) -> str:
        return await self._in_a_slot(self._hasher.hash, password)

    async def matches(self, password_hash: str | None, password: str) -> bool:
        return await self._in_a_slot(self._matches, password_hash, password)

    def _matches(self, password_hash: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash or self._decoy, password) and password_hash is not None
        except (VerificationError, InvalidHashError):
            return False

    async def _in_a_slot(self, work, *args):
        if self._queued >= self._queue:
            raise PasswordsBusy("too many passwords are being checked just now")
        self._queued += 1
        try:
            await self._slots.acquire()
        finally:
            self._queued -= 1
        hashing = asyncio.ensure_future(asyncio.to_thread(work, *args))
        # The slot is free when the thread is, even if the request was cancelled meanwhile.
        hashing.add_done_callback(lambda _: self._slots.release())
        return await asyncio.shield(hashing)


class Accounts:
    def __init__(self, log: AccountAppender, topic: str, book: AccountBook, passwords: Passwords, clock=utcnow):
        self._log, self._topic, self._book, self._passwords, self._clock = log, topic, book, passwords, clock

    async def open(self, command: OpenAccount, by_operator: bool = False) -> Account:
        """Append the opening and answer the account it made, or raise InvalidUserId, AccountTaken
        (also when a concurrent opening of the id came first, when the id looks like an account's,
        and, unless `by_operator`, when the id has reviews already) or AccountsBehind.
        Two openings at once of ids that look alike (not the same) both stand: the look-alike
        check reads the view before appending, and the log keeps both."""
        user_id = command.user_id
        check_new_user_id(user_id)
        if not await self._book.catch_up():
            raise AccountsBehind("the accounts could not be read just now")
        if await self._book.account(user_id) is not None:
            raise AccountTaken(f"user id {user_id!r} already has an account")
        if alike := await self._book.lookalikes(user_id):
            raise AccountTaken(f"user id {user_id!r} looks like {alike[0]!r}, which has an account: choose another")
        if not by_operator and await self._book.has_reviews(user_id):
            raise AccountTaken(f"user id {user_id!r} has reviews from before accounts (an imported user): "
                               "only an operator can open its account (harmony accounts add)")
        now = self._clock()
        event = AccountOpened(event_id=str(uuid.uuid4()), occurred_at=now, recorded_at=now, user_id=command.user_id,
                              password_hash=await self._passwords.hash(command.password))
        position = await self._log.append(event, topic=self._topic)
        if not await self._book.wait_for(position):
            raise AccountsBehind("the account was sent but could not be confirmed in time: "
                                 "sign in to see whether it was opened")
        holder = await self._book.account(command.user_id)
        if holder is None or holder.event_id != event.event_id:
            raise AccountTaken(f"user id {command.user_id!r} already has an account")
        return holder

    async def check(self, credentials: Credentials) -> bool:
        """Whether the password is the account's (False for a user id with no account). Raises
        AccountsBehind when the book has no account for the id and cannot catch up with the log:
        it may have been opened (moments ago, or before a restart), so "wrong password" could be wrong."""
        account = await self._book.account(credentials.user_id)
        if account is None:  # opened moments ago, maybe via another process, or not yet read
            if not await self._book.catch_up():
                raise AccountsBehind("the accounts are not all read yet")
            account = await self._book.account(credentials.user_id)
        password_hash = account.password_hash if account is not None else None
        return await self._passwords.matches(password_hash, credentials.password)
