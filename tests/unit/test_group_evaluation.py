"""ml.group_evaluation (`harmony evaluate pairs`): pair sampling, the figures on hand-computed
examples, the choice of min_reviews, and the command on a tiny generated MovieLens folder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from harmony.cli import main
from ml import group_evaluation as ge
from ml import matching, selection
from ml import pair_metrics as pm
from ml.factors import FactorModel


def hand_model(movies: dict[str, tuple[float, float, int]], users: list[str], *, mu: float = 3.5,
               min_reviews: int = 0) -> FactorModel:
    """movie -> (item bias, taste (rank 1), training ratings); users with no bias and a zero vector
    (rating rank 1): everyone's prediction is mu + b_i."""
    ids = list(movies)
    return FactorModel(mu, np.array(users), np.array(ids), np.zeros(len(users)),
                       np.array([movies[m][0] for m in ids], dtype=float), np.zeros((len(users), 1), np.float32),
                       np.zeros((len(ids), 1), np.float32), np.array([movies[m][2] for m in ids], dtype=np.int64),
                       np.array([[movies[m][1]] for m in ids], dtype=np.float32),
                       {"rank": 1, "reg": 0.1, "reg_user": 5.0, "taste_rank": 1, "taste_alpha": 1.0,
                        "taste_reg": 0.1, "min_reviews": min_reviews})


def frame(ratings: dict[str, dict[str, float]]) -> pd.DataFrame:
    rows = [(user, item, rating) for user, theirs in ratings.items() for item, rating in theirs.items()]
    return pd.DataFrame(rows, columns=["user", "item", "rating"])


# -- sample_pairs --------------------------------------------------------------------------------


def test_sample_pairs_keeps_users_in_both_parts_who_share_a_held_out_movie():
    movies = {m: (0.0, 1.0, 10) for m in ["g", "x", "y", "z"]}
    train = {u: {"g": 4.0} for u in ["u1", "u2", "u3", "u4", "u5"]}  # u5 holds nothing out
    held = {"u1": {"x": 4.0, "y": 3.0}, "u2": {"y": 5.0}, "u3": {"z": 4.0}, "u4": {"x": 2.0},
            "u6": {"x": 5.0}}  # u6 is not in the training part
    data = pm.pair_data(hand_model(movies, sorted(train)), frame(train), frame(held))
    # u1-u2 share y, u1-u4 share x; u3 shares nothing, u5 and u6 are in one part only.
    assert pm.sample_pairs(data, 50) == [("u1", "u2"), ("u1", "u4")]
    one = pm.sample_pairs(data, 1)
    assert len(one) == 1 and one[0] in {("u1", "u2"), ("u1", "u4")} and pm.sample_pairs(data, 1) == one
    assert pm.sample_pairs(pm.pair_data(hand_model(movies, []), frame(train), frame({"u1": {"x": 3.0}})), 5) == []


def test_sample_pairs_is_deterministic_and_every_pair_qualifies():
    rng = np.random.default_rng(3)
    names = [f"m{k:02}" for k in range(40)]
    train = {f"u{n:02}": {m: 4.0 for m in rng.choice(names, 5, replace=False)} for n in range(30)}
    held = {f"u{n:02}": {m: 3.0 for m in rng.choice(names, 3, replace=False)} for n in range(5, 35)}
    movies = {m: (0.0, 1.0, 10) for m in names}

    def sample(count, seed=pm.SEED):
        return pm.sample_pairs(pm.pair_data(hand_model(movies, sorted(train)), frame(train), frame(held)), count, seed)

    pairs = sample(40)
    assert pairs == sample(40) and len(pairs) == len(set(pairs)) and 0 < len(pairs) <= 40
    for a, b in pairs:
        assert a < b and a in train and b in train and a in held and b in held
        assert held[a].keys() & held[b].keys()
    assert len(sample(5)) == 5 and sample(5) == sample(5)


# -- measure -------------------------------------------------------------------------------------

HELD = {"ana": {"x": 5.0, "y": 3.0, "z": 4.0, "w": 2.0}, "ben": {"x": 4.0, "y": 5.0, "z": 2.0, "v": 5.0}}
COUNTS = {"p": 10, "q": 20, "v": 30, "w": 40, "x": 50, "y": 60, "z": 70}


@pytest.fixture
def judged():
    movies = {m: (0.0, 1.0, n) for m, n in COUNTS.items()}
    data = pm.pair_data(hand_model(movies, ["ana", "ben"]), frame({"ana": {}, "ben": {}}), frame(HELD))

    def measure(*lists):
        positions = [np.array([data.items.position[m] for m in listed], dtype=int) for listed in lists]
        return pm.measure(data, [("ana", "ben")] * len(lists), positions)

    return measure


