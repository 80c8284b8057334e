"""Weighted-sum fusion on a common dimension, with weights on the simplex.

Each block is (optionally) reduced to a common dimension by PCA fitted on the rows that
have it, L2-normalised, and summed with per-modality weights renormalised over the
modalities a row has. Weights are fixed, or learned from task labels: ``softmax(theta)``
and a linear classifier on the fused vector are trained jointly with cross-entropy, so a
block that carries no label signal loses its weight. With an open_clip model both blocks
already share one space and dimension; no projection is needed.

Fitted attributes: ``modalities_``, ``dims_``, ``dim_``, ``weights_`` (M,), and with a
projection ``mean_``/``components_`` per modality.
"""
from __future__ import annotations

import numpy as np

from fusion.base import FUSIONS, Blocks, Fusion, Masks, check_blocks
from fusion.concat import l2_normalize
from fusion.labels import as_tasks
from fusion.simplex import row_weights, softmax, torch_row_weights
from store.errors import ConfigError, SchemaMismatch


def weighted_fuse(blocks: Blocks, masks: Masks, order: list[str], weights: np.ndarray,
                  mean: dict | None = None, components: dict | None = None) -> np.ndarray:
    """Pure transform: Σ_m w_m(row) · normalise(project(x_m))."""
    m_arr = np.stack([masks[m] for m in order], axis=1)
    w = row_weights(weights, m_arr)
    out = None
    for k, m in enumerate(order):
        x = np.asarray(blocks[m], dtype=np.float32)
        if components is not None:
            x = (x - mean[m]) @ components[m].T
        x = l2_normalize(x) * w[:, k:k + 1]
        out = x if out is None else out + x
    return out.astype(np.float32, copy=False)


@FUSIONS.register("weighted")
class WeightedFusion(Fusion):
    """Parameters
    ----------
    weights : fixed weights per modality (any positive numbers; normalised), or None.
    learn : learn the weights from ``y`` in ``fit`` (needs labels).
    dim : common dimension; None = the blocks' own when equal, else the smallest.
    epochs, lr, seed : the weight-learning optimiser.
    """

    method = "weighted"
    _params = ("weights", "learn", "dim", "epochs", "lr", "seed")

    def __init__(self, weights=None, learn: bool = True, dim: int | None = None, epochs: int = 300,
                 lr: float = 0.05, seed: int = 0):
        self.weights = weights
        self.learn = learn
        self.dim = dim
        self.epochs = epochs
        self.lr = lr
        self.seed = seed

    def fit(self, blocks: Blocks, masks: Masks | None = None, y=None) -> "WeightedFusion":
        n, masks = check_blocks(blocks, masks)
        self.modalities_ = list(blocks)
        self.dims_ = {m: int(blocks[m].shape[1]) for m in self.modalities_}
        same = len(set(self.dims_.values())) == 1
        self.dim_ = int(self.dim or (next(iter(self.dims_.values())) if same else min(self.dims_.values())))
        if same and self.dim is None:
            self.mean_ = self.components_ = None
        else:
            from sklearn.decomposition import PCA

            self.mean_, self.components_ = {}, {}
            for m in self.modalities_:
                x = np.asarray(blocks[m], np.float32)[masks[m]]
                if len(x) < self.dim_ or self.dims_[m] < self.dim_:
                    raise SchemaMismatch(f"block {m!r} has {len(x)} rows × {self.dims_[m]} dims, too few for a "
                                         f"{self.dim_}-dim projection", fix="lower dim, or fit on more rows")
                pca = PCA(n_components=self.dim_, random_state=self.seed).fit(x)
                self.mean_[m], self.components_[m] = pca.mean_.astype(np.float32), pca.components_.astype(np.float32)
        if self.learn and y is not None:
            self.weights_ = self._learn(blocks, masks, as_tasks(y, n))
        elif self.weights is not None:
            w = np.asarray(self.weights, dtype=np.float64)
            if w.shape != (len(self.modalities_),) or (w < 0).any() or w.sum() <= 0:
                raise ConfigError(f"weights {self.weights} must be {len(self.modalities_)} non-negative numbers",
                                  fix=f"one weight per modality in {self.modalities_}")
            self.weights_ = (w / w.sum()).astype(np.float32)
        elif self.learn:
            raise ConfigError("weighted fusion with learn=True needs labels in fit(blocks, masks, y)",
                              fix="pass y, or give fixed weights with learn=False")
        else:
            self.weights_ = np.full(len(self.modalities_), 1 / len(self.modalities_), np.float32)
        return self

    def _learn(self, blocks, masks, tasks: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        torch.manual_seed(self.seed)
        xs = []
        for m in self.modalities_:
            x = np.asarray(blocks[m], np.float32)
            if self.components_ is not None:
                x = (x - self.mean_[m]) @ self.components_[m].T
            xs.append(torch.from_numpy(l2_normalize(x)))
        mask = torch.from_numpy(np.stack([masks[m] for m in self.modalities_], axis=1).astype(np.float32))
        theta = torch.zeros(len(self.modalities_), requires_grad=True)
        heads = {t: torch.nn.Linear(self.dim_, int(y.max()) + 1) for t, y in tasks.items() if (y >= 0).any()}
        targets = {t: torch.from_numpy(tasks[t]) for t in heads}
        params = [theta] + [p for h in heads.values() for p in h.parameters()]
        opt = torch.optim.Adam(params, lr=self.lr)
        for _ in range(self.epochs):
            w = torch_row_weights(theta, mask)
            z = sum(w[:, k:k + 1] * xs[k] for k in range(len(xs)))
            loss = sum(torch.nn.functional.cross_entropy(h(z)[targets[t] >= 0], targets[t][targets[t] >= 0])
                       for t, h in heads.items())
            opt.zero_grad()
            loss.backward()
            opt.step()
        return softmax(theta.detach().numpy()).astype(np.float32)

    def transform(self, blocks: Blocks, masks: Masks | None = None) -> np.ndarray:
        masks = self._validated(blocks, masks)
        return weighted_fuse(blocks, masks, self.modalities_, self.weights_, self.mean_, self.components_)

    def _fitted_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"weights": self.weights_}
        if self.components_ is not None:
            arrays.update({f"mean.{m}": v for m, v in self.mean_.items()})
            arrays.update({f"components.{m}": v for m, v in self.components_.items()})
        return arrays

    def _fitted_meta(self) -> dict:
        return {"modalities": self.modalities_, "dims": self.dims_, "dim": self.dim_,
                "projected": self.components_ is not None}

    def _set_fitted(self, arrays, meta) -> None:
        self.modalities_, self.dims_, self.dim_ = meta["modalities"], meta["dims"], meta["dim"]
        self.weights_ = arrays["weights"]
        if meta["projected"]:
            self.mean_ = {m: arrays[f"mean.{m}"] for m in self.modalities_}
            self.components_ = {m: arrays[f"components.{m}"] for m in self.modalities_}
        else:
            self.mean_ = self.components_ = None
