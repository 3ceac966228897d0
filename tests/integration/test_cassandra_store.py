"""The Cassandra adapter against the store and fold contracts (tests/store_contract.py,
tests/fold_contract.py), on a real node that the test session starts (the `cassandra_node` fixture);
each test gets a keyspace of its own."""

from __future__ import annotations

import dataclasses
import time
import uuid

import pytest
from cassandra.cluster import Cluster

from harmony import bootstrap
from harmony.cli import main
from harmony.settings import load
from projections.cassandra_store import CassandraStore
from projections.fold import fold
from projections.projector import apply_records
from projections.store import PartitionLag
from tests.fold_contract import FoldContract
from tests.store_contract import StoreContract, records, ret, sub

pytestmark = [pytest.mark.integration, pytest.mark.cassandra]


def config_for(url: str, keyspace: str):
    return dataclasses.replace(bootstrap.cassandra_config(dataclasses.replace(load(), store_url=url)),
                               keyspace=keyspace)


class TestCassandraStore(StoreContract, FoldContract):
    @pytest.fixture
    def store(self, cassandra_node, keyspace_dropper):
        store = CassandraStore(config_for(cassandra_node["url"], f"contract_{uuid.uuid4().hex[:10]}"))
        self.others: list[CassandraStore] = []
        yield store
        for other in self.others:
            other.close()
        store.close()
        keyspace_dropper.drop(store.config.keyspace)  # with its scratch stores' leftovers

    def other_handle(self, store):
        other = CassandraStore(store.config)
        self.others.append(other)
        return other

    @pytest.mark.parametrize("last, standing", [(sub("c", "u", "m", 4.0, minutes=2), [("c", 4.0)]),
                                                (ret("c", "u", "m", minutes=2), [])], ids=["replaced", "retracted"])
    def test_a_stale_batch_past_the_first_check_leaves_no_review_row(self, store, monkeypatch, last, standing):
        """Two workers overlapping: the stale one checked the checkpoint before the newer one committed
        (a race the contract cannot time), so it writes its rows; its review must not stand beside
        the newer state in the newest-first table."""
        log = records(sub("a", "u", "m", 2.0), sub("b", "u", "m", 3.0, minutes=1), last)
        stale, newest = fold(store, log[:2]), fold(store, log)
        assert store.apply(newest)
        monkeypatch.setattr(store, "_unmoved", lambda since, partitions: True)
        assert not store.apply(stale)
        assert [(r.event_id, r.rating) for r in store.user_reviews("u", 10, None)] == standing
        assert [(r.event_id, r.rating) for r in store.movie_reviews("m", 10, None)] == standing


def test_reviews_projected_before_movie_pages_are_indexed_when_the_keyspace_is_opened(cassandra_node):
    store = CassandraStore(config_for(cassandra_node["url"], f"pages_{uuid.uuid4().hex[:10]}"), scratch=True)
    try:
        apply_records(store, records(sub("a", "Ana", "m", 2.0), sub("b", "ben", "m", 4.0, minutes=1),
                                     sub("c", "Ana", "m", 3.0, minutes=2)))
        for table in ("movie_reviews", "reviewers"):  # as a keyspace of the layout before had it
            store._session.execute(f"DROP TABLE {store.config.keyspace}.{table}")
        again = CassandraStore(store.config)
        try:
            assert [(r.user_id, r.event_id) for r in again.movie_reviews("m", 10, None)] == [("Ana", "c"), ("ben", "b")]
            assert again.reviewers("a", 10) == ["Ana"]
            apply_records(again, records(ret("d", "Ana", "m"), start=3))  # the indexed rows are replaced alike
            assert [r.user_id for r in again.movie_reviews("m", 10, None)] == ["ben"] and again.reviewers("a", 10) == []
        finally:
            again.close()
    finally:
        store.close()


def test_a_keyspace_of_the_older_layout_is_projected_again_and_keeps_its_models(cassandra_node):
    keyspace = f"old_{uuid.uuid4().hex[:10]}"
    cluster = Cluster(cassandra_node["contact_points"], port=cassandra_node["port"])
    try:
        session = cluster.connect()
        session.execute(f"CREATE KEYSPACE {keyspace} WITH replication = "
                        "{'class': 'SimpleStrategy', 'replication_factor': 1}")
        for statement in (  # as the adapter before issue 21 left them
                "CREATE TABLE {ks}.reviews_by_user (user_id text, movie_id text, rating double, "
                "PRIMARY KEY ((user_id), movie_id))",
                "INSERT INTO {ks}.reviews_by_user (user_id, movie_id, rating) VALUES ('u', 'm', 2.0)",
                "CREATE TABLE {ks}.projection (name text PRIMARY KEY, checkpoint text, reviews text, movies text, "
                "history text)",
                "INSERT INTO {ks}.projection (name, checkpoint, reviews, movies, history) "
                "VALUES ('views', '[[0, 41]]', '{ks}', '{ks}', '{ks}')",
                "CREATE TABLE {ks}.models (version text PRIMARY KEY, info text)",
                "INSERT INTO {ks}.models (version, info) VALUES ('v1', '{{}}')",
                "CREATE TABLE {ks}.lag (partition int PRIMARY KEY, checkpoint bigint, high_watermark bigint, "
                "updated_at bigint)"):
            session.execute(statement.format(ks=keyspace))
        store = CassandraStore(config_for(cassandra_node["url"], keyspace), scratch=True)
        try:
            assert store.checkpoint() == {} and store.user_ratings("u") == {}, "the views start again from the log"
            tables = {name for (name,) in session.execute(
                "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (keyspace,))}
            assert "reviews_by_user" not in tables and "projection" not in tables
            assert [tuple(row) for row in session.execute(f"SELECT version, info FROM {keyspace}.models")] == [
                ("v1", "{}")]
            store.record_lag([PartitionLag.of(0, 5, 10, refused=2)])  # a column added to the kept table
            assert store.lag() == [PartitionLag(0, 5, 10, 4, 2)]
            apply_records(store, records(sub("a", "u", "m", 2.0)))
            again = CassandraStore(store.config)
            assert again.checkpoint() == {0: 0}, "a keyspace of the current layout is kept as it is"
            again.close()
        finally:
            store.close()
    finally:
        cluster.shutdown()


def test_a_url_that_points_at_nothing_fails_fast_in_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HARMONY_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("HARMONY_KAFKA_BOOTSTRAP", "127.0.0.1:9")
    monkeypatch.setenv("HARMONY_S3_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HARMONY_STORE", "cassandra://127.0.0.1:9/harmony")
    started = time.monotonic()
    assert main(["verify"]) == 1
    err = capsys.readouterr().err
    assert time.monotonic() - started < 15
    assert err.count("\n") == 1 and err.startswith("harmony verify: cannot reach Cassandra at 127.0.0.1:9")