# Both held out x (min 4, mean 4.5), y (3, 4), z (2, 3); only one of them w (mean 1) and v (2.5).
IDCG_MIN = 4 + 3 / np.log2(3) + 2 / 2
IDCG_MEAN = 4.5 + 4 / np.log2(3) + 3 / 2 + 2.5 / np.log2(5) + 1 / np.log2(6)


def test_ndcg_of_a_perfect_list_is_one_and_of_a_list_without_held_out_movies_zero(judged):
    assert judged(["x", "y", "z"])["ndcg_min"] == pytest.approx(1.0)
    assert judged(["x", "y", "z", "v", "w"])["ndcg_mean"] == pytest.approx(1.0)
    nothing = judged(["p", "q"])
    assert nothing["ndcg_min"] == 0.0 and nothing["ndcg_mean"] == 0.0
    assert nothing["liked_both"] is None and nothing["disliked"] is None


def test_ndcg_with_the_lower_and_the_mean_rating_on_a_hand_computed_list(judged):
    figures = judged(["z", "q", "x", "v"])
    # gains, min: z 2, q 0, x 4, v 0 (only ben held it out); mean: 3, 0, 4.5, 2.5
    assert figures["ndcg_min"] == pytest.approx((2 + 4 / 2) / IDCG_MIN)
    assert figures["ndcg_mean"] == pytest.approx((3 + 4.5 / 2 + 2.5 / np.log2(5)) / IDCG_MEAN)
    # Over several lists: the mean of each list's figure.
    several = judged(["x", "y", "z"], ["p", "q"], ["z", "q", "x", "v"])
    assert several["ndcg_min"] == pytest.approx((1 + 0 + (2 + 4 / 2) / IDCG_MIN) / 3)


def test_liked_both_disliked_coverage_and_median_ratings_on_a_hand_example(judged):
    figures = judged(["x", "y", "z", "w", "p"])
    # Both held out x (5, 4: liked by both), y (3, 5), z (4, 2): 1 of 3.
    assert figures["liked_both"] == pytest.approx(1 / 3)
    # Someone held out x, y, z, w; someone rated below 3: z (ben 2), w (ana 2): 2 of 4.
    assert figures["disliked"] == pytest.approx(2 / 4)
    assert figures["coverage"] == pytest.approx(5 / 7)
    assert figures["median_ratings"] == 50.0  # of 50, 60, 70, 40, 10
    two = judged(["x", "p"], ["x", "q", "v"])
    assert two["coverage"] == pytest.approx(4 / 7)  # x, p, q, v
    assert two["median_ratings"] == 30.0  # of 50, 10, 50, 20, 30


# -- choose_min_reviews --------------------------------------------------------------------------

GOODS = [f"g{k:02}" for k in range(12)]
USERS = [f"u{n}" for n in range(8)]


def planted():
    """Twelve movies with 20 training ratings each, and `gem`: 2 training ratings, predicted 5 and
    twice anyone's affinity, so it tops every list it may enter; nobody held it out."""
    movies = {m: (0.5 - 0.03 * k, 1.0, 20) for k, m in enumerate(GOODS)} | {"gem": (2.0, 2.0, 2)}
    rng = np.random.default_rng(4)
    train, held = {}, {}
    for n, user in enumerate(USERS):
        order = rng.permutation(GOODS)
        train[user] = {m: float(rng.integers(3, 6)) for m in order[:5]}
        held[user] = {m: float(rng.integers(1, 6)) for m in order[5:8]}
    train["u0"]["gem"] = train["u1"]["gem"] = 5.0
    return hand_model(movies, USERS), frame(train), frame(held)


def test_choose_min_reviews_leaves_out_a_planted_movie_with_few_ratings():
    model, train, held = planted()
    data = pm.pair_data(model, train, held)
    pairs = pm.sample_pairs(data, 100)
    lister = pm.Lister(data)
    gem = data.items.position["gem"]
    # Without a threshold it tops the list of every pair that has not rated it; with one it is gone.
    unrated = [n for n, pair in enumerate(pairs) if not {"u0", "u1"} & set(pair)]
    assert unrated and all(listed[0] == gem for n, listed in enumerate(lister.lists(pairs, matching.DEFAULT_STRATEGY, 0))
                           if n in unrated)
    assert all(gem not in listed for listed in lister.lists(pairs, matching.DEFAULT_STRATEGY, 5))
    best, figures = selection.choose_min_reviews(model, train, held, grid=(0, 5, 10, 50), pairs=100)
    by = figures["ndcg_min_by_min_reviews"]
    assert figures["pairs"] == len(pairs)
    assert by["0"] < by["5"] == pytest.approx(by["10"])  # 5 and 10 both leave out gem only
    assert "50" not in by  # would leave out everything: not a candidate
    assert best == 5  # the smallest of the best
    assert selection.choose_min_reviews(model, train, held, pairs=100)[0] == 5  # the default grid: 0, 5, 10, 20, 50


