"""Item-item neighbourhood model on baseline residuals (Koren's kNN-baseline), blended with ALS.

Similarity between items i and j is the shrunk Pearson-baseline correlation over the users who
rated both: ``s_ij = sum(e_ui e_uj) / sqrt(sum e_ui^2 sum e_uj^2) * (n_ij - 1) / (n_ij - 1 + shrinkage)``
with ``e = r - baseline``. The residual estimated for (u, i) is the similarity-weighted mean of
``e_uj`` over the ``k`` items j the user rated that are most similar to i (positive similarity
only); zero when there is none.

:func:`fit_knn` answers the estimate for every (user, item) pair at once, as a dense matrix: the
model is published as factors (:mod:`ml.factors`), which factorise that matrix. Everything is
dense and on the driver, so it is for catalogues up to some thousands of items: it answers None
above ``MAX_ITEMS`` items, ``MAX_CELLS`` users x items, or ``MAX_WORK`` items x ratings (the
cost of the estimates), and the model then blends ALS alone. Called with users and items
swapped it is the user-user model (neighbours are similar users who rated the item).
"""

from __future__ import annotations

import numpy as np

MAX_ITEMS = 20_000
MAX_CELLS = 20_000_000
MAX_WORK = 2_000_000_000
NEIGHBOURS = 40
SHRINKAGE = 100.0


def similarities(u: np.ndarray, i: np.ndarray, residual: np.ndarray, n_users: int, n_items: int,
                 shrinkage: float = SHRINKAGE) -> np.ndarray:
    """(n_items, n_items) shrunk Pearson-baseline similarities, float32, diagonal zero."""
    dense = np.zeros((n_users, n_items), dtype=np.float32)
    seen = np.zeros((n_users, n_items), dtype=np.float32)
    dense[u, i] = residual
    seen[u, i] = 1.0
    products = dense.T @ dense
    squares = (dense * dense).T @ seen  # [i, j]: sum of e_ui^2 over users who rated both
    counts = seen.T @ seen
    denominator = np.sqrt(squares * squares.T)
    with np.errstate(divide="ignore", invalid="ignore"):
        similarity = np.where(denominator > 0, products / denominator, 0.0)
    similarity *= np.maximum(counts - 1, 0) / (np.maximum(counts - 1, 0) + shrinkage)
    np.fill_diagonal(similarity, 0.0)
    return similarity.astype(np.float32)


def estimates(similarity: np.ndarray, u: np.ndarray, i: np.ndarray, residual: np.ndarray, n_users: int,
              k: int = NEIGHBOURS) -> np.ndarray:
    """(n_users, n_items) residual estimates: per user, each item's k most similar rated items."""
    n_items = similarity.shape[0]
    out = np.zeros((n_users, n_items))
    order = np.argsort(u, kind="stable")
    starts = np.zeros(n_users + 1, dtype=np.int64)
    starts[1:] = np.cumsum(np.bincount(u, minlength=n_users))
    rated_items, rated_residuals = i[order], residual[order]
    for user in range(n_users):
        rated = rated_items[starts[user]:starts[user + 1]]
        if not len(rated):
            continue
        sims = np.maximum(similarity[:, rated], 0.0)  # (n_items, n_rated)
        errors = np.broadcast_to(rated_residuals[starts[user]:starts[user + 1]], sims.shape)
        if len(rated) > k:
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            sims, errors = np.take_along_axis(sims, top, 1), np.take_along_axis(errors, top, 1)
        total = sims.sum(axis=1)
        out[user] = np.where(total > 0, (sims * errors).sum(axis=1) / np.where(total > 0, total, 1.0), 0.0)
    return out


def feasible(n_users: int, n_items: int, n_ratings: int) -> bool:
    """Whether the dense estimates of this many users, items and ratings are within the bounds."""
    return 0 < n_items <= MAX_ITEMS and n_users * n_items <= MAX_CELLS and n_items * n_ratings <= MAX_WORK


def fit_knn(u: np.ndarray, i: np.ndarray, residual: np.ndarray, n_users: int, n_items: int,
            k: int = NEIGHBOURS, shrinkage: float = SHRINKAGE) -> np.ndarray | None:
    """The (n_users, n_items) residual estimates of the item kNN, or None when the data is too big."""
    if not feasible(n_users, n_items, len(u)):
        return None
    return estimates(similarities(u, i, residual, n_users, n_items, shrinkage), u, i, residual, n_users, k)
