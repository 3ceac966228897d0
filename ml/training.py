"""Rating model: a regularised bias baseline plus Spark ALS fitted to its residuals.

prediction(u, i) = mu + b_u + b_i + w_als * p_u . q_i + w_knn * knn(u, i) + w_uknn * uknn(u, i)
                 + w_bu * b_u + w_bi * b_i + c          (the last line for known pairs only)
clipped to [0.5, 5.0].

* The baseline (global mean ``mu``, user biases ``b_u``, item biases ``b_i``) is fitted on the
  driver with NumPy by a few alternating ridge passes:
  ``b_u = sum(r - mu - b_i) / (reg_user + n_u)``, ``b_i = sum(r - mu - b_u) / (reg_item + n_i)``.
* ``pyspark.ml.recommendation.ALS`` (explicit, ``nonnegative=False``) is then fitted to the
  residuals ``r - baseline``; its factors are collected to the driver.
* Item-item and user-user neighbourhood estimates on the same residuals (:mod:`ml.knn`) are
  blended in, with weights ``w_als``, ``w_knn``, ``w_uknn`` fitted by least squares on the inner
  validation split, together with a small linear recalibration of the baseline for known pairs
  (a small, standard ensemble: ALS alone is 0.929 RMSE on MovieLens u1, the
  item kNN alone 0.931, the blend 0.920; 5-fold mean 0.918 → 0.910).
* :func:`fit` answers the published form, :class:`ml.factors.FactorModel`: everything beyond
  ``mu + b_u + b_i`` is one matrix of known pairs, written as factors. Without kNN terms that is
  exact at rank ``rank + 2`` (``[w_als p_u, w_bu b_u + c, 1] . [q_i, 1, w_bi b_i]``); with them
  (small catalogues only) it is the matrix's SVD truncated to ``factor_rank``, exact when there
  are no more users or items than that.
* A user or item unseen in training has no bias and no factors: it gets the rest of the
  baseline (an unseen user gets ``mu + b_i``, both unseen get ``mu``).
* Beside the rating model, :func:`fit` counts each item's ratings and fits the taste model
  (:mod:`ml.taste`, implicit ALS on who rated what), which ranking for groups uses
  (:mod:`ml.matching`).

Hyperparameters are chosen by :func:`tune` on an inner validation split of the training data
only. Ids are strings, indexed to dense integers on the driver (the ratings are collected with
``toPandas``: fine up to some millions of rows).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, replace
from typing import Callable

from ml import taste
from ml.factors import MAX_RATING, MIN_RATING, FactorModel
from ml.knn import fit_knn

import numpy as np
import pandas as pd

BIAS_PASSES = 10


@dataclass(frozen=True)
class Params:
    # Rank, regParam and iterations have their defaults in the settings (HARMONY_ALS_*).
    rank: int
    reg: float  # ALS regParam (Spark scales it by each user's / item's rating count)
    max_iter: int
    reg_user: float = 5.0  # bias regularisation
    reg_item: float = 5.0
    seed: int = 42
    blend_als: float = 1.0  # weights of the ALS and kNN residual terms
    blend_knn: float = 0.0
    blend_user_knn: float = 0.0
    blend_user_bias: float = 0.0  # linear recalibration of the baseline for known pairs (see `tune`)
    blend_item_bias: float = 0.0
    blend_intercept: float = 0.0
    factor_rank: int = 1024  # most factors published when kNN terms are blended in (see the module doc)
    # The taste model (ml.taste): rank 20, alpha 1, reg 0.1 won a 12-point grid on MovieLens fold u1.
    taste_rank: int = 20
    taste_alpha: float = 1.0
    taste_reg: float = 0.1
    taste_max_iter: int = 10
    # Movies with fewer training ratings are not recommended: chosen on each training run's holdout
    # (ml.group_evaluation.choose_min_reviews), 0 until then.
    min_reviews: int = 0


# The small grid searched by `tune` (stack-notes: lambda ~0.15 won every fold, 0.05 far worse).
BIAS_GRID = [(reg_user, reg_item) for reg_user in (2.0, 5.0, 10.0, 15.0) for reg_item in (1.0, 2.0, 5.0, 10.0)]
ALS_GRID = [(rank, reg) for rank in (20, 50) for reg in (0.1, 0.15)]


@dataclass
class Baseline:
    mu: float
    user_bias: np.ndarray
    item_bias: np.ndarray

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Indexed users/items; -1 means unseen (bias 0)."""
        bu = np.where(users >= 0, self.user_bias[np.maximum(users, 0)], 0.0) if len(self.user_bias) else 0.0
        bi = np.where(items >= 0, self.item_bias[np.maximum(items, 0)], 0.0) if len(self.item_bias) else 0.0
        return self.mu + bu + bi


