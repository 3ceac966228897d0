"""The key store on Apache Cassandra (`KeyRecords`), in a keyspace of its own, `<keyspace>_keys`:
nothing in it can be derived from the log, so nothing done to the projection keyspace (a rebuild,
dropping it) may touch it.

`subjects_by_user` is the truth: its rows are only ever written through lightweight transactions
(insert-if-absent, update-if-same-subject, delete-if-same-subject), so concurrent claims of one
user id keep one row and a re-wrap never brings a deleted row back. (Mixing plain writes in would
order them by client clocks against Paxos's.) `subject_users` finds a subject's user id; it is
written before the claim, so a kept subject is always found, and a lost claim's row is deleted
after. By-subject reads answer only rows that `subjects_by_user` still holds.
"""

from __future__ import annotations

from typing import Iterator

from cassandra import ConsistencyLevel
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.query import tuple_factory

from keys.records import SubjectRow
from projections.cassandra_store import (
    CONCURRENCY, CassandraConfig, CassandraStore, RetryIdempotentWrites, _cas_unknown, create_keyspace,
    create_tables,
)

TABLES = """
CREATE TABLE IF NOT EXISTS subjects_by_user (user_id text PRIMARY KEY, subject text, wrapped blob);
CREATE TABLE IF NOT EXISTS subject_users (subject text PRIMARY KEY, user_id text);
CREATE TABLE IF NOT EXISTS forgotten (digest blob PRIMARY KEY);
CREATE TABLE IF NOT EXISTS settings (name text PRIMARY KEY, value blob);
"""
CAS_TRIES = 5  # runs of a write whose outcome stays unknown (a timeout, contention) before giving up


def _held(result) -> dict:
    """The columns a refused compare-and-set answers: the row as it is."""
    return dict(zip(result.column_names, result.one()))


