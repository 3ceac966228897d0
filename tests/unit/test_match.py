"""GET /v1/match: group scores from published factors, fold-in of new users, and its errors."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from ml import matching, registry
from ml.factors import FactorModel
from projections.fold import Record
from projections.projector import apply_records
from projections.store import ModelInfo
from tests.unit.fakes import MemoryBucket

MOVIES = [f"m{k}" for k in range(30)]


def model() -> FactorModel:
    rng = np.random.default_rng(5)
    users = np.array(["ana", "ben"])
    return FactorModel(3.4, users, np.array(MOVIES), np.array([0.3, -0.2]), rng.normal(0, 0.5, len(MOVIES)),
                       rng.normal(0, 0.7, (2, 3)).astype(np.float32),
                       rng.normal(0, 0.7, (len(MOVIES), 3)).astype(np.float32),
                       {"rank": 3, "reg": 0.1, "reg_user": 5.0})


def review(client, log, store, user, movie, rating):
    assert client.post("/v1/reviews", json={"user_id": user, "movie_id": movie, "rating": rating}).status_code == 202
    apply_records(store, [Record(p, o, e) for p, events in enumerate(log.partitions) for o, e in enumerate(events)])


def publish(store, published=None):
    return registry.publish(store, MemoryBucket(), "b", "models/", published or model(),
                            trained_at=datetime(2026, 11, 25, tzinfo=timezone.utc), watermark={}, metrics={})


def test_no_model_yet_is_503(world):
    client, _, _ = world
    response = client.get("/v1/match?users=ana,ben")
    assert response.status_code == 503 and response.headers["content-type"] == "application/problem+json"


def test_average_of_known_users_ranks_every_unseen_movie_by_the_mean_prediction(world):
    client, log, store = world
    trained = model()
    info = publish(store, trained)
    review(client, log, store, "ana", "m3", 4.0)
    body = client.get("/v1/match?users=ana,ben&limit=100").json()
    assert body["model_version"] == info.version and body["strategy"] == "average"
    assert body["users"] == ["ana", "ben"] and body["folded_in"] == []
    movies = body["movies"]
    assert [m["movie_id"] for m in movies] == sorted((m for m in MOVIES if m != "m3"),  # seen by ana: left out
                                                     key=lambda m: -float(np.mean(trained.predict(["ana", "ben"], [m, m]))))
    for movie in movies:
        ana, ben = trained.predict(["ana", "ben"], [movie["movie_id"]] * 2)
        assert movie["members"] == {"ana": {"predicted": pytest.approx(ana, abs=1e-4)},
                                    "ben": {"predicted": pytest.approx(ben, abs=1e-4)}}
        assert movie["score"] == pytest.approx((ana + ben) / 2, abs=1e-4)
    with_seen = client.get("/v1/match?users=ana,ben&limit=100&include_seen=true").json()["movies"]
    assert len(with_seen) == len(MOVIES)


@pytest.mark.parametrize("strategy, combine", [("least_misery", min), ("most_pleasure", max)])
def test_other_strategies_combine_members_as_named(world, strategy, combine):
    client, _, store = world
    publish(store)
    movies = client.get(f"/v1/match?users=ana,ben&strategy={strategy}&limit=5").json()["movies"]
    assert len(movies) == 5
    for movie in movies:
        assert movie["score"] == pytest.approx(combine(m["predicted"] for m in movie["members"].values()), abs=1e-4)
    assert [m["score"] for m in movies] == sorted((m["score"] for m in movies), reverse=True)


def test_weights_tilt_the_average(world):
    client, _, store = world
    publish(store)
    movies = client.get("/v1/match?users=ana,ben&weights=3,1&limit=5").json()["movies"]
    for movie in movies:
        members = movie["members"]
        expected = (3 * members["ana"]["predicted"] + members["ben"]["predicted"]) / 4
        assert movie["score"] == pytest.approx(expected, abs=1e-3)


def test_a_user_newer_than_the_model_is_folded_in_from_their_reviews(world):
    client, log, store = world
    trained = model()
    publish(store, trained)
    best_for_ana = int(np.argmax(trained.item_factors @ trained.user_factors[0]))
    review(client, log, store, "cleo", MOVIES[best_for_ana], 5.0)
    body = client.get("/v1/match?users=ana,cleo&limit=100&include_seen=true").json()
    assert body["folded_in"] == ["cleo"]
    predicted = {m["movie_id"]: m["members"]["cleo"]["predicted"] for m in body["movies"]}
    baseline = dict(zip(MOVIES, trained.predict(["nobody"] * len(MOVIES), MOVIES)))
    # Loving that movie raises cleo's prediction for it above what a stranger gets.
    assert predicted[MOVIES[best_for_ana]] > baseline[MOVIES[best_for_ana]]
    # Someone with no reviews at all gets the baseline.
    stranger = client.get("/v1/match?users=ana,dan&limit=100").json()["movies"]
    assert all(m["members"]["dan"]["predicted"] == pytest.approx(baseline[m["movie_id"]], abs=1e-4) for m in stranger)


def test_fold_in_recovers_a_users_vector_from_enough_ratings():
    trained = model()
    info = ModelInfo(version="v", trained_at=datetime(2026, 1, 1), watermark={}, metrics={},
                              params={"reg": 1e-6, "reg_user": 1e-6}, mu=trained.mu, rank=3, artefacts="")
    items = matching.Items(info, trained.item_ids.astype(object), trained.item_bias,
                           trained.item_factors.astype(float), pd.Index(trained.item_ids))
    bias, vector = 0.25, np.array([0.5, -0.4, 0.3])
    ratings = {m: float(trained.mu + bias + b + q @ vector) for m, b, q in
               zip(MOVIES, trained.item_bias, trained.item_factors.astype(float))}
    solved_bias, solved = matching.fold_in(items, ratings)
    assert solved_bias == pytest.approx(bias, abs=1e-3) and solved == pytest.approx(vector, abs=1e-3)


@pytest.mark.parametrize("query", ["users=ana", "users=ana,ana", "users=ana,ben&strategy=vibes",
                                   "users=ana,ben&weights=1", "users=ana,ben&weights=1,x",
                                   "users=ana,ben&weights=1,2&strategy=least_misery", "users=ana,ben&limit=0",
                                   "users=ana,ben&include_seen=maybe", "users=" + ",".join(f"u{k}" for k in range(9))])
def test_bad_match_queries_are_400(world, query):
    client, _, store = world
    publish(store)
    response = client.get(f"/v1/match?{query}")
    assert response.status_code == 400 and response.headers["content-type"] == "application/problem+json"
