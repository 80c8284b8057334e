"""Per-task metrics, computed only on rows that have the task's label."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from heads.tasks import MISSING, TaskSpec


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    keep = y_true != MISSING
    if not keep.any():
        return {"accuracy": float("nan"), "macro_f1": float("nan"), "n": 0}
    t, p = y_true[keep], y_pred[keep]
    return {"accuracy": float(accuracy_score(t, p)),
            "macro_f1": float(f1_score(t, p, average="macro", zero_division=0)),
            "n": int(keep.sum())}


def task_metrics(task: TaskSpec, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """multiclass: accuracy, macro-F1; multilabel: micro- and macro-F1; regression: RMSE
    (in the label's own units)."""
    if task.kind == "multiclass":
        return classification_metrics(y_true, y_pred)
    keep = task.labelled(y_true)
    if not keep.any():
        return {"n": 0}
    if task.kind == "multilabel":
        t, p = y_true[keep].astype(int), np.asarray(y_pred)[keep].astype(int)
        return {"micro_f1": float(f1_score(t, p, average="micro", zero_division=0)),
                "macro_f1": float(f1_score(t, p, average="macro", zero_division=0)), "n": int(keep.sum())}
    err = (np.asarray(y_pred, np.float64)[keep] - (y_true[keep] * task.std + task.mean))
    return {"rmse": float(np.sqrt(np.mean(err ** 2))), "n": int(keep.sum())}