def _raw_predict(baseline, user_factors, item_factors, u, i, weight: float = 1.0) -> np.ndarray:
    out = baseline.predict(u, i)
    if user_factors is not None:
        known = (u >= 0) & (i >= 0)
        out = out.copy()
        out[known] += weight * np.einsum("ij,ij->i", user_factors[u[known]], item_factors[i[known]])
    return out


def fit_baseline(u: np.ndarray, i: np.ndarray, r: np.ndarray, n_users: int, n_items: int,
                 reg_user: float, reg_item: float, passes: int = BIAS_PASSES) -> Baseline:
    mu = float(r.mean()) if len(r) else 3.0
    bu, bi = np.zeros(n_users), np.zeros(n_items)
    n_u = np.bincount(u, minlength=n_users)
    n_i = np.bincount(i, minlength=n_items)
    for _ in range(passes):
        bi = np.bincount(i, weights=r - mu - bu[u], minlength=n_items) / (reg_item + n_i)
        bu = np.bincount(u, weights=r - mu - bi[i], minlength=n_users) / (reg_user + n_u)
    return Baseline(mu, bu, bi)


def _fit_als(spark, u: np.ndarray, i: np.ndarray, residual: np.ndarray, n_users: int, n_items: int,
             params: Params) -> tuple[np.ndarray, np.ndarray]:
    from pyspark.ml.recommendation import ALS

    frame = spark.createDataFrame(pd.DataFrame({"u": u.astype(np.int32), "i": i.astype(np.int32),
                                                "r": residual.astype(np.float32)}))
    # Two blocks per core rather than Spark's fixed 10: 5M ratings, rank 50 on 2 cores fit in 66 s, not 77 s.
    blocks = 2 * spark.sparkContext.defaultParallelism
    als = ALS(rank=params.rank, maxIter=params.max_iter, regParam=params.reg, userCol="u", itemCol="i",
              ratingCol="r", nonnegative=False, implicitPrefs=False, coldStartStrategy="nan",
              seed=params.seed, checkpointInterval=5, numUserBlocks=blocks, numItemBlocks=blocks)
    fitted = als.fit(frame)
    users = np.zeros((n_users, params.rank))
    items = np.zeros((n_items, params.rank))
    for target, factors in ((users, fitted.userFactors), (items, fitted.itemFactors)):
        rows = factors.toPandas()
        if len(rows):
            target[rows["id"].to_numpy()] = np.stack(rows["features"].to_numpy())
    return users, items


def _collect(ratings) -> pd.DataFrame:
    """A Spark DataFrame (or a pandas one, for callers on the driver) of user, item, rating."""
    frame = ratings if isinstance(ratings, pd.DataFrame) else ratings.select("user", "item", "rating").toPandas()
    return pd.DataFrame({"user": frame["user"].astype(str), "item": frame["item"].astype(str),
                         "rating": frame["rating"].astype(float)})


def _indexed(frame: pd.DataFrame):
    u_codes, u_names = pd.factorize(frame["user"])
    i_codes, i_names = pd.factorize(frame["item"])
    return (u_codes.astype(np.int64), i_codes.astype(np.int64), frame["rating"].to_numpy(float),
            list(u_names), list(i_names))


