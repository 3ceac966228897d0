"""Replay of the real S3 archive into Spark, training and publication, against the local stack."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from datetime import timedelta

import numpy as np
import pytest

from archive.segments import ArchiveError, ensure_bucket, list_segments, put_segment, s3_client
from events.reader import log_offsets, read_log
from events.types import ReviewRetracted, ReviewSubmitted
from ml import registry, training
from ml.replay import ArchiveSource, replay
from ml.retrain import TrainingError, retrain
from tests.conftest import BOTH_STORES
from tests.integration.helpers import EPOCH, fold_of_log, produce_events, review_stream

pytestmark = pytest.mark.integration

SMALL = training.Params(rank=4, reg=0.1, max_iter=5)
SEGMENT = 400  # records per archive segment: several segments per partition
CLEAR = {}  # no data keys: these logs are written in clear, as before sealing (test_forget_me has sealed ones)


def submitted(user, movie, rating, minute):
    at = EPOCH + timedelta(days=30, minutes=minute)
    return ReviewSubmitted(event_id=str(uuid.uuid4()), occurred_at=at, recorded_at=at, user_id=user,
                           movie_id=movie, rating=rating, reviewed_at=at)


def retracted(user, movie, minute):
    at = EPOCH + timedelta(days=30, minutes=minute)
    return ReviewRetracted(event_id=str(uuid.uuid4()), occurred_at=at, recorded_at=at, user_id=user, movie_id=movie)


# Known endings: a rating retracted after it was given, and one replaced by a later one.
ENDINGS = [submitted("u1", "gone", 5.0, 1), retracted("u1", "gone", 2),
           submitted("u2", "changed", 1.0, 3), submitted("u2", "changed", 4.5, 4)]


def archive_log(settings, s3) -> dict[int, int]:
    """Copy the whole log into archive segments, with one overlapping segment per partition (as two
    archivers briefly write after a rebalance); answer the last offset per partition."""

    async def read():
        return [record async for batch in read_log(settings.kafka_bootstrap, settings.topic) for record in batch]

    level = settings.archive_gzip_level
    by_partition: dict[int, list] = {}
    for record in asyncio.run(read()):
        by_partition.setdefault(record.partition, []).append(record)
    for records in by_partition.values():
        for start in range(0, len(records), SEGMENT):
            put_segment(s3, settings.s3_bucket, settings.topic, records[start:start + SEGMENT], level)
        if len(records) > SEGMENT:
            put_segment(s3, settings.s3_bucket, settings.topic, records[SEGMENT // 2:SEGMENT + SEGMENT // 2], level)
    return {partition: records[-1].offset for partition, records in by_partition.items()}


def offsets_of(settings) -> dict[int, range]:
    """The offsets each partition of the test topic's log holds now."""
    return asyncio.run(log_offsets(settings.kafka_bootstrap, settings.topic))


def archive_of(settings) -> tuple[ArchiveSource, object]:
    """The test topic's archive in the session's S3 server, and a client of it."""
    s3 = s3_client(settings.s3_endpoint, settings.aws_access_key_id, settings.aws_secret_access_key)
    ensure_bucket(s3, settings.s3_bucket)
    source = ArchiveSource(settings.s3_endpoint, settings.s3_bucket, settings.topic, settings.aws_access_key_id,
                           settings.aws_secret_access_key)
    return source, s3


@pytest.fixture
def archived(settings, tmp_path):
    """A topic with a few thousand mixed review events, archived to the real S3 server."""
    produce_events(settings.kafka_bootstrap, settings.topic, review_stream(4000, users=60, movies=80) + ENDINGS)
    source, s3 = archive_of(settings)
    return source, s3, archive_log(settings, s3)


def test_replay_equals_a_direct_fold_of_the_log(spark, settings, archived):
    source, _, ends = archived
    replayed = replay(spark, source, offsets_of(settings), CLEAR)
    ratings = {(row.user, row.item): row.rating for row in replayed.ratings.collect()}
    folded = fold_of_log(settings.kafka_bootstrap, settings.topic)
    expected = {key: rating for key, (rating, *_) in folded.reviews.items()}
    assert ratings == expected
    assert replayed.watermark == ends
    assert ("u1", "gone") not in ratings  # retracted after it was given
    assert ratings[("u2", "changed")] == 4.5  # the later rating replaced the earlier one
    assert len(replayed.ratings.collect()) == len(ratings)  # one row per (user, movie)


def test_replay_refuses_an_archive_that_misses_the_start_of_the_log(spark, settings, archived):
    source, s3, ends = archived
    # An archive behind the log end is no error: the replay learns up to the watermark.
    produce_events(settings.kafka_bootstrap, settings.topic, review_stream(200, seed=5))
    log = offsets_of(settings)
    assert sum(map(len, log.values())) == sum(o + 1 for o in ends.values()) + 200
    assert replay(spark, source, log, CLEAR).watermark == ends

    # A partition whose log holds records but which has no segment.
    for segment in list_segments(s3, settings.s3_bucket, settings.topic)[1]:
        s3.delete_object(Bucket=settings.s3_bucket, Key=segment.key)
    with pytest.raises(ArchiveError, match=f"partition 1 is not archived, though its log holds offsets "
                                           f"0..{log[1].stop - 1}"):
        replay(spark, source, log, CLEAR)
    # A partition whose first segment is lost: its chain now starts after the log start.
    first, *rest = list_segments(s3, settings.s3_bucket, settings.topic)[0]
    assert first.first == 0
    s3.delete_object(Bucket=settings.s3_bucket, Key=first.key)
    with pytest.raises(ArchiveError, match=f"partition 0: offsets 0..{min(s.first for s in rest) - 1} "):
        replay(spark, source, log, CLEAR)


