"""GET /v1/match and ml.matching: a member's utility is max(affinity, 0) * (predicted - 0.5); the
strategies combine the members' utilities as their definitions say; reasons, filters, fold-in,
fallback, a model refresh under load, and bad input.

Most tests publish a model built by hand (:func:`two_member_model`) in which every member's
predicted rating and taste affinity for every movie is known in advance, so the expected order of
each strategy is worked out here from its definition, not read back from the code.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import numpy as np
import pytest
from starlette.testclient import TestClient

from api import match as api_match
from api.match import MAX_EXCLUDE, MAX_GROUP, MAX_MATCH_LIMIT
from events.types import MovieCatalogued
from ml import matching, registry
from ml.factors import FactorModel
from projections.fold import Record
from projections.projector import apply_records
from tests.unit.fakes import MemoryBucket, bearer

T0 = datetime(2026, 11, 25, tzinfo=timezone.utc)
MOVIES = [f"m{k}" for k in range(30)]
ALPHA, TASTE_REG = 1.0, 0.1  # the taste fold-in's parameters in the hand-built models


# -- helpers -------------------------------------------------------------------------------------


def model() -> FactorModel:
    """A random model of 30 movies and two users, ana and ben (test_api_concurrency publishes it)."""
    rng = np.random.default_rng(5)
    users = np.array(["ana", "ben"])
    return FactorModel(3.4, users, np.array(MOVIES), np.array([0.3, -0.2]), rng.normal(0, 0.5, len(MOVIES)),
                       rng.normal(0, 0.7, (2, 3)).astype(np.float32),
                       rng.normal(0, 0.7, (len(MOVIES), 3)).astype(np.float32), rng.integers(1, 50, len(MOVIES)),
                       rng.normal(0, 0.7, (len(MOVIES), 4)).astype(np.float32),
                       {"rank": 3, "reg": 0.1, "reg_user": 5.0, "taste_rank": 4, "taste_alpha": ALPHA,
                        "taste_reg": TASTE_REG, "min_reviews": 0})


_random_model = model


def publish(store, model=None):
    """Publish `model` (default: :func:`model`) as the new current version."""
    return registry.publish(store, MemoryBucket(), "b", "models/", _random_model() if model is None else model,
                            trained_at=T0, watermark={}, metrics={})


def project(log, store) -> None:
    apply_records(store, [Record(p, o, e) for p, events in enumerate(log.partitions) for o, e in enumerate(events)])


def review(client, log, store, user, movie, rating):
    assert client.post("/v1/reviews", headers=bearer(user), json={"user_id": user, "movie_id": movie, "rating": rating}).status_code == 202
    project(log, store)


def retract(client, log, store, user, movie):
    assert client.delete(f"/v1/users/{user}/reviews/{movie}", headers=bearer(user)).status_code == 202
    project(log, store)


def catalogue(log, store, entries: dict[str, tuple[str, int | None, tuple[str, ...]]]) -> None:
    """Catalogue events (movie -> title, year, genres), projected into the `movies` view."""
    for movie, (title, year, genres) in entries.items():
        asyncio.run(log.append(MovieCatalogued(event_id=uuid.uuid4().hex, occurred_at=T0, recorded_at=T0,
                                               movie_id=movie, title=title, year=year, genres=tuple(genres))))
    project(log, store)
    assert {entry.movie_id for entry in store.catalogue()} >= set(entries)


def build(movies: dict[str, dict], users: dict[str, tuple[float, tuple]], *, mu: float, rank: int,
          taste_rank: int, **params) -> FactorModel:
    """A FactorModel from per-movie dicts (bias, q: rating factors, taste, count) and per-user
    (bias, vector); absent entries are 0."""
    ids = list(movies)
    return FactorModel(
        mu, np.array(list(users)), np.array(ids),
        np.array([bias for bias, _ in users.values()], dtype=float),
        np.array([movies[m].get("bias", 0.0) for m in ids], dtype=float),
        np.array([vector for _, vector in users.values()], dtype=np.float32).reshape(len(users), rank),
        np.array([movies[m].get("q", (0.0,) * rank) for m in ids], dtype=np.float32),
        np.array([movies[m].get("count", 10) for m in ids], dtype=np.int64),
        np.array([movies[m].get("taste", (0.0,) * taste_rank) for m in ids], dtype=np.float32),
        {"rank": rank, "reg": 0.1, "reg_user": 5.0, "taste_rank": taste_rank, "taste_alpha": ALPHA,
         "taste_reg": TASTE_REG, "min_reviews": 0} | params)


def two_member_model(table: dict[str, tuple[float, float, float, float]], *, mu: float = 3.0,
                     min_reviews: int = 1, scale: float = 1.0) -> tuple[FactorModel, float]:
    """A model in which ana's and ben's predicted ratings and affinities are known, and its `k`.

    ``table``: movie -> (ana's predicted, ana's taste weight, ben's predicted, ben's taste weight).

    Rating side, rank 2, no biases: ana's vector is (1, 0), ben's (0, 1), a movie's
    (P_ana - mu, P_ben - mu), so ana's prediction is P_ana and ben's P_ben.

    Taste side, rank 2: ana reviews ``seed_a`` (taste (1, 0)), ben ``seed_b`` (0, 1); a movie's
    taste is (w_ana, w_ben). Two ``pad`` movies without training ratings (never eligible) make
    ``Y^T Y = c I``, so the documented fold-in, ``(Y^T Y + alpha y y^T + reg I) x = (1 + alpha) y``
    for one review, gives ana ``x = k (1, 0)`` with ``k = (1 + alpha) / (c + alpha + reg)``: her
    affinity for a movie is ``k w_ana``, ben's ``k w_ben`` (the same for anyone who reviewed only
    that seed).

    ``scale`` multiplies the users' vectors and every taste vector (and divides the movies'
    rating vectors) without changing a prediction; the affinities become ``k w`` with
    ``k = (1 + alpha) scale^2 / (c + alpha scale^2 + reg)``.
    """
    f = scale
    movies = {"seed_a": {"q": (1.5 / f, 0.0), "taste": (f, 0.0)}, "seed_b": {"q": (0.0, 1.5 / f), "taste": (0.0, f)}}
    for movie, (p_ana, w_ana, p_ben, w_ben) in table.items():
        movies[movie] = {"q": ((p_ana - mu) / f, (p_ben - mu) / f), "taste": (f * w_ana, f * w_ben)}
    tastes = np.array([m["taste"] for m in movies.values()], dtype=np.float32).astype(float)
    gram = tastes.T @ tastes
    c = float(np.linalg.eigvalsh(gram).max()) + 1.0
    values, vectors = np.linalg.eigh(c * np.eye(2) - gram)
    for n, pad in enumerate((vectors * np.sqrt(np.maximum(values, 0))).T):
        movies[f"pad_{n}"] = {"taste": tuple(pad), "count": 0}
    built = build(movies, {"ana": (0.0, (f, 0.0)), "ben": (0.0, (0.0, f))}, mu=mu, rank=2, taste_rank=2,
                  min_reviews=min_reviews)
    return built, (1 + ALPHA) * f * f / (c + ALPHA * f * f + TASTE_REG)


def setup_pair(world, table, **kwargs):
    """Publish a two-member model; ana reviews seed_a and ben seed_b (both 5 stars)."""
    client, log, store = world
    built, k = two_member_model(table, **kwargs)
    info = publish(store, built)
    review(client, log, store, "ana", "seed_a", 5.0)
    review(client, log, store, "ben", "seed_b", 5.0)
    return client, k, info


def utility(member: dict) -> float:
    return max(member["affinity"], 0.0) * (member["predicted"] - 0.5)


def ids(body: dict) -> list[str]:
    return [movie["movie_id"] for movie in body["movies"]]


def ok(response) -> dict:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


def problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


# -- strategies ----------------------------------------------------------------------------------

# movie -> (ana's predicted, ana's taste weight, ben's predicted, ben's taste weight); the
# utilities (in units of k) are in the comments: ana's, ben's.
STRATEGY_TABLE = {
    "cult": (4.9, 2.5, 1.5, 0.5),  # 11, 0.5: ana loves it, ben would hate it
    "lopsided": (4.5, 2.5, 2.5, 1.0),  # 10, 2: the best mean
    "steady": (3.0, 2.0, 3.0, 2.0),  # 5, 5: good for both
    "safe": (2.5, 2.0, 3.5, 1.5),  # 4, 4.5
    "meh": (1.9, 3.0, 4.5, 0.25),  # 4.2, 1: ben would rate it 4.5 but is unlikely to pick it
    "unlikely": (5.0, -1.0, 5.0, -1.0),  # 0, 0: both would rate it 5, neither would pick it
}
# Worked out from each definition over the utilities above.
EXPECTED = {
    # means: lopsided 6, cult 5.75, steady 5, safe 4.25, meh 2.6, unlikely 0
    "average": ["lopsided", "cult", "steady", "safe", "meh", "unlikely"],
    # minima: steady 5, safe 4, lopsided 2, meh 1, cult 0.5, unlikely 0
    "least_misery": ["steady", "safe", "lopsided", "meh", "cult", "unlikely"],
    # maxima: cult 11, lopsided 10, steady 5, safe 4.5, meh 4.2, unlikely 0
    "most_pleasure": ["cult", "lopsided", "steady", "safe", "meh", "unlikely"],
    # products: steady 25, lopsided 20, safe 18, cult 5.5, meh 4.2, unlikely 0
    "multiplicative": ["steady", "lopsided", "safe", "cult", "meh", "unlikely"],
    # rank points (5 for a member's best of the six): ana cult 5, lopsided 4, steady 3, meh 2,
    # safe 1; ben steady 5, safe 4, lopsided 3, meh 2, cult 1 -> steady 8, lopsided 7, cult 6,
    # safe 5, meh 4, unlikely 0
    "borda": ["steady", "lopsided", "cult", "safe", "meh", "unlikely"],
}
COMBINE = {"average": np.mean, "least_misery": min, "most_pleasure": max, "multiplicative": np.prod}


@pytest.mark.parametrize("strategy", list(EXPECTED))
def test_each_strategy_ranks_the_hand_built_example_as_its_definition_says(world, strategy):
    client, k, info = setup_pair(world, STRATEGY_TABLE)
    body = ok(client.get(f"/v1/match?users=ana,ben&strategy={strategy}&limit=50"))
    assert body["model_version"] == info.version and body["strategy"] == strategy
    assert body["users"] == ["ana", "ben"] and body["folded_in"] == [] and body["fallback"] == []
    # seed_a and seed_b were reviewed, the pads have no training ratings: neither is eligible.
    assert ids(body) == EXPECTED[strategy]
    for movie in body["movies"]:
        p_ana, w_ana, p_ben, w_ben = STRATEGY_TABLE[movie["movie_id"]]
        ana, ben = movie["members"]["ana"], movie["members"]["ben"]
        assert (ana["predicted"], ben["predicted"]) == (pytest.approx(p_ana, abs=1e-3), pytest.approx(p_ben, abs=1e-3))
        assert (ana["affinity"], ben["affinity"]) == (pytest.approx(k * w_ana, abs=1e-3),
                                                      pytest.approx(k * w_ben, abs=1e-3))
        if strategy in COMBINE:
            assert movie["score"] == pytest.approx(float(COMBINE[strategy]([utility(ana), utility(ben)])), abs=2e-3)
    assert [m["score"] for m in body["movies"]] == sorted((m["score"] for m in body["movies"]), reverse=True)


def test_strategies_disagree_where_their_definitions_do(world):
    client, _, _ = setup_pair(world, STRATEGY_TABLE)

    def first(strategy, limit=1):
        return ids(ok(client.get(f"/v1/match?users=ana,ben&strategy={strategy}&limit={limit}")))

    # Loved by one, hated by the other: tops most_pleasure, next to last for least_misery.
    assert first("most_pleasure") == ["cult"]
    assert first("least_misery", 50).index("cult") == 4
    # The best mean is not the best product: a product punishes the member left with little.
    assert first("average") == ["lopsided"] and first("multiplicative") == ["steady"]
    # Borda counts ranks, not margins: steady, second and first, beats lopsided's bigger mean.
    assert first("borda") == ["steady"]
    # Predicted 5 by both but picked by neither (negative affinity): last everywhere.
    for strategy in EXPECTED:
        assert first(strategy, 50)[-1] == "unlikely"


def test_borda_scores_are_the_membersrank_points_over_the_eligible_movies(world):
    client, _, _ = setup_pair(world, STRATEGY_TABLE)
    movies = ok(client.get("/v1/match?users=ana,ben&strategy=borda&limit=50"))["movies"]
    points = {m["movie_id"]: 0 for m in movies}
    for user in ("ana", "ben"):
        ranked = sorted(movies, key=lambda m: -utility(m["members"][user]))
        for n, movie in enumerate(ranked):
            points[movie["movie_id"]] += len(ranked) - 1 - n
    assert {m["movie_id"]: m["score"] for m in movies} == points


def test_weights_tilt_the_average(world):
    client, _, _ = setup_pair(world, STRATEGY_TABLE)
    body = ok(client.get("/v1/match?users=ana,ben&strategy=average&weights=1,3&limit=50"))
    # (U_ana + 3 U_ben) / 4: steady 5, safe 4.375, lopsided 4, cult 3.125, meh 1.8, unlikely 0
    assert ids(body) == ["steady", "safe", "lopsided", "cult", "meh", "unlikely"]
    for movie in body["movies"]:
        members = movie["members"]
        expected = (utility(members["ana"]) + 3 * utility(members["ben"])) / 4
        assert movie["score"] == pytest.approx(expected, abs=2e-3)


def test_the_default_strategy_is_multiplicative(world):
    client, _, _ = setup_pair(world, STRATEGY_TABLE)
    body = ok(client.get("/v1/match?users=ana,ben&limit=50"))
    assert matching.DEFAULT_STRATEGY == "multiplicative"
    assert body["strategy"] == "multiplicative" and ids(body) == EXPECTED["multiplicative"]


# ana's three favourites are ben's three least liked and the other way round.
FAIR_TABLE = {
    "a1": (4.5, 2.5, 1.1, 0.5),  # 10, 0.3
    "a2": (4.1, 2.5, 0.9, 0.5),  # 9, 0.2
    "a3": (4.5, 2.0, 0.7, 0.5),  # 8, 0.1
    "b1": (1.5, 1.0, 3.5, 1.0),  # 1, 3
    "b2": (1.4, 1.0, 3.3, 1.0),  # 0.9, 2.8
    "b3": (1.3, 1.0, 3.1, 1.0),  # 0.8, 2.6
}


def test_fair_alternates_between_the_members_favourites(world):
    client, _, _ = setup_pair(world, FAIR_TABLE)
    fair = ids(ok(client.get("/v1/match?users=ana,ben&strategy=fair&limit=6")))
    # Magnitudes favour ana: the mean and the maximum list all her favourites first.
    for strategy in ("average", "most_pleasure"):
        assert ids(ok(client.get(f"/v1/match?users=ana,ben&strategy={strategy}&limit=3"))) == ["a1", "a2", "a3"]
    # GFAR serves whoever the list so far serves least: the picks alternate between the two,
    # each member's in the order of their own preference.
    assert sorted(fair) == sorted(FAIR_TABLE)
    sides = [movie[0] for movie in fair]
    assert sides in (["a", "b"] * 3, ["b", "a"] * 3), fair
    assert [m for m in fair if m[0] == "a"] == ["a1", "a2", "a3"]
    assert [m for m in fair if m[0] == "b"] == ["b1", "b2", "b3"]
    assert set(ids(ok(client.get("/v1/match?users=ana,ben&strategy=fair&limit=2")))) == {"a1", "b1"}


# Utilities ana: a_fav 10, x2 8, x3 6, x4 4, b_fav 2, x5 1; ben: b_fav 10, a_fav 8, x2 6, x3 4, x4 2,
# x5 1 (taste weight 2.5 everywhere, predicted U / 2.5 + 0.5).
SERVED_TABLE = {m: (ana / 2.5 + 0.5, 2.5, ben / 2.5 + 0.5, 2.5) for m, ana, ben in [
    ("a_fav", 10, 8), ("x2", 8, 6), ("x3", 6, 4), ("x4", 4, 2), ("b_fav", 2, 10), ("x5", 1, 1)]}


def test_fair_serves_the_member_the_list_serves_least(world):
    """Borda points: a_fav 9, x2 7, b_fav 6: a list of two ranked by points leaves ben's favourite
    out. GFAR: after a_fav, which both like, ana is served (her best) and ben only partly (his
    second), so ben's favourite comes next: 1/6 * 1/6 + 2/6 * 5/6 = 11/36 against x2's 10/36."""
    client, _, _ = setup_pair(world, SERVED_TABLE)
    for strategy in ("borda", "average"):
        assert ids(ok(client.get(f"/v1/match?users=ana,ben&strategy={strategy}&limit=2"))) == ["a_fav", "x2"]
    assert ids(ok(client.get("/v1/match?users=ana,ben&strategy=fair&limit=2"))) == ["a_fav", "b_fav"]


# Two ways to tie: ana's order is ben's reversed, so every movie gets the same Borda points; or
# ana would pick none of t1, t2, t4, t5, t7, t8 (negative affinity), so their products are all 0.
TIES = {
    "borda": {f"t{j}": (0.5 + 0.5 * (8 - j), 1.0, 0.5 + 0.5 * (j + 1), 1.0) for j in range(8)},
    "multiplicative": {f"t{j}": (4.0, 1.0 if j % 3 == 0 else -1.0, 4.0 - 0.2 * j, 1.0) for j in range(10)},
}


@pytest.mark.parametrize("strategy", list(TIES))
def test_a_shorter_list_is_the_start_of_a_longer_one_when_scores_tie(world, strategy):
    """`_top` promises ties broken by id (stable pages): a list of `limit` movies is the start of
    the full list, and tied movies come in id order."""
    table = TIES[strategy]
    client, _, _ = setup_pair(world, table)
    body = ok(client.get(f"/v1/match?users=ana,ben&strategy={strategy}&limit=50"))
    scores = {m["movie_id"]: m["score"] for m in body["movies"]}
    full = ids(body)
    assert full == sorted(table, key=lambda m: (-scores[m], m)) and len(set(scores.values())) < len(full)
    for limit in range(1, len(table) + 1):
        page = ids(ok(client.get(f"/v1/match?users=ana,ben&strategy={strategy}&limit={limit}")))
        assert page == full[:limit], f"limit={limit}"


@pytest.mark.parametrize("strategy", ["borda", "fair"])
def testrank_points_of_movies_a_member_is_indifferent_between_are_equal(world, strategy):
    """Ana would pick none of these (negative affinity: utility 0 for all), ben likes t5 best
    down to t0. Ana's equal utilities must not become different rank points (here by id), so
    the order is ben's. With ana's points handed out in id order, every Borda sum ties and the
    list comes out in id order, the opposite of ben's; GFAR takes t0 for ana's "favourite"."""
    table = {f"t{j}": (4.0, -1.0, 1.0 + 0.5 * j, 1.0) for j in range(6)}
    client, _, _ = setup_pair(world, table)
    body = ok(client.get(f"/v1/match?users=ana,ben&strategy={strategy}&limit=50"))
    assert all(m["members"]["ana"]["affinity"] < 0 for m in body["movies"])
    bens = [f"t{j}" for j in reversed(range(6))]
    # (GFAR may stop before t0, relevant to nobody if ana's tied movies all count as her last.)
    assert len(body["movies"]) >= 5 and ids(body) == bens[:len(body["movies"])]


def test_top_breaks_ties_by_id_at_the_cut():
    """The same promise on the function: with tied scores, the ``limit`` kept are the smallest ids."""
    names = [f"m{k:02}" for k in range(10)]
    built = build({m: {"taste": (1.0,)} for m in names}, {}, mu=3.0, rank=1, taste_rank=1)
    items = matching.Items.of("v", built, {})
    scores = np.where(np.arange(10) % 3 == 0, 1.0, 0.0)  # m00, m03, m06, m09 tie at 1; the rest at 0
    for limit in range(1, 11):
        picks = matching.rank(scores[None, :], "average", None, np.arange(10), limit)
        expected = sorted(names, key=lambda m: (-scores[names.index(m)], m))[:limit]
        assert [str(items.ids[p.position]) for p in picks] == expected, f"limit={limit}"


# -- candidates ----------------------------------------------------------------------------------


def test_candidates_are_each_members_best_and_the_groups_best_by_the_product_of_affinities():
    affinity = np.array([[5.0, 4.0, 0.1, -1.0, 3.0, 0.2, 2.0],
                         [-1.0, 0.1, 5.0, 4.0, 3.0, 0.2, 2.0]], dtype=np.float32)
    # Products of the positive parts: 0, 0.4, 0.5, 0, 9, 0.04, 4.
    keep = np.ones(7, bool)
    assert matching.candidates(affinity, keep, 2, "average").tolist() == [0, 1, 2, 3, 4, 6]
    assert matching.candidates(affinity, keep, 2, "multiplicative").tolist() == [4, 6]  # 0 unless both like it
    keep[4] = False  # seen, filtered out: never a candidate
    assert matching.candidates(affinity, keep, 2, "average").tolist() == [0, 1, 2, 3, 6]
    assert matching.candidates(affinity, keep, 2, "least_misery").tolist() == [2, 6]
    assert matching.candidates(affinity, keep, 7, "multiplicative").tolist() == [0, 1, 2, 3, 5, 6]  # all kept


def test_candidates_fill_up_with_movies_at_zero_in_the_models_order():
    affinity = np.array([[1.0, -1.0, 2.0, -1.0], [1.0, 1.0, -1.0, -1.0]], dtype=np.float32)  # products 1, 0, 0, 0
    assert matching.candidates(affinity, np.ones(4, bool), 2, "multiplicative").tolist() == [0, 1]
    assert matching.candidates(affinity, np.array([True, False, True, True]), 2, "multiplicative").tolist() == [0, 2]


@pytest.mark.parametrize("strategy", list(matching.STRATEGIES))
def test_scoring_candidates_gives_the_exhaustive_lists_on_a_random_model(strategy):
    """600 movies, CANDIDATES of them scored: the groups' top 10 are those of every eligible movie."""
    rng = np.random.default_rng(11)
    movies = [f"m{k:03}" for k in range(600)]
    built = build({m: {"bias": rng.normal(0, 0.4), "q": tuple(rng.normal(0, 0.5, 3)),
                       "taste": tuple(rng.normal(0, 1, 4))} for m in movies},
                  {}, mu=3.5, rank=3, taste_rank=4)
    items = matching.Items.of("v", built, {})
    for _ in range(20):
        members = [matching.member(items, user, {m: float(rng.integers(1, 6)) for m in rng.choice(movies, 20)}, None)
                   for user in ("ana", "ben")]
        lists = [[p.position for p in matching.score(items, members, matching.Filters(), strategy, None, 10, top).picks]
                 for top in (matching.CANDIDATES, None)]
        assert lists[0] == lists[1]


