"""A plain NumPy ALS of Spark's explicit objective, the reference the training benchmark compares with.

Minimises ``sum (r_ui - p_u . q_i)^2 + reg * (sum_u n_u |p_u|^2 + sum_i n_i |q_i|^2)`` (ALS-WR:
Spark scales ``regParam`` by each user's / item's rating count) by alternating exact ridge
solves. Each half-step solves every row's normal equations with its own
small BLAS product and ``np.linalg.solve``: the textbook algorithm, nothing distributed.
"""

from __future__ import annotations

import numpy as np




def _solve_side(starts: np.ndarray, cols: np.ndarray, values: np.ndarray, fixed: np.ndarray,
                reg: float) -> np.ndarray:
    """New factors for each row given the ``fixed`` factors of the columns; ratings grouped by row,
    row ``k``'s being ``cols[starts[k]:starts[k + 1]]``."""
    rank = fixed.shape[1]
    out = np.zeros((len(starts) - 1, rank))
    eye = np.eye(rank)
    for row in range(len(starts) - 1):
        begin, end = starts[row], starts[row + 1]
        if begin == end:
            continue
        q = fixed[cols[begin:end]]
        out[row] = np.linalg.solve(q.T @ q + reg * (end - begin) * eye, q.T @ values[begin:end])
    return out


def _grouped(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_rows: int):
    order = np.argsort(rows, kind="stable")
    starts = np.zeros(n_rows + 1, dtype=np.int64)
    starts[1:] = np.cumsum(np.bincount(rows, minlength=n_rows))
    return starts, cols[order], values[order]


def als(users: np.ndarray, items: np.ndarray, ratings: np.ndarray, n_users: int, n_items: int, *,
        rank: int = 10, reg: float = 0.1, iterations: int = 10, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """User and item factors (``n_users x rank``, ``n_items x rank``) for indexed ratings."""
    rng = np.random.default_rng(seed)
    item_factors = rng.normal(0, 1 / np.sqrt(rank), (n_items, rank))
    by_user = _grouped(users, items, ratings, n_users)
    by_item = _grouped(items, users, ratings, n_items)
    user_factors = np.zeros((n_users, rank))
    for _ in range(iterations):
        user_factors = _solve_side(*by_user, item_factors, reg)
        item_factors = _solve_side(*by_item, user_factors, reg)
    return user_factors, item_factors
