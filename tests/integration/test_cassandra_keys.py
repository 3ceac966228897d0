"""The Cassandra key store against the key-store contract (tests/keystore_contract.py), on the node
the test session starts (the `cassandra_node` fixture); each store gets a keyspace of its own."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from keys.cassandra_keys import CassandraKeys
from tests.integration.test_cassandra_store import config_for
from tests.keystore_contract import KeyStoreContract, row

pytestmark = [pytest.mark.integration, pytest.mark.cassandra]


class TestCassandraKeys(KeyStoreContract):
    @pytest.fixture
    def records(self, cassandra_node, keyspace_dropper):
        yield from self._store(cassandra_node, keyspace_dropper)

    @pytest.fixture
    def another(self, cassandra_node, keyspace_dropper):
        yield from self._store(cassandra_node, keyspace_dropper)

    def _store(self, node, dropper):
        store = CassandraKeys(config_for(node["url"], f"keys_{uuid.uuid4().hex[:10]}"))
        self.others: list[CassandraKeys] = getattr(self, "others", [])
        yield store
        for other in self.others:
            other.close()
        self.others.clear()
        store.close()
        dropper.drop(store.keyspace)

    def other_handle(self, records):
        other = CassandraKeys(records.config)
        self.others.append(other)
        return other


def test_the_keys_live_apart_from_the_projection_keyspace(cassandra_node):
    config = config_for(cassandra_node["url"], f"apart_{uuid.uuid4().hex[:10]}")
    store = CassandraKeys(config)
    try:
        assert store.keyspace == f"{config.keyspace}_keys"
        tables = {name for (name,) in store._session.execute(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (store.keyspace,))}
        assert tables == {"subjects_by_user", "subject_users", "forgotten", "settings"}
    finally:
        store._session.execute(f"DROP KEYSPACE IF EXISTS {store.keyspace}")
        store.close()


def test_a_lost_claim_leaves_no_subject_row(cassandra_node):
    """Concurrent claims write their subject rows first; the losers' are deleted, so no row names
    the user but the kept one (it would outlive a forgetting)."""
    store = CassandraKeys(config_for(cassandra_node["url"], f"lost_{uuid.uuid4().hex[:10]}"))
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: store.claim([row("ana", f"s{i}")]), range(16)))
        subjects = list(store._session.execute(f"SELECT subject, user_id FROM {store.keyspace}.subject_users"))
        assert subjects == [(store.by_user(["ana"])["ana"].subject, "ana")]
        store.delete("ana")
        assert list(store._session.execute(f"SELECT * FROM {store.keyspace}.subject_users")) == []
    finally:
        store._session.execute(f"DROP KEYSPACE IF EXISTS {store.keyspace}")
        store.close()
