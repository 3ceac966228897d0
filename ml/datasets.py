"""MovieLens-100K-layout folders: the official u1..u5 splits, read with ids kept as strings."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from events.errors import HarmonyError

FOLDS = 5


def read_movielens_split(path: Path) -> pd.DataFrame:
    """A MovieLens-100K split file: tab-separated user, item, rating, timestamp; ids kept as strings."""
    frame = pd.read_csv(path, sep="\t", header=None, names=["user", "item", "rating", "ts"],
                        dtype={"user": str, "item": str, "rating": float, "ts": str})
    if frame["rating"].isna().any():
        raise HarmonyError(f"{path}: a row without a rating")
    return frame.drop(columns="ts")


def split_paths(folder: Path, folds: int = FOLDS) -> list[tuple[Path, Path]]:
    """The official u1..u<folds> .base/.test pairs of a MovieLens-100K-layout folder, all present."""
    folder = Path(folder)
    paths = [(folder / f"u{n}.base", folder / f"u{n}.test") for n in range(1, folds + 1)]
    missing = [str(path) for pair in paths for path in pair if not path.is_file()]
    if missing:
        raise HarmonyError(f"not a MovieLens-100K folder with official splits: missing {', '.join(missing)}")
    return paths
