"""Per-task metrics, computed only on rows that have the task's label.

``macro_f1`` is a numpy bincount version of scikit-learn's ``f1_score(average="macro",
zero_division=0)`` over the classes present in the true *or* predicted labels (tested to
agree): the trainer scores the validation split every epoch, and sklearn's input checks
cost more than the metric itself there.
"""
from __future__ import annotations

import numpy as np

from heads.tasks import MISSING, TaskSpec


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro-F1 over the labels seen in ``y_true`` ∪ ``y_pred`` (int arrays, no MISSING)."""
    if len(y_true) == 0:
        return float("nan")
    k = int(max(y_true.max(), y_pred.max())) + 1
    tp = np.bincount(y_true[y_true == y_pred], minlength=k)
    support, predicted = np.bincount(y_true, minlength=k), np.bincount(y_pred, minlength=k)
    seen = (support + predicted) > 0
    f1 = np.divide(2 * tp, support + predicted, out=np.zeros(k), where=seen)
    return float(f1[seen].mean())


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    keep = y_true != MISSING
    if not keep.any():
        return {"accuracy": float("nan"), "macro_f1": float("nan"), "n": 0}
    t, p = np.asarray(y_true[keep], np.int64), np.asarray(y_pred[keep], np.int64)
    return {"accuracy": float((t == p).mean()), "macro_f1": macro_f1(t, p), "n": int(keep.sum())}


def task_metrics(task: TaskSpec, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """multiclass: accuracy, macro-F1; multilabel: micro- and macro-F1; regression: RMSE
    (in the label's own units)."""
    if task.kind == "multiclass":
        return classification_metrics(y_true, y_pred)
    keep = task.labelled(y_true)
    if not keep.any():
        return {"n": 0}
    if task.kind == "multilabel":
        t, p = y_true[keep].astype(bool), np.asarray(y_pred)[keep].astype(bool)
        tp, fp, fn = (t & p).sum(0), (~t & p).sum(0), (t & ~p).sum(0)
        denom = 2 * tp + fp + fn
        per_class = np.divide(2 * tp, denom, out=np.zeros(len(tp)), where=denom > 0)
        micro = 2 * tp.sum() / max(2 * tp.sum() + fp.sum() + fn.sum(), 1)
        return {"micro_f1": float(micro), "macro_f1": float(per_class.mean()), "n": int(keep.sum())}
    err = np.asarray(y_pred, np.float64)[keep] - (y_true[keep] * task.std + task.mean)
    return {"rmse": float(np.sqrt(np.mean(err ** 2))), "n": int(keep.sum())}


def task_score(task: TaskSpec, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """One higher-is-better number per task: macro-F1 for classifiers, R² for regression
    (RMSE has the label's units, so it cannot be averaged with F1). What early stopping, the
    settings search and the baselines' C choice maximise; NaN when no row is labelled."""
    if task.kind != "regression":
        m = task_metrics(task, y_true, y_pred)
        return float(m["macro_f1"]) if m.get("n", 0) else float("nan")
    keep = task.labelled(y_true)
    if not keep.any():
        return float("nan")
    truth = y_true[keep].astype(np.float64) * task.std + task.mean
    var = float(np.var(truth))
    mse = float(np.mean((np.asarray(y_pred, np.float64)[keep] - truth) ** 2))
    return 1 - mse / var if var > 0 else -mse