def fit(spark, ratings, params: Params, *, tune_params: bool = False,
        progress: Callable[[str], None] | None = None) -> FactorModel:
    """Fit the residual model on a DataFrame of (user: str, item: str, rating: float).

    With ``tune_params`` the hyperparameters come from :func:`tune` on an inner split of
    ``ratings``, starting from ``params``. The answer carries the parameters used as ``.params``.
    """
    say = progress or (lambda message: None)
    frame = _collect(ratings)
    if tune_params:
        params = tune(spark, frame, base=params, progress=progress)
    u, i, r, user_ids, item_ids = _indexed(frame)
    n_users, n_items = len(user_ids), len(item_ids)
    baseline = fit_baseline(u, i, r, n_users, n_items, params.reg_user, params.reg_item)
    residual = r - baseline.predict(u, i)
    say(f"fit: ALS rank {params.rank} on {len(r):,} residuals, {n_users:,} users, {n_items:,} items")
    users, items = _fit_als(spark, u, i, residual, n_users, n_items, params)
    p = params
    knn = fit_knn(u, i, residual, n_users, n_items) if p.blend_knn else None
    user_knn = fit_knn(i, u, residual, n_items, n_users) if p.blend_user_knn else None
    if knn is None and user_knn is None:
        # Exact: w_als p.q + (w_bu b_u + c) * 1 + 1 * w_bi b_i.
        user_factors = np.column_stack([p.blend_als * users, p.blend_user_bias * baseline.user_bias
                                        + p.blend_intercept, np.ones(n_users)])
        item_factors = np.column_stack([items, np.ones(n_items), p.blend_item_bias * baseline.item_bias])
    else:
        say(f"fit: factorising the blend of ALS and kNN ({n_users:,} x {n_items:,})")
        matrix = p.blend_als * (users @ items.T)
        matrix += p.blend_user_bias * baseline.user_bias[:, None] + p.blend_item_bias * baseline.item_bias
        matrix += p.blend_intercept
        if knn is not None:
            matrix += p.blend_knn * knn
        if user_knn is not None:
            matrix += p.blend_user_knn * user_knn.T
        left, weights, right = np.linalg.svd(matrix, full_matrices=False)
        keep = min(p.factor_rank, len(weights))
        user_factors, item_factors = left[:, :keep] * weights[:keep], right[:keep].T
    say(f"fit: taste (implicit ALS rank {p.taste_rank}) on who rated what")
    item_taste = taste.fit_items(spark, u, i, n_items, rank=p.taste_rank, alpha=p.taste_alpha, reg=p.taste_reg,
                                 max_iter=p.taste_max_iter, seed=p.seed)
    # float32 factors: what the store keeps, so the published rows reproduce these predictions exactly.
    return FactorModel(baseline.mu, np.asarray(user_ids, dtype=str), np.asarray(item_ids, dtype=str),
                       baseline.user_bias, baseline.item_bias, user_factors.astype(np.float32),
                       item_factors.astype(np.float32), np.bincount(i, minlength=n_items), item_taste,
                       dataclasses.asdict(params))


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def tune(spark, ratings, *, holdout: float = 0.1, bias_grid=BIAS_GRID, als_grid=ALS_GRID,
         base: Params, blend: bool = True, progress: Callable[[str], None] | None = None) -> Params:
    """Pick bias regularisation, then ALS rank and regParam, by RMSE on a random inner holdout
    (``holdout`` of ``ratings``; callers pass the training data only). With ``blend``, the ALS,
    item-kNN and user-kNN residual weights, with a linear recalibration of the baseline (weights
    on b_u and b_i and a constant, for known pairs only), are then fitted by least squares on the
    same holdout, kept only if the blend beats ALS alone there.
    """
    say = progress or (lambda message: None)
    frame = _collect(ratings)
    rng = np.random.default_rng(base.seed)
    mask = rng.random(len(frame)) < holdout
    inner, valid = frame[~mask], frame[mask]
    u, i, r, user_ids, item_ids = _indexed(inner)
    n_users, n_items = len(user_ids), len(item_ids)
    vu = pd.Index(user_ids).get_indexer(valid["user"]).astype(np.int64)
    vi = pd.Index(item_ids).get_indexer(valid["item"]).astype(np.int64)
    vr = valid["rating"].to_numpy(float)

    def clipped(x):
        return np.clip(x, MIN_RATING, MAX_RATING)

    best_bias, best_score = None, np.inf
    for reg_user, reg_item in bias_grid:
        baseline = fit_baseline(u, i, r, n_users, n_items, reg_user, reg_item)
        score = _rmse(clipped(baseline.predict(vu, vi)), vr)
        if score < best_score:
            best_bias, best_score = (reg_user, reg_item, baseline), score
    reg_user, reg_item, baseline = best_bias
    say(f"tune: bias reg user={reg_user} item={reg_item} valid RMSE {best_score:.4f}")
    residual = r - baseline.predict(u, i)
    best, best_score, best_als = None, np.inf, None
    for rank, reg in als_grid:
        params = replace(base, rank=rank, reg=reg, reg_user=reg_user, reg_item=reg_item, blend_als=1.0,
                         blend_knn=0.0, blend_user_knn=0.0, blend_user_bias=0.0, blend_item_bias=0.0,
                         blend_intercept=0.0)
        users, items = _fit_als(spark, u, i, residual, n_users, n_items, params)
        score = _rmse(clipped(_raw_predict(baseline, users, items, vu, vi)), vr)
        say(f"tune: rank={rank} reg={reg} valid RMSE {score:.4f}")
        if score < best_score:
            best, best_score = params, score
            best_als = _raw_predict(baseline, users, items, vu, vi) - baseline.predict(vu, vi)
    if not blend:
        return best
    knns = {"blend_knn": fit_knn(u, i, residual, n_users, n_items),
            "blend_user_knn": fit_knn(i, u, residual, n_items, n_users)}
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
    columns += [baseline.user_bias[np.maximum(vu, 0)], baseline.item_bias[np.maximum(vi, 0)], np.ones(len(vu))]
    columns = np.column_stack(columns) * known[:, None]
    target = vr - baseline.predict(vu, vi)
    weights, *_ = np.linalg.lstsq(columns[known], target[known], rcond=None)
    blended = replace(best, **{name: float(w) for name, w in zip(names, weights)})
    score = _rmse(clipped(baseline.predict(vu, vi) + columns @ weights), vr)
    say("tune: blend " + " ".join(f"{name.removeprefix('blend_')}={w:.3f}" for name, w in zip(names, weights))
        + f" valid RMSE {score:.4f}")
    return blended if score < best_score else best


def stderr_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


__all__ = ["Params", "Baseline", "fit", "fit_baseline", "tune", "BIAS_GRID", "ALS_GRID", "stderr_progress"]
