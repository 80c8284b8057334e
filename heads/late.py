"""Late (decision-level) fusion: one classifier per modality, probabilities combined with
learned simplex weights renormalised over the modalities a row has.

Why: when one modality is often missing or noisy, combining decisions degrades gracefully
(a row without an image is scored by the text model alone), and the learned weights say how
much each modality is trusted. Weights are fitted on a held-out slice of the training rows
(minimising log loss), then each per-modality model is refitted on all rows.

Fitted attributes: ``modalities_``, ``classes_``, ``models_`` (scikit-learn
LogisticRegression per modality), ``weights_`` (M,).
"""
from __future__ import annotations

import numpy as np

from fusion.base import check_blocks
from fusion.simplex import row_weights, softmax, torch_row_weights
from store.errors import NotFittedError, SchemaMismatch


class LateFusionClassifier:
    def __init__(self, C: float = 1.0, holdout: float = 0.2, epochs: int = 300, lr: float = 0.05, seed: int = 0):
        self.C = C
        self.holdout = holdout
        self.epochs = epochs
        self.lr = lr
        self.seed = seed

    def _fit_models(self, blocks, masks, y, rows) -> dict:
        from sklearn.linear_model import LogisticRegression

        models = {}
        for m in self.modalities_:
            keep = rows & masks[m]
            if len(np.unique(y[keep])) < 2:
                raise SchemaMismatch(f"modality {m!r} has fewer than 2 classes among its labelled rows",
                                     fix="late fusion needs labelled rows for every modality")
            models[m] = LogisticRegression(C=self.C, max_iter=2000).fit(blocks[m][keep], y[keep])
        return models

    def _probas(self, models, blocks, masks) -> np.ndarray:
        """(n, M, classes) with zeros where a modality is missing."""
        n = len(next(iter(blocks.values())))
        out = np.zeros((n, len(self.modalities_), len(self.classes_)), np.float32)
        for k, m in enumerate(self.modalities_):
            rows = masks[m]
            if rows.any():
                p = models[m].predict_proba(blocks[m][rows])
                cols = np.searchsorted(self.classes_, models[m].classes_)
                out[np.flatnonzero(rows)[:, None], k, cols[None, :]] = p
        return out

    def fit(self, blocks, masks=None, y=None) -> "LateFusionClassifier":
        import torch

        n, masks = check_blocks(blocks, masks)
        y = np.asarray(y)
        self.modalities_ = list(blocks)
        labelled = y >= 0 if y.dtype.kind in "iu" else np.array([v is not None for v in y])
        self.classes_ = np.unique(y[labelled])
        rng = np.random.default_rng(self.seed)
        held = labelled & (rng.random(n) < self.holdout)
        probe = self._fit_models(blocks, masks, y, labelled & ~held)
        P = torch.from_numpy(self._probas(probe, blocks, masks)[held])
        M = torch.from_numpy(np.stack([masks[m] for m in self.modalities_], axis=1)[held].astype(np.float32))
        target = torch.from_numpy(np.searchsorted(self.classes_, y[held]))
        theta = torch.zeros(len(self.modalities_), requires_grad=True)
        opt = torch.optim.Adam([theta], lr=self.lr)
        for _ in range(self.epochs):
            w = torch_row_weights(theta, M)
            p = (w[:, :, None] * P).sum(dim=1).clamp_min(1e-7)
            loss = torch.nn.functional.nll_loss(p.log(), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
        self.weights_ = softmax(theta.detach().numpy()).astype(np.float32)
        self.models_ = self._fit_models(blocks, masks, y, labelled)
        return self

    def predict_proba(self, blocks, masks=None) -> np.ndarray:
        if not hasattr(self, "models_"):
            raise NotFittedError("LateFusionClassifier is not fitted yet", fix="call fit(blocks, masks, y) first")
        _, masks = check_blocks(blocks, masks, self.modalities_)
        P = self._probas(self.models_, blocks, masks)
        w = row_weights(self.weights_, np.stack([masks[m] for m in self.modalities_], axis=1))
        return (w[:, :, None] * P).sum(axis=1)

    def predict(self, blocks, masks=None) -> np.ndarray:
        return self.classes_[self.predict_proba(blocks, masks).argmax(axis=1)]
