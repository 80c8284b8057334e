"""Baselines a head is printed beside, on the same features and split (pure: arrays in).

Why these: a multi-task MLP earns its keep only if it beats (a) a linear model per task
whose regularisation was tuned as carefully as the head's settings, and (b) the same
network trained on one task at a time. Both are scored on the test rows the head is.

- ``sklearn``: per task, scikit-learn ``LogisticRegression`` (multinomial, lbfgs) on
  standardised features, with ``C`` chosen on the validation split from ``Cs``;
  one-vs-rest LogisticRegression for multi-label tasks; ``Ridge`` with alpha = 1/C for
  regression. The C path is fitted from small C to large with warm starts (each fit
  starts from the previous solution) and stops once two larger Cs in a row do not beat the
  best, in float32 on one BLAS thread: this is what keeps the search cheaper than the head.
- ``single_task``: the head's own estimator with only that task (optional: it costs about
  one head per task).

Each entry holds the test metrics, the chosen ``C``, the validation score per C and the fit
time in seconds, so a report can say what the comparison cost.
"""
from __future__ import annotations

import time
import warnings

import numpy as np

from heads.metrics import task_metrics, task_score
from heads.tasks import TaskSpec

DEFAULT_CS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def _standardise(X: np.ndarray, rows: np.ndarray) -> np.ndarray:
    mean, std = X[rows].mean(axis=0), X[rows].std(axis=0)
    return ((X - mean) / np.where(std < 1e-6, 1.0, std)).astype(np.float32)


def _model(task: TaskSpec, C: float):
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.multiclass import OneVsRestClassifier

    if task.kind == "regression":
        return Ridge(alpha=1.0 / C)
    lr = LogisticRegression(C=C, max_iter=100, tol=1e-4, warm_start=True)
    return OneVsRestClassifier(lr) if task.kind == "multilabel" else lr


def _decode(task: TaskSpec, pred: np.ndarray) -> np.ndarray:
    return pred * task.std + task.mean if task.kind == "regression" else pred


def logistic_baseline(task: TaskSpec, X: np.ndarray, y: np.ndarray, train: np.ndarray, val: np.ndarray,
                      test: np.ndarray, Cs=DEFAULT_CS) -> dict:
    """Fit the task's linear model along ``Cs`` on ``train`` rows (boolean masks), keep the C
    with the best validation score (macro-F1 / R²), and report it on ``test`` rows."""
    from sklearn.exceptions import ConvergenceWarning

    start = time.perf_counter()
    keep = train & task.labelled(y)
    yt = y[keep].astype(int) if task.kind == "multilabel" else y[keep]
    model, best, scores, worse = _model(task, Cs[0]), None, {}, 0
    for C in sorted(Cs):
        if task.kind == "regression":
            model = _model(task, C)
        elif task.kind == "multilabel":
            model.estimator.C = C  # OneVsRest refits clones; warm starts do not carry over
        else:
            model.C = C
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X[keep], yt)
        val_pred = _decode(task, model.predict(X[val]))
        scores[C] = task_score(task, y[val], val_pred)
        if best is None or scores[C] > best[0] + 1e-9:
            best, worse = (scores[C], C, _decode(task, model.predict(X[test]))), 0
        else:
            worse += 1
            if worse >= 2:
                break  # two larger Cs without a gain: past the peak, larger C only fits the training rows harder
    return {**task_metrics(task, y[test], best[2]), "C": best[1], "val_scores": scores,
            "fit_s": round(time.perf_counter() - start, 3)}


def baselines(tasks: list[TaskSpec], X: np.ndarray, Y: dict[str, np.ndarray], parts: dict[str, np.ndarray],
              single_task: bool = False, head_params: dict | None = None, Cs=DEFAULT_CS, threads: int | None = 1,
              logistic: bool = True) -> dict:
    """``{"sklearn": {task: metrics+C+fit_s}, "single_task": {task: metrics+fit_s}}`` (each
    only when asked for: ``logistic``, ``single_task``).

    ``parts`` holds boolean ``train``/``val``/``test`` masks; ``head_params`` are the
    :class:`~heads.estimator.MultiTaskHeads` keyword arguments for the single-task heads;
    ``threads`` caps BLAS threads (1, like the head: see :func:`heads.estimator.torch_threads`)."""
    from threadpoolctl import threadpool_limits

    tr, va, te = parts["train"], parts["val"], parts["test"]
    out: dict = {}
    if logistic:
        Xs = _standardise(np.asarray(X, np.float32), tr)
        with threadpool_limits(threads):
            out["sklearn"] = {t.name: logistic_baseline(t, Xs, Y[t.name], tr, va, te, Cs) for t in tasks}
    if single_task:
        from heads.estimator import MultiTaskHeads

        out["single_task"] = {}
        for t in tasks:
            start = time.perf_counter()
            est = MultiTaskHeads([t], **{**(head_params or {}), "affinity_every": 0}).fit(
                X[tr], {t.name: Y[t.name][tr]}, X[va], {t.name: Y[t.name][va]})
            out["single_task"][t.name] = {**task_metrics(t, Y[t.name][te], est.predict(X[te])[t.name]),
                                          "fit_s": round(time.perf_counter() - start, 3)}
    return out