# -- reasons -------------------------------------------------------------------------------------

BECAUSE_MOVIES = {  # taste vectors, rank 3
    "pick": (1.0, 0.0, 0.0),
    "other": (0.0, 0.0, 1.0),
    "a_meh": (1.0, 0.01, 0.0),  # ana 3.5: the most like `pick`, but not liked
    "a_close": (1.0, 0.1, 0.0),  # ana 5
    "a_near": (1.0, 0.5, 0.0),  # ana 4 (liked: 4 or more)
    "a_mid": (1.0, 1.0, 0.0),  # ana 4.5
    "a_far": (0.2, 1.0, 0.0),  # ana 5: the fourth most like `pick`
    "a_opposite": (-1.0, 0.0, 1.0),  # ana 5: unlike `pick`, like `other`
    "b_twin": (1.0, 0.0, 0.05),  # ben 5: more like `pick` than any of ana's
    "b_off": (0.0, 1.0, 0.0),  # ben 4
}
ANA = {"a_meh": 3.5, "a_close": 5.0, "a_near": 4.0, "a_mid": 4.5, "a_far": 5.0, "a_opposite": 5.0}
BEN = {"b_twin": 5.0, "b_off": 4.0}


def cosine(a, b) -> float:
    a, b = np.asarray(BECAUSE_MOVIES[a]), np.asarray(BECAUSE_MOVIES[b])
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_reasons_are_the_members_own_liked_movies_most_like_the_pick_with_titles(world):
    client, log, store = world
    catalogue(log, store, {m: (f"Title of {m}", 2000, ("Drama",)) for m in BECAUSE_MOVIES})
    publish(store, build({m: {"taste": t} for m, t in BECAUSE_MOVIES.items()},
                         {"ana": (0.0, (0.0,)), "ben": (0.0, (0.0,))}, mu=3.5, rank=1, taste_rank=3))
    for user, ratings in (("ana", ANA), ("ben", BEN)):
        for movie, rating in ratings.items():
            review(client, log, store, user, movie, rating)
    body = ok(client.get("/v1/match?users=ana,ben&strategy=average&limit=50"))
    assert sorted(ids(body)) == ["other", "pick"]
    because = {(m["movie_id"], user): [ref["movie_id"] for ref in m["members"][user]["because"]]
               for m in body["movies"] for user in ("ana", "ben")}
    # The three of her liked movies most like it, most similar first: not a_meh (3.5), not a_far
    # (fourth), not b_twin (ben's).
    assert because["pick", "ana"] == ["a_close", "a_near", "a_mid"]
    assert because["pick", "ben"] == ["b_twin"]  # b_off is orthogonal: similarity 0 is no reason
    assert because["other", "ana"] == ["a_opposite"]  # the only one of hers with a positive similarity
    assert because["other", "ben"] == ["b_twin"]
    for movie in body["movies"]:
        for user, own in (("ana", ANA), ("ben", BEN)):
            refs = movie["members"][user]["because"]
            assert len(refs) <= 3
            for ref in refs:
                assert own.get(ref["movie_id"], 0) >= 4  # their own, rated 4 or more
                assert ref["title"] == f"Title of {ref['movie_id']}"
                assert cosine(movie["movie_id"], ref["movie_id"]) > 0
            sims = [cosine(movie["movie_id"], ref["movie_id"]) for ref in refs]
            assert sims == sorted(sims, reverse=True)
    # Reasons follow the current reviews: a_close re-rated 3 stops explaining anything.
    review(client, log, store, "ana", "a_close", 3.0)
    body = ok(client.get("/v1/match?users=ana,ben&strategy=average&limit=50"))
    pick = next(m for m in body["movies"] if m["movie_id"] == "pick")
    assert [ref["movie_id"] for ref in pick["members"]["ana"]["because"]] == ["a_near", "a_mid", "a_far"]


