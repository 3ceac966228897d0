"""How far predictions are from held-out ratings: rating error (RMSE, MAE) and ranking quality
(nDCG@10, precision@10).

Ranking protocol (cheap, well defined, the usual one for explicit-rating test sets): for each
test user, the candidates are the items that user rated in the test set; they are ranked by
predicted score (descending; ties keep the test-file order). An item is relevant when its
held-out rating is >= 4. Users with no relevant held-out item are skipped (nDCG is undefined
for them); the metrics are the mean over the remaining users.

* precision@k = relevant items in the top k / min(k, number of candidates)
  (a user with fewer than k candidates is judged on the list actually ranked).
* nDCG@k with binary gains: DCG = sum over the top k of rel / log2(position + 1), positions
  from 1; IDCG is the DCG of the best ordering (all relevant candidates first).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

RELEVANT = 4.0
K = 10


def rmse(truth, predicted) -> float:
    truth, predicted = np.asarray(truth, float), np.asarray(predicted, float)
    return float(np.sqrt(np.mean((truth - predicted) ** 2)))


def mae(truth, predicted) -> float:
    truth, predicted = np.asarray(truth, float), np.asarray(predicted, float)
    return float(np.mean(np.abs(truth - predicted)))


def ranking_metrics(users, truth, predicted, k: int = K, threshold: float = RELEVANT) -> dict[str, float]:
    """Mean nDCG@k and precision@k over users (see the module docstring), and how many users counted."""
    frame = pd.DataFrame({"user": np.asarray(users), "truth": np.asarray(truth, float),
                          "score": np.asarray(predicted, float)})
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ndcgs, precisions = [], []
    for _, group in frame.groupby("user", sort=False):
        relevant = (group["truth"].to_numpy() >= threshold).astype(float)
        if not relevant.any():
            continue
        order = np.argsort(-group["score"].to_numpy(), kind="stable")[:k]
        gains = relevant[order]
        ideal = np.sort(relevant)[::-1][:k]
        ndcgs.append(float(gains @ discounts[:len(gains)]) / float(ideal @ discounts[:len(ideal)]))
        precisions.append(float(gains.sum()) / len(gains))
    if not ndcgs:
        return {f"ndcg@{k}": float("nan"), f"precision@{k}": float("nan"), "ranked_users": 0}
    return {f"ndcg@{k}": float(np.mean(ndcgs)), f"precision@{k}": float(np.mean(precisions)),
            "ranked_users": len(ndcgs)}
