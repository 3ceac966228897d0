"""The key-store port: each user's subject and wrapped data key, and the digests of forgotten ids.

A user id has at most one subject: a random id that names the user in the logs (it is the Kafka
key of their events) and owns one data key, kept wrapped by the master key (`keys.keyring`): a
store never holds a data key in clear. Forgetting deletes the mapping and the key, so every event
sealed under it is unreadable from then on, and keeps a keyed digest of the user id (never the id)
so the id is not given a new key.

The key store is not derived from the log and never archived: losing it loses every review's
content (`harmony keys backup`). Adapters: `keys.sqlite_keys` (embedded default) and
`keys.cassandra_keys`; the composition root picks one.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple, Protocol


class SubjectRow(NamedTuple):
    user_id: str
    subject: str
    wrapped: bytes  # the data key sealed under the master key


class KeyRecords(Protocol):
    def claim(self, rows: list[SubjectRow]) -> dict[str, SubjectRow]:
        """Keep each row unless its user id has a subject already, and answer the row that holds
        each of these user ids now. Insert-if-absent: of claims of one user id made at once, in any
        processes, one is kept and all are answered it."""

    def by_user(self, user_ids: list[str]) -> dict[str, SubjectRow]:
        """The rows of these user ids, for those that have one."""

    def by_subject(self, subjects: list[str]) -> dict[str, SubjectRow]:
        """The rows of these subjects, for those that have one."""

    def delete(self, user_id: str) -> SubjectRow | None:
        """Delete the user id's row (its mapping and its key) and answer it; None if it had none.
        The deleted bytes are overwritten where the store can (SQLite: secure_delete, then the file rewritten)."""

    def add_forgotten(self, digests: list[bytes]) -> None:
        """Remember these digests of forgotten user ids (again is no change)."""

    def forgotten(self, digests: list[bytes]) -> set[bytes]:
        """Those of these digests that were added."""

    def setting(self, name: str) -> bytes | None: ...

    def put_setting(self, name: str, value: bytes, replace: bool = False) -> bytes:
        """Keep `value` under `name` unless one is kept already (or `replace`), and answer the
        value kept: of two processes setting one at once, both get the same."""

    def rewrap(self, rows: list[SubjectRow]) -> None:
        """Replace the wrapped keys of these rows' subjects (rows deleted meanwhile stay deleted)."""

    def rows(self, batch: int = 10_000) -> Iterator[list[SubjectRow]]:
        """Every row, in batches (for a backup, a rotation of the master key)."""

    def all_forgotten(self) -> list[bytes]: ...

    def close(self) -> None: ...
