import numpy as np
import pytest
from sklearn.metrics import f1_score

from heads import TaskSpec, task_metrics
from heads.metrics import macro_f1, task_score


def test_macro_f1_matches_sklearn_over_labels_seen_in_truth_or_prediction():
    rng = np.random.default_rng(0)
    for _ in range(20):
        t, p = rng.integers(0, 7, 50), rng.integers(0, 9, 50)
        assert macro_f1(t, p) == pytest.approx(f1_score(t, p, average="macro", zero_division=0))


def test_multilabel_and_regression_metrics_match_sklearn_and_the_formula():
    rng = np.random.default_rng(1)
    t = TaskSpec(name="tags", kind="multilabel", classes=("a", "b", "c"))
    y = (rng.random((40, 3)) > 0.5).astype(np.float32)
    y[0] = np.nan
    pred = rng.random((40, 3)) > 0.5
    m = task_metrics(t, y, pred)
    assert m["n"] == 39
    assert m["macro_f1"] == pytest.approx(f1_score(y[1:].astype(int), pred[1:], average="macro", zero_division=0))
    assert m["micro_f1"] == pytest.approx(f1_score(y[1:].astype(int), pred[1:], average="micro", zero_division=0))
    r = TaskSpec(name="price", kind="regression", mean=10.0, std=2.0)
    m = task_metrics(r, np.array([0.0, 1.0, np.nan]), np.array([10.0, 13.0, 99.0]))  # truths 10 and 12
    assert m["rmse"] == pytest.approx(np.sqrt(0.5)) and set(m) == {"rmse", "n"}
    assert task_score(r, np.array([0.0, 1.0, np.nan]), np.array([10.0, 13.0, 99.0])) == pytest.approx(1 - 0.5 / 1.0)
