"""The model registry in the SQLite store and its API: versions, the current pointer, factor rows."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from ml import registry
from projections.sqlite_store import SQLiteStore
from tests.store_contract import small_model
from tests.unit.fakes import MemoryBucket as Bucket


@pytest.fixture
def store(tmp_path):
    store = SQLiteStore(tmp_path / "p.db")
    yield store
    store.close()


def publish(store, bucket, model, when=datetime(2026, 11, 25, tzinfo=timezone.utc)):
    return registry.publish(store, bucket, "models", "models/", model, trained_at=when,
                            watermark={0: 41, 1: 7}, metrics={"rmse": 0.9})


def test_published_rows_and_artefacts_give_back_the_same_predictions(store):
    bucket, model = Bucket(), small_model(1)
    info = publish(store, bucket, model)
    loaded_info, loaded = registry.load(store)
    assert loaded_info == info and info.watermark == {0: 41, 1: 7}
    users, items = ["ana", "cy", "ben", "nobody"], ["m2", "m1", "zz", "m1"]
    assert np.array_equal(loaded.predict(users, items), model.predict(users, items))
    assert np.array_equal(registry.read_artefacts(bucket, info).predict(users, items), model.predict(users, items))
    assert f"models/models/{info.version}/manifest.json" in bucket.objects


def test_a_new_version_becomes_current_and_the_old_one_stays_readable(store):
    bucket = Bucket()
    first = publish(store, bucket, small_model(1))
    second = publish(store, bucket, small_model(2), datetime(2026, 11, 26, tzinfo=timezone.utc))
    assert store.model().version == second.version
    assert store.model(first.version) == first
    old = registry.load(store, first.version)[1]
    assert np.array_equal(old.predict(["ana"], ["m1"]), small_model(1).predict(["ana"], ["m1"]))


def test_factors_written_without_the_registry_row_are_not_current(store):
    bucket = Bucket()
    first = publish(store, bucket, small_model(1))

    def crash(info):
        raise OSError("disk full")

    store.publish_model = crash  # the last step fails: the factor rows are in, the pointer is not
    with pytest.raises(OSError):
        publish(store, bucket, small_model(2))
    assert store.model().version == first.version


def test_models_current_is_404_before_training_then_the_registry_row(world):
    client, _, store = world
    missing = client.get("/v1/models/current")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    info = publish(store, Bucket(), small_model(1))
    body = client.get("/v1/models/current").json()
    assert body["version"] == info.version and body["watermark"] == {"0": 41, "1": 7}
    assert body["metrics"] == {"rmse": 0.9} and body["trained_at"].startswith("2026-11-25")
    assert client.get(f"/v1/models/{info.version}").json() == body
    assert client.get("/v1/models/nope").status_code == 404
    assert "/v1/models/current" in client.get("/openapi.json").json()["paths"]
