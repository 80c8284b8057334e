"""Per-task metrics, computed only on rows that have the task's label."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from heads.tasks import MISSING


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    keep = y_true != MISSING
    if not keep.any():
        return {"accuracy": float("nan"), "macro_f1": float("nan"), "n": 0}
    t, p = y_true[keep], y_pred[keep]
    return {"accuracy": float(accuracy_score(t, p)),
            "macro_f1": float(f1_score(t, p, average="macro", zero_division=0)),
            "n": int(keep.sum())}
