"""The scale-out projection store: Apache Cassandra, through cassandra-driver.

Query-first tables, one per question the port asks (docs/cassandra.md gives the reasoning):

| table | partition key | clustering | answers |
|---|---|---|---|
| `reviews_by_user` | user_id | movie_id | a user's current reviews |
| `reviews_by_movie` | movie_id | user_id | a movie's review count and mean (derived, never counted up) |
| `movies` | movie_id | | the catalogue entry |
| `history_by_user` | user_id | log_partition DESC, log_offset DESC | the audit trail, newest first |
| `applied_events` | event_id | | which events were applied (retried commands) |
| `checkpoints` | partition | | where the projector is |
| `lag` | partition | | the projector's last lag report |
| `factors` | (version, kind, bucket) | id | a model's factors, in bounded partitions |
| `models`, `current_model` | version / name | | the registry and its current pointer |

Every row a batch writes carries its version (the log offset of the event behind it) as the
write timestamp (`USING TIMESTAMP`): Cassandra keeps the newest write per cell, so a stale or
repeated batch changes nothing and a checkpoint never moves back, with no transaction across
tables. All statements are prepared; the token-aware policy sends each to a replica of its
partition; a batch's writes go out concurrently, the checkpoints after the rows they cover.
"""

from __future__ import annotations

import json
import logging
import zlib
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

import msgspec
from cassandra import ConsistencyLevel
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.query import ValueSequence

from events.errors import HarmonyError
from projections.store import Changes, FactorRow, HistoryRow, ModelInfo, Movie, PartitionLag, ReviewRow

log = logging.getLogger(__name__)

FACTOR_BUCKETS = 16  # a model's factors of one kind spread over this many partitions
CONCURRENCY = 64  # writes (or reads) in flight at once for one batch
IN_CHUNK = 100  # keys per `IN` query
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

TABLES = """
CREATE TABLE IF NOT EXISTS reviews_by_user (
    user_id text, movie_id text, rating double, summary text, text text, reviewed_at bigint, event_id text,
    PRIMARY KEY ((user_id), movie_id));
CREATE TABLE IF NOT EXISTS reviews_by_movie (
    movie_id text, user_id text, rating double, PRIMARY KEY ((movie_id), user_id));
CREATE TABLE IF NOT EXISTS movies (
    movie_id text PRIMARY KEY, title text, year int, genres list<text>, image_url text);
CREATE TABLE IF NOT EXISTS history_by_user (
    user_id text, log_partition int, log_offset bigint, event_id text, type text,
    occurred_at bigint, recorded_at bigint, payload text,
    PRIMARY KEY ((user_id), log_partition, log_offset))
    WITH CLUSTERING ORDER BY (log_partition DESC, log_offset DESC);
CREATE TABLE IF NOT EXISTS applied_events (event_id text PRIMARY KEY);
CREATE TABLE IF NOT EXISTS checkpoints (partition int PRIMARY KEY, log_offset bigint);
CREATE TABLE IF NOT EXISTS lag (
    partition int PRIMARY KEY, checkpoint bigint, high_watermark bigint, updated_at bigint);
CREATE TABLE IF NOT EXISTS factors (
    version text, kind text, bucket int, id text, bias double, vector blob,
    PRIMARY KEY ((version, kind, bucket), id));
CREATE TABLE IF NOT EXISTS models (version text PRIMARY KEY, info text);
CREATE TABLE IF NOT EXISTS current_model (name text PRIMARY KEY, version text);
"""

VIEW_TABLES = ("reviews_by_user", "reviews_by_movie", "movies", "history_by_user", "applied_events",
               "checkpoints", "lag")


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


def factor_bucket(id: str) -> int:
    return zlib.crc32(id.encode()) % FACTOR_BUCKETS