# -- filters and leave-outs ----------------------------------------------------------------------

FILTER_CATALOGUE = {
    "drama90": ("Drama 1990", 1990, ("Drama",)),
    "comedy00": ("Comedy 2000", 2000, ("Comedy",)),
    "dramedy95": ("Dramedy 1995", 1995, ("Drama", "Comedy")),
    "horror10": ("Horror 2010", 2010, ("Horror",)),
    "noyear": ("No Year", None, ("Drama",)),
    "rare": ("Rare", 1995, ("Comedy",)),
    "border": ("Borderline", 1995, ("Horror",)),
    "seen_a": ("Seen by Ana", 1980, ("Drama",)),
    "seen_a2": ("Meh for Ana", 1999, ("Comedy",)),
    "seen_b": ("Seen by Ben", 1999, ("Drama", "Comedy")),
}  # and "uncat", a movie the model knows with no catalogue entry
FILTER_COUNTS = {"rare": 1, "border": 3}  # min_reviews 3; everything else 10
ELIGIBLE = {"drama90", "comedy00", "dramedy95", "horror10", "noyear", "uncat", "border"}


def filter_model(min_reviews: int) -> FactorModel:
    movies = {m: {"bias": 0.1 * n, "taste": (1.0,), "count": FILTER_COUNTS.get(m, 10)}
              for n, m in enumerate([*FILTER_CATALOGUE, "uncat"])}
    movies["rare"] |= {"bias": 1.5, "taste": (3.0,)}  # what everyone would want most, on one rating
    return build(movies, {"ana": (0.0, (0.0,)), "ben": (0.0, (0.0,))}, mu=3.0, rank=1, taste_rank=1,
                 min_reviews=min_reviews)


