"""Choosing hyperparameters, on training data only: :func:`tune` (bias regularisation, ALS rank and
regParam, the blend weights), :func:`fit` (the model, tuned first if asked) and
:func:`choose_min_reviews` (the evidence a movie needs to be listed).

Tuning fits many models, so it works on a bounded sample: every rating of a random set of users,
at most ``TUNE_RATINGS`` ratings, brought to the driver. Its cost and memory stay the same
however large the data; the published model is then fitted on all of it (:func:`ml.training.fit`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np
import pandas as pd

from ml import matching, training
from ml.als import dense_factors, fit_als
from ml.factors import MAX_RATING, MIN_RATING, FactorModel
from ml.knn import fit_knn
from ml.metrics import rmse
from ml.pair_metrics import PAIRS, Lister, measure, pair_data, sample_pairs
from ml.training import Baseline, LocalRatings, Params, fit_baseline

TUNE_RATINGS = 1_000_000
# The small grid searched by `tune` (stack-notes: lambda ~0.15 won every fold, 0.05 far worse).
BIAS_GRID = [(reg_user, reg_item) for reg_user in (2.0, 5.0, 10.0, 15.0) for reg_item in (1.0, 2.0, 5.0, 10.0)]
ALS_GRID = [(rank, reg) for rank in (20, 50) for reg in (0.1, 0.15)]
MIN_REVIEWS_GRID = (0, 5, 10, 20, 50, 100)  # what `choose_min_reviews` tries
MIN_CATALOGUE = 100  # movies a threshold must leave


def tuning_sample(ratings, limit: int = TUNE_RATINGS, seed: int = 42) -> pd.DataFrame:
    """Every rating of a random set of users, about ``limit`` ratings at most, as a pandas frame
    (a pandas frame is its own sample)."""
    if isinstance(ratings, pd.DataFrame):
        return ratings
    from pyspark.sql import functions as F

    total = ratings.count()
    if total > limit:  # users drawn by a hash of their id: all of a user's ratings or none
        buckets = 1_000_000
        ratings = ratings.where(F.pmod(F.xxhash64("user", F.lit(seed)), F.lit(buckets)) < limit / total * buckets)
    return ratings.select("user", "item", "rating").toPandas()


def _indexed(frame: pd.DataFrame):
    u_codes, u_names = pd.factorize(frame["user"].astype(str))
    i_codes, i_names = pd.factorize(frame["item"].astype(str))
    return (LocalRatings(u_codes.astype(np.int64), i_codes.astype(np.int64), frame["rating"].to_numpy(float),
                         len(u_names), len(i_names)), pd.Index(u_names), pd.Index(i_names))


def _als_predict(spark, data: LocalRatings, residual: np.ndarray, params: Params, vu: np.ndarray,
                 vi: np.ndarray) -> np.ndarray:
    """The ALS term ``p_u . q_i`` for validation pairs (0 where either is unseen)."""
    frame = spark.createDataFrame(pd.DataFrame({"u": data.u.astype(np.int32), "i": data.i.astype(np.int32),
                                                "r": residual.astype(np.float32)}))
    model = fit_als(frame, rank=params.rank, reg=params.reg, max_iter=params.max_iter, seed=params.seed)
    users = dense_factors(model.userFactors, data.n_users, params.rank).astype(float)
    items = dense_factors(model.itemFactors, data.n_items, params.rank).astype(float)
    known = (vu >= 0) & (vi >= 0)
    out = np.zeros(len(vu))
    out[known] = np.einsum("ij,ij->i", users[vu[known]], items[vi[known]])
    return out


def tune(spark, ratings, *, holdout: float = 0.1, bias_grid=BIAS_GRID, als_grid=ALS_GRID,
         base: Params, blend: bool = True, progress: Callable[[str], None] | None = None) -> Params:
    """Pick bias regularisation, then ALS rank and regParam, by RMSE on a random inner holdout
    (``holdout`` of a :func:`tuning_sample` of ``ratings``; callers pass the training data only).
    With ``blend``, the ALS, item-kNN and user-kNN residual weights, with a linear recalibration of
    the baseline (weights on b_u and b_i and a constant, for known pairs only), are then fitted by
    least squares on the same holdout, kept only if the blend beats ALS alone there.
    """
    say = progress or (lambda message: None)
    frame = tuning_sample(ratings, seed=base.seed)
    mask = np.random.default_rng(base.seed).random(len(frame)) < holdout
    inner, valid = frame[~mask], frame[mask]
    data, user_ids, item_ids = _indexed(inner)
    vu = user_ids.get_indexer(valid["user"].astype(str)).astype(np.int64)
    vi = item_ids.get_indexer(valid["item"].astype(str)).astype(np.int64)
    vr = valid["rating"].to_numpy(float)

    def score(predicted):
        return rmse(np.clip(predicted, MIN_RATING, MAX_RATING), vr)

    fits = {(reg_user, reg_item): fit_baseline(data, reg_user, reg_item) for reg_user, reg_item in bias_grid}
    (reg_user, reg_item), baseline = min(fits.items(), key=lambda fit: score(fit[1].predict(vu, vi)))
    base_prediction = baseline.predict(vu, vi)
    say(f"tune: bias reg user={reg_user} item={reg_item} valid RMSE {score(base_prediction):.4f}")
    residual = data.r - baseline.predict(data.u, data.i)
    best, best_score, best_als = None, np.inf, None
    for rank, reg in als_grid:
        params = replace(base, rank=rank, reg=reg, reg_user=reg_user, reg_item=reg_item, blend_als=1.0,
                         blend_knn=0.0, blend_user_knn=0.0, blend_user_bias=0.0, blend_item_bias=0.0,
                         blend_intercept=0.0)
        als = _als_predict(spark, data, residual, params, vu, vi)
        figure = score(base_prediction + als)
        say(f"tune: rank={rank} reg={reg} valid RMSE {figure:.4f}")
        if figure < best_score:
            best, best_score, best_als = params, figure, als
    if not blend:
        return best
    return _blend(data, baseline, residual, best, best_score, best_als, vu, vi, vr, say)


def fit(spark, ratings, params: Params, *, tune_params: bool,
        progress: Callable[[str], None] | None = None) -> training.Trained:
    """:func:`ml.training.fit` on a Spark DataFrame of ratings, with ``tune_params`` on the
    hyperparameters :func:`tune` chooses on them, starting from ``params``."""
    if tune_params:
        params = tune(spark, ratings, base=params, progress=progress)
    return training.fit(spark, ratings, params, progress=progress)


def _blend(data: LocalRatings, baseline: Baseline, residual, best: Params, best_score: float, best_als,
           vu, vi, vr, say) -> Params:
    knns = {"blend_knn": fit_knn(data.u, data.i, residual, data.n_users, data.n_items),
            "blend_user_knn": fit_knn(data.i, data.u, residual, data.n_items, data.n_users)}
    names = ["blend_als"] + [name for name, knn in knns.items() if knn is not None]
    if len(names) == 1:
        return best
    su, si = np.maximum(vu, 0), np.maximum(vi, 0)  # unseen ones are masked out below
    columns = [best_als] + [knn[su, si] if name == "blend_knn" else knn[si, su]
                            for name, knn in knns.items() if knn is not None]
    # The same least squares also recalibrates the baseline (b_u, b_i, a constant) for pairs whose
    # user and item were both seen; unseen ones keep the plain baseline, so it is fitted on known pairs.
    known = (vu >= 0) & (vi >= 0)
    names += ["blend_user_bias", "blend_item_bias", "blend_intercept"]
    columns += [baseline.user_bias[su], baseline.item_bias[si], np.ones(len(vu))]
    columns = np.column_stack(columns) * known[:, None]
    target = vr - baseline.predict(vu, vi)
    weights, *_ = np.linalg.lstsq(columns[known], target[known], rcond=None)
    blended = replace(best, **{name: float(w) for name, w in zip(names, weights)})
    figure = rmse(np.clip(baseline.predict(vu, vi) + columns @ weights, MIN_RATING, MAX_RATING), vr)
    say("tune: blend " + " ".join(f"{name.removeprefix('blend_')}={w:.3f}" for name, w in zip(names, weights))
        + f" valid RMSE {figure:.4f}")
    return blended if figure < best_score else best


def choose_min_reviews(model: FactorModel, train: pd.DataFrame, held: pd.DataFrame,
                       grid=MIN_REVIEWS_GRID, pairs: int = PAIRS) -> tuple[int, dict]:
    """The evidence threshold whose lists for held-out pairs get the best ``ndcg_min`` with the
    default strategy (the smallest on a tie; 0 when no pair can be judged), and the figures. A
    threshold must leave ``MIN_CATALOGUE`` movies, or half of a smaller catalogue, to choose from.
    ``held`` is a holdout of the training data: choosing on a test set would flatter it."""
    data = pair_data(model, train, held)
    sampled = sample_pairs(data, pairs)
    if not sampled:
        return 0, {}
    lister = Lister(data)
    enough = min(MIN_CATALOGUE, len(data.items.counts) // 2)
    figures = {m: measure(data, sampled, lister.lists(sampled, matching.DEFAULT_STRATEGY, m))["ndcg_min"]
               for m in grid if m == 0 or (data.items.counts >= m).sum() >= enough}
    grid = list(figures)
    best = max(grid, key=lambda m: (figures[m], -m))
    # String keys: the figures go into the registry row's JSON and must read back equal.
    return best, {"pairs": len(sampled), "ndcg_min_by_min_reviews": {str(m): v for m, v in figures.items()}}
