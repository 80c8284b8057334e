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


def _imbalanced(n=1500, seed=0):
    """Class 2 is rare (about 5 %) and separable only by a narrow margin."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 10)).astype(np.float32)
    y = np.where(X[:, 0] > 1.65, 2, (X[:, 1] > 0).astype(np.int64))
    return X, {"c": y}, [TaskSpec(name="c", classes=("0", "1", "2"))]


def test_class_weighting_raises_rare_class_recall_and_macro_f1_when_classes_imbalanced():
    from heads import task_metrics

    X, Y, tasks = _imbalanced()
    scores = {}
    for cw in (None, "balanced"):
        est = MultiTaskHeads(tasks, hidden=32, max_epochs=40, patience=40, class_weight=cw, affinity_every=0).fit(
            X[:1000], {"c": Y["c"][:1000]}, X[1000:1200], {"c": Y["c"][1000:1200]})
        pred = est.predict(X[1200:])["c"]
        rare = Y["c"][1200:] == 2
        scores[cw] = ((pred[rare] == 2).mean(), task_metrics(tasks[0], Y["c"][1200:], pred)["macro_f1"])
    assert scores["balanced"][0] > scores[None][0] + 0.1


def test_class_weights_are_inverse_frequency_by_hand():
    from heads.losses import class_weights

    t = TaskSpec(name="c", classes=("a", "b", "c"))
    y = np.array([0, 0, 0, 1, -1, 0])  # 5 labelled: four 'a', one 'b', no 'c'
    assert class_weights(t, y, "balanced").tolist() == pytest.approx([5 / (2 * 4), 5 / (2 * 1), 1.0])
    assert class_weights(t, y, "sqrt").tolist() == pytest.approx([(5 / 8) ** 0.5, 2.5 ** 0.5, 1.0])
    assert class_weights(t, y, None) is None
    with pytest.raises(ConfigError, match="class_weight 'inverse' unknown"):
        class_weights(t, y, "inverse")


def test_early_stopping_keeps_the_epoch_with_best_validation_macro_f1():
    X, Y, tasks = _data()
    est = _fit(X, Y, tasks)
    scores = [h["val_score"] for h in est.history_]
    assert est.best_epoch_ == int(np.argmax(np.round(scores, 4))) or scores[est.best_epoch_] == pytest.approx(max(scores), abs=1e-4)
    assert est.best_score_ == pytest.approx(round(scores[est.best_epoch_], 4))
    reference, waited, stop = None, 0, None  # replay the rule: stop `patience` epochs after the last min_delta gain
    for epoch, v in enumerate(scores):
        if reference is None or v > reference + est.min_delta:
            reference, waited = v, 0
        else:
            waited += 1
            if waited >= est.patience:
                stop = epoch
                break
    assert len(est.history_) == (stop + 1 if stop is not None else est.max_epochs)
    pred = est.predict(X[900:1000])  # the restored weights are the best epoch's: the validation score matches
    from heads import task_metrics
    val = np.mean([task_metrics(t, Y[t.name][900:1000], pred[t.name])["macro_f1"] for t in tasks])
    assert val == pytest.approx(scores[est.best_epoch_], abs=1e-6)


def test_search_records_every_candidate_and_keeps_the_best_on_validation(tmp_path):
    X, Y, tasks = _data()
    space = {"hidden": [4, 32], "dropout": [0.0, 0.3]}
    est = MultiTaskHeads(tasks, max_epochs=30, patience=5, search=True, search_space=space, affinity_every=0).fit(
        X[:900], {k: v[:900] for k, v in Y.items()}, X[900:1000], {k: v[900:1000] for k, v in Y.items()})
    assert len(est.search_) == 4
    assert {(c["settings"]["hidden"], c["settings"]["dropout"]) for c in est.search_} == {(4, 0.0), (4, 0.3), (32, 0.0), (32, 0.3)}
    best = max(est.search_, key=lambda c: c["val_score"])
    assert est.settings_ == best["settings"] and est.best_score_ == best["val_score"]
    assert est.model_.trunk[0].out_features == est.settings_["hidden"]
    est.save(tmp_path / "h")
    again = MultiTaskHeads.load(tmp_path / "h")
    assert again.settings_ == est.settings_
    np.testing.assert_array_equal(again.predict_proba(X[:20])["b"], est.predict_proba(X[:20])["b"])


def test_search_raises_with_fix_when_no_validation_split_or_unknown_key():
    X, Y, tasks = _data(n=100)
    with pytest.raises(ConfigError, match="validation split") as info:
        MultiTaskHeads(tasks, search=True).fit(X, Y)
    assert "search = false" in info.value.fix
    with pytest.raises(ConfigError, match="not searchable"):
        MultiTaskHeads(tasks, search=True, search_space={"momentum": [0.9]}, max_epochs=1).fit(X, Y, X, Y)


def test_log_variances_get_no_weight_decay_while_the_network_does(monkeypatch):
    import heads.estimator as mod

    groups = []

    class Spy(mod.AdamW):
        def __init__(self, g, **kw):
            groups.append(g)
            super().__init__(g, **kw)

    monkeypatch.setattr(mod, "AdamW", Spy)
    X, Y, tasks = _data(n=300)
    est = MultiTaskHeads(tasks, hidden=8, max_epochs=2, weighting="uncertainty", weight_decay=0.3, affinity_every=0).fit(
        X[:200], {k: v[:200] for k, v in Y.items()}, X[200:], {k: v[200:] for k, v in Y.items()})
    decay = {id(p): g["weight_decay"] for g in groups[0] for p in g["params"]}
    assert decay[id(est.weighting_.log_var)] == 0.0
    assert all(decay[id(p)] == 0.3 for p in est.model_.parameters())
    assert est.weighting_.log_var.detach().abs().max() > 0  # and it was trained


def test_validation_labels_with_wrong_shape_raise_naming_validation():
    X, Y, tasks = _data(n=100)
    with pytest.raises(SchemaMismatch, match="validation labels for 'a'"):
        MultiTaskHeads(tasks, max_epochs=1).fit(X, Y, X[:10], {k: v[:5] for k, v in Y.items()})


def test_saved_head_without_input_scaling_loads_with_identity_scaling(tmp_path):
    X, Y, tasks = _data(n=200)
    est = MultiTaskHeads(tasks, hidden=8, max_epochs=2, standardize=False).fit(X, Y)
    est.save(tmp_path / "h")
    from safetensors.torch import load_file, save_file

    state = load_file(tmp_path / "h" / "model.safetensors")
    save_file({k: v for k, v in state.items() if not k.startswith("_input")}, tmp_path / "h" / "model.safetensors")
    again = MultiTaskHeads.load(tmp_path / "h")
    np.testing.assert_allclose(again.predict_proba(X[:10])["b"], est.predict_proba(X[:10])["b"], atol=1e-6)
