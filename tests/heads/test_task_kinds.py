import numpy as np

from heads import MultiTaskHeads, TaskSpec, task_metrics


def _data(n=1200, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 8)).astype(np.float32)
    price = list(10 + 3 * X[:, 0] + 0.1 * rng.normal(size=n))
    tags = [[t for t, on in (("a", X[k, 1] > 0), ("b", X[k, 2] > 0)) if on] for k in range(n)]
    kind = ["x" if v > 0 else "y" for v in X[:, 3]]
    for k in range(0, n, 3):  # a third of the rows lack the price, another third the tags
        price[k] = None
        tags[k + 1 if k + 1 < n else k] = None
    return X, {"price": price, "tags": tags, "kind": kind}


def test_multilabel_and_regression_train_with_partial_labels_beside_multiclass(tmp_path):
    X, raw = _data()
    tasks = [TaskSpec.from_labels("price", raw["price"], "regression"),
             TaskSpec.from_labels("tags", raw["tags"], "multilabel"),
             TaskSpec.from_labels("kind", raw["kind"])]
    assert tasks[0].mean > 9 and tasks[1].classes == ("a", "b")
    Y = {t.name: t.encode(raw[t.name]) for t in tasks}
    assert np.isnan(Y["price"][0]) and np.isnan(Y["tags"][1]).all() and Y["tags"].shape == (1200, 2)
    est = MultiTaskHeads(tasks, hidden=64, max_epochs=80, patience=10).fit(
        X[:900], {k: v[:900] for k, v in Y.items()}, X[900:1000], {k: v[900:1000] for k, v in Y.items()})
    pred = est.predict(X[1000:])
    m = {t.name: task_metrics(t, Y[t.name][1000:], pred[t.name]) for t in tasks}
    assert m["price"]["rmse"] < 1.0 and m["price"]["n"] < 200  # label std is 3: the head learned it
    assert m["tags"]["micro_f1"] > 0.85 and m["tags"]["macro_f1"] > 0.85
    assert m["kind"]["accuracy"] > 0.9
    est.save(tmp_path / "h")
    again = MultiTaskHeads.load(tmp_path / "h")
    np.testing.assert_allclose(again.predict(X[:5])["price"], est.predict(X[:5])["price"], rtol=1e-6)
    assert again.tasks[0].std == tasks[0].std
