"""Rating model: a regularised bias baseline plus Spark ALS fitted to its residuals.

prediction(u, i) = mu + b_u + b_i + w_als * p_u . q_i + w_knn * knn(u, i) + w_uknn * uknn(u, i)
                 + w_bu * b_u + w_bi * b_i + c          (the last line for known pairs only)
clipped to [0.5, 5.0].

* The baseline (global mean ``mu``, user biases ``b_u``, item biases ``b_i``) is fitted by a few
  alternating ridge passes: ``b_u = sum(r - mu - b_i) / (reg_user + n_u)``,
  ``b_i = sum(r - mu - b_u) / (reg_item + n_i)``.
* ``pyspark.ml.recommendation.ALS`` (explicit, ``nonnegative=False``) is then fitted to the
  residuals ``r - baseline``.
* Item-item and user-user neighbourhood estimates on the same residuals (:mod:`ml.knn`) are
  blended in, with weights ``w_als``, ``w_knn``, ``w_uknn`` chosen with the other hyperparameters
  (:mod:`ml.selection`), together with a small linear recalibration of the baseline for known
  pairs (a small, standard ensemble: ALS alone is 0.929 RMSE on MovieLens u1, the item kNN alone
  0.931, the blend 0.920; 5-fold mean 0.918 → 0.910).
* :func:`fit` answers the published form (:class:`Trained`, rows of :class:`ml.factors.FactorModel`):
  everything beyond ``mu + b_u + b_i`` is one matrix of known pairs, written as factors. Without
  kNN terms that is exact at rank ``rank + 2`` (``[w_als p_u, w_bu b_u + c, 1] . [q_i, 1, w_bi b_i]``);
  with them it is the matrix's SVD truncated to ``factor_rank``, exact when there are no more
  users or items than that.
* A user or item unseen in training has no bias and no factors: it gets the rest of the
  baseline (an unseen user gets ``mu + b_i``, both unseen get ``mu``).
* Beside the rating model, :func:`fit` counts each item's ratings and fits the taste model
  (:mod:`ml.taste`, implicit ALS on who rated what), which ranking for groups uses
  (:mod:`ml.matching`).

The ratings never pass through the driver: ids are indexed in Spark, each bias pass is one Spark
job whose tasks answer per-partition sums (one number per user or movie reaches the driver), the
residuals and the factors stay DataFrames, and the published rows are streamed out in chunks
(:meth:`Trained.chunks`). Only the kNN terms need the dense users x movies matrix on the driver;
they are blended in when it is small (:func:`ml.knn.feasible`, a constant bound), never at scale.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import numpy as np

from ml.als import dense_factors, fit_als
from ml.factors import MAX_RATING, MIN_RATING, FactorModel
from ml.knn import feasible, fit_knn

BIAS_PASSES = 10
CHUNK_ROWS = 20_000  # factor rows per chunk streamed to the driver
BROADCAST_IDS = 1_000_000  # up to this many users (or movies), their numbers are broadcast to the index join
ONE_TASK_RATINGS = 10_000_000  # up to this many, the bias passes run in one task: ~160 MB of arrays there


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
    blend_user_bias: float = 0.0  # linear recalibration of the baseline for known pairs (see ml.selection)
    blend_item_bias: float = 0.0
    blend_intercept: float = 0.0
    factor_rank: int = 1024  # most factors published when kNN terms are blended in (see the module doc)
    # The taste model (ml.taste): rank 20, alpha 1, reg 0.1 won a 12-point grid on MovieLens fold u1.
    taste_rank: int = 20
    taste_alpha: float = 1.0
    taste_reg: float = 0.1
    taste_max_iter: int = 10
    # Movies with fewer training ratings are not recommended: chosen on each training run's holdout
    # (ml.selection.choose_min_reviews), 0 until then.
    min_reviews: int = 0


@dataclass
class Baseline:
    mu: float
    user_bias: np.ndarray
    item_bias: np.ndarray
    item_counts: np.ndarray  # ratings per item in the data it was fitted on

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Indexed users/items; -1 means unseen (bias 0)."""
        bu = np.where(users >= 0, self.user_bias[np.maximum(users, 0)], 0.0) if len(self.user_bias) else 0.0
        bi = np.where(items >= 0, self.item_bias[np.maximum(items, 0)], 0.0) if len(self.item_bias) else 0.0
        return self.mu + bu + bi


