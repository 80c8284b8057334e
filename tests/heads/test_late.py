import json

import numpy as np
import pytest

from heads import TaskSpec
from heads.late import LateFusionClassifier, LateFusionHeads, load_head
from store.errors import NotFittedError, SchemaMismatch


def _data(n=900, seed=0):
    """'text' predicts both tasks well, 'image' weakly; concat layout: text (8) then image (8)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    z = rng.integers(0, 2, n)
    c1, c2 = rng.normal(size=(3, 8)) * 2.0, rng.normal(size=(3, 8)) * 0.3
    text = c1[y] + rng.normal(size=(n, 8)) + 2.0 * z[:, None] * np.eye(8)[0]
    image = c2[y] + rng.normal(size=(n, 8))
    X = np.concatenate([text, image], axis=1).astype(np.float32)
    tasks = [TaskSpec(name="y", classes=("a", "b", "c")), TaskSpec(name="z", classes=("0", "1"))]
    return X, {"y": y.astype(np.int64), "z": z.astype(np.int64)}, tasks


def _fit(X, Y, tasks):
    return LateFusionHeads(tasks, {"text": 8, "image": 8}).fit(
        X[:600], {k: v[:600] for k, v in Y.items()}, X[600:750], {k: v[600:750] for k, v in Y.items()})


def test_late_heads_trust_the_better_modality_per_task_and_score_well():
    X, Y, tasks = _data()
    est = _fit(X, Y, tasks)
    for t in ("y", "z"):
        w = est.weights_[t]
        assert w.shape == (2,) and abs(float(w.sum()) - 1) < 1e-6 and w[0] > w[1]
    pred = est.predict(X[750:])
    assert (pred["y"] == Y["y"][750:]).mean() > 0.85 and (pred["z"] == Y["z"][750:]).mean() > 0.7
    proba = est.predict_proba(X[750:])
    assert proba["y"].shape == (150, 3)
    np.testing.assert_allclose(proba["y"].sum(axis=1), 1.0, atol=1e-5)
    json.dumps(est.fit_report())


def test_late_heads_score_a_row_without_image_from_text_alone():
    X, Y, tasks = _data()
    est = _fit(X, Y, tasks)
    rows = X[750:760].copy()
    rows[:, 8:] = 0  # concat writes an absent block as zeros
    text_only = est._predict_model(tasks[0], est.models_["y"]["text"], rows[:, :8])
    np.testing.assert_allclose(est.predict_proba(rows)["y"], text_only, atol=1e-6)


def test_late_heads_save_load_round_trip_and_load_head_dispatches(tmp_path):
    X, Y, tasks = _data()
    est = _fit(X, Y, tasks)
    est.save(tmp_path / "h", extra={"lineage": {"features_table": "fused__x"}})
    again = load_head(tmp_path / "h")
    assert isinstance(again, LateFusionHeads)
    for t in ("y", "z"):
        np.testing.assert_allclose(again.predict_proba(X[:30])[t], est.predict_proba(X[:30])[t], atol=1e-6)
    assert sorted(p.name for p in (tmp_path / "h").iterdir()) == ["config.json", "model.safetensors"]


def test_late_heads_handle_regression_and_partial_labels():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(600, 6)).astype(np.float32)
    price = list(3 * X[:, 0] + 0.1 * rng.normal(size=600))
    price = [None if k % 4 == 0 else v for k, v in enumerate(price)]
    task = TaskSpec.from_labels("price", price, "regression")
    Y = {"price": task.encode(price)}
    est = LateFusionHeads([task], {"text": 3, "image": 3}).fit(X[:400], {"price": Y["price"][:400]},
                                                               X[400:500], {"price": Y["price"][400:500]})
    pred = est.predict(X[500:])["price"]
    truth = 3 * X[500:, 0]
    assert np.sqrt(np.mean((pred - truth) ** 2)) < 1.0 and est.weights_["price"][0] > 0.8


def test_late_heads_raise_named_errors_on_wrong_width_and_before_fit():
    X, Y, tasks = _data(n=60)
    est = LateFusionHeads(tasks, {"text": 8, "image": 8})
    with pytest.raises(NotFittedError, match="not fitted"):
        est.predict(X)
    with pytest.raises(SchemaMismatch, match="X has 5 features, the late-fusion head expects 16") as info:
        est.fit(X[:, :5], Y)
    assert "concat fused table" in info.value.fix


def test_late_fusion_classifier_keeps_its_block_api():
    X, Y, _ = _data()
    blocks = {"text": X[:, :8], "image": X[:, 8:]}
    est = LateFusionClassifier().fit({m: x[:700] for m, x in blocks.items()}, y=Y["y"][:700])
    assert est.weights_[0] > est.weights_[1]
    pred = est.predict({m: x[700:] for m, x in blocks.items()})
    assert (pred == Y["y"][700:]).mean() > 0.85