@pytest.fixture
def filtered(world):
    client, log, store = world
    catalogue(log, store, FILTER_CATALOGUE)
    publish(store, filter_model(3))
    review(client, log, store, "ana", "seen_a", 5.0)
    review(client, log, store, "ana", "seen_a2", 3.0)
    review(client, log, store, "ben", "seen_b", 4.5)
    return client


@pytest.mark.parametrize("query, expected", [
    ("", ELIGIBLE),
    ("&include_seen=false", ELIGIBLE),
    ("&include_seen=true", ELIGIBLE | {"seen_a", "seen_a2", "seen_b"}),
    ("&genres=Comedy", {"comedy00", "dramedy95"}),
    ("&genres=Comedy,Horror", {"comedy00", "dramedy95", "horror10", "border"}),
    ("&genres=Drama&include_seen=true", {"drama90", "dramedy95", "noyear", "seen_a", "seen_b"}),
    ("&year_from=1995", {"comedy00", "dramedy95", "horror10", "border"}),
    ("&year_to=1995", {"drama90", "dramedy95", "border"}),
    ("&year_from=1995&year_to=2000", {"comedy00", "dramedy95", "border"}),
    ("&year_from=1990&year_to=1990", {"drama90"}),
    ("&year_from=1991&year_to=1994", set()),
    ("&exclude=drama90,horror10,not-a-movie", ELIGIBLE - {"drama90", "horror10"}),
    ("&exclude=seen_a&include_seen=true", ELIGIBLE | {"seen_a2", "seen_b"}),
    ("&genres=Drama,Horror&year_to=2005&exclude=border", {"drama90", "dramedy95"}),
])
@pytest.mark.parametrize("strategy", ["average", "borda"])
def test_filters_and_leave_outs_hold(filtered, query, expected, strategy):
    body = ok(filtered.get(f"/v1/match?users=ana,ben&strategy={strategy}&limit=50{query}"))
    assert set(ids(body)) == expected and len(ids(body)) == len(expected)
    assert "rare" not in ids(body)  # one training rating, min_reviews 3: never, whatever the filters