def test_published_factors_reproduce_the_model(spark, settings, archived, live_store):
    source, s3, _ = archived
    frame = replay(spark, source, offsets_of(settings), CLEAR).ratings.toPandas()
    trained = training.fit(spark, frame, SMALL)  # published from Spark, a chunk at a time
    info = registry.publish(live_store, s3, settings.s3_bucket, f"models/{settings.topic}/", trained,
                            trained_at=EPOCH, watermark={0: 1}, metrics={})
    model = trained.collect()
    _, published = registry.load(live_store)
    users = list(frame["user"]) + ["someone-new", "u3"]
    items = list(frame["item"]) + ["m1", "a-new-movie"]
    assert np.array_equal(published.predict(users, items), model.predict(users, items))
    strangers = ["someone-new"] * len(items)  # the artefacts hold the movies' side: users' factors are in the store only
    assert np.array_equal(registry.read_artefacts(s3, info).predict(strangers, items), model.predict(strangers, items))
    # And the model learned something: it fits its training data better than the global mean.
    truth = frame["rating"].to_numpy()
    assert np.abs(published.predict(frame["user"], frame["item"]) - truth).mean() < np.abs(truth - truth.mean()).mean()


def test_retrain_publishes_a_current_version_and_a_failed_run_leaves_it(spark, settings, archived, live_store):
    source, s3, ends = archived
    prefix = f"models/{settings.topic}/"
    log = offsets_of(settings)
    first = retrain(spark, source, live_store, s3, log=log, data_keys=CLEAR, prefix=prefix, params=SMALL, holdout=0.1)
    assert live_store.model() == first
    assert first.watermark == ends
    assert first.metrics["ratings"] > 0 and 0 < first.metrics["holdout"]["rmse"] < 2
    assert first.params["rank"] == SMALL.rank
    before = registry.load(live_store)[1]

    # A hole in the archive (a lost segment): training refuses to learn from part of the history.
    for segment in list_segments(s3, settings.s3_bucket, settings.topic)[0]:
        if segment.first in (SEGMENT // 2, SEGMENT):  # the second segment and the one overlapping it
            s3.delete_object(Bucket=settings.s3_bucket, Key=segment.key)
    with pytest.raises(ArchiveError):
        retrain(spark, source, live_store, s3, log=log, data_keys=CLEAR, prefix=prefix, params=SMALL, holdout=0.1)
    assert live_store.model() == first
    after = registry.load(live_store)[1]
    users = np.repeat(before.user_ids, len(before.item_ids))
    items = np.tile(before.item_ids, len(before.user_ids))
    assert np.array_equal(after.predict(users, items), before.predict(users, items))


def test_retrain_on_an_empty_archive_is_a_clear_error(spark, settings, live_store):
    source, s3 = archive_of(settings)
    with pytest.raises(TrainingError, match="no ratings"):
        retrain(spark, source, live_store, s3, log=offsets_of(settings), data_keys=CLEAR, prefix="models/", params=SMALL,
                holdout=0.1)
    assert live_store.model() is None


@BOTH_STORES
def test_harmony_train_command_publishes_what_the_api_serves(env, archived, api, tmp_path):
    run = subprocess.run([sys.executable, "-m", "harmony", "train", "--no-tune", "--json"], capture_output=True,
                         text=True, env={**env, "HARMONY_ALS_RANK": "4", "HARMONY_ALS_MAX_ITER": "5",
                                         "HARMONY_SPARK_DRIVER_MEMORY": "1g", "TMPDIR": str(tmp_path)}, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert not list(tmp_path.glob("harmony-spark-checkpoints-*"))  # Spark's checkpoints went with the process
    published = json.loads(run.stdout)
    current = api.get("/v1/models/current").json()
    assert current["version"] == published["version"]
    assert {int(p): o for p, o in current["watermark"].items()} == archived[2]
    assert current["metrics"]["holdout"]["rmse"] > 0 and current["params"]["rank"] == 4
    match = api.get("/v1/match", params={"users": "u1,u2", "limit": 5})
    assert match.status_code == 200, match.text
    body = match.json()
    assert body["model_version"] == published["version"] and len(body["movies"]) == 5
    assert body["fallback"] == [] and body["strategy"] == "multiplicative"
    assert all(0.5 <= m["members"]["u1"]["predicted"] <= 5 for m in body["movies"])
    assert all(set(m["members"]["u2"]) == {"predicted", "affinity", "because"} for m in body["movies"])