Weights = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (u, i, r) -> a weight per rating


@dataclass
class LocalRatings:
    """Indexed ratings as arrays on the driver: a bounded sample (tuning) or a small data set."""

    u: np.ndarray
    i: np.ndarray
    r: np.ndarray
    n_users: int
    n_items: int

    @property
    def mean(self) -> float:
        return float(self.r.mean()) if len(self.r) else 3.0

    def bincount(self, by: str, weights: Weights) -> np.ndarray:
        """The weights summed per user (``by="u"``) or per item (``"i"``)."""
        return np.bincount(self.u if by == "u" else self.i, weights=weights(self.u, self.i, self.r),
                           minlength=self.n_users if by == "u" else self.n_items)


@dataclass
class Indexed:
    """Ratings with their ids replaced by dense integers (in id order), cached in Spark."""

    ratings: object  # DataFrame: u int, i int, r double
    users: object  # DataFrame: id string, u int
    items: object  # DataFrame: id string, i int
    n_users: int
    n_items: int
    n_ratings: int
    mean: float

    def bincount(self, by: str, weights: Weights) -> np.ndarray:
        """As :meth:`LocalRatings.bincount`, in one Spark job: each task sums its rows, and only the
        per-task sums come back."""
        import pyarrow as pa

        size = self.n_users if by == "u" else self.n_items

        def partial(batches):
            total = np.zeros(size)
            for batch in batches:
                u, i, r = (batch.column(name).to_numpy() for name in ("u", "i", "r"))
                total += np.bincount(u if by == "u" else i, weights=weights(u, i, r), minlength=size)
            yield pa.RecordBatch.from_arrays([pa.array([total.tobytes()], pa.binary())], names=["sums"])

        rows = self.ratings.mapInArrow(partial, "sums binary").collect()
        return np.sum([np.frombuffer(row.sums) for row in rows], axis=0) if rows else np.zeros(size)

    def baseline(self, reg_user: float, reg_item: float) -> Baseline:
        """:func:`fit_baseline` over these ratings. Up to ``ONE_TASK_RATINGS`` it runs whole in one
        Spark task (one job, not two a pass: a job costs far more than a pass over some millions of
        ratings in NumPy), beyond that a Spark job a half pass. Either way on executors."""
        import pyarrow as pa

        if self.n_ratings > ONE_TASK_RATINGS:
            return fit_baseline(self, reg_user, reg_item)
        n_users, n_items = self.n_users, self.n_items

        def whole(batches):
            columns = [[], [], []]
            for batch in batches:
                for column, name in zip(columns, ("u", "i", "r")):
                    column.append(batch.column(name).to_numpy())
            u, i, r = (np.concatenate(column) if column else np.zeros(0) for column in columns)
            fitted = fit_baseline(LocalRatings(u.astype(np.int64), i.astype(np.int64), r, n_users, n_items),
                                  reg_user, reg_item)
            yield pa.RecordBatch.from_arrays([pa.array([values.tobytes()], pa.binary()) for values in
                                              (np.array([fitted.mu]), fitted.user_bias, fitted.item_bias,
                                               fitted.item_counts)], names=["mu", "users", "items", "counts"])

        # collect(), not first(): first() may stop reading the task's output before it ends.
        [row] = (self.ratings.coalesce(1).mapInArrow(whole, "mu binary, users binary, items binary, counts binary")
                 .collect())
        return Baseline(float(np.frombuffer(row.mu)[0]), np.frombuffer(row.users).copy(),
                        np.frombuffer(row.items).copy(), np.frombuffer(row.counts, dtype=np.int64).copy())

    def local(self) -> LocalRatings:
        """The ratings as arrays on the driver: for data that :func:`ml.knn.feasible` calls small."""
        frame = self.ratings.toPandas()
        return LocalRatings(frame["u"].to_numpy(np.int64), frame["i"].to_numpy(np.int64),
                            frame["r"].to_numpy(float), self.n_users, self.n_items)

    def unpersist(self) -> None:
        for frame in (self.ratings, self.users, self.items):
            frame.unpersist()


