"""The Cassandra adapter against the store contract (tests/store_contract.py), on a real node that
the test session starts (the `cassandra_node` fixture); each test gets a keyspace of its own."""

from __future__ import annotations

import dataclasses
import time
import uuid

import pytest

from harmony import bootstrap
from harmony.cli import main
from harmony.settings import load
from projections.cassandra_store import CassandraStore
from tests.store_contract import StoreContract

pytestmark = [pytest.mark.integration, pytest.mark.cassandra]


def config_for(url: str, keyspace: str):
    return dataclasses.replace(bootstrap.cassandra_config(dataclasses.replace(load(), store_url=url)),
                               keyspace=keyspace)


class TestCassandraStore(StoreContract):
    @pytest.fixture
    def store(self, cassandra_node):
        store = CassandraStore(config_for(cassandra_node["url"], f"contract_{uuid.uuid4().hex[:10]}"), scratch=True)
        self.others: list[CassandraStore] = []
        yield store
        for other in self.others:
            other.close()
        store.close()  # a scratch store drops its keyspace

    def other_handle(self, store):
        other = CassandraStore(store.config)
        self.others.append(other)
        return other


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
