import numpy as np
import pytest

from heads import TaskSpec
from heads.baselines import baselines, logistic_baseline


def _data(n=900, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 40)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1)
    parts = {"train": np.arange(n) < 600, "val": (np.arange(n) >= 600) & (np.arange(n) < 750), "test": np.arange(n) >= 750}
    return X, {"c": y}, [TaskSpec(name="c", classes=("0", "1", "2"))], parts


def test_logistic_baseline_keeps_the_c_with_best_validation_score_and_reports_it_on_test():
    from sklearn.linear_model import LogisticRegression

    from heads.metrics import macro_f1

    X, Y, tasks, p = _data()
    out = logistic_baseline(tasks[0], X, Y["c"], p["train"], p["val"], p["test"], Cs=(0.001, 0.1, 10.0))
    best = max(out["val_scores"], key=out["val_scores"].get)
    assert out["C"] == best and set(out["val_scores"]) <= {0.001, 0.1, 10.0}
    ref = LogisticRegression(C=best, max_iter=1000).fit(X[p["train"]], Y["c"][p["train"]])
    assert out["macro_f1"] == pytest.approx(macro_f1(Y["c"][p["test"]], ref.predict(X[p["test"]])), abs=0.02)
    assert out["val_scores"][0.001] < out["val_scores"][best]  # the grid matters here: too strong a penalty loses


def test_baselines_return_sklearn_and_single_task_entries_with_fit_times():
    X, Y, tasks, p = _data()
    out = baselines(tasks, X, Y, p, single_task=True, head_params={"hidden": 16, "max_epochs": 20, "patience": 5})
    assert set(out) == {"sklearn", "single_task"}
    assert out["sklearn"]["c"]["macro_f1"] > 0.6 and out["sklearn"]["c"]["fit_s"] >= 0
    assert out["single_task"]["c"]["n"] == 150 and out["single_task"]["c"]["accuracy"] > 0.6
