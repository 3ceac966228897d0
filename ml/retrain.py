"""``harmony train``: replay the archive, measure the model on a holdout, refit on everything, publish.

Hyperparameters are tuned on the training part of the holdout split only (or taken from the
settings); the model published is refitted with them on all the replayed ratings, so it learns
from every review up to the watermark. Nothing is published unless every step before succeeds.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

import numpy as np
import pandas as pd

from events.errors import HarmonyError
from ml import registry, training
from ml.evaluation import evaluate_split
from ml.factors import FactorModel
from ml.replay import ArchiveSource, replay
from projections.store import ModelInfo, ProjectionStore

MIN_HOLDOUT_RATINGS = 20  # below this, a holdout measures nothing: train on all, report no accuracy


class TrainingError(HarmonyError):
    """Training cannot produce a model (no data); the current model is left as it is."""


def fit_for_publication(spark, frame: pd.DataFrame, params: training.Params, *, tune: bool, holdout: float,
                        seed: int = 42, progress: Callable[[str], None] | None = None) -> tuple[FactorModel, dict]:
    """The model `harmony train` publishes from these ratings, and its metrics: measured (and, with
    ``tune``, tuned; ``min_reviews`` chosen) on a holdout of them, then fitted on all of them."""
    say = progress or (lambda message: None)
    metrics: dict = {"ratings": len(frame), "users": int(frame["user"].nunique()),
                     "movies": int(frame["item"].nunique())}
    test = np.random.default_rng(seed).random(len(frame)) < holdout
    if test.sum() >= MIN_HOLDOUT_RATINGS:
        say(f"evaluate: fitting on {int((~test).sum()):,} ratings, holding out {int(test.sum()):,}")
        result = evaluate_split(spark, frame[~test], frame[test], params, tune=tune, progress=say)
        params, tune = training.Params(**result.pop("params")), False  # tuned on the training part
        result.pop("factor_rank", None)
        metrics |= {"holdout": result}
        say(f"evaluate: holdout RMSE {result['rmse']:.4f}, nDCG@10 {result['ndcg@10']:.4f}, "
            f"min_reviews {params.min_reviews}")
    say("fit: the published model, on every rating")
    return training.fit(spark, frame, params, tune_params=tune, progress=say), metrics


def retrain(spark, source: ArchiveSource, store: ProjectionStore, s3, *, log: dict[int, range], prefix: str,
            params: training.Params, tune: bool = False, holdout: float, seed: int = 42,
            progress: Callable[[str], None] | None = None) -> ModelInfo:
    """Train on the archive and publish a new current version; ``log`` is the offsets each partition's
    log holds (the archive must cover them, see ``ml.replay``); with ``tune``, ``params`` are where
    the tuning (on the training data only) starts."""
    say = progress or (lambda message: None)
    trained_at = datetime.now(timezone.utc)
    replayed = replay(spark, source, log, progress=say)
    frame = replayed.ratings.toPandas()
    replayed.ratings.unpersist()
    if frame.empty:
        raise TrainingError("the archive holds no ratings yet: import or submit reviews and run the archiver")
    say(f"replay: {len(frame):,} ratings by {frame['user'].nunique():,} users "
        f"of {frame['item'].nunique():,} movies")
    model, metrics = fit_for_publication(spark, frame, params, tune=tune, holdout=holdout, seed=seed, progress=say)
    say(f"publish: rank {model.rank}, {len(model.user_ids):,} users, {len(model.item_ids):,} movies")
    return registry.publish(store, s3, source.bucket, prefix, model, trained_at=trained_at,
                            watermark=replayed.watermark, metrics=metrics | {"archive_records": replayed.records})
