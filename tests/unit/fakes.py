"""In-memory stand-ins for unit tests only; integration tests use the real broker."""

from __future__ import annotations

import io

from argon2 import PasswordHasher

from api.auth import Auth, openings_limit
from api.tokens import TokenSigner
from commands.accounts import Accounts, Passwords
from commands.forgetting import Forgetting
from events.codec import encode
from events.log import LogUnavailable
from events.position import Position
from events.reader import LogRecord
from events.types import Event
from projections.accounts import StoredAccounts, fold_accounts
from projections.store import ProjectionStore

ACCOUNTS = "accounts"  # the accounts topic of a MemoryLog
TOKEN_KEY = b"unit-tests-token-key-of-32-bytes!"


class MemoryLog:
    """An event log that keeps events in lists, one per partition, keyed like Kafka would be."""

    def __init__(self, partitions: int = 2):
        self.partitions: list[list[Event]] = [[] for _ in range(partitions)]
        self.topics: dict[str, list[Event]] = {}  # other topics, one partition each
        self.followers: dict[str, list] = {}  # topic -> functions fed every record appended to it
        self.connected = True
        self.down = False

    async def start(self) -> None:
        self.connected = True

    async def stop(self) -> None:
        self.connected = False

    async def ping(self) -> None:
        if self.down:
            raise LogUnavailable("broker unreachable")

    async def ends(self) -> dict[int, int]:
        if self.down:
            raise LogUnavailable("broker unreachable")
        return {partition: len(events) for partition, events in enumerate(self.partitions)}

    async def append(self, event: Event, topic: str | None = None) -> Position:
        if self.down:
            raise LogUnavailable("broker did not acknowledge")
        if topic is not None:
            records = self.topics.setdefault(topic, [])
            records.append(event)
            for follow in self.followers.get(topic, []):
                follow([LogRecord(0, len(records) - 1, event.key.encode(), encode(event))])
            return Position(0, len(records) - 1)
        partition = hash(event.key) % len(self.partitions)
        self.partitions[partition].append(event)
        return Position(partition, len(self.partitions[partition]) - 1)

    @property
    def events(self) -> list[Event]:
        return [e for p in self.partitions for e in p]


def memory_auth(log: MemoryLog, store: ProjectionStore, openings_per_hour: int = 50, hashes: int = 2,
                hasher: PasswordHasher | None = None, **options) -> Auth:
    """Accounts on the log's ACCOUNTS topic, projected into `store` as they are appended, a cheap
    password hasher (or `hasher`; `hashes` at once), tokens signed with TOKEN_KEY, and attempts
    counted in `store`."""

    async def ends() -> dict[int, int]:
        return {0: len(log.topics.get(ACCOUNTS, []))}

    # The projection worker's job, done as each opening is appended.
    log.followers.setdefault(ACCOUNTS, []).append(lambda records: store.put_accounts(*fold_accounts(records, None)))
    passwords = Passwords(hashes, hasher or cheap_hasher())
    view = StoredAccounts(store, ends, wait=0.3)
    return Auth(Accounts(log, ACCOUNTS, view, passwords), TokenSigner(TOKEN_KEY, 3600), store,
                openings_limit(openings_per_hour), **options)


def memory_forgetting(log: MemoryLog, store, keys_path) -> Forgetting:
    """Forgetting on the log, with a real keyring in a SQLite file at `keys_path`, and `store`'s factor rows."""
    from keys.keyring import Keyring
    from keys.sqlite_keys import SQLiteKeys

    return Forgetting(log, Keyring(SQLiteKeys(keys_path), bytes(32)), store)


def cheap_hasher() -> PasswordHasher:
    return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def bearer(user_id: str) -> dict[str, str]:
    """Headers that let a request act as `user_id` in an app with memory_auth."""
    return {"Authorization": f"Bearer {TokenSigner(TOKEN_KEY, 3600).issue(user_id)}"}


class MemoryBucket:
    """Just enough of a boto3 S3 client for publishing a model: objects in a dict."""

    def __init__(self):
        self.objects: dict[str, bytes] = {}

    def put_object(self, Bucket, Key, Body, **_):
        self.objects[f"{Bucket}/{Key}"] = bytes(Body)

    def get_object(self, Bucket, Key):
        return {"Body": io.BytesIO(self.objects[f"{Bucket}/{Key}"])}
