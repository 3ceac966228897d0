"""Taste: which movies a user picks to watch at all, from who reviewed what (implicit feedback).

A rating model says how much someone would like a movie *if* they watched it; ranked by that
alone, a list fills with films a handful of people rated highly and most never choose. The taste
model is Spark's implicit-feedback ALS (Hu, Koren and Volinsky, 2008) on the "reviewed it"
matrix: every review is a preference 1 with confidence ``1 + alpha``. Only the item factors are
published; a user's vector is solved from their current reviews when they ask (:func:`fold_in`),
with the same normal equations Spark solves for a user, so a review made after training counts
at once and a user the model never saw needs nothing special.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def fit_items(spark, u: np.ndarray, i: np.ndarray, n_items: int, *, rank: int, alpha: float, reg: float,
              max_iter: int, seed: int) -> np.ndarray:
    """(n_items, rank) item factors of implicit ALS on the indexed (user, item) pairs."""
    from pyspark.ml.recommendation import ALS

    frame = spark.createDataFrame(pd.DataFrame({"u": u.astype(np.int32), "i": i.astype(np.int32),
                                                "r": np.ones(len(u), dtype=np.float32)}))
    blocks = 2 * spark.sparkContext.defaultParallelism
    als = ALS(rank=rank, maxIter=max_iter, regParam=reg, alpha=alpha, implicitPrefs=True, userCol="u",
              itemCol="i", ratingCol="r", seed=seed, checkpointInterval=5, numUserBlocks=blocks,
              numItemBlocks=blocks)
    rows = als.fit(frame).itemFactors.toPandas()
    items = np.zeros((n_items, rank), dtype=np.float32)
    if len(rows):
        items[rows["id"].to_numpy()] = np.stack(rows["features"].to_numpy())
    return items


def gram(items: np.ndarray) -> np.ndarray:
    """``Y^T Y``, the part of every user's normal equations that does not depend on the user."""
    factors = items.astype(np.float64)
    return factors.T @ factors


def fold_in(items: np.ndarray, items_gram: np.ndarray, positions: np.ndarray, *, alpha: float,
            reg: float) -> np.ndarray:
    """A user's taste vector from the positions of the items they reviewed (Spark's user step:
    ``(Y^T Y + alpha Σ y y^T + reg n I) x = (1 + alpha) Σ y``); zeros when there are none."""
    if not len(positions):
        return np.zeros(items.shape[1])
    seen = np.take(items, positions, axis=0).astype(np.float64)
    lhs = items_gram + alpha * (seen.T @ seen)
    lhs.flat[::items.shape[1] + 1] += reg * len(positions)  # + reg n I
    return np.linalg.solve(lhs, (1.0 + alpha) * seen.sum(axis=0))