def fit_baseline(data: LocalRatings | Indexed, reg_user: float, reg_item: float,
                 passes: int = BIAS_PASSES) -> Baseline:
    mu = data.mean
    n_u = data.bincount("u", lambda u, i, r: np.ones(len(r)))
    n_i = data.bincount("i", lambda u, i, r: np.ones(len(r)))
    bu, bi = np.zeros(data.n_users), np.zeros(data.n_items)
    for _ in range(passes):
        bi = data.bincount("i", lambda u, i, r, bu=bu: r - mu - bu[u]) / (reg_item + n_i)
        bu = data.bincount("u", lambda u, i, r, bi=bi: r - mu - bi[i]) / (reg_user + n_u)
    return Baseline(mu, bu, bi, n_i.astype(np.int64))


def _dense_ids(ratings, column: str, name: str):
    """(id string, <name> int): the distinct ids of a column numbered 0.. in id order, in Spark (the
    numbering in one task: ids only, and twice as fast here as zipWithIndex through Python)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    number = (F.row_number().over(Window.orderBy(column)) - 1).cast("int")
    return ratings.select(column).distinct().select(F.col(column).alias("id"), number.alias(name))


def index(ratings) -> Indexed:
    """Index a DataFrame of (user, item, rating); ids in id order, so a refit numbers them alike."""
    from pyspark.sql import functions as F

    ratings = ratings.select(F.col("user").cast("string"), F.col("item").cast("string"),
                             F.col("rating").cast("double").alias("r"))
    count, mean = ratings.agg(F.count("*"), F.avg("r")).first()  # every rating has both ids: the same figures
    users = _dense_ids(ratings, "user", "u").cache()
    items = _dense_ids(ratings, "item", "i").cache()
    n_users, n_items = users.count(), items.count()

    def numbers(ids, count: int):  # broadcast (no shuffle of the ratings) unless there are very many
        return F.broadcast(ids) if count <= BROADCAST_IDS else ids

    indexed = (ratings.join(numbers(users.withColumnRenamed("id", "user"), n_users), "user")
               .join(numbers(items.withColumnRenamed("id", "item"), n_items), "item").select("u", "i", "r").cache())
    return Indexed(indexed, users, items, n_users, n_items, count, float(mean) if count else 3.0)


def residuals(data: Indexed, baseline: Baseline):
    """(u, i, r float) DataFrame of the ratings less the baseline: what ALS fits."""
    import pyarrow as pa

    def subtract(batches):
        for batch in batches:
            u, i, r = (batch.column(name).to_numpy() for name in ("u", "i", "r"))
            yield pa.RecordBatch.from_arrays(
                [batch.column("u"), batch.column("i"), pa.array(r - baseline.predict(u, i), pa.float32())],
                names=["u", "i", "r"])

    return data.ratings.mapInArrow(subtract, "u int, i int, r float")


# -- the published rows -------------------------------------------------------------------------------


def matrix(column, width: int) -> np.ndarray:
    """An Arrow list column of equal-length vectors as an (n, width) float32 array."""
    return np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, width)


def _vectors(values: np.ndarray):
    import pyarrow as pa

    n, width = values.shape
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * width)
    return pa.ListArray.from_arrays(offsets, pa.array(values.ravel(), pa.float32()))


USER_ROWS = "id string, u int, bias double, vector array<float>"
ITEM_ROWS = "id string, i int, bias double, vector array<float>, count long, taste array<float>"


@dataclass
class Trained:
    """A fitted model: ``mu`` and the published rows, still in Spark (one per user and per item)."""

    mu: float
    rank: int
    params: dict
    users: object  # DataFrame of USER_ROWS
    items: object  # DataFrame of ITEM_ROWS

    def chunks(self, kind: str, size: int = CHUNK_ROWS) -> Iterator[tuple[list[str], np.ndarray, np.ndarray,
                                                                            np.ndarray]]:
        """(ids, biases, vectors, counts) of ``kind`` rows ("user", "item" or "taste": the items'
        taste vectors, no bias), ``size`` at a time, one partition in memory at once."""
        frame = self.users if kind == "user" else self.items
        vector = "taste" if kind == "taste" else "vector"
        ids, biases, vectors, counts = [], [], [], []
        for row in frame.toLocalIterator():
            ids.append(row.id)
            biases.append(0.0 if kind == "taste" else row.bias)
            vectors.append(row[vector])
            counts.append(row["count"] if kind != "user" else 0)
            if len(ids) == size:
                yield ids, np.array(biases), np.array(vectors, dtype=np.float32), np.array(counts)
                ids, biases, vectors, counts = [], [], [], []
        if ids:
            yield ids, np.array(biases), np.array(vectors, dtype=np.float32), np.array(counts)

    def collect(self, users=None) -> FactorModel:
        """The model on the driver (all items; all users, or only those named by a DataFrame of
        ``user``): for evaluation on a small data set or a bounded sample of users."""
        from pyspark.sql import functions as F

        rows = self.users
        if users is not None:
            rows = rows.join(F.broadcast(users.select(F.col("user").alias("id")).distinct()), "id")
        people = rows.orderBy("u").toPandas()
        movies = self.items.orderBy("i").toPandas()
        taste_rank = int(self.params.get("taste_rank", 0))

        def stack(column, width):
            return np.array(column.tolist(), dtype=np.float32).reshape(-1, width)

        return FactorModel(self.mu, people["id"].to_numpy(str), movies["id"].to_numpy(str),
                           people["bias"].to_numpy(float), movies["bias"].to_numpy(float),
                           stack(people["vector"], self.rank), stack(movies["vector"], self.rank),
                           movies["count"].to_numpy(np.int64), stack(movies["taste"], taste_rank), dict(self.params))

    def predictions(self, ratings):
        """The DataFrame of (user, item, rating) with the model's ``predicted`` rating and its
        ``baseline`` (both clipped), computed in Spark."""
        from pyspark.sql import functions as F

        users = self.users.select(F.col("id").alias("user"), F.col("bias").alias("bu"), F.col("vector").alias("p"))
        items = self.items.select(F.col("id").alias("item"), F.col("bias").alias("bi"), F.col("vector").alias("q"))
        scored = ratings.join(users, "user", "left").join(items, "item", "left")
        dot = F.expr("aggregate(zip_with(p, q, (x, y) -> double(x) * double(y)), 0D, (acc, x) -> acc + x)")
        baseline = F.lit(self.mu) + F.coalesce("bu", F.lit(0.0)) + F.coalesce("bi", F.lit(0.0))
        predicted = baseline + F.when(F.col("p").isNotNull() & F.col("q").isNotNull(), dot).otherwise(0.0)

        def clip(column):
            return F.least(F.greatest(column, F.lit(MIN_RATING)), F.lit(MAX_RATING))

        return scored.select("user", "item", "rating", clip(predicted).alias("predicted"),
                             clip(baseline).alias("baseline"))

    def unpersist(self) -> None:
        self.users.unpersist()
        self.items.unpersist()


def _user_rows(data: Indexed, baseline: Baseline, factors, params: Params):
    """USER_ROWS of the exact form: ``[w_als p_u, w_bu b_u + c, 1]``."""
    import pyarrow as pa

    def rows(batches):
        for batch in batches:
            u = batch.column("u").to_numpy()
            bias = baseline.user_bias[u]
            vector = np.column_stack([params.blend_als * matrix(batch.column("features"), params.rank),
                                      params.blend_user_bias * bias + params.blend_intercept, np.ones(len(u))])
            yield pa.RecordBatch.from_arrays([batch.column("id"), batch.column("u"), pa.array(bias),
                                              _vectors(vector)], names=["id", "u", "bias", "vector"])

    return data.users.join(factors.withColumnRenamed("id", "u"), "u").mapInArrow(rows, USER_ROWS)


def _item_rows(data: Indexed, baseline: Baseline, factors, taste, params: Params):
    """ITEM_ROWS of the exact form: ``[q_i, 1, w_bi b_i]``, with counts and taste vectors."""
    import pyarrow as pa

    def rows(batches):
        for batch in batches:
            i = batch.column("i").to_numpy()
            bias = baseline.item_bias[i]
            vector = np.column_stack([matrix(batch.column("features"), params.rank), np.ones(len(i)),
                                      params.blend_item_bias * bias])
            yield pa.RecordBatch.from_arrays(
                [batch.column("id"), batch.column("i"), pa.array(bias), _vectors(vector),
                 pa.array(baseline.item_counts[i]), _vectors(matrix(batch.column("taste"), params.taste_rank))],
                names=["id", "i", "bias", "vector", "count", "taste"])

    return (data.items.join(factors.withColumnRenamed("id", "i"), "i")
            .join(taste.select(taste.id.alias("i"), taste.features.alias("taste")), "i").mapInArrow(rows, ITEM_ROWS))


def _blended_rows(spark, data: Indexed, baseline: Baseline, users, items, taste, params: Params,
                  say: Callable[[str], None]):
    """USER_ROWS and ITEM_ROWS of the blend with kNN terms, factorised by SVD on the driver (small data only)."""
    import pandas as pd

    local = data.local()
    residual = local.r - baseline.predict(local.u, local.i)
    p = params

    say(f"fit: factorising the blend of ALS and kNN ({data.n_users:,} x {data.n_items:,})")
    blend = p.blend_als * (dense_factors(users, data.n_users, p.rank).astype(float) @ dense_factors(items, data.n_items, p.rank).T)
    blend += p.blend_user_bias * baseline.user_bias[:, None] + p.blend_item_bias * baseline.item_bias
    blend += p.blend_intercept
    item_knn = fit_knn(local.u, local.i, residual, data.n_users, data.n_items) if p.blend_knn else None
    user_knn = fit_knn(local.i, local.u, residual, data.n_items, data.n_users) if p.blend_user_knn else None
    if item_knn is not None:
        blend += p.blend_knn * item_knn
    if user_knn is not None:
        blend += p.blend_user_knn * user_knn.T
    left, weights, right = np.linalg.svd(blend, full_matrices=False)
    keep = min(p.factor_rank, len(weights))
    user_factors, item_factors = left[:, :keep] * weights[:keep], right[:keep].T
    user_ids = data.users.orderBy("u").toPandas()
    item_ids = data.items.orderBy("i").toPandas()
    item_taste = dense_factors(taste, data.n_items, p.taste_rank)
    people = pd.DataFrame({"id": user_ids["id"], "u": user_ids["u"], "bias": baseline.user_bias,
                           "vector": list(user_factors.astype(np.float32))})
    movies = pd.DataFrame({"id": item_ids["id"], "i": item_ids["i"], "bias": baseline.item_bias,
                           "vector": list(item_factors.astype(np.float32)), "count": baseline.item_counts,
                           "taste": list(item_taste)})
    return spark.createDataFrame(people, USER_ROWS), spark.createDataFrame(movies, ITEM_ROWS), keep


def fit(spark, ratings, params: Params, *, progress: Callable[[str], None] | None = None) -> Trained:
    """Fit the model on a DataFrame of (user: str, item: str, rating: float) (a pandas one is
    turned into a Spark one). The answer carries the parameters used (:func:`ml.selection.fit`
    chooses them first)."""
    from pyspark.sql import functions as F

    say = progress or (lambda message: None)
    if not hasattr(ratings, "sparkSession"):
        ratings = spark.createDataFrame(ratings[["user", "item", "rating"]])
    data = index(ratings)
    p = params
    baseline = data.baseline(p.reg_user, p.reg_item)
    say(f"fit: ALS rank {p.rank} on {data.n_ratings:,} residuals, {data.n_users:,} users, {data.n_items:,} items")
    residual = residuals(data, baseline).cache()
    als = fit_als(residual, rank=p.rank, reg=p.reg, max_iter=p.max_iter, seed=p.seed)
    say(f"fit: taste (implicit ALS rank {p.taste_rank}) on who rated what")
    taste = fit_als(data.ratings.select("u", "i", F.lit(1.0).cast("float").alias("r")),
                    rank=p.taste_rank, reg=p.taste_reg, max_iter=p.taste_max_iter, seed=p.seed, implicit=True,
                    alpha=p.taste_alpha).itemFactors
    if ((p.blend_knn and feasible(data.n_users, data.n_items, data.n_ratings))
            or (p.blend_user_knn and feasible(data.n_items, data.n_users, data.n_ratings))):
        users, items, rank = _blended_rows(spark, data, baseline, als.userFactors, als.itemFactors, taste, p, say)
    else:
        users = _user_rows(data, baseline, als.userFactors, p)
        items = _item_rows(data, baseline, als.itemFactors, taste, p)
        rank = p.rank + 2
    trained = Trained(baseline.mu, rank, asdict(p), users.cache(), items.cache())
    trained.users.count(), trained.items.count()  # computed while the indexed ratings are cached
    data.unpersist()
    residual.unpersist()
    return trained


def stderr_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


__all__ = ["Params", "Baseline", "Trained", "fit", "fit_baseline", "index", "stderr_progress"]
