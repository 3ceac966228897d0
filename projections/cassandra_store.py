"""The scale-out projection store: Apache Cassandra, through cassandra-driver.

Query-first tables, one per question the port asks (docs/cassandra.md gives the reasoning):

| table | partition key | clustering | answers |
|---|---|---|---|
| `reviews_by_user` | user_id | movie_id | a user's current reviews |
| `reviews_by_movie` | movie_id | user_id | a movie's review count and mean (derived, never counted up) |
| `movies` | movie_id | | the catalogue entry |
| `history_by_user` | user_id | log_partition DESC, log_offset DESC | the audit trail, newest first |
| `applied_events` | key (the user) | event_id | which events were applied (retried commands) |
| `projection` | name | | where the projector is, and where each view lives |
| `lag` | partition | | the projector's last lag report |
| `factors` | (version, kind, bucket) | id | a model's factors, in bounded partitions |
| `models`, `current_model` | version / name | | the registry and its current pointer |

A batch's rows go out as one unlogged batch per partition key (a user's reviews and history, a
movie's ratings), those batches concurrently, each row with its version (the log offset of the
event behind it) as the write timestamp (`USING TIMESTAMP`): Cassandra keeps the newest write per
cell, so a stale or repeated batch's rows change nothing. Then which events they applied, per
user. Then the batch commits by moving the checkpoint with a lightweight transaction
(compare-and-set) on the one `projection` row, which also names the keyspace each view lives in:
a rebuild folds fresh views into a keyspace of its own and swaps them in by pointing the row at
it, in the same kind of transaction. A batch that loses the race is folded again. All statements
are prepared; the token-aware policy sends each to a replica.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
import zlib
from dataclasses import dataclass, replace
from functools import partial
from typing import Iterable
from datetime import datetime, timedelta, timezone

import msgspec
from cassandra import ConsistencyLevel, WriteTimeout, WriteType
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable
from cassandra.concurrent import execute_concurrent, execute_concurrent_with_args
from cassandra.policies import DCAwareRoundRobinPolicy, RetryPolicy, TokenAwarePolicy
from cassandra.protocol import ErrorMessage
from cassandra.query import BatchStatement, BatchType, ValueSequence

from events.errors import HarmonyError
from projections.store import REBUILDABLE, CatalogueEntry, Changes, FactorRow, HistoryRow, ModelInfo, Movie, PartitionLag, ReviewRow

log = logging.getLogger(__name__)

FACTOR_BUCKETS = 16  # a model's factors of one kind spread over this many partitions
CONCURRENCY = 64  # requests in flight at once for one batch
BATCH_ROWS = 100  # rows per unlogged batch, and
BATCH_BYTES = 32_000  # about this much text: under Cassandra's default batch size limit (50 KiB)
IN_CHUNK = 100  # keys per `IN` query
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
WHERE_TTL = 1.0  # seconds a reader trusts where the views live before reading it again

TABLES = """
CREATE TABLE IF NOT EXISTS reviews_by_user (
    user_id text, movie_id text, rating double, summary text, text text, reviewed_at bigint, event_id text,
    PRIMARY KEY ((user_id), movie_id));
CREATE TABLE IF NOT EXISTS reviews_by_movie (
    movie_id text, user_id text, rating double, PRIMARY KEY ((movie_id), user_id));
-- genres frozen: a whole value, so writing it leaves no tombstone for an older list.
CREATE TABLE IF NOT EXISTS movies (
    movie_id text PRIMARY KEY, title text, year int, genres frozen<list<text>>, image_url text);
CREATE TABLE IF NOT EXISTS history_by_user (
    user_id text, log_partition int, log_offset bigint, event_id text, type text,
    occurred_at bigint, recorded_at bigint, payload text,
    PRIMARY KEY ((user_id), log_partition, log_offset))
    WITH CLUSTERING ORDER BY (log_partition DESC, log_offset DESC);
CREATE TABLE IF NOT EXISTS applied_events (key text, event_id text, PRIMARY KEY ((key), event_id));
CREATE TABLE IF NOT EXISTS projection (
    name text PRIMARY KEY, checkpoint text, reviews text, movies text, history text);