class CassandraKeys:
    def __init__(self, config: CassandraConfig):
        self.config = config
        self.keyspace = f"{config.keyspace}_keys"
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
            consistency_level=ConsistencyLevel.name_to_value[config.consistency],
            serial_consistency_level=ConsistencyLevel.LOCAL_SERIAL,
            retry_policy=RetryIdempotentWrites(),  # plain writes here are idempotent too
            request_timeout=10.0,
            row_factory=tuple_factory,
        )
        self._cluster = Cluster(list(config.contact_points), port=config.port, protocol_version=5,
                                execution_profiles={EXEC_PROFILE_DEFAULT: profile},
                                connect_timeout=config.connect_timeout,
                                control_connection_timeout=config.connect_timeout)
        self._session = CassandraStore._connect(self)  # the store's: an unreachable cluster is one line
        create_keyspace(self._session, self.keyspace, config.replication_factor)
        create_tables(self._session, self.keyspace, TABLES)
        self._prepared: dict[str, object] = {}

    def _statement(self, cql: str):
        text = cql.format(ks=self.keyspace)
        statement = self._prepared.get(text)
        if statement is None:
            statement = self._prepared[text] = self._session.prepare(text)
        return statement

    def _all(self, cql: str, args: list[tuple]) -> list:
        """Each result of `cql` run once per args, in order. A write whose outcome is unknown (a timeout,
        a contended compare-and-set) is run again: every write here ends the same run once or more."""
        results = [None] * len(args)
        todo = list(range(len(args)))
        for attempt in range(CAS_TRIES):
            answers = execute_concurrent_with_args(self._session, self._statement(cql), [args[i] for i in todo],
                                                   concurrency=CONCURRENCY, raise_on_first_error=False,
                                                   results_generator=False)
            again = []
            for i, (ok, result) in zip(todo, answers):
                if ok:
                    results[i] = result
                elif _cas_unknown(result) and attempt + 1 < CAS_TRIES:
                    again.append(i)
                else:
                    raise result
            if not again:
                break
            todo = again
        return results

    def _rows(self, cql: str, keys: list) -> list[tuple]:
        return [row for result in self._all(cql, [(key,) for key in dict.fromkeys(keys)]) for row in result]

    def claim(self, rows: list[SubjectRow]) -> dict[str, SubjectRow]:
        self._all("INSERT INTO {ks}.subject_users (subject, user_id) VALUES (?, ?)",
                  [(row.subject, row.user_id) for row in rows])
        results = self._all("INSERT INTO {ks}.subjects_by_user (user_id, subject, wrapped) VALUES (?, ?, ?) "
                            "IF NOT EXISTS", rows)
        held = {}
        for row, result in zip(rows, results):
            if result.was_applied:
                held[row.user_id] = row
            else:  # the refused insert answers the row that holds the user id
                found = _held(result)
                held[row.user_id] = SubjectRow(found["user_id"], found["subject"], found["wrapped"])
        # Compared by subject, not by `was_applied`: an insert asked again may answer its own row.
        self._all("DELETE FROM {ks}.subject_users WHERE subject = ?",
                  [(row.subject,) for row in rows if held[row.user_id].subject != row.subject])
        return held

    def by_user(self, user_ids: list[str]) -> dict[str, SubjectRow]:
        rows = self._rows("SELECT user_id, subject, wrapped FROM {ks}.subjects_by_user WHERE user_id = ?", user_ids)
        return {row[0]: SubjectRow(*row) for row in rows}

    def by_subject(self, subjects: list[str]) -> dict[str, SubjectRow]:
        users = self._rows("SELECT user_id FROM {ks}.subject_users WHERE subject = ?", subjects)
        wanted = set(subjects)
        return {row.subject: row for row in self.by_user([user for (user,) in users]).values()
                if row.subject in wanted}

    def delete(self, user_id: str) -> SubjectRow | None:
        row = self.by_user([user_id]).get(user_id)
        if row is None:
            return None
        # IF subject = ?: refused only if the row read is gone meanwhile, or a newer one took its place
        self._all("DELETE FROM {ks}.subjects_by_user WHERE user_id = ? IF subject = ?", [(user_id, row.subject)])
        self._all("DELETE FROM {ks}.subject_users WHERE subject = ?", [(row.subject,)])
        return row

    def add_forgotten(self, digests: list[bytes]) -> None:
        self._all("INSERT INTO {ks}.forgotten (digest) VALUES (?)", [(digest,) for digest in digests])

    def forgotten(self, digests: list[bytes]) -> set[bytes]:
        return {digest for (digest,) in self._rows("SELECT digest FROM {ks}.forgotten WHERE digest = ?", digests)}

    def all_forgotten(self) -> list[bytes]:
        return sorted(digest for (digest,) in self._session.execute(f"SELECT digest FROM {self.keyspace}.forgotten"))

    def setting(self, name: str) -> bytes | None:
        row = self._session.execute(self._statement("SELECT value FROM {ks}.settings WHERE name = ?"), (name,)).one()
        return row[0] if row else None

    def put_setting(self, name: str, value: bytes, replace: bool = False) -> bytes:
        if not replace:
            [result] = self._all("INSERT INTO {ks}.settings (name, value) VALUES (?, ?) IF NOT EXISTS",
                                 [(name, value)])
            return value if result.was_applied else _held(result)["value"]
        held = self.setting(name)
        while held != value:  # compare-and-set on the value seen (null: no row), again if it moved
            [result] = self._all("UPDATE {ks}.settings SET value = ? WHERE name = ? IF value = ?",
                                 [(value, name, held)])
            held = value if result.was_applied else _held(result)["value"]
        return value

    def rewrap(self, rows: list[SubjectRow]) -> None:
        # IF subject = ?: a deleted row stays deleted (a plain update would write a row again)
        self._all("UPDATE {ks}.subjects_by_user SET wrapped = ? WHERE user_id = ? IF subject = ?",
                  [(row.wrapped, row.user_id, row.subject) for row in rows])

    def rows(self, batch: int = 10_000) -> Iterator[list[SubjectRow]]:
        statement = self._statement("SELECT user_id, subject, wrapped FROM {ks}.subjects_by_user").bind(())
        statement.fetch_size = min(batch, 5000)  # pages read as they are needed
        found = []
        for row in self._session.execute(statement):
            found.append(SubjectRow(*row))
            if len(found) == batch:
                yield found
                found = []
        if found:
            yield found

    def close(self) -> None:
        self._cluster.shutdown()
