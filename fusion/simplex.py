"""Weights on the simplex, renormalised over the modalities a row actually has.

Why softmax: the weights stay positive and sum to one for any parameter value, so gradient
descent needs no projection step. Used by weighted (feature-level) fusion and by late
(decision-level) fusion in :mod:`heads.late`.
"""
from __future__ import annotations

import numpy as np


def row_weights(weights: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """``weights`` (M,) on the simplex, ``masks`` (n, M) bool → (n, M): each row's weights
    over its present modalities, renormalised to sum to one (0 where none is present)."""
    w = masks.astype(np.float32) * np.asarray(weights, dtype=np.float32)[None, :]
    total = w.sum(axis=1, keepdims=True)
    return np.divide(w, total, out=np.zeros_like(w), where=total > 0)


def softmax(theta: np.ndarray) -> np.ndarray:
    z = np.exp(theta - theta.max())
    return z / z.sum()


def torch_row_weights(theta, masks):
    """Differentiable :func:`row_weights` with ``softmax(theta)`` as the weights."""
    import torch

    w = torch.softmax(theta, dim=0)[None, :] * masks
    return w / w.sum(dim=1, keepdim=True).clamp_min(1e-12)
