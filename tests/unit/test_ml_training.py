"""The residual ALS model on generated low-rank data (local Spark, session-scoped)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from ml import selection, training
from ml.metrics import rmse

FAST = training.Params(rank=4, reg=0.1, max_iter=10, reg_user=5.0, reg_item=5.0)
BLENDED = training.Params(rank=4, reg=0.1, max_iter=10, reg_user=5.0, reg_item=5.0, blend_als=0.8, blend_knn=0.3,
                          blend_user_knn=0.1, blend_user_bias=0.1, blend_item_bias=-0.1,
                          blend_intercept=0.05)


def synthetic(users=300, items=200, rank=3, density=0.15, noise=0.3, seed=7) -> pd.DataFrame:
    """A low-rank rating matrix plus user/item biases and noise, sampled sparsely, in [0.5, 5]."""
    rng = np.random.default_rng(seed)
    p, q = rng.normal(0, 0.6, (users, rank)), rng.normal(0, 0.6, (items, rank))
    bu, bi = rng.normal(0, 0.4, users), rng.normal(0, 0.4, items)
    u, i = np.nonzero(rng.random((users, items)) < density)
    r = 3.5 + bu[u] + bi[i] + np.einsum("ij,ij->i", p[u], q[i]) + rng.normal(0, noise, len(u))
    return pd.DataFrame({"user": [f"user{x}" for x in u], "item": [f"movie{x}" for x in i],
                         "rating": np.clip(r, 0.5, 5.0)})


@pytest.fixture(scope="module")
def split():
    frame = synthetic()
    test = np.random.default_rng(1).random(len(frame)) < 0.2
    return frame[~test].reset_index(drop=True), frame[test].reset_index(drop=True)


@pytest.fixture(scope="module")
def model(spark, split):
    return training.fit(spark, spark.createDataFrame(split[0]), BLENDED).collect()


def test_residual_model_beats_baseline_and_global_mean(model, split):
    train, test = split
    truth = test["rating"].to_numpy()
    mean_rmse = rmse(truth, np.full(len(test), train["rating"].mean()))
    baseline_rmse = rmse(truth, model.predict_baseline(test["user"], test["item"]))
    model_rmse = rmse(truth, model.predict(test["user"], test["item"]))
    assert baseline_rmse < mean_rmse
    assert model_rmse < baseline_rmse - 0.05, (model_rmse, baseline_rmse, mean_rmse)


def test_predictions_are_clipped_to_the_rating_scale(spark):
    # One user loves everything and a few items are loved by everyone: mu + b_u + b_i > 5.
    frame = synthetic(users=60, items=40, density=0.5, seed=3)
    frame.loc[frame["user"] == "user0", "rating"] = 5.0
    frame.loc[frame["item"] == "movie0", "rating"] = 5.0
    frame.loc[frame["user"] == "user1", "rating"] = 0.5
    frame.loc[frame["item"] == "movie1", "rating"] = 0.5
    model = training.fit(spark, spark.createDataFrame(frame), BLENDED).collect()
    users = [f"user{u}" for u in range(60) for _ in range(40)]
    items = [f"movie{i}" for _ in range(60) for i in range(40)]
    raw = model.raw_predict(*model.index(users, items))
    assert raw.max() > 5.0 and raw.min() < 0.5  # the clip has something to do
    predicted = model.predict(users, items)
    assert predicted.max() == 5.0 and predicted.min() == 0.5
    assert np.all((predicted >= 0.5) & (predicted <= 5.0))


def test_unseen_users_and_items_get_the_baseline(model):
    item = "movie5"
    item_bias = model.item_bias[list(model.item_ids).index(item)]
    assert model.predict(["nobody"], [item])[0] == pytest.approx(model.mu + item_bias)
    user = "user5"
    user_bias = model.user_bias[list(model.user_ids).index(user)]
    assert model.predict([user], ["no-such-movie"])[0] == pytest.approx(model.mu + user_bias)
    assert model.predict(["nobody"], ["no-such-movie"])[0] == pytest.approx(model.mu)
    # A known pair does get a residual term.
    assert model.predict([user], [item])[0] != pytest.approx(model.predict_baseline([user], [item])[0])


def test_blended_knn_terms_are_published_as_full_rank_factors(model):
    # 300 users x 200 items is below factor_rank: the SVD keeps every direction, so it is exact.
    assert model.rank == min(len(model.user_ids), len(model.item_ids))


def test_without_knn_the_factors_are_the_als_factors_plus_two_bias_columns(spark, split):
    plain = training.fit(spark, spark.createDataFrame(split[0]), FAST).collect()
    assert plain.rank == FAST.rank + 2
    assert plain.user_factors.dtype == np.float32


def test_knn_averages_the_residuals_of_similar_items():
    from ml.knn import fit_knn, similarities

    # Items 0 and 1 move together over users 0-3, item 2 against item 0; user 4 rated only 0 and 2.
    e0 = np.array([1.0, -1.0, 0.5, -0.5])
    rows = [(u, 0, e0[u]) for u in range(4)] + [(u, 1, 2 * e0[u]) for u in range(4)]
    rows += [(u, 2, -e0[u]) for u in range(4)] + [(4, 0, 0.8), (4, 2, 0.3)]
    u, i, e = (np.array(column) for column in zip(*rows))
    u, i = u.astype(np.int64), i.astype(np.int64)
    similarity = similarities(u, i, e, 5, 3, shrinkage=0.0)
    assert similarity[0, 1] == pytest.approx(1.0) and similarity[1, 2] == pytest.approx(-1.0)
    assert similarity[0, 2] < 0
    # For (4, 1): of user 4's items only item 0 is positively similar to 1 -> its residual.
    estimates = fit_knn(u, i, e, 5, 3, shrinkage=0.0)
    assert estimates.shape == (5, 3)
    assert estimates[4, 1] == pytest.approx(0.8)
    # Item 2 is similar to nothing user 4 rated except negatively: no estimate.
    assert estimates[4, 2] == 0.0


def test_tuning_uses_the_inner_split_and_prefers_the_better_grid_point(spark, split):
    calls = []
    params = selection.tune(spark, split[0], bias_grid=[(5.0, 5.0), (500.0, 500.0)],
                           als_grid=[(4, 0.1), (4, 50.0)], base=FAST, progress=calls.append)
    assert (params.reg_user, params.reg_item) == (5.0, 5.0)
    assert (params.rank, params.reg) == (4, 0.1)
    assert len([line for line in calls if line.startswith("tune: rank")]) == 2
    assert any(line.startswith("tune: blend") for line in calls)


def test_a_tuned_fit_fits_the_parameters_tuning_chose(spark, split, monkeypatch):
    chosen = dataclasses.replace(FAST, rank=3, reg_user=7.0)
    asked = []
    monkeypatch.setattr(selection, "tune", lambda spark, ratings, *, base, progress: asked.append(base) or chosen)
    trained = selection.fit(spark, spark.createDataFrame(split[0]), FAST, tune_params=True)
    assert asked == [FAST] and trained.params == dataclasses.asdict(chosen)


def test_bias_passes_spread_over_spark_tasks_equal_those_in_one_task_and_on_the_driver(spark, split, monkeypatch):
    data = training.index(spark.createDataFrame(split[0]))
    assert data.ratings.rdd.getNumPartitions() > 1
    in_one_task = data.baseline(5.0, 5.0)
    monkeypatch.setattr(training, "ONE_TASK_RATINGS", 1000)  # a Spark job a half pass, over every task
    spread = data.baseline(5.0, 5.0)
    on_driver = training.fit_baseline(data.local(), 5.0, 5.0)
    for fitted in (in_one_task, spread):
        assert fitted.mu == pytest.approx(on_driver.mu, abs=1e-12)
        np.testing.assert_allclose(fitted.user_bias, on_driver.user_bias, atol=1e-9)
        np.testing.assert_allclose(fitted.item_bias, on_driver.item_bias, atol=1e-9)
    assert np.abs(on_driver.item_bias).max() > 0.1  # there was something to fit


def test_published_rows_stream_in_chunks_and_equal_the_collected_model(spark, split):
    trained = training.fit(spark, spark.createDataFrame(split[0]), FAST)
    model = trained.collect()
    for kind, ids, biases, vectors in (("user", model.user_ids, model.user_bias, model.user_factors),
                                       ("item", model.item_ids, model.item_bias, model.item_factors),
                                       ("taste", model.item_ids, np.zeros(len(model.item_ids)), model.item_taste)):
        chunks = list(trained.chunks(kind, 70))
        assert max(len(chunk[0]) for chunk in chunks) == 70
        streamed = pd.DataFrame({"id": [id for chunk in chunks for id in chunk[0]],
                                 "bias": np.concatenate([chunk[1] for chunk in chunks])})
        order = pd.Index(streamed["id"]).get_indexer(ids)
        assert sorted(streamed["id"]) == sorted(ids) and (order >= 0).all()
        np.testing.assert_array_equal(streamed["bias"].to_numpy()[order], biases)
        np.testing.assert_array_equal(np.concatenate([chunk[2] for chunk in chunks])[order], vectors)
