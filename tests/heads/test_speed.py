"""Training speed guard (issue 12): one head on 3,822 rows × 896 dims with a 10-class and a
99-class task, at plait train's settings, and the tuned LogisticRegression baselines beside it.

Measured in CPU seconds of this process (``time.process_time``), not wall time: other work on
a shared machine delays the test but does not add CPU seconds to it, while the regressions
this guards against do (more epochs, per-row Python, torch threads spinning on barriers).
Measured here: head about 9 CPU s (31 epochs), baselines about 4 CPU s. The head budget is
about 4x that, so only a large regression trips it; the baselines must stay below the head.
"""
import time

import numpy as np
import sklearn.linear_model  # noqa: F401  (imported before timing, as torch is: imports are not training)

from heads import MultiTaskHeads, TaskSpec
from heads.baselines import baselines


def _catalogue(n=3822, d=896, seed=0):
    """99 subclasses nested in 10 classes, seen through a random linear map plus noise."""
    rng = np.random.default_rng(seed)
    sub = rng.integers(0, 99, n)
    top = sub // 10  # subclasses 10k..10k+9 share class k and its mean
    means = rng.normal(size=(99, 48)) + np.repeat(rng.normal(size=(10, 48)) * 1.5, 10, axis=0)[:99]
    X = (means[sub] + rng.normal(size=(n, 48)) * 1.6) @ rng.normal(size=(48, d)) / 7 + rng.normal(size=(n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    tasks = [TaskSpec(name="top", classes=tuple(map(str, range(10)))), TaskSpec(name="sub", classes=tuple(map(str, range(99))))]
    parts = {"train": np.arange(n) % 10 < 8, "val": np.arange(n) % 10 == 8, "test": np.arange(n) % 10 == 9}
    return X.astype(np.float32), {"top": top, "sub": sub}, tasks, parts


def test_head_trains_in_budget_and_baselines_cost_no_more_than_the_head():
    X, Y, tasks, p = _catalogue()
    tr, va = p["train"], p["val"]
    start = time.process_time()
    est = MultiTaskHeads(tasks, hidden=512, depth=1, dropout=0.2, lr=1e-3, max_epochs=200, patience=12).fit(
        X[tr], {k: v[tr] for k, v in Y.items()}, X[va], {k: v[va] for k, v in Y.items()})
    head_cpu = time.process_time() - start
    assert len(est.history_) < 80  # early stopping on the validation metric ends training
    assert head_cpu < 40, f"head took {head_cpu:.1f} CPU s (about 6 expected)"
    start = time.process_time()
    out = baselines(tasks, X, Y, p)
    base_cpu = time.process_time() - start
    assert out["sklearn"]["top"]["macro_f1"] > 0.3
    assert base_cpu <= head_cpu * 1.25, f"baselines {base_cpu:.1f} CPU s vs head {head_cpu:.1f}"
