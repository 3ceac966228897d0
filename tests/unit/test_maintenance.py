"""The maintenance lease: one rebuild or verification at a time per store (issue 21)."""

import asyncio

import pytest

from events.errors import HarmonyError
from projections import maintenance
from projections.maintenance import lease
from projections.rebuild import rebuild
from projections.sqlite_store import SQLiteStore


@pytest.fixture
def store(tmp_path):
    store = SQLiteStore(tmp_path / "p.db")
    yield store
    store.close()


def test_a_second_maintenance_command_is_refused_naming_the_holder(store, tmp_path):
    other = SQLiteStore(tmp_path / "p.db")  # another process's handle on the same store
    try:
        with lease(store, "rebuild all"):
            with pytest.raises(HarmonyError, match=r"being maintained by rebuild all \(pid \d+"):
                asyncio.run(rebuild(other, "unused:9092", "reviews", ["reviews"], None))
            assert list(tmp_path.glob("p.db.rebuild-*")) == [], "the refused rebuild made no scratch store"
        with lease(other, "verify"):  # released at the end of the block
            pass
    finally:
        other.close()


def test_the_holder_renews_its_lease_while_it_works(store, tmp_path, monkeypatch):
    monkeypatch.setattr(maintenance, "LEASE_SECONDS", 0.4)
    other = SQLiteStore(tmp_path / "p.db")
    try:
        with lease(store, "rebuild all") as held:
            for _ in range(4):  # well past the lease's length
                asyncio.run(asyncio.sleep(0.2))
                assert other.take_lease("verify", 0.4) is not None
            held.check()
    finally:
        other.close()


def test_a_lease_lost_to_another_holder_stops_the_swap(store, tmp_path, monkeypatch):
    monkeypatch.setattr(maintenance, "LEASE_SECONDS", 0.2)
    with lease(store, "rebuild all") as held:
        store.release_lease(held.holder)  # as if it had expired while its holder stalled
        assert store.take_lease("rebuild history", 60) is None
        asyncio.run(asyncio.sleep(0.3))
        with pytest.raises(HarmonyError, match="lost the maintenance lease to rebuild history"):
            held.check()


def test_leftover_scratch_stores_of_a_dead_rebuild_are_removed_but_not_open_ones(store, tmp_path):
    leftover = tmp_path / "p.db.rebuild-0123456789ab"
    leftover.write_bytes(b"")
    first = store.scratch("rebuild")
    second = store.scratch("rebuild")
    try:
        assert not leftover.exists()
        assert first.path.exists() and second.path.exists() and first.path != second.path
    finally:
        first.close()
        second.close()
    assert list(tmp_path.glob("p.db.rebuild-*")) == []