def test_choose_min_reviews_is_zero_when_no_pair_can_be_judged():
    model, train, _ = planted()
    held = frame({user: {GOODS[n]: 4.0} for n, user in enumerate(USERS)})  # nobody shares a movie
    assert selection.choose_min_reviews(model, train, held, pairs=10) == (0, {})


def test_evaluate_fold_measures_every_strategy_and_both_baselines():
    model, train, held = planted()
    model.params["min_reviews"] = 5
    report = ge.evaluate_fold(model, train, held, pairs=20)
    assert report["min_reviews"] == 5 and 0 < report["pairs"] <= 20
    assert set(report["lists"]) == {*matching.STRATEGIES, pm.EXHAUSTIVE, *pm.BASELINES}
    for figures in report["lists"].values():
        assert set(figures) == set(ge.FIGURES)
        assert 0 <= figures["ndcg_min"] <= 1 and 0 <= figures["ndcg_mean"] <= 1
        assert 0 < figures["coverage"] <= 1
    # The popularity baseline sees every movie the pair has not rated, gem included (a baseline has
    # no threshold); gem has the fewest ratings, so popularity never lists it first.
    assert report["lists"]["popularity"]["median_ratings"] == 20


# -- the command ---------------------------------------------------------------------------------


def test_evaluate_pairs_json_has_every_list_and_figure(spark, movielens, small_defaults, capsys):
    folder, _ = movielens
    assert main(["evaluate", "pairs", str(folder), "--folds", "1", "--pairs", "50", "--no-tune", "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["default"] == matching.DEFAULT_STRATEGY and report["k"] == pm.K
    assert [fold["fold"] for fold in report["folds"]] == ["u1"]
    fold = report["folds"][0]
    assert 0 < fold["pairs"] <= 50 and fold["min_reviews"] in selection.MIN_REVIEWS_GRID
    kinds = {*matching.STRATEGIES, pm.EXHAUSTIVE, *pm.BASELINES}
    assert set(report["mean"]) == kinds and set(fold["lists"]) == kinds
    for kind in kinds:
        figures = report["mean"][kind]
        assert set(figures) == set(ge.FIGURES)
        assert 0 <= figures["ndcg_min"] <= 1 and 0 <= figures["ndcg_mean"] <= 1, kind
        assert 0 < figures["coverage"] <= 1, kind
        assert figures["median_ratings"] >= 0, kind
        for share in ("liked_both", "disliked"):
            assert figures[share] is None or 0 <= figures[share] <= 1, (kind, share)
        assert figures == fold["lists"][kind]  # one fold: its figures are the mean
    popularity = report["mean"]["popularity"]["ndcg_min"]
    ratio = report["default_vs_popularity_ndcg_min"]
    assert ratio == pytest.approx(report["mean"][report["default"]]["ndcg_min"] / popularity) if popularity else ratio is None
    default, exhaustive = (report["mean"][kind]["ndcg_min"] for kind in (report["default"], pm.EXHAUSTIVE))
    assert report["default_vs_exhaustive_ndcg_min"] == pytest.approx(default / exhaustive)
    assert "fold u1" in captured.err  # progress goes to stderr


def test_evaluate_pairs_on_a_folder_without_splits_is_one_line_and_exit_1(spark, tmp_path, capsys):
    # (`spark`: the command starts a session before it looks at the folder; this reuses the tests'.)
    assert main(["evaluate", "pairs", str(tmp_path), "--folds", "1", "--json"]) == 1
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "u1.base" in err[0] and captured.out == ""


def test_evaluate_pairs_needs_at_least_one_pair(tmp_path, capsys):
    assert main(["evaluate", "pairs", str(tmp_path), "--pairs", "0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--pairs" in err[0]


def test_the_original_baseline_rank_normalises_averages_and_penalises_disagreement():
    predicted = np.array([[5.0, 4.0, 3.0, 1.0], [1.0, 4.0, 3.0, 5.0]])
    # Points over 4 candidates, / 4: ana .75 .5 .25 0, ben 0 .5 .25 .75; mean minus 0.1 x spread.
    scores = pm._original(predicted)
    assert scores[0] == pytest.approx([0.375 - 0.075, 0.5, 0.25, 0.375 - 0.075])
    only_two = pm._original(predicted[:, [0, 3]])
    assert only_two[0] == pytest.approx([0.25 - 0.05, 0.25 - 0.05])
