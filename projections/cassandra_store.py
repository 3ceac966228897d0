"""The scale-out projection store: Apache Cassandra, through cassandra-driver.

Query-first tables, one per question the port asks; docs/cassandra.md lists them and gives the
reasoning. The views (`user_reviews`, `movie_reviews`, `reviewers`, `review_events`, `movie_ratings`,
`catalogue`, `user_events`) live in the keyspaces the current generation names; the checkpoint, where
events were first applied, the lease, the lag and the model registry in the store's own keyspace.

A batch's rows go out first, as unlogged batches of many partitions, each row versioned by the log
offset of the event behind it (`USING TIMESTAMP`): Cassandra keeps the newest write per cell, so a
stale or repeated batch's rows change nothing. Then the batch commits with one lightweight
transaction (compare-and-set) per log partition it covers, on that partition's checkpoint row of the
generation it was folded on. A rebuild swaps views and checkpoint in by pointing the `generation` row
at a new generation. All statements are prepared.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
import zlib
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from functools import partial
from typing import Iterable, Iterator

import msgspec
from cassandra import ConsistencyLevel, OperationTimedOut, Timeout, Unavailable, WriteTimeout, WriteType
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable
from cassandra.concurrent import execute_concurrent, execute_concurrent_with_args
from cassandra.policies import DCAwareRoundRobinPolicy, RetryPolicy, TokenAwarePolicy
from cassandra.protocol import ErrorMessage
from cassandra.query import UNSET_VALUE, BatchStatement, BatchType, ValueSequence, tuple_factory

from events.errors import HarmonyError
from projections.store import (
    FACTOR_KINDS, REBUILDABLE, AccountRow, CatalogueEntry, Changes, Clock, FactorRow, HistoryRow, ModelInfo,
    Movie, PartitionLag, RatingCount, ReviewRow, StoreUnavailable, Tally,
)
from projections.timestamps import from_micros, micros
from projections.titles import LAST_CHAR, MIN_PREFIX, folded_words

log = logging.getLogger(__name__)

FACTOR_BUCKETS = 16  # a model's factors of one kind spread over this many partitions
BUCKETS = 256  # partitions of `applied_at` and `review_events`: a batch reads at most this many of each
CONCURRENCY = 64  # requests in flight at once for one batch
BATCH_BYTES = 40_000  # rows per request, estimated: under Cassandra's limit for a multi-partition batch (50 KiB)
ROW_BYTES = 150  # a row's size as Cassandra counts it toward that limit, without its JSON (measured: at most ~150)
IN_CHUNK = 200  # keys per `IN` query
WHERE_TTL = 1.0  # seconds a reader trusts where the views live before reading it again
LEASE = "maintenance"
# Seconds a schema change may take: every node agrees on it, and a loaded node can be slow to (a DROP
# KEYSPACE took over 10 s, the default, with a rebuild and benchmarks running beside it).
SCHEMA_TIMEOUT = 60.0
# An account row's write timestamp is this minus its log position, so the lowest position is the
# newest write, the one Cassandra keeps; a position is (partition << 40) + offset.
FIRST_WINS = 1 << 62

# Tables are renamed when their layout or meaning changes, so a keyspace of an older layout is
# projected again from the log; the first store to open it drops these, its older views.
LEGACY_TABLES = ("reviews_by_user", "reviews_by_movie", "movies", "history_by_user", "applied_events", "projection")

ADDED_COLUMNS = (("factors", "count", "int"), ("lag", "refused", "bigint"), ("accounts", "skeleton", "text"))

TABLES = """
-- review: the ReviewRow as JSON, one cell (the node's cost of a row grows with its cells).
CREATE TABLE IF NOT EXISTS user_reviews (
    user_id text, reviewed_at bigint, movie_id text, rating double, review blob,
    PRIMARY KEY ((user_id), reviewed_at, movie_id)) WITH CLUSTERING ORDER BY (reviewed_at DESC, movie_id DESC);
-- A movie's current reviews, newest first: user_reviews' rows by movie, written and replaced alike.
CREATE TABLE IF NOT EXISTS movie_reviews (
    movie_id text, reviewed_at bigint, user_id text, rating double, review blob,
    PRIMARY KEY ((movie_id), reviewed_at, user_id)) WITH CLUSTERING ORDER BY (reviewed_at DESC, user_id DESC);
-- Reviewer suggestions: the ids of users given a review, casefolded, by their first character (a
-- prefix is one slice of one partition). Kept on a retraction: reviewers() checks user_reviews.
CREATE TABLE IF NOT EXISTS reviewers (
    initial text, folded text, user_id text, PRIMARY KEY ((initial), folded, user_id));
-- Every review event of a user by movie, newest first (reviewed_at null: a retraction).
CREATE TABLE IF NOT EXISTS review_events (
    bucket int, user_id text, movie_id text, log_partition int, log_offset bigint, type text, recorded_at bigint,
    reviewed_at bigint, PRIMARY KEY ((bucket), user_id, movie_id, log_partition, log_offset))
    WITH CLUSTERING ORDER BY (user_id ASC, movie_id ASC, log_partition DESC, log_offset DESC);
CREATE TABLE IF NOT EXISTS movie_ratings (
    movie_id text, user_id text, rating double, PRIMARY KEY ((movie_id), user_id));
-- genres frozen: a whole value, so writing it leaves no tombstone for an older list.
CREATE TABLE IF NOT EXISTS catalogue (
    movie_id text PRIMARY KEY, title text, year int, genres frozen<list<text>>, image_url text);
-- event: the HistoryRow as JSON.
CREATE TABLE IF NOT EXISTS user_events (
    user_id text, log_partition int, log_offset bigint, event blob,
    PRIMARY KEY ((user_id), log_partition, log_offset))
    WITH CLUSTERING ORDER BY (log_partition DESC, log_offset DESC);
-- Title search, beside the catalogue: each entry's folded title words (projections.titles) by their
-- first letters, so a word start is one slice of one partition (words of an older title stay: search checks).
CREATE TABLE IF NOT EXISTS title_words (
    prefix text, word text, movie_id text, PRIMARY KEY ((prefix), word, movie_id));
CREATE TABLE IF NOT EXISTS genres (name text, genre text, PRIMARY KEY ((name), genre));
-- The accounts view, with its own checkpoint: written USING TIMESTAMP so the first opening wins.
CREATE TABLE IF NOT EXISTS accounts (
    user_id text PRIMARY KEY, event_id text, password_hash text, log_partition int, log_offset bigint, skeleton text);
-- Look-alike user ids (projections.accounts.skeleton) of the accounts.
CREATE TABLE IF NOT EXISTS account_skeletons (skeleton text, user_id text, PRIMARY KEY ((skeleton), user_id));
CREATE TABLE IF NOT EXISTS accounts_checkpoints (partition int PRIMARY KEY, log_offset bigint);
-- Who each subject (the id naming a user in the log) is, as the projectors read it: what a forgetting,
-- which names only the subject, needs to find the user's rows. Facts: written again, the same row.
CREATE TABLE IF NOT EXISTS subjects (subject text PRIMARY KEY, user_id text);
-- Attempts per key (the sign-in and opening limits): a row each, living its window (TTL). Deleted
-- rows and expired ones need no grace: a deletion a replica missed only counts an attempt again until
-- its TTL ends, so tombstones go at the next compaction.
CREATE TABLE IF NOT EXISTS attempts (key text, attempt text, at bigint, PRIMARY KEY ((key), attempt))
    WITH gc_grace_seconds = 0;
CREATE TABLE IF NOT EXISTS generation (name text PRIMARY KEY, id text, reviews text, movies text, history text);
CREATE TABLE IF NOT EXISTS checkpoints (
    generation text, partition int, log_offset bigint, PRIMARY KEY ((generation, partition)));
CREATE TABLE IF NOT EXISTS generation_partitions (
    generation text, partition int, PRIMARY KEY ((generation), partition));
CREATE TABLE IF NOT EXISTS applied_at (
    bucket int, key text, event_id text, log_partition int, log_offset bigint, PRIMARY KEY ((bucket), key, event_id));
CREATE TABLE IF NOT EXISTS leases (name text PRIMARY KEY, holder text, expires bigint);
CREATE TABLE IF NOT EXISTS lag (
    partition int PRIMARY KEY, checkpoint bigint, high_watermark bigint, refused bigint, updated_at bigint);
CREATE TABLE IF NOT EXISTS factors (
    version text, kind text, bucket int, id text, bias double, vector blob, count int,
    PRIMARY KEY ((version, kind, bucket), id));
CREATE TABLE IF NOT EXISTS models (version text PRIMARY KEY, info text);
CREATE TABLE IF NOT EXISTS current_model (name text PRIMARY KEY, version text);
"""

PUT_MOVIE_REVIEW = ("INSERT INTO {reviews}.movie_reviews (movie_id, reviewed_at, user_id, rating, review) "
                    "VALUES (?,?,?,?,?) USING TIMESTAMP ?")
GENERATION = "SELECT id, reviews, movies, history FROM {base}.generation WHERE name = 'current'"
HISTORY = "SELECT event FROM {history}.user_events WHERE user_id = ?"

_open_scratch: set[str] = set()  # scratch keyspaces this process has open: not leftovers


@dataclass(frozen=True)
class CassandraConfig:
    contact_points: tuple[str, ...]
    port: int
    keyspace: str
    replication_factor: int
    consistency: str  # of reads and writes: a ConsistencyLevel name, e.g. LOCAL_QUORUM
    connect_timeout: float  # seconds to reach the cluster before giving up


class Checkpoint(dict):
    """partition -> last applied offset, as read from one generation, with where that generation's
    views live: a batch folded on it (`Changes.since`) writes there and commits against that
    generation's checkpoint rows, never a newer generation's."""

    def __init__(self, offsets: dict[int, int], generation: str, views: dict[str, str]):
        super().__init__(offsets)
        self.generation, self.views = generation, views


_encode = msgspec.json.Encoder().encode
_history_row = msgspec.json.Decoder(HistoryRow).decode
_review_row = msgspec.json.Decoder(ReviewRow).decode


def _at(row: HistoryRow, clock: Clock) -> datetime:
    """The time of a history row `as_of` compares."""
    return row.occurred_at if clock == "occurred" else row.recorded_at


def _reviewed_at(event: HistoryRow):
    """A submission's reviewed_at; left unset (no cell) for a retraction."""
    reviewed_at = event.payload.get("reviewed_at")
    return UNSET_VALUE if reviewed_at is None else micros(reviewed_at)


def factor_bucket(id: str) -> int:
    return zlib.crc32(id.encode()) % FACTOR_BUCKETS


def bucket(user_id: str) -> int:
    return zlib.crc32(user_id.encode()) % BUCKETS


def in_chunks(pairs: Iterable[tuple[object, object]]) -> list[tuple[object, ValueSequence]]:
    """(partition key, value) pairs as (partition key, up to IN_CHUNK of its values) for `IN ?`:
    each query reads one partition."""
    by_key: dict[object, list] = {}
    for key, value in pairs:
        by_key.setdefault(key, []).append(value)
    return [(key, ValueSequence(values[i:i + IN_CHUNK])) for key, values in by_key.items()
            for i in range(0, len(values), IN_CHUNK)]


class Writes:
    """Statements grouped by the partition they write, packed into unlogged batches of many partitions:
    one request carries hundreds of rows, and a partition's rows stay in one batch (one mutation,
    applied at once). A partition bigger than a batch goes alone: Cassandra limits only the size of
    batches spanning partitions."""

    def __init__(self):
        self._rows: dict[tuple, list] = {}  # (table, key) -> [(statement, values)]
        self._bytes: dict[tuple, int] = {}

    def add(self, partition: tuple, statement, values: tuple, blob: bytes = b"") -> None:
        self._rows.setdefault(partition, []).append((statement, values))
        self._bytes[partition] = self._bytes.get(partition, 0) + ROW_BYTES + len(blob)

    def batches(self) -> Iterator[BatchStatement]:
        """Each batch bound as it is asked for: the first go out while the others are bound."""
        batch, held = BatchStatement(BatchType.UNLOGGED), 0
        for partition, rows in self._rows.items():
            size = self._bytes[partition]
            if held and held + size > BATCH_BYTES:
                yield batch
                batch, held = BatchStatement(BatchType.UNLOGGED), 0
            for statement, values in rows:
                batch.add(statement, values)
            held += size
        if held:
            yield batch


class _QuietBatchWarnings(logging.Filter):
    """The batches here span partitions on purpose (one request, many rows); Cassandra warns about
    every one, and the driver logs each warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg == "Server warning: %s" and record.args
                    and str(record.args[0]).startswith(("Unlogged batch covering", "Batch for")))


logging.getLogger("cassandra.protocol").addFilter(_QuietBatchWarnings())


class RetryIdempotentWrites(RetryPolicy):
    """Every plain write here is idempotent (rows versioned by their event's offset, facts keyed by
    what they record): one that timed out (a replica slow, or just killed) is tried once more
    before the worker gives up. A compare-and-set is not retried here: `apply` decides."""

    def on_write_timeout(self, query, consistency, write_type, required_responses, received_responses, retry_num):
        if retry_num == 0 and write_type != WriteType.CAS:
            return self.RETRY, consistency
        return self.RETHROW, None


# The node (or every node) away, overloaded or slow for now: no request got an answer in time.
UNAVAILABLE = (NoHostAvailable, OperationTimedOut, Unavailable, Timeout)


@contextmanager
def _unavailable_is_transient():
    """What the projector asks, with the store being away for now raised as StoreUnavailable (the
    worker waits it out and asks again) rather than as the driver's error (which ends the process)."""
    try:
        yield
    except UNAVAILABLE as error:
        raise StoreUnavailable(f"Cassandra did not answer: {error!r}") from error


def change_schema(session, cql: str) -> None:
    session.execute(cql, timeout=SCHEMA_TIMEOUT)


def create_keyspace(session, keyspace: str, replication_factor: int) -> None:
    change_schema(session, f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = "
                           f"{{'class': 'SimpleStrategy', 'replication_factor': {replication_factor}}}")


def create_tables(session, keyspace: str, script: str) -> None:
    """Each `CREATE TABLE IF NOT EXISTS` of `script` in `keyspace`."""
    for statement in filter(str.strip, script.split(";")):
        change_schema(session, statement.replace("CREATE TABLE IF NOT EXISTS ",
                                                 f"CREATE TABLE IF NOT EXISTS {keyspace}."))


def _cas_unknown(error: Exception) -> bool:
    """A compare-and-set whose outcome is unknown: a Paxos timeout (contention), or CAS_WRITE_UNKNOWN
    (protocol v5's 0x1700, which cassandra-driver 3.30 does not name: a bare ErrorMessage)."""
    return isinstance(error, WriteTimeout) or getattr(error, "code", None) == 0x1700


class CassandraStore:
    def __init__(self, config: CassandraConfig, scratch: bool = False):
        """`scratch`: a throw-away keyspace (rebuilds, verification), dropped when closed unless
        a swap made views of it live."""
        self.config, self._scratch = config, scratch
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
            consistency_level=ConsistencyLevel.name_to_value[config.consistency],
            serial_consistency_level=ConsistencyLevel.LOCAL_SERIAL,
            retry_policy=RetryIdempotentWrites(),
            request_timeout=10.0,
            row_factory=tuple_factory,  # a named tuple factory makes a class per result
        )
        self._cluster = Cluster(list(config.contact_points), port=config.port, protocol_version=5,
                                execution_profiles={EXEC_PROFILE_DEFAULT: profile},
                                connect_timeout=config.connect_timeout,
                                control_connection_timeout=config.connect_timeout)
        self._session = self._connect()
        self._prepared: dict[str, object] = {}
        keyspace = config.keyspace
        if scratch:
            _open_scratch.add(keyspace)
        create_keyspace(self._session, keyspace, config.replication_factor)
        had = self._tables(keyspace)
        create_tables(self._session, keyspace, TABLES)
        for table, column, type in ADDED_COLUMNS:  # to tables of an older store, kept
            if self._session.execute("SELECT column_name FROM system_schema.columns WHERE keyspace_name = %s AND "
                                     "table_name = %s AND column_name = %s", (keyspace, table, column)).one() is None:
                change_schema(self._session, f"ALTER TABLE {keyspace}.{table} ADD {column} {type}")
                if table == "accounts":  # openings from before skeletons: the worker reads the topic again
                    change_schema(self._session, f"TRUNCATE {keyspace}.accounts_checkpoints")
        self._where: dict[str, str] = {}
        self._where_read = float("-inf")
        if self._session.execute(self._statement(GENERATION)).one() is None:
            # A new store keeps its views in its own keyspace, from no checkpoint.
            if self._session.execute(self._statement(
                    "INSERT INTO {base}.generation (name, id, reviews, movies, history) "
                    "VALUES ('current', ?, ?, ?, ?) IF NOT EXISTS"), (uuid.uuid4().hex, *(keyspace,) * 3)).was_applied:
                self._drop_legacy_tables()
        elif "catalogue" in had and "title_words" not in had:
            self._index_titles_once()
        if "user_reviews" in had and "movie_reviews" not in had:
            self._index_reviews_once()

    def _tables(self, keyspace: str) -> set[str]:
        return {name for (name,) in self._session.execute(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (keyspace,))}

    def _index_titles_once(self) -> None:
        """A keyspace from before title search was the store's: index the live catalogue once (where
        it lives, which may be a rebuild's keyspace; doing it twice writes the same rows)."""
        where = self._views()
        create_tables(self._session, where["movies"], TABLES)
        rows = Writes()
        self._index_titles(rows, self.catalogue(), partial(self._statement, **where))
        self._send(rows)

    def _index_reviews_once(self) -> None:
        """A keyspace from before movie pages and reviewer suggestions: fill `movie_reviews` (at the
        versions of the `user_reviews` rows) and `reviewers` from the live reviews once, a slice at a time."""
        where = self._views()
        create_tables(self._session, where["reviews"], TABLES)
        q = partial(self._statement, **where)
        put = q(PUT_MOVIE_REVIEW)
        rows, users = Writes(), set()
        for n, (review, version) in enumerate(self._session.execute(q(
                "SELECT review, writetime(review) FROM {reviews}.user_reviews")), 1):  # pages fetched as iterated
            r = _review_row(review)
            values = (r.movie_id, micros(r.reviewed_at), r.user_id, r.rating, review, version)
            rows.add(("mr", r.movie_id), put, values, review)
            users.add(r.user_id)
            if n % 10_000 == 0:
                self._send(rows)
                rows = Writes()
        self._add_reviewers(rows, users, q)
        self._send(rows)

    def _connect(self):
        where = f"{','.join(self.config.contact_points)}:{self.config.port}"
        driver_log = logging.getLogger("cassandra.cluster")
        level = driver_log.level
        driver_log.setLevel(logging.CRITICAL)  # a failed connect is reported once, below, in one line
        try:
            return self._cluster.connect()
        except NoHostAvailable as error:
            self._cluster.shutdown()
            reasons = "; ".join(f"{host}: {reason}" for host, reason in error.errors.items())
            raise HarmonyError(f"cannot reach Cassandra at {where}: {reasons or error}") from None
        finally:
            driver_log.setLevel(level)

    def _drop_legacy_tables(self) -> None:
        keyspace = self.config.keyspace
        old = sorted(self._tables(keyspace) & set(LEGACY_TABLES))
        if old:
            log.warning("projection schema changed: dropping the old views; the worker projects them again "
                        "from the log", extra={"keyspace": keyspace, "tables": old})
        for name in old:
            change_schema(self._session, f"DROP TABLE IF EXISTS {keyspace}.{name}")

    def _statement(self, cql: str, **views: str):
        """The prepared statement of `cql`, whose `{base}` is this store's keyspace and whose
        `{reviews}`, `{movies}`, `{history}` are the keyspaces those views live in."""
        text = cql.format(base=self.config.keyspace, **views)
        statement = self._prepared.get(text)
        if statement is None:
            statement = self._prepared[text] = self._session.prepare(text)
        return statement

    def _generation(self) -> tuple[str, dict[str, str]]:
        """The current generation and where its views live, read at the store's consistency, not
        through Paxos: a stale read only makes a commit fail and its batch fold again, while a serial
        read is a Paxos round of its own, contending with the commits."""
        generation, *places = self._session.execute(self._statement(GENERATION)).one()
        self._where = dict(zip(REBUILDABLE, places))
        self._where_read = time.monotonic()
        return generation, self._where

    def _views(self) -> dict[str, str]:
        """Where each view lives, as read within the last second (readers see a swap that late)."""
        if time.monotonic() - self._where_read > WHERE_TTL:
            self._generation()
        return self._where

    def _write_all(self, statement, rows: list[tuple]) -> None:
        if rows:
            execute_concurrent_with_args(self._session, statement, rows, concurrency=CONCURRENCY,
                                         raise_on_first_error=True)

    def _send(self, writes: Writes) -> None:
        execute_concurrent(self._session, ((batch, None) for batch in writes.batches()), concurrency=CONCURRENCY,
                           raise_on_first_error=True)

    def _read_all(self, statement, rows: list[tuple]) -> list:
        results = execute_concurrent_with_args(self._session, statement, rows, concurrency=CONCURRENCY,
                                               raise_on_first_error=True, results_generator=False)
        return [row for _, result in results for row in result]

    # -- projector side ---------------------------------------------------------------

    @_unavailable_is_transient()
    def checkpoint(self) -> Checkpoint:
        generation, views = self._generation()
        partitions = [p for (p,) in self._session.execute(self._statement(
            "SELECT partition FROM {base}.generation_partitions WHERE generation = ?"), (generation,))]
        offsets = dict(self._session.execute(self._statement(
            "SELECT partition, log_offset FROM {base}.checkpoints WHERE generation = ? AND partition IN ?"),
            (generation, ValueSequence(partitions)))) if partitions else {}
        return Checkpoint(offsets, generation, dict(views))

    @_unavailable_is_transient()
    def first_applied(self, events: list[tuple[str, str]]) -> dict[str, tuple[int, int]]:
        statement = self._statement("SELECT event_id, log_partition, log_offset FROM {base}.applied_at "
                                    "WHERE bucket = ? AND (key, event_id) IN ?")
        queries = in_chunks((bucket(key), (key, event_id)) for key, event_id in events)
        return {event_id: (partition, offset) for event_id, partition, offset in self._read_all(statement, queries)}

    @_unavailable_is_transient()
    def apply(self, changes: Changes) -> bool:
        since = changes.since
        if not isinstance(since, Checkpoint):
            raise TypeError("Changes.since must be the Checkpoint this store's checkpoint() answered")
        if not self._unmoved(since, list(changes.checkpoint)):
            return False  # known refused before writing anything: fold again
        # Rows first, then the commit: a failure part-way leaves the checkpoint behind, and the batch
        # is applied again after a restart. Rows written for a commit that then fails are older
        # versions, or the same ones a fold again writes, or sit in views no longer live: harmless.
        q = partial(self._statement, **since.views)
        rows = Writes()
        # History rows, a user's review events by movie and where events were first applied are keyed
        # by the log position they record: writing them again writes the same thing. A copy of an
        # event is never written (the fold skips it).
        put_event = q("INSERT INTO {history}.user_events (user_id, log_partition, log_offset, event) VALUES (?,?,?,?)")
        put_review_event = q("INSERT INTO {reviews}.review_events (bucket, user_id, movie_id, log_partition, "
                             "log_offset, type, recorded_at, reviewed_at) VALUES (?,?,?,?,?,?,?,?)")
        put_applied = q("INSERT INTO {base}.applied_at (bucket, key, event_id, log_partition, log_offset) "
                        "VALUES (?,?,?,?,?)")
        for h in changes.history:
            user, movie, b = h.user_id, h.payload["movie_id"], bucket(h.user_id)
            event = _encode(h)
            rows.add(("h", user), put_event, (user, h.partition, h.offset, event), event)
            rows.add(("e", b), put_review_event, (b, user, movie, h.partition, h.offset, h.type,
                                                  micros(h.recorded_at), _reviewed_at(h)))
            rows.add(("a", b), put_applied, (b, user, h.event_id, h.partition, h.offset))
        put_rating = q("INSERT INTO {reviews}.movie_ratings (movie_id, user_id, rating) VALUES (?,?,?) "
                       "USING TIMESTAMP ?")
        delete_rating = q("DELETE FROM {reviews}.movie_ratings USING TIMESTAMP ? WHERE movie_id = ? AND user_id = ?")
        for (user, movie), (version, r) in changes.reviews.items():
            if r is None:
                rows.add(("r", movie), delete_rating, (version, movie, user))
            else:
                rows.add(("r", movie), put_rating, (movie, user, r.rating, version))
        self._add_reviewers(rows, {user for (user, _), (_, r) in changes.reviews.items() if r is not None}, q)
        put_movie = q("INSERT INTO {movies}.catalogue (movie_id, title, year, genres, image_url) VALUES (?,?,?,?,?) "
                      "USING TIMESTAMP ?")
        for version, c in changes.catalogue.values():
            rows.add(("c", c.movie_id), put_movie, (c.movie_id, c.title, c.year, c.genres, c.image_url, version))
        self._index_titles(rows, [c for _, c in changes.catalogue.values()], q)
        self._put_subjects(rows, changes.subjects.items())
        self._send(rows)
        if changes.reviews:
            self._send(self._page_rows(changes, q))
        if changes.forgotten:
            # Before the commit: a forgetting is final, so it stands whether or not the commit does, and
            # one the process died before finishing is done again with the batch.
            self._forget(changes.forgotten, since.views)
        return self._commit(since, changes.checkpoint)

    @staticmethod
    def _add_reviewers(rows: Writes, users: set[str], q) -> None:
        """These users' rows of the reviewer directory, added to `rows` (facts: written again, the same row)."""
        put = q("INSERT INTO {reviews}.reviewers (initial, folded, user_id) VALUES (?,?,?)")
        for user in users:
            folded = user.casefold()
            rows.add(("rv", folded[0]), put, (folded[0], folded, user))

    def _put_subjects(self, rows: Writes, subjects: Iterable[tuple[str, str]]) -> None:
        put = self._statement("INSERT INTO {base}.subjects (subject, user_id) VALUES (?,?)")
        for subject, user in subjects:
            rows.add(("sj", subject), put, (subject, user))

    def _forget(self, subjects: list[str], views: dict[str, str]) -> None:
        """Delete every row of the users these subjects name, and the subjects' rows. Plain deletes (the
        client's clock) shadow rows versioned by log offsets for good: a forgotten id never comes back."""
        q = partial(self._statement, **views)
        users = [user for (user,) in self._read_all(
            self._statement("SELECT user_id FROM {base}.subjects WHERE subject = ?"), [(s,) for s in subjects])]
        # Every review event of each user: their rows of the per-movie ratings (statistics), and of the
        # movies' pages under every reviewed_at a review of theirs had.
        events = set(self._read_all(q("SELECT user_id, movie_id, reviewed_at FROM {reviews}.review_events "
                                      "WHERE bucket = ? AND user_id = ?"), [(bucket(user), user) for user in users]))
        accounts = self._read_all(self._statement("SELECT user_id, skeleton FROM {base}.accounts WHERE user_id = ?"),
                                  [(user,) for user in users])
        deletes = [(q("DELETE FROM {reviews}.movie_ratings WHERE movie_id = ? AND user_id = ?"), (movie, user))
                   for user, movie in {(user, movie) for user, movie, _ in events}]
        deletes += [(q("DELETE FROM {reviews}.movie_reviews WHERE movie_id = ? AND reviewed_at = ? AND user_id = ?"),
                     (movie, at, user)) for user, movie, at in events if at is not None]
        deletes += [(self._statement("DELETE FROM {base}.account_skeletons WHERE skeleton = ? AND user_id = ?"),
                     (alike, user)) for user, alike in accounts if alike is not None]
        for user in users:
            b = bucket(user)
            folded = user.casefold()
            deletes += [
                (q("DELETE FROM {reviews}.user_reviews WHERE user_id = ?"), (user,)),
                (q("DELETE FROM {reviews}.reviewers WHERE initial = ? AND folded = ? AND user_id = ?"),
                 (folded[0], folded, user)),
                (q("DELETE FROM {reviews}.review_events WHERE bucket = ? AND user_id = ?"), (b, user)),
                (q("DELETE FROM {history}.user_events WHERE user_id = ?"), (user,)),
                (self._statement("DELETE FROM {base}.applied_at WHERE bucket = ? AND key = ?"), (b, user)),
                # Above every opening's timestamp (FIRST_WINS less its position), so none stands.
                (self._statement("DELETE FROM {base}.accounts USING TIMESTAMP ? WHERE user_id = ?"),
                 (FIRST_WINS, user)),
            ]
        deletes += [(self._statement("DELETE FROM {base}.subjects WHERE subject = ?"), (s,)) for s in subjects]
        execute_concurrent(self._session, deletes, concurrency=CONCURRENCY, raise_on_first_error=True)

    @staticmethod
    def _index_titles(rows: Writes, entries: list[CatalogueEntry], q) -> None:
        """The title words and genres of these entries, added to `rows`. Facts keyed by what they
        record, never removed: a word of an older title is left for search to check away."""
        put_word = q("INSERT INTO {movies}.title_words (prefix, word, movie_id) VALUES (?,?,?)")
        for entry in entries:
            for word in set(folded_words(entry.title)):
                rows.add(("w", word[:MIN_PREFIX]), put_word, (word[:MIN_PREFIX], word, entry.movie_id))
        put_genre = q("INSERT INTO {movies}.genres (name, genre) VALUES ('all', ?)")
        for genre in {genre for entry in entries for genre in entry.genres}:
            rows.add(("g",), put_genre, (genre,))

    def _unmoved(self, since: Checkpoint, partitions: list[int]) -> bool:
        """Whether the generation the batch was folded on is still current and its partitions still
        where the fold found them: a batch that lost a race folds again without writing (one that
        loses after this check writes rows that change nothing)."""
        current = self._session.execute_async(self._statement(GENERATION))
        stored = self._session.execute_async(self._statement(
            "SELECT partition, log_offset FROM {base}.checkpoints WHERE generation = ? AND partition IN ?"),
            (since.generation, ValueSequence(partitions)))
        return (current.result().one()[0] == since.generation
                and dict(stored.result()) == {p: since[p] for p in partitions if p in since})

    def _page_rows(self, changes: Changes, q) -> Writes:
        """The `user_reviews` and `movie_reviews` rows of the batch's review changes and the removal of
        those they replace.

        A row's key holds its reviewed_at, so replacing it needs the old one: `review_events` has every
        review event of a (user, movie) with its reviewed_at. The batch wrote its own before this reads
        them, so of two changes racing (a stale batch of an overlapping worker) at least one sees the
        other: the newer removes the older's row, or the older, seeing a newer event, writes none.
        Offsets order a user's events, as they order the versions (one log partition)."""
        statement = q("SELECT user_id, movie_id, log_offset, reviewed_at FROM {reviews}.review_events "
                      "WHERE bucket = ? AND (user_id, movie_id) IN ?")
        events: dict[tuple[str, str], list[tuple[int, int | None]]] = {}
        for user, movie, offset, reviewed_at in self._read_all(
                statement, in_chunks((bucket(user), (user, movie)) for user, movie in changes.reviews)):
            events.setdefault((user, movie), []).append((offset, reviewed_at))
        put_review = q("INSERT INTO {reviews}.user_reviews (user_id, reviewed_at, movie_id, rating, review) "
                       "VALUES (?,?,?,?,?) USING TIMESTAMP ?")
        delete_review = q("DELETE FROM {reviews}.user_reviews USING TIMESTAMP ? "
                          "WHERE user_id = ? AND reviewed_at = ? AND movie_id = ?")
        put_movie_review = q(PUT_MOVIE_REVIEW)
        delete_movie_review = q("DELETE FROM {reviews}.movie_reviews USING TIMESTAMP ? "
                                "WHERE movie_id = ? AND reviewed_at = ? AND user_id = ?")
        rows = Writes()
        for (user, movie), (version, r) in changes.reviews.items():
            written = events.get((user, movie), [])
            if any(offset > version for offset, _ in written):
                continue  # a newer change stands
            at = None if r is None else micros(r.reviewed_at)
            older = {older_at for offset, older_at in written if offset < version}
            for older_at in older - {None, at}:  # a retraction has no row; the row under `at` is overwritten
                rows.add(("u", user), delete_review, (version, user, older_at, movie))
                rows.add(("mr", movie), delete_movie_review, (version, movie, older_at, user))
            if r is not None:
                review = _encode(r)
                rows.add(("u", user), put_review, (user, at, movie, r.rating, review, version), review)
                rows.add(("mr", movie), put_movie_review, (movie, at, user, r.rating, review, version), review)
        return rows

    def _commit(self, since: Checkpoint, checkpoint: dict[int, int]) -> bool:
        """One compare-and-set per log partition, each on a row of its own (workers owning different
        partitions never contend), concurrently; True if all committed."""
        new = [p for p in checkpoint if p not in since]
        self._write_all(self._statement(
            "INSERT INTO {base}.generation_partitions (generation, partition) VALUES (?, ?)"),
            [(since.generation, p) for p in new])  # before its row: a reader finds every committed one
        move = self._statement("UPDATE {base}.checkpoints SET log_offset = ? WHERE generation = ? AND partition = ? "
                               "IF log_offset = ?")
        start = self._statement("INSERT INTO {base}.checkpoints (generation, partition, log_offset) VALUES (?,?,?) "
                                "IF NOT EXISTS")
        futures = [self._session.execute_async(move, (max(offset, since[p]), since.generation, p, since[p]))
                   if p in since else self._session.execute_async(start, (since.generation, p, offset))
                   for p, offset in checkpoint.items()]
        committed = True
        for future in futures:
            try:
                committed &= future.result().was_applied
            except (WriteTimeout, ErrorMessage) as error:
                # Contention, or a proposal accepted by fewer than a quorum: the commit may or may not
                # have happened. Either way folding again is right: the next round on that row finishes
                # (or drops) this one first, and a batch already committed folds to nothing.
                if not _cas_unknown(error):
                    raise
                log.warning("checkpoint commit outcome unknown; folding again", extra={"error": str(error)})
                committed = False
        return committed

    def record_lag(self, lags: list[PartitionLag]) -> None:
        now = micros(datetime.now(timezone.utc))
        self._write_all(self._statement(
            "INSERT INTO {base}.lag (partition, checkpoint, high_watermark, refused, updated_at) VALUES (?,?,?,?,?)"),
            [(lag.partition, lag.checkpoint, lag.high_watermark, lag.refused, now) for lag in lags])

    # -- read side ----------------------------------------------------------------------

    def user_reviews(self, user_id: str, limit: int, after: tuple[datetime, str] | None) -> list[ReviewRow]:
        return self._reviews_page("user_reviews", "user_id", "movie_id", user_id, limit, after)

    def movie_reviews(self, movie_id: str, limit: int, after: tuple[datetime, str] | None) -> list[ReviewRow]:
        return self._reviews_page("movie_reviews", "movie_id", "user_id", movie_id, limit, after)

    def _reviews_page(self, table: str, key: str, other: str, value: str, limit: int,
                      after: tuple[datetime, str] | None) -> list[ReviewRow]:
        # Only the page: the partition is clustered newest first, and the cursor is a clustering bound.
        cql = f"SELECT review FROM {{reviews}}.{table} WHERE {key} = ?"
        if after is None:
            rows = self._session.execute(self._statement(cql + " LIMIT ?", **self._views()), (value, limit))
        else:
            rows = self._session.execute(
                self._statement(cql + f" AND (reviewed_at, {other}) < (?, ?) LIMIT ?", **self._views()),
                (value, micros(after[0]), after[1], limit))
        return [_review_row(review) for (review,) in rows]

    def reviewers(self, prefix: str, limit: int) -> list[str]:
        # Slices of the directory from the prefix on, keeping the users who still have a review (one
        # row of user_reviews each, read concurrently), until `limit` are kept or the slice ends.
        folded = prefix.casefold()
        if not folded:
            return []
        where = self._views()
        directory = self._statement("SELECT folded, user_id FROM {reviews}.reviewers WHERE initial = ? "
                                    "AND (folded, user_id) > (?, ?) AND (folded, user_id) < (?, ?) LIMIT ?", **where)
        reviewed = self._statement("SELECT user_id FROM {reviews}.user_reviews WHERE user_id = ? LIMIT 1", **where)
        found, after = [], (folded, "")  # every id sorts after ""
        while len(found) < limit:
            candidates = list(self._session.execute(directory, (folded[0], *after, folded + LAST_CHAR, "", limit)))
            kept = {user for (user,) in self._read_all(reviewed, [(user,) for _, user in candidates])}
            found += [user for _, user in candidates if user in kept]
            if len(candidates) < limit:
                break
            after = candidates[-1]
        return found[:limit]

    def user_ratings(self, user_id: str) -> dict[str, float]:
        return dict(self._session.execute(self._statement(
            "SELECT movie_id, rating FROM {reviews}.user_reviews WHERE user_id = ?", **self._views()),
            (user_id,)))

    def catalogue(self) -> list[CatalogueEntry]:
        rows = self._session.execute(self._statement(
            "SELECT movie_id, title, year, genres, image_url FROM {movies}.catalogue", **self._views()))
        return [CatalogueEntry(m, t, y, list(g or []), i) for m, t, y, g, i in rows]  # pages fetched as iterated

    def catalogue_entries(self, movie_ids: list[str]) -> list[CatalogueEntry]:
        statement = self._statement("SELECT movie_id, title, year, genres, image_url FROM {movies}.catalogue "
                                    "WHERE movie_id IN ?", **self._views())
        chunks = [(ValueSequence(movie_ids[i:i + IN_CHUNK]),) for i in range(0, len(movie_ids), IN_CHUNK)]
        return [CatalogueEntry(m, t, y, list(g or []), i) for m, t, y, g, i in self._read_all(statement, chunks)]

    def titled(self, words: list[str], whole: bool) -> list[CatalogueEntry]:
        # One slice, for the longest word (the fewest titles hold it); the caller checks the others.
        word = max(words, key=len)
        cql = "SELECT movie_id FROM {movies}.title_words WHERE prefix = ? AND "
        if whole:
            rows = self._session.execute(self._statement(cql + "word = ?", **self._views()), (word[:MIN_PREFIX], word))
        else:
            rows = self._session.execute(self._statement(cql + "word >= ? AND word < ?", **self._views()),
                                         (word[:MIN_PREFIX], word, word + LAST_CHAR))
        return self.catalogue_entries(list({movie_id for (movie_id,) in rows}))

    def genres(self) -> list[str]:
        return [genre for (genre,) in self._session.execute(self._statement(
            "SELECT genre FROM {movies}.genres WHERE name = 'all'", **self._views()))]

    def movie(self, movie_id: str) -> Movie | None:
        where = self._views()
        entry = self._session.execute(self._statement(
            "SELECT title, year, genres FROM {movies}.catalogue WHERE movie_id = ?", **where), (movie_id,)).one()
        # Every rating of the movie, counted here (as count() and sum() would read them all on the node).
        counts = Counter(rating for (rating,) in self._session.execute(self._statement(
            "SELECT rating FROM {reviews}.movie_ratings WHERE movie_id = ?", **where), (movie_id,)))
        if entry is None and not counts:
            return None
        title, year, genres = entry or (None, None, None)
        count = counts.total()
        mean = sum(rating * n for rating, n in counts.items()) / count if count else None
        return Movie(movie_id, title, year, list(genres or []), count, mean,
                     [RatingCount(rating, n) for rating, n in sorted(counts.items())])

    def user_history(
        self, user_id: str, limit: int, before: tuple[int, int] | None, as_of: datetime | None,
        clock: Clock = "recorded",
    ) -> list[HistoryRow]:
        cql, values = HISTORY, (user_id,)
        if before is not None:
            cql, values = cql + " AND (log_partition, log_offset) < (?, ?)", (*values, *before)
        if limit and as_of is None:
            cql, values = cql + " LIMIT ?", (*values, limit)
        query = self._statement(cql, **self._views()).bind(values)
        if limit and as_of is not None:
            query.fetch_size = limit  # `as_of` filters here: fetch a page at a time, and stop at `limit`
        rows: list[HistoryRow] = []
        for row in (_history_row(event) for (event,) in self._session.execute(query)):  # pages fetched as iterated
            if as_of is not None and _at(row, clock) > as_of:
                continue
            rows.append(row)
            if limit and len(rows) == limit:
                break
        return rows

    def review_events_before(self, user_id: str, movie_ids: list[str], before: tuple[int, int],
                             as_of: datetime | None, clock: Clock = "recorded") -> dict[str, str]:
        if not movie_ids:
            return {}
        found: dict[str, str] = {}
        if as_of is not None and clock == "occurred":
            # review_events keeps no time of a retraction: read the user's history rows before the page.
            query = self._statement(HISTORY + " AND (log_partition, log_offset) < (?, ?)",
                                    **self._views()).bind((user_id, *before))
            wanted = set(movie_ids)
            for row in (_history_row(event) for (event,) in self._session.execute(query)):  # newest first
                if row.payload["movie_id"] in wanted and row.occurred_at <= as_of:
                    found.setdefault(row.payload["movie_id"], row.type)
                    if len(found) == len(wanted):
                        break
            return found
        cql = ("SELECT movie_id, type, recorded_at FROM {reviews}.review_events WHERE bucket = ? AND user_id = ? "
               "AND movie_id IN ? AND (log_partition, log_offset) < (?, ?)")
        # Newest first within each movie: the first row of each (GROUP BY) unless `as_of` skips some.
        rows = self._session.execute(self._statement(
            cql if as_of is not None else cql + " GROUP BY bucket, user_id, movie_id", **self._views()),
            (bucket(user_id), user_id, ValueSequence(movie_ids), *before))
        for movie_id, type, recorded_at in rows:
            if as_of is None or recorded_at <= micros(as_of):
                found.setdefault(movie_id, type)
        return found

    def user_event(self, user_id: str, event_id: str) -> HistoryRow | None:
        # Where it was first applied, then that history row.
        applied = self._session.execute(self._statement(
            "SELECT log_partition, log_offset FROM {base}.applied_at WHERE bucket = ? AND key = ? AND event_id = ?"),
            (bucket(user_id), user_id, event_id)).one()
        if applied is None:
            return None
        row = self._session.execute(self._statement(HISTORY + " AND log_partition = ? AND log_offset = ?",
                                                    **self._views()), (user_id, *applied)).one()
        return _history_row(row[0]) if row else None

    def lag(self) -> list[PartitionLag]:
        rows = self._session.execute(self._statement(
            "SELECT partition, checkpoint, high_watermark, refused FROM {base}.lag"))
        return [PartitionLag.of(p, c, h, r or 0) for p, c, h, r in sorted(rows)]

    def lag_reported_at(self) -> datetime | None:
        rows = self._session.execute(self._statement("SELECT updated_at FROM {base}.lag"))
        return max((from_micros(at) for (at,) in rows), default=None)

    def ping(self) -> None:
        self._session.execute("SELECT release_version FROM system.local")

    # -- accounts -----------------------------------------------------------------------

    def put_accounts(self, openings: list[AccountRow], checkpoint: dict[int, int]) -> None:
        # The lowest log position writes with the highest timestamp; the checkpoint with its offset
        # as the timestamp: Cassandra keeps the newest write, whatever order they arrive in.
        rows = Writes()
        put = self._statement("INSERT INTO {base}.accounts (user_id, event_id, password_hash, log_partition, "
                              "log_offset, skeleton) VALUES (?,?,?,?,?,?) USING TIMESTAMP ?")
        alike = self._statement("INSERT INTO {base}.account_skeletons (skeleton, user_id) VALUES (?,?)")
        for a in openings:
            rows.add(("a", a.user_id), put, (a.user_id, a.event_id, a.password_hash, a.partition, a.offset,
                                             a.skeleton, FIRST_WINS - (a.partition << 40) - a.offset))
            rows.add(("s", a.skeleton), alike, (a.skeleton, a.user_id))
        self._put_subjects(rows, ((a.subject, a.user_id) for a in openings if a.subject is not None))
        self._send(rows)  # before the checkpoint that covers them
        self._write_all(self._statement(
            "INSERT INTO {base}.accounts_checkpoints (partition, log_offset) VALUES (?,?) USING TIMESTAMP ?"),
            [(p, offset, offset) for p, offset in checkpoint.items()])

    def account(self, user_id: str) -> AccountRow | None:
        row = self._session.execute(self._statement(
            "SELECT user_id, event_id, password_hash, log_partition, log_offset, skeleton FROM {base}.accounts "
            "WHERE user_id = ?"), (user_id,)).one()
        return None if row is None else AccountRow(*row)

    def accounts_with_skeleton(self, skeleton: str) -> list[str]:
        return [user_id for (user_id,) in self._session.execute(self._statement(
            "SELECT user_id FROM {base}.account_skeletons WHERE skeleton = ?"), (skeleton,))]

    def accounts_checkpoint(self) -> dict[int, int]:
        return dict(self._session.execute(self._statement(
            "SELECT partition, log_offset FROM {base}.accounts_checkpoints")))

    # -- attempts -----------------------------------------------------------------------

    def attempts(self, keys: list[str], at: float) -> list[Tally]:
        """Counted by the rows' TTLs, on the nodes' clocks (to the second), not by `at`."""
        rows = self._read_all(self._statement("SELECT count(*), min(at) FROM {base}.attempts WHERE key = ?"),
                              [(key,) for key in keys])
        return [Tally(count, None if first is None else first / 1e6) for count, first in rows]

    def add_attempt(self, keys: list[str], attempt: str, at: float, window: float) -> list[Tally]:
        # A row per attempt, no read-modify-write: written, then counted, both at the store's consistency
        # (a quorum), so the count sees every attempt written before.
        self._write_all(self._statement("INSERT INTO {base}.attempts (key, attempt, at) VALUES (?,?,?) USING TTL ?"),
                        [(key, attempt, round(at * 1e6), max(1, math.ceil(window))) for key in keys])
        return self.attempts(keys, at)

    def drop_attempt(self, keys: list[str], attempt: str) -> None:
        self._write_all(self._statement("DELETE FROM {base}.attempts WHERE key = ? AND attempt = ?"),
                        [(key, attempt) for key in keys])

    def clear_attempts(self, key: str) -> None:
        self._session.execute(self._statement("DELETE FROM {base}.attempts WHERE key = ?"), (key,))

    # -- model side ---------------------------------------------------------------------

    def put_factors(self, version: str, kind: str, rows: list[FactorRow]) -> None:
        self._write_all(self._statement(
            "INSERT INTO {base}.factors (version, kind, bucket, id, bias, vector, count) VALUES (?,?,?,?,?,?,?)"),
            [(version, kind, factor_bucket(row.id), row.id, row.bias, row.vector, row.count) for row in rows])

    def publish_model(self, info: ModelInfo) -> None:
        # The registry row first, then the pointer: one cell write makes the version current.
        self._session.execute(self._statement("INSERT INTO {base}.models (version, info) VALUES (?,?)"),
                              (info.version, msgspec.json.encode(info).decode()))
        self._session.execute(self._statement(
            "INSERT INTO {base}.current_model (name, version) VALUES ('current', ?)"), (info.version,))

    def _current_version(self) -> str | None:
        row = self._session.execute(self._statement(
            "SELECT version FROM {base}.current_model WHERE name = 'current'")).one()
        return None if row is None else row[0]

    def model(self, version: str | None = None) -> ModelInfo | None:
        if version is None:
            version = self._current_version()
            if version is None:
                return None
        row = self._session.execute(self._statement("SELECT info FROM {base}.models WHERE version = ?"),
                                    (version,)).one()
        return None if row is None else msgspec.json.decode(row[0], type=ModelInfo)

    def factors(self, version: str, kind: str, ids: list[str] | None = None) -> list[FactorRow]:
        cql = "SELECT id, bias, vector, count FROM {base}.factors WHERE version = ? AND kind = ? AND bucket = ?"
        if ids is None:
            rows = self._read_all(self._statement(cql), [(version, kind, b) for b in range(FACTOR_BUCKETS)])
        else:
            rows = self._read_all(self._statement(cql + " AND id IN ?"), [
                (version, kind, bucket, chunk) for bucket, chunk in in_chunks((factor_bucket(id), id) for id in ids)])
        return sorted((FactorRow(id, bias, vector, count or 0) for id, bias, vector, count in rows),
                      key=lambda row: row.id)

    def models(self) -> list[ModelInfo]:
        # A whole-table read: the registry is a row per kept version (ml.registry.retain prunes it).
        rows = self._session.execute(self._statement("SELECT info FROM {base}.models"))
        return sorted((msgspec.json.decode(info, type=ModelInfo) for (info,) in rows),
                      key=lambda info: info.version, reverse=True)

    def forget_factors(self, user_id: str) -> None:
        versions = [v for (v,) in self._session.execute(self._statement("SELECT version FROM {base}.models"))]
        self._write_all(self._statement(
            "DELETE FROM {base}.factors WHERE version = ? AND kind = 'user' AND bucket = ? AND id = ?"),
            [(version, factor_bucket(user_id), user_id) for version in versions])

    def drop_model(self, version: str) -> bool:
        # No transaction: the check, then the deletes. Meanwhile the pointer can move only to a version
        # being published, and retention drops only versions with `keep` newer ones (ml.registry.retain).
        if self._current_version() == version:
            return False
        # The registry row first: a reader finds no version rather than one with rows missing.
        self._session.execute(self._statement("DELETE FROM {base}.models WHERE version = ?"), (version,))
        self._write_all(self._statement("DELETE FROM {base}.factors WHERE version = ? AND kind = ? AND bucket = ?"),
                        [(version, kind, bucket) for kind in FACTOR_KINDS for bucket in range(FACTOR_BUCKETS)])
        return True

    # -- maintenance ----------------------------------------------------------------------

    def contents(self) -> dict[str, list[tuple]]:
        """Every view's rows in a stable order. Reads whole tables: for verification and tests."""
        checkpoint = self.checkpoint()

        def table(cql: str) -> list[tuple]:
            return list(self._session.execute(cql.format(**checkpoint.views)))

        reviews = (_review_row(review) for (review,) in table("SELECT review FROM {reviews}.user_reviews"))
        history = (_history_row(event) for (event,) in table("SELECT event FROM {history}.user_events"))
        return {
            "reviews": sorted((r.user_id, r.movie_id, r.rating, r.summary, r.text, micros(r.reviewed_at), r.event_id)
                              for r in reviews),
            "movies": sorted(table("SELECT movie_id, title, year, genres, image_url FROM {movies}.catalogue")),
            "history": sorted((h.event_id, h.user_id, h.type, h.occurred_at, h.recorded_at, h.partition, h.offset,
                               h.payload) for h in history),
            "checkpoints": sorted(checkpoint.items()),
        }

    def _keyspaces(self) -> list[str]:
        return [name for (name,) in self._session.execute("SELECT keyspace_name FROM system_schema.keyspaces")]

    def scratch(self, name: str) -> "CassandraStore":
        """A fresh keyspace, `<keyspace>__<name>_<random>`. Leftovers of the same name (a generation
        a later swap replaced, or the scratch store of a maintenance run that died) are dropped
        first: those no view lives in and this process has not open. Other names' are another
        command's (a verification may run beside a rebuild)."""
        prefix = f"{self.config.keyspace}__{name}_"
        live = set(self._generation()[1].values())
        for keyspace in self._keyspaces():
            if (keyspace.startswith(prefix) and keyspace[len(prefix):].isalnum()
                    and keyspace not in live and keyspace not in _open_scratch):
                change_schema(self._session, f"DROP KEYSPACE IF EXISTS {keyspace}")
        return CassandraStore(replace(self.config, keyspace=f"{prefix}{uuid.uuid4().hex[:8]}"), scratch=True)

    def swap_in(self, fresh: "CassandraStore", views: list[str]) -> None:
        """A new generation: fresh's checkpoint under a new id, then the generation row pointing at it
        and at fresh's views in one compare-and-set. A projector's batch folded on the generation
        before commits (if at all) only there: its next checkpoint() reads the new one."""
        target = fresh.checkpoint()
        generation, where = self._generation()
        new = uuid.uuid4().hex
        self._write_all(self._statement(
            "INSERT INTO {base}.generation_partitions (generation, partition) VALUES (?, ?)"),
            [(new, p) for p in target])
        # Compare-and-set like every later write of these rows: a plain write's timestamp (the client's
        # clock) could be later than a Paxos round's and hide its write.
        self._write_all(self._statement(
            "INSERT INTO {base}.checkpoints (generation, partition, log_offset) VALUES (?,?,?) IF NOT EXISTS"),
            [(new, p, offset) for p, offset in target.items()])
        moved = {**where, **{view: target.views[view] for view in views}}
        if not self._session.execute(self._statement(
                "UPDATE {base}.generation SET id = ?, reviews = ?, movies = ?, history = ? WHERE name = 'current' "
                "IF id = ?"), (new, moved["reviews"], moved["movies"], moved["history"], generation)).was_applied:
            raise HarmonyError("another swap came first (is a maintenance command running without the lease?)")
        fresh._scratch = False  # views of its keyspace are live now
        self._generation()

    def take_lease(self, holder: str, seconds: float) -> tuple[str, datetime] | None:
        """The lease row lives `seconds` (its TTL, whole seconds): an expired lease is no row."""
        ttl = max(1, math.ceil(seconds))
        expires = micros(datetime.now(timezone.utc)) + round(seconds * 1e6)
        taken = self._session.execute(self._statement(
            "INSERT INTO {base}.leases (name, holder, expires) VALUES (?, ?, ?) IF NOT EXISTS USING TTL ?"),
            (LEASE, holder, expires, ttl))
        if taken.was_applied:
            return None
        current = dict(zip(taken.column_names, taken.one()))
        if current["holder"] != holder:
            return current["holder"], from_micros(current["expires"])
        if self._session.execute(self._statement(
                "UPDATE {base}.leases USING TTL ? SET holder = ?, expires = ? WHERE name = ? IF holder = ?"),
                (ttl, holder, expires, LEASE, holder)).was_applied:
            return None
        return self.take_lease(holder, seconds)  # it expired and changed hands meanwhile: ask again

    def release_lease(self, holder: str) -> None:
        self._session.execute(self._statement("DELETE FROM {base}.leases WHERE name = ? IF holder = ?"),
                              (LEASE, holder))

    def close(self) -> None:
        try:
            if self._scratch:  # with the keyspaces its views live in and its own leftovers
                keyspace = self.config.keyspace
                for name in {keyspace, *self._generation()[1].values(),
                             *(k for k in self._keyspaces() if k.startswith(f"{keyspace}__"))}:
                    change_schema(self._session, f"DROP KEYSPACE IF EXISTS {name}")
        finally:
            _open_scratch.discard(self.config.keyspace)
            self._cluster.shutdown()