CREATE TABLE IF NOT EXISTS lag (
    partition int PRIMARY KEY, checkpoint bigint, high_watermark bigint, updated_at bigint);
CREATE TABLE IF NOT EXISTS factors (
    version text, kind text, bucket int, id text, bias double, vector blob, count int,
    PRIMARY KEY ((version, kind, bucket), id));
CREATE TABLE IF NOT EXISTS models (version text PRIMARY KEY, info text);
CREATE TABLE IF NOT EXISTS current_model (name text PRIMARY KEY, version text);
"""

STATE = "SELECT checkpoint, reviews, movies, history FROM {base}.projection WHERE name = 'views'"


@dataclass(frozen=True)
class CassandraConfig:
    contact_points: tuple[str, ...]
    port: int
    keyspace: str
    replication_factor: int
    consistency: str  # of reads and writes: a ConsistencyLevel name, e.g. LOCAL_QUORUM
    connect_timeout: float  # seconds to reach the cluster before giving up


MICROSECOND = timedelta(microseconds=1)


def micros(moment: datetime) -> int:
    """Microseconds since the epoch: Cassandra's `timestamp` keeps only milliseconds."""
    return (moment - EPOCH) // MICROSECOND


def from_micros(value: int) -> datetime:
    return EPOCH + value * MICROSECOND


def _history_row(row) -> HistoryRow:
    user_id, event_id, type, occurred, recorded, partition, offset, payload = row
    return HistoryRow(user_id, event_id, type, from_micros(occurred), from_micros(recorded), partition, offset,
                      json.loads(payload))


def factor_bucket(id: str) -> int:
    return zlib.crc32(id.encode()) % FACTOR_BUCKETS


def in_chunks(pairs: Iterable[tuple[object, str]]) -> list[tuple[object, ValueSequence]]:
    """(partition key, value) pairs as (partition key, up to IN_CHUNK of its values) for `IN ?`:
    each query reads one partition."""
    by_key: dict[object, list[str]] = {}
    for key, value in pairs:
        by_key.setdefault(key, []).append(value)
    return [(key, ValueSequence(values[i:i + IN_CHUNK])) for key, values in by_key.items()
            for i in range(0, len(values), IN_CHUNK)]


def encode_checkpoint(checkpoint: dict[int, int]) -> str:
    """One canonical text per checkpoint, so a lightweight transaction can compare it."""
    return json.dumps(sorted(checkpoint.items()))


def decode_checkpoint(text: str) -> dict[int, int]:
    return {partition: offset for partition, offset in json.loads(text)}


class PartitionBatches:
    """Statements grouped into unlogged batches by partition key: one request writes a user's rows
    (Cassandra applies a partition's batch at once), and no batch grows past Cassandra's size limit."""

    def __init__(self):
        self.batches: list[BatchStatement] = []
        self._open: dict[str, tuple[BatchStatement, int]] = {}  # key -> (its batch, text in it)

    def add(self, key: str, statement, values: tuple, size: int = 0) -> None:
        batch, held = self._open.get(key, (None, 0))
        if batch is None or len(batch) >= BATCH_ROWS or held + size > BATCH_BYTES:
            batch, held = BatchStatement(BatchType.UNLOGGED), 0
            self.batches.append(batch)
        batch.add(statement, values)
        self._open[key] = (batch, held + size)


class RetryIdempotentWrites(RetryPolicy):
    """Every plain write here is idempotent (rows versioned by their event's offset, facts keyed by
    what they record): one that timed out (a replica slow, or just killed) is tried once more
    before the worker gives up. A compare-and-set is not retried here: `apply` decides."""

    def on_write_timeout(self, query, consistency, write_type, required_responses, received_responses, retry_num):
        if retry_num == 0 and write_type != WriteType.CAS:
            return self.RETRY, consistency
        return self.RETHROW, None


def _cas_unknown(error: Exception) -> bool:
    """A compare-and-set whose outcome is unknown: a Paxos timeout (contention), or CAS_WRITE_UNKNOWN
    (protocol v5's 0x1700, which cassandra-driver 3.30 does not name: a bare ErrorMessage)."""
    return isinstance(error, WriteTimeout) or getattr(error, "code", None) == 0x1700