def test_movies_carry_their_catalogue_entry_and_the_genres_both_have_liked(filtered):
    body = ok(filtered.get("/v1/match?users=ana,ben&strategy=average&limit=50&include_seen=true"))
    for movie in body["movies"]:
        title, year, genres = FILTER_CATALOGUE.get(movie["movie_id"], (None, None, ()))
        assert (movie["title"], movie["year"], movie["genres"]) == (title, year, list(genres))
        # ana liked a Drama (seen_a, 5; seen_a2, a Comedy, only got 3); ben a Drama and a Comedy.
        assert movie["shared_genres"] == [g for g in genres if g == "Drama"]
    assert {m["movie_id"]: m["shared_genres"] for m in body["movies"]}["dramedy95"] == ["Drama"]


def test_min_reviews_leaves_out_a_movie_with_few_training_ratings_that_would_top_the_list(world, monkeypatch):
    client, log, store = world
    monkeypatch.setattr(api_match, "REFRESH_EVERY", 0.0)  # look at the current version on every request
    catalogue(log, store, FILTER_CATALOGUE)
    review(client, log, store, "ana", "seen_a", 5.0)
    review(client, log, store, "ben", "seen_b", 4.5)
    publish(store, filter_model(0))
    for strategy in EXPECTED:
        assert ids(ok(client.get(f"/v1/match?users=ana,ben&strategy={strategy}")))[0] == "rare"
    publish(store, filter_model(3))
    for strategy in [*EXPECTED, "fair"]:
        body = ok(client.get(f"/v1/match?users=ana,ben&strategy={strategy}&limit=50&include_seen=true"))
        assert "rare" not in ids(body) and "border" in ids(body)  # 1 < 3 left out; 3 >= 3 kept


# -- fold-in and fallback ------------------------------------------------------------------------


