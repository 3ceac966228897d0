"""``harmony train``: replay the archive, measure the model on a holdout, refit on everything, publish.

Hyperparameters are tuned on the training part of the holdout split only (or taken from the
settings), and ``min_reviews`` is chosen on the holdout; the model published is refitted with them
on all the replayed ratings, so it learns from every review up to the watermark. Nothing is
published unless every step before succeeds. The ratings stay in Spark throughout; the driver
holds the hyperparameters' bounded samples (:mod:`ml.selection`, :mod:`ml.evaluation`) and one
chunk of published rows at a time.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime, timezone
from typing import Callable

from events.errors import HarmonyError
from ml import registry, selection, training
from ml.evaluation import measure, of_users, sample_users, spark_frame
from ml.replay import ArchiveSource, replay
from projections.store import ModelInfo, ProjectionStore

MIN_HOLDOUT_RATINGS = 20  # below this, a holdout measures nothing: train on all, report no accuracy


class TrainingError(HarmonyError):
    """Training cannot produce a model (no data); the current model is left as it is."""


def holdout_split(ratings, share: float, seed: int):
    """(train, test): each rating held out with probability ``share``, by a hash of its (user, item)."""
    from pyspark.sql import functions as F

    buckets = 1_000_000
    held = F.pmod(F.xxhash64("user", "item", F.lit(seed)), F.lit(buckets)) < share * buckets
    return ratings.where(~held), ratings.where(held)


def fit_for_publication(spark, ratings, params: training.Params, *, tune: bool, holdout: float,
                        seed: int = 42, progress: Callable[[str], None] | None = None
                        ) -> tuple[training.Trained, dict]:
    """The model `harmony train` publishes from these ratings, and its metrics: measured (and, with
    ``tune``, tuned; ``min_reviews`` chosen) on a holdout of them, then fitted on all of them."""
    from pyspark.sql import functions as F

    say = progress or (lambda message: None)
    ratings = spark_frame(spark, ratings)
    count, users, movies = ratings.agg(F.count("*"), F.countDistinct("user"), F.countDistinct("item")).first()
    metrics: dict = {"ratings": count, "users": users, "movies": movies}
    say(f"ratings: {count:,} by {users:,} users of {movies:,} movies")
    train, test = holdout_split(ratings, holdout, seed)
    held = test.count()
    if held >= MIN_HOLDOUT_RATINGS:
        started = time.monotonic()
        say(f"evaluate: fitting on {count - held:,} ratings, holding out {held:,}")
        trained = selection.fit(spark, train, params, tune_params=tune, progress=say)
        result = {"train": count - held, **measure(trained, test)}
        evaluated = sample_users(test, seed=seed)
        min_reviews, pairs = selection.choose_min_reviews(
            trained.collect(evaluated), of_users(train, evaluated), of_users(test, evaluated))
        evaluated.unpersist()
        trained.unpersist()
        # Tuned on the training part; the refit on everything keeps these.
        params, tune = replace(training.Params(**trained.params), min_reviews=min_reviews), False
        metrics |= {"holdout": result | {"pairs": pairs, "seconds": round(time.monotonic() - started, 1)}}
        say(f"evaluate: holdout RMSE {result['rmse']:.4f}, nDCG@10 {result['ndcg@10']:.4f}, "
            f"min_reviews {min_reviews}")
    say("fit: the published model, on every rating")
    return selection.fit(spark, ratings, params, tune_params=tune, progress=say), metrics


def retrain(spark, source: ArchiveSource, store: ProjectionStore, s3, *, log: dict[int, range],
            data_keys: dict[str, bytes], prefix: str, params: training.Params, tune: bool = False, holdout: float,
            seed: int = 42, progress: Callable[[str], None] | None = None) -> ModelInfo:
    """Train on the archive and publish a new current version; ``log`` is the offsets each partition's
    log holds (the archive must cover them, see ``ml.replay``), ``data_keys`` the users' keys
    (subject -> key) that open their events; with ``tune``, ``params`` are where the tuning (on the
    training data only) starts."""
    say = progress or (lambda message: None)
    trained_at = datetime.now(timezone.utc)
    replayed = replay(spark, source, log, data_keys, progress=say)
    if not replayed.ratings.count():  # the whole replay, into its cache
        raise TrainingError("the archive holds no ratings yet: import or submit reviews and run the archiver")
    if replayed.unreadable.value:
        say(f"replay: {replayed.unreadable.value:,} events of forgotten users skipped (their keys are gone)")
    model, metrics = fit_for_publication(spark, replayed.ratings, params, tune=tune, holdout=holdout, seed=seed,
                                         progress=say)
    say(f"publish: rank {model.rank}")
    info = registry.publish(store, s3, source.bucket, prefix, model, trained_at=trained_at,
                            watermark=replayed.watermark, metrics=metrics | {"archive_records": replayed.records,
                                                                 "unreadable_events": replayed.unreadable.value})
    model.unpersist()
    replayed.ratings.unpersist()
    return info