class CassandraStore:
    def __init__(self, config: CassandraConfig, scratch: bool = False):
        """`scratch`: a throw-away keyspace (rebuilds, verification), dropped when closed unless
        a swap made its views live."""
        self.config, self._scratch = config, scratch
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
            consistency_level=ConsistencyLevel.name_to_value[config.consistency],
            serial_consistency_level=ConsistencyLevel.LOCAL_SERIAL,
            retry_policy=RetryIdempotentWrites(),
            request_timeout=10.0,
        )
        self._cluster = Cluster(list(config.contact_points), port=config.port, protocol_version=5,
                                execution_profiles={EXEC_PROFILE_DEFAULT: profile},
                                connect_timeout=config.connect_timeout,
                                control_connection_timeout=config.connect_timeout)
        self._session = self._connect()
        self._prepared: dict[str, object] = {}
        keyspace = config.keyspace
        if scratch:
            self._session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
        self._session.execute(
            f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = "
            f"{{'class': 'SimpleStrategy', 'replication_factor': {config.replication_factor}}}")
        for statement in filter(str.strip, TABLES.split(";")):
            self._session.execute(statement.replace("CREATE TABLE IF NOT EXISTS ",
                                                    f"CREATE TABLE IF NOT EXISTS {keyspace}."))
        if self._session.execute("SELECT column_name FROM system_schema.columns WHERE keyspace_name = %s AND "
                                 "table_name = 'factors' AND column_name = 'count'", (keyspace,)).one() is None:
            self._session.execute(f"ALTER TABLE {keyspace}.factors ADD count int")  # a registry from before counts
        self._where: dict[str, str] = {}
        self._where_read = float("-inf")
        if self._session.execute(self._statement(STATE)).one() is None:
            # A new store keeps its views in its own keyspace, from no checkpoint.
            self._session.execute(self._statement(
                "INSERT INTO {base}.projection (name, checkpoint, reviews, movies, history) "
                "VALUES ('views', '[]', ?, ?, ?) IF NOT EXISTS"), (keyspace,) * 3)
        self._state()

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

    def _statement(self, cql: str, **views: str):
        """The prepared statement of `cql`, whose `{base}` is this store's keyspace and whose
        `{reviews}`, `{movies}`, `{history}` are the keyspaces those views live in."""
        text = cql.format(base=self.config.keyspace, **views)
        statement = self._prepared.get(text)
        if statement is None:
            statement = self._prepared[text] = self._session.prepare(text)
        return statement

    def _state(self) -> tuple[dict[int, int], dict[str, str]]:
        """The checkpoint and where each view lives, read at the store's consistency, not through Paxos: every
        commit is a compare-and-set, so a stale read only makes one commit fail and its batch fold again. A
        serial read is a Paxos round of its own and contends with every commit (and every other reader)."""
        row = self._session.execute(self._statement(STATE)).one()
        self._where = {view: getattr(row, view) for view in REBUILDABLE}
        self._where_read = time.monotonic()
        return decode_checkpoint(row.checkpoint), self._where

    def _views(self) -> dict[str, str]:
        """Where each view lives, as read within the last second (a swap is seen that late)."""
        if time.monotonic() - self._where_read > WHERE_TTL:
            self._state()
        return self._where

    def _write_all(self, statement, rows: list[tuple]) -> None:
        if rows:
            execute_concurrent_with_args(self._session, statement, rows, concurrency=CONCURRENCY,
                                         raise_on_first_error=True)

    def _read_all(self, statement, rows: list[tuple]) -> list:
        results = execute_concurrent_with_args(self._session, statement, rows, concurrency=CONCURRENCY,
                                               raise_on_first_error=True, results_generator=False)
        return [row for _, result in results for row in result]

    # -- projector side ---------------------------------------------------------------

    def checkpoint(self) -> dict[int, int]:
        return self._state()[0]

    def seen_event_ids(self, events: list[tuple[str, str]]) -> set[str]:
        statement = self._statement("SELECT event_id FROM {reviews}.applied_events WHERE key = ? AND event_id IN ?",
                                    **self._views())
        queries = in_chunks(events)
        return {row.event_id for row in self._read_all(statement, queries)} if queries else set()

    def apply(self, changes: Changes) -> bool:
        # The rows first, then which events they applied, then the commit: a failure part-way leaves
        # the checkpoint behind (and no event marked applied without its rows), and the batch is
        # applied again after a restart. Rows written for a commit that then loses its
        # compare-and-set are older versions, or sit in views no longer live: harmless.
        where = self._views()
        q = partial(self._statement, **where)
        put_review = q("INSERT INTO {reviews}.reviews_by_user (user_id, movie_id, rating, summary, text, "
                       "reviewed_at, event_id) VALUES (?,?,?,?,?,?,?) USING TIMESTAMP ?")
        delete_review = q("DELETE FROM {reviews}.reviews_by_user USING TIMESTAMP ? WHERE user_id = ? AND movie_id = ?")
        put_rating = q("INSERT INTO {reviews}.reviews_by_movie (movie_id, user_id, rating) VALUES (?,?,?) "
                       "USING TIMESTAMP ?")
        delete_rating = q("DELETE FROM {reviews}.reviews_by_movie USING TIMESTAMP ? WHERE movie_id = ? AND user_id = ?")
        put_movie = q("INSERT INTO {movies}.movies (movie_id, title, year, genres, image_url) VALUES (?,?,?,?,?) "
                      "USING TIMESTAMP ?")
        put_history = q("INSERT INTO {history}.history_by_user (user_id, log_partition, log_offset, event_id, type, "
                        "occurred_at, recorded_at, payload) VALUES (?,?,?,?,?,?,?,?)")
        put_applied = q("INSERT INTO {reviews}.applied_events (key, event_id) VALUES (?,?)")

        rows = PartitionBatches()
        for (user, movie), (version, r) in changes.reviews.items():
            if r is None:
                rows.add(user, delete_review, (version, user, movie))
                rows.add(f"movie:{movie}", delete_rating, (version, movie, user))
            else:
                rows.add(user, put_review, (user, movie, r.rating, r.summary, r.text, micros(r.reviewed_at),
                                            r.event_id, version), len(r.summary) + len(r.text))
                rows.add(f"movie:{movie}", put_rating, (movie, user, r.rating, version))
        for version, c in changes.catalogue.values():
            rows.add(f"movie:{c.movie_id}", put_movie, (c.movie_id, c.title, c.year, c.genres, c.image_url, version))
        applied = PartitionBatches()
        for h in changes.history:
            payload = msgspec.json.encode(h.payload).decode()
            rows.add(h.user_id, put_history, (h.user_id, h.partition, h.offset, h.event_id, h.type,
                                              micros(h.occurred_at), micros(h.recorded_at), payload), len(payload))
            applied.add(h.user_id, put_applied, (h.user_id, h.event_id))
        for phase in (rows, applied):
            if phase.batches:
                execute_concurrent(self._session, [(batch, None) for batch in phase.batches],
                                   concurrency=CONCURRENCY, raise_on_first_error=True)

        moved = {p: max(o, changes.since.get(p, -1)) for p, o in changes.checkpoint.items()}
        try:
            committed = self._session.execute(self._statement(
                "UPDATE {base}.projection SET checkpoint = ? WHERE name = 'views' "
                "IF checkpoint = ? AND reviews = ? AND movies = ? AND history = ?"), (
                encode_checkpoint({**changes.since, **moved}), encode_checkpoint(changes.since),
                where["reviews"], where["movies"], where["history"])).was_applied
        except (WriteTimeout, ErrorMessage) as error:
            # Contention, or a proposal accepted by fewer than a quorum: the commit may or may not have
            # happened. Either way folding again is right: the next commit's Paxos round finishes (or
            # drops) this one first, and a batch already committed folds to nothing.
            if not _cas_unknown(error):
                raise
            log.warning("checkpoint commit outcome unknown; folding again", extra={"error": str(error)})
            committed = False
        if not committed:
            self._state()  # the fold goes again, on what is there now
        return committed

    def record_lag(self, lags: list[PartitionLag]) -> None:
        now = micros(datetime.now(timezone.utc))
        self._write_all(self._statement(
            "INSERT INTO {base}.lag (partition, checkpoint, high_watermark, updated_at) VALUES (?,?,?,?)"),
            [(lag.partition, lag.checkpoint, lag.high_watermark, now) for lag in lags])

    # -- read side ----------------------------------------------------------------------

    def user_reviews(self, user_id: str, limit: int, after: tuple[datetime, str] | None) -> list[ReviewRow]:
        # The user's partition is read whole and ordered here: a partition holds one user's reviews.
        statement = self._statement(
            "SELECT user_id, movie_id, rating, summary, text, reviewed_at, event_id FROM {reviews}.reviews_by_user "
            "WHERE user_id = ?", **self._views())
        rows = [ReviewRow(m, r, s, t, from_micros(at), e, user_id=u)
                for u, m, r, s, t, at, e in self._session.execute(statement, (user_id,))]
        rows.sort(key=lambda row: (row.reviewed_at, row.movie_id), reverse=True)
        if after is not None:
            rows = [row for row in rows if (row.reviewed_at, row.movie_id) < after]
        return rows[:limit]

    def user_ratings(self, user_id: str) -> dict[str, float]:
        return dict(self._session.execute(self._statement(
            "SELECT movie_id, rating FROM {reviews}.reviews_by_user WHERE user_id = ?", **self._views()),
            (user_id,)))

    def catalogue(self) -> list[CatalogueEntry]:
        rows = self._session.execute(self._statement(
            "SELECT movie_id, title, year, genres, image_url FROM {movies}.movies", **self._views()))
        return [CatalogueEntry(m, t, y, list(g or []), i) for m, t, y, g, i in rows]  # pages fetched as iterated

    def movie(self, movie_id: str) -> Movie | None:
        where = self._views()
        entry = self._session.execute(self._statement(
            "SELECT title, year, genres FROM {movies}.movies WHERE movie_id = ?", **where), (movie_id,)).one()
        count, total = self._session.execute(self._statement(
            "SELECT count(rating), sum(rating) FROM {reviews}.reviews_by_movie WHERE movie_id = ?", **where),
            (movie_id,)).one()
        if entry is None and not count:
            return None
        title, year, genres = entry or (None, None, None)
        return Movie(movie_id, title, year, list(genres or []), count, total / count if count else None)

    def user_history(
        self, user_id: str, limit: int, before: tuple[int, int] | None, as_of: datetime | None
    ) -> list[HistoryRow]:
        cql = ("SELECT user_id, event_id, type, occurred_at, recorded_at, log_partition, log_offset, payload "
               "FROM {history}.history_by_user WHERE user_id = ?")
        if before is None:
            result = self._session.execute(self._statement(cql, **self._views()), (user_id,))
        else:
            result = self._session.execute(
                self._statement(cql + " AND (log_partition, log_offset) < (?, ?)", **self._views()),
                (user_id, *before))
        rows: list[HistoryRow] = []
        for row in map(_history_row, result):  # pages are fetched as iterated
            if as_of is not None and row.recorded_at > as_of:
                continue
            rows.append(row)
            if limit and len(rows) == limit:
                break
        return rows

    def user_event(self, user_id: str, event_id: str) -> HistoryRow | None:
        # Filtering within one user's partition: the ids are not a key of it.
        row = self._session.execute(self._statement(
            "SELECT user_id, event_id, type, occurred_at, recorded_at, log_partition, log_offset, payload "
            "FROM {history}.history_by_user WHERE user_id = ? AND event_id = ? ALLOW FILTERING",
            **self._views()), (user_id, event_id)).one()
        return _history_row(row) if row else None

    def lag(self) -> list[PartitionLag]:
        rows = self._session.execute(self._statement("SELECT partition, checkpoint, high_watermark FROM {base}.lag"))
        return [PartitionLag.of(p, c, h) for p, c, h in sorted(rows)]

    def lag_reported_at(self) -> datetime | None:
        rows = self._session.execute(self._statement("SELECT updated_at FROM {base}.lag"))
        return max((from_micros(at) for (at,) in rows), default=None)

    def ping(self) -> None:
        self._session.execute("SELECT release_version FROM system.local")

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

    def model(self, version: str | None = None) -> ModelInfo | None:
        if version is None:
            current = self._session.execute(self._statement(
                "SELECT version FROM {base}.current_model WHERE name = 'current'")).one()
            if current is None:
                return None
            version = current.version
        row = self._session.execute(self._statement("SELECT info FROM {base}.models WHERE version = ?"),
                                    (version,)).one()
        return None if row is None else msgspec.json.decode(row.info, type=ModelInfo)

    def factors(self, version: str, kind: str, ids: list[str] | None = None) -> list[FactorRow]:
        cql = "SELECT id, bias, vector, count FROM {base}.factors WHERE version = ? AND kind = ? AND bucket = ?"
        if ids is None:
            rows = self._read_all(self._statement(cql), [(version, kind, b) for b in range(FACTOR_BUCKETS)])
        else:
            rows = self._read_all(self._statement(cql + " AND id IN ?"), [
                (version, kind, bucket, chunk) for bucket, chunk in in_chunks((factor_bucket(id), id) for id in ids)])
        return sorted((FactorRow(id, bias, vector, count or 0) for id, bias, vector, count in rows),
                      key=lambda row: row.id)

    # -- maintenance ----------------------------------------------------------------------

    def contents(self) -> dict[str, list[tuple]]:
        """Every view's rows in a stable order. Reads whole tables: for verification and tests."""
        checkpoint, where = self._state()

        def table(cql: str) -> list[tuple]:
            return sorted(tuple(row) for row in self._session.execute(cql.format(**where)))

        return {
            "reviews": table("SELECT user_id, movie_id, rating, summary, text, reviewed_at, event_id "
                             "FROM {reviews}.reviews_by_user"),
            "movies": table("SELECT movie_id, title, year, genres, image_url FROM {movies}.movies"),
            "history": table("SELECT event_id, user_id, type, occurred_at, recorded_at, log_partition, "
                             "log_offset, payload FROM {history}.history_by_user"),
            "checkpoints": sorted(checkpoint.items()),
        }

    def scratch(self, name: str) -> "CassandraStore":
        """A fresh keyspace named after this one (`<keyspace>__<name>_<random>`). A rebuild's
        keyspaces that no view points at any more (replaced by a later rebuild, or left by one
        that died) are dropped first: readers have long moved off them."""
        prefix = f"{self.config.keyspace}__"
        live = set(self._state()[1].values())
        for (keyspace,) in self._session.execute("SELECT keyspace_name FROM system_schema.keyspaces"):
            if keyspace.startswith(prefix + "rebuild_") and keyspace not in live:
                self._session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
        return CassandraStore(replace(self.config, keyspace=f"{prefix}{name}_{uuid.uuid4().hex[:8]}"), scratch=True)

    def swap_in(self, fresh: "CassandraStore", views: list[str], checkpoint: dict[int, int]) -> bool:
        if fresh.checkpoint() != checkpoint:
            raise RuntimeError(f"fresh store at {fresh.checkpoint()}, not at {checkpoint}")
        _, where = self._state()
        moved = {**where, **{view: fresh.config.keyspace for view in views}}
        swapped = self._session.execute(self._statement(
            "UPDATE {base}.projection SET reviews = ?, movies = ?, history = ? WHERE name = 'views' "
            "IF checkpoint = ? AND reviews = ? AND movies = ? AND history = ?"), (
            moved["reviews"], moved["movies"], moved["history"], encode_checkpoint(checkpoint),
            where["reviews"], where["movies"], where["history"])).was_applied
        if swapped:
            fresh._scratch = False  # its keyspace holds live views now
        self._state()
        return swapped

    def close(self) -> None:
        try:
            if self._scratch:  # with the keyspaces its views were swapped in from
                for keyspace in {self.config.keyspace, *self._state()[1].values()}:
                    self._session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
        finally:
            self._cluster.shutdown()