def ridge(model: FactorModel, ratings: dict[str, float]) -> tuple[float, np.ndarray]:
    """The documented fold-in, solved another way (least squares on an augmented system): bias
    and vector minimising the squared error plus reg * n |v|^2 + reg_user b^2."""
    positions = [list(model.item_ids).index(m) for m in ratings]
    q = model.item_factors[positions].astype(float)
    target = np.array(list(ratings.values())) - model.mu - model.item_bias[positions]
    rows = np.column_stack([q, np.ones(len(positions))])
    penalty = np.diag(np.sqrt([model.params["reg"] * len(positions)] * model.rank + [model.params["reg_user"]]))
    solution = np.linalg.lstsq(np.vstack([rows, penalty]), np.concatenate([target, np.zeros(model.rank + 1)]),
                               rcond=None)[0]
    return float(solution[-1]), solution[:-1]


def test_a_new_users_reviews_fold_them_in_and_change_their_matches(world):
    client, log, store = world
    built, k = two_member_model(STRATEGY_TABLE)
    publish(store, built)
    review(client, log, store, "ben", "seed_b", 5.0)
    # cleo is not in the model; her one review is of a movie it does not know: the fallback.
    review(client, log, store, "cleo", "not-in-the-model", 4.0)
    before = ok(client.get("/v1/match?users=ben,cleo&strategy=multiplicative&limit=50"))
    assert before["fallback"] == ["cleo"] and before["folded_in"] == []
    # One review of a movie the model knows: folded in, and the list changes.
    review(client, log, store, "cleo", "seed_a", 5.0)
    after = ok(client.get("/v1/match?users=ben,cleo&strategy=multiplicative&limit=50"))
    assert after["folded_in"] == ["cleo"] and after["fallback"] == []
    common = [m for m in ids(after) if m in ids(before)]
    assert common != [m for m in ids(before) if m in ids(after)]
    assert "seed_a" in ids(before) and "seed_a" not in ids(after)  # now seen by cleo
    bias, vector = ridge(built, {"seed_a": 5.0})
    for movie in after["movies"]:
        p_ana, w_ana, p_ben, _ = STRATEGY_TABLE[movie["movie_id"]]
        cleo = movie["members"]["cleo"]
        # Her taste: one review of seed_a, like ana's; her rating: the ridge fold-in.
        assert cleo["affinity"] == pytest.approx(k * w_ana, abs=1e-3)
        expected = np.clip(built.mu + bias + np.array([p_ana - built.mu, p_ben - built.mu]) @ vector, 0.5, 5.0)
        assert cleo["predicted"] == pytest.approx(expected, abs=1e-3)
    # A second review moves her taste at once: ben's kind of movie becomes one she may pick.
    review(client, log, store, "cleo", "seed_b", 5.0)
    again = ok(client.get("/v1/match?users=ben,cleo&strategy=multiplicative&limit=50"))
    assert again["folded_in"] == ["cleo"] and ids(again) != ids(after)

    def cleo_affinity(body, movie):
        return next(m["members"]["cleo"]["affinity"] for m in body["movies"] if m["movie_id"] == movie)

    assert cleo_affinity(after, "steady") == pytest.approx(2 * k, abs=1e-3)
    assert cleo_affinity(again, "safe") > cleo_affinity(after, "safe")


def test_a_model_users_taste_follows_their_current_reviews_and_their_prediction_stays_published(world):
    client, log, store = world
    client, k, _ = setup_pair(world, STRATEGY_TABLE)
    before = ok(client.get("/v1/match?users=ana,ben&strategy=average&limit=50"))
    # A review is a pick whatever its rating: one of 2 stars moves her taste towards seed_b's.
    review(client, log, store, "ana", "seed_b", 2.0)
    after = ok(client.get("/v1/match?users=ana,ben&strategy=average&limit=50"))
    assert after["folded_in"] == [] and after["fallback"] == []
    # Reviews of seed_a and seed_b: x = (1 + alpha) / (c + alpha + 2 reg) (1, 1), c from k.
    c = (1 + ALPHA) / k - ALPHA - TASTE_REG
    both = (1 + ALPHA) / (c + ALPHA + 2 * TASTE_REG)
    for movie in after["movies"]:
        old = next(m for m in before["movies"] if m["movie_id"] == movie["movie_id"])["members"]["ana"]
        new = movie["members"]["ana"]
        _, w_ana, _, w_ben = STRATEGY_TABLE[movie["movie_id"]]
        assert new["predicted"] == pytest.approx(old["predicted"], abs=1e-4)  # the published vector
        assert old["affinity"] == pytest.approx(k * w_ana, abs=1e-3)
        assert new["affinity"] == pytest.approx(both * (w_ana + w_ben), abs=1e-3)


def test_fold_in_recovers_a_users_vector_from_enough_ratings():
    trained = model()
    trained.params |= {"reg": 1e-6, "reg_user": 1e-6}
    items = matching.Items.of("v", trained, {})
    bias, vector = 0.25, np.array([0.5, -0.4, 0.3])
    ratings = trained.mu + bias + trained.item_bias + trained.item_factors.astype(float) @ vector
    solved_bias, solved = matching.fold_in_rating(items, np.arange(len(MOVIES)), ratings)
    assert solved_bias == pytest.approx(bias, abs=1e-3) and solved == pytest.approx(vector, abs=1e-3)


FALLBACK_MOVIES = {  # item bias (mu 3.5), training ratings
    "blockbuster": (1.0, 100),  # popular, well rated
    "crowd": (0.0, 80),
    "dud": (-2.5, 100),  # popular, badly rated
    "gem": (1.5, 3),  # well rated, rarely watched
    "obscure": (-1.0, 2),
}


def test_a_user_with_no_review_the_model_knows_gets_popular_well_rated_movies(world):
    client, log, store = world
    publish(store, build({m: {"bias": b, "count": n, "taste": (1.0,)} for m, (b, n) in FALLBACK_MOVIES.items()},
                         {"ana": (0.2, (0.0,))}, mu=3.5, rank=1, taste_rank=1))
    review(client, log, store, "fay", "unknown-1", 5.0)
    review(client, log, store, "gus", "unknown-2", 2.0)
    body = ok(client.get("/v1/match?users=fay,gus&limit=50"))
    assert body["fallback"] == ["fay", "gus"] and body["folded_in"] == []
    # popularity * (mu + b_i - 0.5): 4, 2.4, 0.5, 0.135, 0.04 (the same for both)
    assert ids(body) == ["blockbuster", "crowd", "dud", "gem", "obscure"]
    for movie in body["movies"]:
        bias, count = FALLBACK_MOVIES[movie["movie_id"]]
        for user in ("fay", "gus"):
            assert movie["members"][user]["predicted"] == pytest.approx(3.5 + bias, abs=1e-4)
            assert movie["members"][user]["affinity"] == pytest.approx(count / 100, abs=1e-4)
            assert movie["members"][user]["because"] == []
    # Only the member without usable reviews is flagged; ana is in the model (no reviews needed).
    mixed = ok(client.get("/v1/match?users=ana,fay"))
    assert mixed["fallback"] == ["fay"] and mixed["folded_in"] == []


