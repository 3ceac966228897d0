"""`harmony evaluate movielens PATH --folds` on a generated tiny MovieLens-layout folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harmony.cli import main


@pytest.fixture(autouse=True)
def small_defaults(monkeypatch):
    """--no-tune fits the settings' parameters; make them cheap here (this checks the command, not the model)."""
    monkeypatch.setenv("HARMONY_ALS_RANK", "4")
    monkeypatch.setenv("HARMONY_ALS_MAX_ITER", "5")


@pytest.fixture
def movielens(tmp_path):
    """u1..u5 .base/.test: tab-separated user item rating ts, from a small low-rank matrix."""
    rng = np.random.default_rng(11)
    p, q = rng.normal(0, 0.7, (40, 2)), rng.normal(0, 0.7, (30, 2))
    rows = [(u, i, int(np.clip(round(3.4 + p[u] @ q[i] + rng.normal(0, 0.3)), 1, 5)), 880000000 + u * 100 + i)
            for u in range(40) for i in range(30) if rng.random() < 0.5]
    fold_of = rng.integers(0, 5, len(rows))
    for n in range(5):
        with open(tmp_path / f"u{n + 1}.base", "w") as base, open(tmp_path / f"u{n + 1}.test", "w") as test:
            for row, fold in zip(rows, fold_of):
                (test if fold == n else base).write("\t".join(str(x + 1 if k < 2 else x)
                                                              for k, x in enumerate(row)) + "\n")
    return tmp_path, len(rows)


def test_json_report_has_five_folds_and_a_mean(spark, movielens, capsys):
    folder, total = movielens
    assert main(["evaluate", "movielens", str(folder), "--folds", "--no-tune", "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert [fold["fold"] for fold in report["folds"]] == ["u1", "u2", "u3", "u4", "u5"]
    assert sum(fold["test"] for fold in report["folds"]) == total
    for fold in report["folds"]:
        assert fold["train"] + fold["test"] == total
        assert 0 < fold["rmse"] < 2 and 0 < fold["mae"] <= fold["rmse"]
        assert 0 < fold["ndcg@10"] <= 1 and 0 < fold["precision@10"] <= 1
        assert fold["params"]["rank"] == 4
    assert report["mean"]["rmse"] == pytest.approx(np.mean([fold["rmse"] for fold in report["folds"]]))
    assert report["mean"]["rmse"] < report["mean"]["baseline_rmse"]
    assert "fold u5" in captured.err  # progress goes to stderr


def test_table_output(spark, movielens, capsys):
    folder, _ = movielens
    assert main(["evaluate", "movielens", str(folder), "--folds", "--no-tune"]) == 0
    out = capsys.readouterr().out
    for label in ["u1", "u5", "mean", "RMSE", "nDCG@10"]:
        assert label in out


def test_missing_splits_is_one_line_and_nonzero(tmp_path, capsys):
    assert main(["evaluate", "movielens", str(tmp_path), "--folds"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "u1.base" in err[0]
