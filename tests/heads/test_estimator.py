import numpy as np
import pytest
import torch

from heads import MISSING, MultiTaskHeads, TaskSpec
from heads.weighting import EqualWeighting, TrainState
from store.errors import ConfigError, NotFittedError, SchemaMismatch


def _data(n=1200, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 8)).astype(np.float32)
    Y = {"a": (X[:, 0] > 0).astype(np.int64), "b": (X[:, 1] + X[:, 2] > 0).astype(np.int64) + (X[:, 3] > 1)}
    tasks = [TaskSpec(name="a", classes=("0", "1")), TaskSpec(name="b", classes=("0", "1", "2"))]
    return X, Y, tasks


def _fit(X, Y, tasks, **kw):
    return MultiTaskHeads(tasks, hidden=32, max_epochs=60, patience=10, **kw).fit(
        X[:900], {k: v[:900] for k, v in Y.items()}, X[900:1000], {k: v[900:1000] for k, v in Y.items()})


def test_heads_learn_both_tasks_when_labels_complete():
    X, Y, tasks = _data()
    est = _fit(X, Y, tasks)
    pred = est.predict(X[1000:])
    assert (pred["a"] == Y["a"][1000:]).mean() > 0.9
    assert (pred["b"] == Y["b"][1000:]).mean() > 0.75
    proba = est.predict_proba(X[1000:])
    assert proba["b"].shape == (200, 3)
    np.testing.assert_allclose(proba["b"].sum(axis=1), 1.0, atol=1e-5)


def test_heads_train_task_from_labelled_rows_only_when_labels_partial():
    X, Y, tasks = _data(seed=1)
    partial = dict(Y)
    partial["a"] = np.where(np.arange(len(X)) % 3 == 0, Y["a"], MISSING)  # two thirds unlabelled
    est = _fit(X, partial, tasks)
    assert (est.predict(X[1000:])["a"] == Y["a"][1000:]).mean() > 0.85


def test_masked_rows_do_not_change_the_loss():
    X, Y, tasks = _data()
    est = MultiTaskHeads(tasks, hidden=8, max_epochs=1)
    est.fit(X[:50], {k: v[:50] for k, v in Y.items()})
    with torch.no_grad():
        out = est.model_(torch.from_numpy(X[:10]))
    y = {k: torch.from_numpy(v[:10]) for k, v in Y.items()}
    y_masked = dict(y)
    y_masked["a"] = y["a"].clone()
    y_masked["a"][5:] = MISSING
    base = est._losses({k: v[:5] for k, v in out.items()}, {k: v[:5] for k, v in y.items()})
    masked = est._losses(out, y_masked)
    assert torch.isclose(base[0], masked[0])


def test_save_load_round_trip_predicts_identically(tmp_path):
    X, Y, tasks = _data()
    est = _fit(X, Y, tasks)
    est.save(tmp_path / "h")
    again = MultiTaskHeads.load(tmp_path / "h")
    for k in ("a", "b"):
        np.testing.assert_array_equal(again.predict_proba(X)[k], est.predict_proba(X)[k])


def test_predict_names_both_widths_when_features_mismatch():
    X, Y, tasks = _data()
    est = _fit(X, Y, tasks)
    with pytest.raises(SchemaMismatch, match="X has 5 features, the head was trained on 8"):
        est.predict(np.zeros((2, 5), np.float32))


def test_predict_raises_not_fitted_before_fit():
    _, _, tasks = _data()
    with pytest.raises(NotFittedError, match="not fitted"):
        MultiTaskHeads(tasks).predict(np.zeros((1, 8), np.float32))


def test_load_raises_schema_mismatch_when_weights_do_not_match_config(tmp_path):
    X, Y, tasks = _data()
    _fit(X, Y, tasks).save(tmp_path / "h")
    cfg = (tmp_path / "h" / "config.json").read_text().replace('"hidden": 32', '"hidden": 16')
    (tmp_path / "h" / "config.json").write_text(cfg)
    with pytest.raises(SchemaMismatch, match="do not match"):
        MultiTaskHeads.load(tmp_path / "h")


def test_task_spec_raises_when_kind_unknown():
    with pytest.raises(ConfigError, match="unknown kind 'ranking'"):
        TaskSpec(name="t", kind="ranking", classes=("a", "b"))


def test_task_spec_encodes_missing_and_unknown_labels_as_missing():
    spec = TaskSpec.from_labels("t", ["x", "y", None, "x"])
    assert spec.classes == ("x", "y")
    assert spec.encode(["y", None, "z"]).tolist() == [1, MISSING, MISSING]


def test_equal_weighting_gives_equal_weights_for_any_losses():
    w = EqualWeighting(3)(torch.tensor([0.1, 5.0, 2.0]), TrainState())
    assert w.tolist() == [1.0, 1.0, 1.0]