def test_a_user_who_retracted_every_review_gets_the_fallback_not_a_404(world):
    client, log, store = world
    publish(store)
    review(client, log, store, "hal", "m1", 4.0)
    retract(client, log, store, "hal", "m1")
    body = ok(client.get("/v1/match?users=ana,hal"))
    assert body["fallback"] == ["hal"]


def test_unknown_users_are_a_404_naming_them(world):
    client, log, store = world
    publish(store)
    review(client, log, store, "cleo", "m2", 4.0)
    detail = problem(client.get("/v1/match?users=ana,zoe"), 404)["detail"]
    assert "zoe" in detail and "ana" not in detail
    detail = problem(client.get("/v1/match?users=yan,cleo,zoe"), 404)["detail"]
    assert "yan" in detail and "zoe" in detail and "cleo" not in detail


# -- a refresh under load ------------------------------------------------------------------------


def test_a_refresh_switches_versions_with_no_request_failing(world, monkeypatch):
    client, log, store = world
    loads = []  # (started, finished) of each load of a version's item side, slowed down

    def slow_load(store, info, load=matching.load_items):
        started = time.monotonic()
        time.sleep(0.3)
        items = load(store, info)
        loads.append((started, time.monotonic()))
        return items

    monkeypatch.setattr(matching, "load_items", slow_load)
    # v2: every prediction 0.3 lower, every affinity higher, and other user vectors (scale), so
    # that numbers from the two versions' parts mixed in one answer would match neither.
    shifted = {m: (p_ana - 0.3, 2 * w_ana, p_ben - 0.3, 2 * w_ben)
               for m, (p_ana, w_ana, p_ben, w_ben) in STRATEGY_TABLE.items()}
    (first, k1), (second, k2) = two_member_model(STRATEGY_TABLE), two_member_model(shifted, scale=2.0)
    assert min(abs(k1 * STRATEGY_TABLE[m][w] - k2 * shifted[m][w]) for m in shifted for w in (1, 3)) > 0.005
    v1 = publish(store, first)
    review(client, log, store, "ana", "seed_a", 5.0)
    review(client, log, store, "ben", "seed_b", 5.0)
    stop = threading.Event()

    def hammer():
        answers = []
        while not stop.is_set():
            started = time.monotonic()
            response = client.get("/v1/match?users=ana,ben&strategy=average&limit=50")
            answers.append((started, response.status_code,
                            response.json() if response.status_code == 200 else response.text, time.monotonic()))
        return answers

    with ThreadPoolExecutor(4) as pool:
        running = [pool.submit(hammer) for _ in range(4)]
        time.sleep(0.3)
        v2 = publish(store, second)
        published = time.monotonic()
        time.sleep(api_match.REFRESH_EVERY + 1.2)
        stop.set()
        threads = [[answer[:3] for answer in future.result()] for future in running]
        finished = [[answer[3] for answer in future.result()] for future in running]

    tables = {v1.version: (STRATEGY_TABLE, k1), v2.version: (shifted, k2)}
    answers = [answer for thread in threads for answer in thread]
    assert all(status == 200 for _, status, _ in answers), [body for _, status, body in answers if status != 200][:3]
    for _, _, body in answers:
        assert body["model_version"] in tables
        table, k = tables[body["model_version"]]
        assert set(ids(body)) == set(table)
        for movie in body["movies"]:  # every number of an answer from that answer's version
            p_ana, w_ana, p_ben, w_ben = table[movie["movie_id"]]
            ana, ben = movie["members"]["ana"], movie["members"]["ben"]
            assert (ana["predicted"], ben["predicted"]) == (pytest.approx(p_ana, abs=1e-3),
                                                            pytest.approx(p_ben, abs=1e-3))
            assert (ana["affinity"], ben["affinity"]) == (pytest.approx(k * w_ana, abs=1e-3),
                                                          pytest.approx(k * w_ben, abs=1e-3))
            assert movie["score"] == pytest.approx((utility(ana) + utility(ben)) / 2, abs=2e-3)
    versions = {body["model_version"] for _, _, body in answers}
    assert versions == {v1.version, v2.version}
    # Within REFRESH_EVERY (and the load) of the publication, every answer is v2's.
    late = [body["model_version"] for started, _, body in answers if started > published + api_match.REFRESH_EVERY + 0.7]
    assert late and set(late) == {v2.version}
    # While one request loaded v2, the others went on with v1: nobody waited for the load.
    assert len(loads) == 2
    (loading, loaded) = loads[1]
    during = [body["model_version"] for thread, ends in zip(threads, finished)
              for (started, _, body), end in zip(thread, ends) if loading < started and end < loaded]
    assert during and set(during) == {v1.version}
    for thread in threads:  # once a client has seen v2 it never gets v1 again
        seen = [body["model_version"] for _, _, body in thread]
        assert seen == sorted(seen, key=lambda version: version == v2.version)


class PausingStore:
    """The store, but `model()` waits for `go` after reading: a look at the current version that
    started before a newer one was published and loaded."""

    def __init__(self, store):
        self.store, self.read, self.go = store, threading.Event(), threading.Event()

    def model(self, version=None):
        info = self.store.model(version)
        self.read.set()
        assert self.go.wait(5)
        return info

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_a_refresh_never_loads_an_older_version_than_the_one_it_holds(world, monkeypatch):
    _, _, store = world
    loads = []

    def counted(store, info, load=matching.load_items):
        loads.append(info.version)
        return load(store, info)

    monkeypatch.setattr(matching, "load_items", counted)
    monkeypatch.setattr(api_match, "REFRESH_EVERY", 0.0)  # every call looks at the current version
    cache = api_match.ItemsCache()
    v1 = publish(store).version
    assert cache.current(store).version == v1
    v2 = publish(store).version
    slow = PausingStore(store)
    with ThreadPoolExecutor(1) as pool:
        late = pool.submit(cache.current, slow)  # reads v2, then waits
        assert slow.read.wait(5)
        v3 = publish(store).version
        cache.current(store)  # another request meanwhile
        slow.go.set()
        late.result()
    assert cache.current(store).version == v3
    assert loads == [v for v in (v1, v2, v3) if v in loads]  # in the order they were published


