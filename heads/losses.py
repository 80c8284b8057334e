"""Per-task losses with missing labels masked, and class weights for macro-F1.

Why class weights: cross-entropy on imbalanced classes optimises accuracy, so rare classes
are sacrificed; macro-F1 counts every class alike. ``"balanced"`` reweights each class by
n / (K · n_c) (scikit-learn's rule), ``"sqrt"`` by its square root (a milder correction),
``None`` not at all. For multi-label tasks the same rule sets BCE's ``pos_weight`` per class.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from heads.tasks import MISSING, TaskSpec
from store.errors import ConfigError

CLASS_WEIGHTS = (None, "balanced", "sqrt")


def class_weights(task: TaskSpec, y: np.ndarray, mode: str | None) -> torch.Tensor | None:
    """(C,) float32 weights (multiclass) or pos_weight (multilabel) from training labels."""
    if mode not in CLASS_WEIGHTS:
        raise ConfigError(f"class_weight {mode!r} unknown", fix="use \"balanced\", \"sqrt\" or none")
    if mode is None or task.kind == "regression":
        return None
    keep = task.labelled(y)
    if task.kind == "multiclass":
        counts = np.bincount(y[keep], minlength=task.n_outputs).astype(np.float64)
        present = counts > 0
        w = np.ones(task.n_outputs)
        w[present] = keep.sum() / (present.sum() * counts[present])
    else:
        pos = np.nansum(y[keep], axis=0).astype(np.float64)
        w = np.clip((keep.sum() - pos) / np.maximum(pos, 1), 1.0, 100.0)
    return torch.from_numpy((np.sqrt(w) if mode == "sqrt" else w).astype(np.float32))


def task_losses(tasks: list[TaskSpec], out: dict[str, torch.Tensor], y: dict[str, torch.Tensor],
                weights: dict[str, torch.Tensor | None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(T,)`` losses over the rows that have each task's label, and a ``(T,)`` bool tensor
    saying which tasks had any label here (a task without one gets a zero loss, no gradient)."""
    losses, present = [], []
    weights = weights or {}
    for t in tasks:
        target, pred = y[t.name], out[t.name]
        keep = target != MISSING if t.kind == "multiclass" else ~torch.isnan(target if target.ndim == 1 else target[:, 0])
        present.append(bool(keep.any()))
        w = weights.get(t.name)
        if not present[-1]:
            losses.append(pred.sum() * 0.0)
        elif t.kind == "multiclass":
            losses.append(nn.functional.cross_entropy(pred[keep], target[keep], weight=w))
        elif t.kind == "multilabel":
            losses.append(nn.functional.binary_cross_entropy_with_logits(pred[keep], target[keep], pos_weight=w))
        else:
            losses.append(nn.functional.mse_loss(pred[keep, 0], target[keep]))
    return torch.stack(losses), torch.tensor(present)
