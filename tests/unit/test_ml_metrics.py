"""Metric functions against hand-computed examples (no Spark)."""

from __future__ import annotations

import math

import pytest

from ml.metrics import mae, ranking_metrics, rmse


def test_rmse_and_mae_by_hand():
    truth, predicted = [4.0, 2.0, 5.0, 1.0], [3.0, 2.0, 3.0, 2.0]
    # errors 1, 0, 2, -1: squares 1 + 0 + 4 + 1 = 6
    assert rmse(truth, predicted) == pytest.approx(math.sqrt(6 / 4))
    assert mae(truth, predicted) == pytest.approx(4 / 4)
    assert rmse([3.0], [3.0]) == 0.0


def test_ndcg_and_precision_by_hand():
    # One user, five held-out items; relevant (>= 4) are a and c.
    users = ["u"] * 5
    truth = [5.0, 1.0, 4.0, 2.0, 3.0]  # a b c d e
    scores = [3.0, 4.0, 1.0, 5.0, 2.0]  # ranking: d b a e c -> relevant at positions 3 and 5
    result = ranking_metrics(users, truth, scores)
    dcg = 1 / math.log2(4) + 1 / math.log2(6)
    idcg = 1 / math.log2(2) + 1 / math.log2(3)
    assert result["ndcg@10"] == pytest.approx(dcg / idcg)
    assert result["precision@10"] == pytest.approx(2 / 5)  # five candidates ranked, two relevant
    assert result["ranked_users"] == 1


def test_perfect_ranking_scores_one_and_cut_at_k():
    users = ["u"] * 12
    truth = [5.0] * 3 + [1.0] * 9
    perfect = [float(12 - n) for n in range(12)]
    assert ranking_metrics(users, truth, perfect)["ndcg@10"] == pytest.approx(1.0)
    # Relevant items ranked 11th and 12th and 1st: only the first counts at k = 10.
    worst_first = [10.0, 0.5, 0.4] + [5.0 - 0.1 * n for n in range(9)]
    result = ranking_metrics(users, truth, worst_first)
    assert result["precision@10"] == pytest.approx(1 / 10)
    assert result["ndcg@10"] == pytest.approx(1.0 / (1 + 1 / math.log2(3) + 1 / math.log2(4)))


def test_users_without_relevant_items_are_skipped_and_users_averaged():
    users = ["a", "a", "b", "b", "c"]
    truth = [5.0, 1.0, 4.0, 2.0, 1.0]  # c has nothing relevant
    scores = [1.0, 2.0, 3.0, 1.0, 5.0]  # a: relevant second; b: relevant first
    result = ranking_metrics(users, truth, scores)
    assert result["ranked_users"] == 2
    assert result["ndcg@10"] == pytest.approx((1 / math.log2(3) + 1.0) / 2)
    assert result["precision@10"] == pytest.approx((1 / 2 + 1 / 2) / 2)


def test_no_relevant_items_at_all_is_nan():
    result = ranking_metrics(["a"], [1.0], [5.0])
    assert result["ranked_users"] == 0 and math.isnan(result["ndcg@10"])