def test_a_version_that_fails_to_load_is_tried_once_per_back_off_and_answers_503(world, monkeypatch):
    client, log, store = world
    review(client, log, store, "ana", "m1", 4.0)
    review(client, log, store, "ben", "m2", 4.0)
    tries = []

    def failing(store, info):
        tries.append(info.version)
        raise matching.ModelError(f"model {info.version} is broken")

    monkeypatch.setattr(matching, "load_items", failing)
    monkeypatch.setattr(api_match, "FIRST_BACKOFF", 0.5, raising=False)  # absent before the back-off
    version = publish(store).version
    for _ in range(5):
        body = problem(response := client.get("/v1/match?users=ana,ben"), 503)
        assert version in body["detail"] and "is broken" in body["detail"]
        assert response.headers["retry-after"] == "1"
    assert tries == [version]
    time.sleep(0.6)
    problem(client.get("/v1/match?users=ana,ben"), 503)
    assert tries == [version, version]  # tried again after the back-off, which now doubles
    problem(client.get("/v1/match?users=ana,ben"), 503)
    assert len(tries) == 2
    monkeypatch.undo()
    time.sleep(1.1)
    assert ok(client.get("/v1/match?users=ana,ben"))["model_version"] == version


def test_a_newer_version_that_fails_to_load_leaves_the_loaded_one_serving(world, monkeypatch):
    client, log, store = world
    monkeypatch.setattr(api_match, "REFRESH_EVERY", 0.0)
    v1 = publish(store).version
    review(client, log, store, "ana", "m1", 4.0)
    review(client, log, store, "ben", "m2", 4.0)
    assert ok(client.get("/v1/match?users=ana,ben"))["model_version"] == v1
    tries = []

    def failing(store, info):
        tries.append(info.version)
        raise matching.ModelError("broken")

    monkeypatch.setattr(matching, "load_items", failing)
    v2 = publish(store).version
    assert all(ok(client.get("/v1/match?users=ana,ben"))["model_version"] == v1 for _ in range(5))
    assert tries == [v2]


@pytest.mark.parametrize("query", ["users=%01,%02", "users=ana,b/n", "users=ana,ben&year_from=abc",
                                   "users=ana,ben&include_seen=maybe", "users=ana,ben&exclude=" + "x," * 101])
def test_a_bad_request_is_400_before_any_model_is_asked_for(world, query):
    client, _, _ = world  # no model published
    problem(client.get(f"/v1/match?{query}"), 400)


# -- bad input -----------------------------------------------------------------------------------


def test_no_model_yet_is_503(world):
    client, log, store = world
    review(client, log, store, "ana", "m1", 4.0)
    review(client, log, store, "ben", "m2", 4.0)
    response = client.get("/v1/match?users=ana,ben")
    problem(response, 503)
    assert response.headers["retry-after"]


@pytest.fixture
def published(world):
    client, log, store = world
    catalogue(log, store, {"m1": ("One", 1990, ("Drama",)), "m2": ("Two", 2001, ("Comedy",))})
    publish(store)
    for user in ("ana", "ben"):
        review(client, log, store, user, "m3", 4.0)
    return client


GOOD = "users=ana,ben"


@pytest.mark.parametrize("query", [
    GOOD, f"{GOOD}&strategy=average&weights=1,2.5", f"{GOOD}&genres=Drama,Comedy", f"{GOOD}&year_from=1800",
    f"{GOOD}&year_to=2200", f"{GOOD}&year_from=1990&year_to=1990", f"{GOOD}&limit=1", f"{GOOD}&limit={MAX_MATCH_LIMIT}",
    f"{GOOD}&include_seen=true", f"{GOOD}&include_seen=false", f"{GOOD}&exclude=" + ",".join(MOVIES[:5]),
    f"{GOOD}&exclude=" + ",".join(f"x{n}" for n in range(MAX_EXCLUDE)), *(f"{GOOD}&strategy={s}" for s in matching.STRATEGIES),
])
def test_good_queries_are_answered(published, query):
    body = ok(published.get(f"/v1/match?{query}"))
    assert len(body["movies"]) <= MAX_MATCH_LIMIT


def test_a_group_of_the_largest_size_is_answered(world):
    client, log, store = world
    publish(store)
    users = [f"u{n}" for n in range(MAX_GROUP)]
    for user in users:
        review(client, log, store, user, "m1", 4.0)
    body = ok(client.get(f"/v1/match?users={','.join(users)}"))
    assert body["users"] == users and sorted(body["folded_in"]) == sorted(users)


@pytest.mark.parametrize("query", [
    "", "users=", "users=ana", "users=ana,", "users=" + ",".join(f"u{k}" for k in range(MAX_GROUP + 1)),
    "users=ana,ana", "users=ana,ben,ana",
    f"{GOOD}&strategy=vibes", f"{GOOD}&strategy=", f"{GOOD}&strategy=AVERAGE",
    f"{GOOD}&strategy=average&weights=-1,1", f"{GOOD}&strategy=average&weights=0,1",
    f"{GOOD}&strategy=average&weights=1", f"{GOOD}&strategy=average&weights=1,2,3",
    f"{GOOD}&strategy=average&weights=1,x", f"{GOOD}&strategy=average&weights=nan,1",
    f"{GOOD}&strategy=average&weights=inf,1", f"{GOOD}&strategy=least_misery&weights=1,2", f"{GOOD}&weights=1,2",
    f"{GOOD}&genres=Western", f"{GOOD}&genres=Drama,Western",
    f"{GOOD}&year_from=1990.5", f"{GOOD}&year_from=abc", f"{GOOD}&year_to=-1990", f"{GOOD}&year_from=1799",
    f"{GOOD}&year_to=2201", f"{GOOD}&year_from=2000&year_to=1990",
    f"{GOOD}&limit=0", f"{GOOD}&limit={MAX_MATCH_LIMIT + 1}", f"{GOOD}&limit=ten", f"{GOOD}&limit=-1",
    f"{GOOD}&include_seen=maybe", f"{GOOD}&include_seen=",
    f"{GOOD}&exclude=" + ",".join(f"x{n}" for n in range(MAX_EXCLUDE + 1)),
])
def test_bad_match_queries_are_400_problems(published, query):
    problem(published.get(f"/v1/match?{query}"), 400)


@pytest.mark.parametrize("query", [f"{GOOD}&year_from=\u00b2", f"{GOOD}&year_to=\u00b9\u2079\u2079\u2070",
                                   f"{GOOD}&limit=\u00b9"])
def test_digits_int_cannot_read_are_400_not_500(published, query):
    """Superscript digits pass str.isdigit() but not int(): still a bad integer, not a crash."""
    client = TestClient(published.app, raise_server_exceptions=False)
    problem(client.get(f"/v1/match?{query}"), 400)