class CassandraStore:
    def __init__(self, config: CassandraConfig, scratch: bool = False):
        """`scratch`: a throw-away keyspace (rebuilds, verification), dropped when closed."""
        self.config, self._scratch = config, scratch
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
            consistency_level=ConsistencyLevel.name_to_value[config.consistency],
            request_timeout=10.0,
        )
        self._cluster = Cluster(list(config.contact_points), port=config.port, protocol_version=5,
                                execution_profiles={EXEC_PROFILE_DEFAULT: profile},
                                connect_timeout=config.connect_timeout,
                                control_connection_timeout=config.connect_timeout)
        self._session = self._connect()
        if scratch:
            self._session.execute(f"DROP KEYSPACE IF EXISTS {config.keyspace}")
        self._session.execute(
            f"CREATE KEYSPACE IF NOT EXISTS {config.keyspace} WITH replication = "
            f"{{'class': 'SimpleStrategy', 'replication_factor': {config.replication_factor}}}")
        self._session.set_keyspace(config.keyspace)
        for statement in filter(str.strip, TABLES.split(";")):
            self._session.execute(statement)
        self._prepare()

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

    def _prepare(self) -> None:
        prepare = self._session.prepare
        self._put_review = prepare(
            "INSERT INTO reviews_by_user (user_id, movie_id, rating, summary, text, reviewed_at, event_id) "
            "VALUES (?,?,?,?,?,?,?) USING TIMESTAMP ?")
        self._delete_review = prepare(
            "DELETE FROM reviews_by_user USING TIMESTAMP ? WHERE user_id = ? AND movie_id = ?")
        self._put_rating = prepare(
            "INSERT INTO reviews_by_movie (movie_id, user_id, rating) VALUES (?,?,?) USING TIMESTAMP ?")
        self._delete_rating = prepare(
            "DELETE FROM reviews_by_movie USING TIMESTAMP ? WHERE movie_id = ? AND user_id = ?")
        self._put_movie = prepare(
            "INSERT INTO movies (movie_id, title, year, genres, image_url) VALUES (?,?,?,?,?) USING TIMESTAMP ?")
        self._put_history = prepare(
            "INSERT INTO history_by_user (user_id, log_partition, log_offset, event_id, type, occurred_at, "
            "recorded_at, payload) VALUES (?,?,?,?,?,?,?,?)")
        self._put_applied = prepare("INSERT INTO applied_events (event_id) VALUES (?)")
        # The checkpoint's write timestamp is its offset: a lower one never overwrites a higher one.
        self._put_checkpoint = prepare(
            "INSERT INTO checkpoints (partition, log_offset) VALUES (?,?) USING TIMESTAMP ?")
        self._put_lag = prepare(
            "INSERT INTO lag (partition, checkpoint, high_watermark, updated_at) VALUES (?,?,?,?)")
        self._put_factor = prepare(
            "INSERT INTO factors (version, kind, bucket, id, bias, vector) VALUES (?,?,?,?,?,?)")
        self._put_model = prepare("INSERT INTO models (version, info) VALUES (?,?)")
        self._set_current = prepare("INSERT INTO current_model (name, version) VALUES ('current', ?)")

        self._checkpoints = prepare("SELECT partition, log_offset FROM checkpoints")
        self._applied = prepare("SELECT event_id FROM applied_events WHERE event_id IN ?")
        self._user_reviews = prepare(
            "SELECT user_id, movie_id, rating, summary, text, reviewed_at, event_id FROM reviews_by_user "
            "WHERE user_id = ?")
        self._movie = prepare("SELECT title, year, genres FROM movies WHERE movie_id = ?")
        self._movie_stats = prepare("SELECT count(rating), sum(rating) FROM reviews_by_movie WHERE movie_id = ?")
        history = ("SELECT user_id, event_id, type, occurred_at, recorded_at, log_partition, log_offset, payload "
                   "FROM history_by_user WHERE user_id = ?")
        self._history = prepare(history)
        self._history_before = prepare(history + " AND (log_partition, log_offset) < (?, ?)")
        self._lag = prepare("SELECT partition, checkpoint, high_watermark FROM lag")
        self._model = prepare("SELECT info FROM models WHERE version = ?")
        self._current = prepare("SELECT version FROM current_model WHERE name = 'current'")
        factors = "SELECT id, bias, vector FROM factors WHERE version = ? AND kind = ? AND bucket = ?"
        self._factors = prepare(factors)
        self._factors_of = prepare(factors + " AND id IN ?")

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
        return {partition: offset for partition, offset in self._session.execute(self._checkpoints)}

    def seen_event_ids(self, event_ids: list[str]) -> set[str]:
        chunks = [(ValueSequence(event_ids[i:i + IN_CHUNK]),) for i in range(0, len(event_ids), IN_CHUNK)]
        return {row.event_id for row in self._read_all(self._applied, chunks)} if chunks else set()

    def apply(self, changes: Changes) -> None:
        # Rows first, then the checkpoints that cover them: a failure part-way leaves the checkpoint
        # behind, and the batch is applied again (idempotently) after a restart.
        puts = [(key, version, row) for key, (version, row) in changes.reviews.items() if row is not None]
        deletes = [(key, version) for key, (version, row) in changes.reviews.items() if row is None]
        self._write_all(self._put_review, [
            (r.user_id, r.movie_id, r.rating, r.summary, r.text, micros(r.reviewed_at), r.event_id, version)
            for _, version, r in puts])
        self._write_all(self._put_rating, [(movie, user, r.rating, version) for (user, movie), version, r in puts])
        self._write_all(self._delete_review, [(version, user, movie) for (user, movie), version in deletes])
        self._write_all(self._delete_rating, [(version, movie, user) for (user, movie), version in deletes])
        self._write_all(self._put_movie, [(c.movie_id, c.title, c.year, c.genres, c.image_url, version)
                                          for version, c in changes.catalogue.values()])
        self._write_all(self._put_history, [
            (h.user_id, h.partition, h.offset, h.event_id, h.type, micros(h.occurred_at), micros(h.recorded_at),
             msgspec.json.encode(h.payload).decode()) for h in changes.history])
        self._write_all(self._put_applied, [(h.event_id,) for h in changes.history])
        self._write_all(self._put_checkpoint, [(p, o, o) for p, o in changes.checkpoint.items()])

    def record_lag(self, lags: list[PartitionLag]) -> None:
        now = micros(datetime.now(timezone.utc))
        self._write_all(self._put_lag, [(lag.partition, lag.checkpoint, lag.high_watermark, now) for lag in lags])

    # -- read side ----------------------------------------------------------------------

    def user_reviews(self, user_id: str, limit: int, after: tuple[datetime, str] | None) -> list[ReviewRow]:
        # The user's partition is read whole and ordered here: a partition holds one user's reviews.
        rows = [ReviewRow(m, r, s, t, from_micros(at), e, user_id=u)
                for u, m, r, s, t, at, e in self._session.execute(self._user_reviews, (user_id,))]
        rows.sort(key=lambda row: (row.reviewed_at, row.movie_id), reverse=True)
        if after is not None:
            rows = [row for row in rows if (row.reviewed_at, row.movie_id) < after]
        return rows[:limit]

    def movie(self, movie_id: str) -> Movie | None:
        entry = self._session.execute(self._movie, (movie_id,)).one()
        count, total = self._session.execute(self._movie_stats, (movie_id,)).one()
        if entry is None and not count:
            return None
        title, year, genres = entry or (None, None, None)
        return Movie(movie_id, title, year, list(genres or []), count, total / count if count else None)

    def user_history(
        self, user_id: str, limit: int, before: tuple[int, int] | None, as_of: datetime | None
    ) -> list[HistoryRow]:
        if before is None:
            result = self._session.execute(self._history, (user_id,))
        else:
            result = self._session.execute(self._history_before, (user_id, *before))
        rows: list[HistoryRow] = []
        for u, e, t, occurred, recorded, p, o, payload in result:  # pages are fetched as iterated
            if as_of is not None and from_micros(recorded) > as_of:
                continue
            rows.append(HistoryRow(u, e, t, from_micros(occurred), from_micros(recorded), p, o, json.loads(payload)))
            if limit and len(rows) == limit:
                break
        return rows

    def lag(self) -> list[PartitionLag]:
        return [PartitionLag.of(p, c, h) for p, c, h in sorted(self._session.execute(self._lag))]

    def ping(self) -> None:
        self._session.execute("SELECT release_version FROM system.local")

    # -- model side ---------------------------------------------------------------------

    def put_factors(self, version: str, kind: str, rows: list[FactorRow]) -> None:
        self._write_all(self._put_factor, [(version, kind, factor_bucket(row.id), row.id, row.bias, row.vector)
                                           for row in rows])

    def publish_model(self, info: ModelInfo) -> None:
        # The registry row first, then the pointer: one cell write makes the version current.
        self._session.execute(self._put_model, (info.version, msgspec.json.encode(info).decode()))
        self._session.execute(self._set_current, (info.version,))

    def model(self, version: str | None = None) -> ModelInfo | None:
        if version is None:
            current = self._session.execute(self._current).one()
            if current is None:
                return None
            version = current.version
        row = self._session.execute(self._model, (version,)).one()
        return None if row is None else msgspec.json.decode(row.info, type=ModelInfo)

    def factors(self, version: str, kind: str, ids: list[str] | None = None) -> list[FactorRow]:
        if ids is None:
            rows = self._read_all(self._factors, [(version, kind, b) for b in range(FACTOR_BUCKETS)])
        else:
            by_bucket: dict[int, list[str]] = {}
            for id in ids:
                by_bucket.setdefault(factor_bucket(id), []).append(id)
            rows = self._read_all(self._factors_of, [
                (version, kind, bucket, ValueSequence(chunk[i:i + IN_CHUNK]))
                for bucket, chunk in by_bucket.items() for i in range(0, len(chunk), IN_CHUNK)])
        return sorted((FactorRow(id, bias, vector) for id, bias, vector in rows), key=lambda row: row.id)

    # -- maintenance ----------------------------------------------------------------------

    def contents(self) -> dict[str, list[tuple]]:
        """Every view's rows in a stable order. Reads whole tables: for verification and tests."""
        def table(cql: str) -> list[tuple]:
            return sorted(tuple(row) for row in self._session.execute(cql))

        return {
            "reviews": table("SELECT user_id, movie_id, rating, summary, text, reviewed_at, event_id "
                             "FROM reviews_by_user"),
            "movies": table("SELECT movie_id, title, year, genres, image_url FROM movies"),
            "history": table("SELECT event_id, user_id, type, occurred_at, recorded_at, log_partition, "
                             "log_offset, payload FROM history_by_user"),
            "checkpoints": table("SELECT partition, log_offset FROM checkpoints"),
        }

    def scratch(self, name: str) -> "CassandraStore":
        return CassandraStore(replace(self.config, keyspace=f"{self.config.keyspace}_{name}"), scratch=True)

    def swap_in(self, fresh: "CassandraStore", views: list[str]) -> AbstractContextManager[dict[int, int]]:
        raise HarmonyError("rebuild cannot swap views in at once on Cassandra yet: rebuild a SQLite store, "
                           "or drop the keyspace and let the worker project the log again")

    def close(self) -> None:
        if self._scratch:
            self._session.execute(f"DROP KEYSPACE IF EXISTS {self.config.keyspace}")
        self._cluster.shutdown()
