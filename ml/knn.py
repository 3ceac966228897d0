"""Item-item neighbourhood model on baseline residuals (Koren's kNN-baseline), blended with ALS.

Similarity between items i and j is the shrunk Pearson-baseline correlation over the users who
rated both: ``s_ij = sum(e_ui e_uj) / sqrt(sum e_ui^2 sum e_uj^2) * (n_ij - 1) / (n_ij - 1 + shrinkage)``
with ``e = r - baseline``. The residual predicted for (u, i) is the similarity-weighted mean of
``e_uj`` over the ``k`` items j the user rated that are most similar to i (positive similarity
only); zero when there is none.

The similarity matrix is dense (items x items) and built on the driver with NumPy, so this
is for catalogues up to some tens of thousands of items; :func:`fit_knn` answers None above
``MAX_ITEMS`` (or ``MAX_CELLS``) and the model then blends ALS alone. Called with users and
items swapped it is the user-user model (neighbours are similar users who rated the item).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_ITEMS = 20_000
MAX_CELLS = 50_000_000  # users x items of the dense residual matrix built to compute similarities
NEIGHBOURS = 40
SHRINKAGE = 100.0


@dataclass
class ItemKNN:
    similarity: np.ndarray  # (n_items, n_items), float32, diagonal zero
    offsets: np.ndarray  # per user: their rated items / residuals are items[offsets[u]:offsets[u+1]]
    items: np.ndarray
    residuals: np.ndarray
    k: int = NEIGHBOURS

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Residual estimates for indexed pairs; -1 (unseen) gives 0."""
        out = np.zeros(len(users))
        for n, (u, i) in enumerate(zip(users, items)):
            if u < 0 or i < 0:
                continue
            start, end = self.offsets[u], self.offsets[u + 1]
            rated, residual = self.items[start:end], self.residuals[start:end]
            sims = self.similarity[i, rated]
            keep = sims > 0
            if not keep.any():
                continue
            sims, residual = sims[keep], residual[keep]
            if len(sims) > self.k:
                top = np.argpartition(-sims, self.k)[: self.k]
                sims, residual = sims[top], residual[top]
            out[n] = float(sims @ residual) / float(sims.sum())
        return out


def fit_knn(u: np.ndarray, i: np.ndarray, residual: np.ndarray, n_users: int, n_items: int,
            k: int = NEIGHBOURS, shrinkage: float = SHRINKAGE) -> ItemKNN | None:
    if n_items > MAX_ITEMS or n_items == 0 or n_users * n_items > MAX_CELLS:
        return None
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
    order = np.argsort(u, kind="stable")
    offsets = np.zeros(n_users + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(np.bincount(u, minlength=n_users))
    return ItemKNN(similarity.astype(np.float32), offsets, i[order], residual[order].astype(np.float64), k)
