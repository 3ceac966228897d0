"""The model registry in the SQLite store and its API: versions, the current pointer, factor rows."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from ml import registry
from projections.sqlite_store import SQLiteStore
from projections.store import FACTOR_KINDS
from tests.store_contract import small_model
from tests.unit.fakes import MemoryBucket


class Bucket(MemoryBucket):
    """With what retention asks of S3 too: listing (one page, with when each object was written) and deleting."""

    def __init__(self):
        super().__init__()
        self.written: dict[str, datetime] = {}

    def put_object(self, Bucket, Key, Body, **options):
        super().put_object(Bucket, Key, Body, **options)
        self.written[f"{Bucket}/{Key}"] = datetime.now(timezone.utc)

    def delete_object(self, Bucket, Key):
        self.objects.pop(f"{Bucket}/{Key}", None)  # no such key: no error, as S3

    def get_paginator(self, name):
        assert name == "list_objects_v2"
        return self

    def paginate(self, Bucket, Prefix, Delimiter=None):
        start, contents, folders = f"{Bucket}/{Prefix}", [], set()
        for path in sorted(p for p in self.objects if p.startswith(start)):
            rest = path[len(start):]
            if Delimiter and Delimiter in rest:
                folders.add(Prefix + rest[:rest.index(Delimiter) + 1])
            else:
                contents.append({"Key": path.removeprefix(f"{Bucket}/"), "LastModified": self.written[path]})
        yield {"Contents": contents, "CommonPrefixes": [{"Prefix": folder} for folder in sorted(folders)]}

    def age(self, days: float) -> None:
        """Every object written `days` earlier than it was."""
        self.written = {path: at - timedelta(days=days) for path, at in self.written.items()}

    def keys(self, version: str) -> list[str]:
        return [path for path in self.objects if f"/{version}/" in path]


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
    artefacts = registry.read_artefacts(bucket, info)  # the movies' side: a user's factors are in the store only
    assert len(artefacts.user_ids) == 0 and not any("/user-" in key for key in bucket.objects)
    strangers = ["nobody"] * len(items)
    assert np.array_equal(artefacts.predict(strangers, items), model.predict(strangers, items))
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


def day(n: int) -> datetime:
    return datetime(2026, 11, n, tzinfo=timezone.utc)


def gone(store, bucket, version) -> bool:
    return (store.model(version) is None and not bucket.keys(version)
            and all(store.factors(version, kind) == [] for kind in FACTOR_KINDS))


def retain(store, bucket, keep=3):
    return registry.retain(store, bucket, "models", "models/", keep)


def test_retain_keeps_the_newest_versions_and_deletes_the_others_rows_and_artefacts(store):
    bucket = Bucket()
    infos = [publish(store, bucket, small_model(n), day(n)) for n in range(1, 6)]
    artefacts = {info.version: bucket.keys(info.version) for info in infos}
    assert retain(store, bucket) == [infos[1].version, infos[0].version]
    assert store.models() == infos[:1:-1]
    assert gone(store, bucket, infos[0].version) and gone(store, bucket, infos[1].version)
    for info in infos[2:]:
        assert bucket.keys(info.version) == artefacts[info.version] and store.factors(info.version, "taste")
    current, model = registry.load(store)
    assert current == infos[4]
    users, items = ["ana", "cy"], ["m1", "m2"]
    assert np.array_equal(model.predict(users, items), small_model(5).predict(users, items))
    assert np.array_equal(registry.read_artefacts(bucket, current).item_taste, small_model(5).item_taste)
    assert retain(store, bucket) == []


def test_the_current_version_is_kept_even_when_it_is_not_among_the_newest(store):
    bucket = Bucket()
    newer = [publish(store, bucket, small_model(n), day(n)) for n in range(2, 6)]
    old = publish(store, bucket, small_model(1), day(1))  # a long run that started first, published last
    assert store.model() == old
    assert retain(store, bucket, keep=1) == [newer[2].version, newer[1].version, newer[0].version]
    assert store.models() == [newer[3], old]
    assert np.array_equal(registry.load(store)[1].predict(["ben"], ["m2"]), small_model(1).predict(["ben"], ["m2"]))


def test_keep_is_at_least_one(store):
    with pytest.raises(ValueError):
        retain(store, Bucket(), keep=0)


def test_a_dead_publications_leftovers_are_deleted_once_old_and_a_running_ones_are_not(store):
    bucket = Bucket()
    first = publish(store, bucket, small_model(1), day(1))

    def crash(info):
        raise OSError("disk full")

    publish_model, store.publish_model = store.publish_model, crash
    with pytest.raises(OSError):
        publish(store, bucket, small_model(2), day(2))
    store.publish_model = publish_model
    dead = next(path.split("/")[2] for path in bucket.objects if first.version not in path)
    bucket.put_object(Bucket="models", Key="models/not-a-version/model.npz", Body=b"")  # another user of the prefix
    artefacts = {version: bucket.keys(version) for version in (first.version, dead)}
    assert retain(store, bucket, keep=1) == []  # as if it were still writing its factor rows
    assert store.factors(dead, "user") and bucket.keys(dead) == artefacts[dead]
    bucket.age(days=2)
    assert retain(store, bucket, keep=1) == [dead]
    assert gone(store, bucket, dead) and "models/models/not-a-version/model.npz" in bucket.objects
    assert store.models() == [first] and bucket.keys(first.version) == artefacts[first.version]


def test_a_retention_that_dies_midway_leaves_no_readable_version_and_the_next_one_finishes(store):
    bucket = Bucket()
    infos = [publish(store, bucket, small_model(n), day(n)) for n in range(1, 4)]
    bucket.age(days=3)  # published days ago
    delete_object = bucket.delete_object

    def crash(**_):
        raise OSError("connection reset")

    bucket.delete_object = crash
    with pytest.raises(OSError):
        retain(store, bucket, keep=2)
    assert store.model(infos[0].version) is None and store.models() == infos[:0:-1]
    bucket.delete_object = delete_object
    assert retain(store, bucket, keep=2) == [infos[0].version]
    assert gone(store, bucket, infos[0].version) and store.models() == infos[:0:-1]


@pytest.mark.integration
def test_retain_on_the_stacks_s3_server(env, store):
    """Folders, LastModified and deletes as the stack's SeaweedFS answers them, under a prefix of the test's own."""
    from archive.segments import ensure_bucket, s3_client
    from harmony.settings import load

    settings = load()
    s3 = s3_client(settings.s3_endpoint, settings.aws_access_key_id, settings.aws_secret_access_key)
    ensure_bucket(s3, settings.s3_bucket)
    prefix, running = f"models/{settings.topic}/", "20261101T000000Z-abcdef"

    def keys() -> set[str]:
        return {item["Key"] for item in s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix=prefix)["Contents"]}

    infos = [registry.publish(store, s3, settings.s3_bucket, prefix, small_model(n), trained_at=day(n), watermark={},
                              metrics={}) for n in range(1, 5)]
    s3.put_object(Bucket=settings.s3_bucket, Key=f"{prefix}{running}/user-00000.npz", Body=b"")  # under way
    before = keys()
    assert registry.retain(store, s3, settings.s3_bucket, prefix, 2) == [infos[1].version, infos[0].version]
    dropped = tuple(f"{prefix}{info.version}/" for info in infos[:2])
    assert keys() == {key for key in before if not key.startswith(dropped)}
    kept = registry.read_artefacts(s3, store.model())
    assert np.array_equal(kept.predict(["nobody"], ["m2"]), small_model(4).predict(["nobody"], ["m2"]))
    assert np.array_equal(kept.item_factors, small_model(4).item_factors)
