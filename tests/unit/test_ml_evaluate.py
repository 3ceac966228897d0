"""`harmony evaluate movielens PATH --folds` on a generated tiny MovieLens-layout folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harmony.cli import main
from ml import evaluation


pytestmark = pytest.mark.usefixtures("small_defaults")


def test_json_report_has_five_folds_and_a_mean_and_the_table_shows_them(spark, movielens, capsys, monkeypatch):
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

    # Without --json, the same report as a table (not evaluated twice: that takes half a minute).
    monkeypatch.setattr(evaluation, "evaluate_movielens_folds", lambda *args, **kwargs: report)
    assert main(["evaluate", "movielens", str(folder), "--folds", "--no-tune"]) == 0
    out = capsys.readouterr().out
    for label in ["u1", "u5", "mean", "RMSE", "nDCG@10", f"{report['mean']['rmse']:.4f}"]:
        assert label in out


def test_missing_splits_is_one_line_and_nonzero(tmp_path, capsys):
    assert main(["evaluate", "movielens", str(tmp_path), "--folds"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "u1.base" in err[0]
