"""Weighted fusion: per-modality weights on the simplex, fixed or learned, never worse than concat.

Two ways to combine the L2-normalised blocks (``combine``):

- ``"concat"`` (default when no ``dim`` is given): block m is scaled by √(M·w_m) and the
  blocks are concatenated, so a cosine between two fused rows is Σ_m w_m · cos_m — the
  weights are each block's share of the similarity — and equal weights give exactly
  :class:`~fusion.concat.ConcatFusion`'s output. Nothing is lost, whatever the weights.
- ``"sum"`` (when ``dim`` is given): blocks are reduced to a common ``dim`` by PCA (fitted on
  the rows that have them) and summed with weights renormalised over the modalities a row
  has. Right for blocks that share one space (open_clip's towers); for unrelated encoders
  the sum collides unrelated coordinates, which is why it is not the default.

Learning (``learn=True`` with labels ``y``): a deterministic ``val_fraction`` of the fit rows
is held out; every weight vector on a simplex grid (``grid_step``) is scored on the held-out
rows and the best is the learned weight. In ``"concat"`` mode the grid keeps every block
above zero and the score is a cosine k-NN vote (:func:`fusion.guard.knn_scores`): a head
standardises its inputs, so there the weights shape similarity only and a head on the fused
table equals the concat head; in ``"sum"`` mode the score is a ridge probe. Learned weights
are kept only if they beat concat by ``min_gain`` validation macro-F1; otherwise the fusion
falls back to concat (equal weights in ``"concat"`` mode) and ``fit_report_`` says why.
(The old joint softmax-weights + linear-classifier training put 0.997 on one block of a real
catalogue and lost 0.19 macro-F1 to concat: the grid is scored on the metric itself.)

Fitted attributes: ``modalities_``, ``dims_``, ``dim_``, ``combine_``, ``weights_`` (M,) as
applied, ``fallback_`` (the transform is plain concat), ``fit_report_``, and in ``"sum"``
mode with a projection ``mean_``/``components_`` per modality.
"""
from __future__ import annotations

import itertools

import numpy as np

from fusion.base import FUSIONS, Blocks, Fusion, Masks, check_blocks
from fusion.concat import l2_normalize
from fusion.guard import holdout, knn_scores, new_report, note_shares, probe_scores
from fusion.labels import as_tasks
from fusion.simplex import row_weights
from store.errors import ConfigError, SchemaMismatch

COMBINES = ("auto", "concat", "sum")


def simplex_grid(m: int, step: float) -> np.ndarray:
    """All weight vectors of ``m`` non-negative multiples of ``step`` that sum to 1 (at most
    ~300: the step is coarsened for many blocks)."""
    k = max(1, int(round(1 / step)))
    while len(list(itertools.combinations(range(k + m - 1), m - 1))) > 300:
        k = max(1, k // 2)
    out = []
    for bars in itertools.combinations(range(k + m - 1), m - 1):
        edges = (-1, *bars, k + m - 1)
        out.append([edges[i + 1] - edges[i] - 1 for i in range(m)])
    return np.asarray(out, np.float64) / k


def weighted_fuse(blocks: Blocks, masks: Masks, order: list[str], weights: np.ndarray,
                  mean: dict | None = None, components: dict | None = None, combine: str = "sum") -> np.ndarray:
    """Pure transform. ``"sum"``: Σ_m w_m(row) · normalise(project(x_m)), weights renormalised
    over a row's modalities; ``"concat"``: [√(M·w_m) · normalise(x_m)]_m, absent blocks zero."""
    w_all = np.asarray(weights, np.float32)
    if combine == "concat":
        n = len(blocks[order[0]])
        out = np.zeros((n, sum(blocks[m].shape[1] for m in order)), np.float32)
        col = 0
        for k, m in enumerate(order):
            x = np.asarray(blocks[m], dtype=np.float32)
            out[:, col:col + x.shape[1]] = l2_normalize(x) * np.sqrt(len(order) * w_all[k]) * masks[m][:, None]
            col += x.shape[1]
        return out
    w = row_weights(w_all, np.stack([masks[m] for m in order], axis=1))
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
    weights : fixed weights per modality (any non-negative numbers; normalised), or None.
    learn : learn the weights from ``y`` in ``fit`` (needs labels).
    dim : common dimension for ``combine="sum"`` (PCA); None = the blocks' own when equal.
    combine : "auto" (sum if ``dim`` is set, else concat), "concat" or "sum".
    grid_step : spacing of the simplex grid the learned weights are chosen from.
    val_fraction, min_gain, seed : the validation split, the gain over concat required to keep
        learned weights, and the split's seed.
    """

    method = "weighted"
    _params = ("weights", "learn", "dim", "combine", "grid_step", "val_fraction", "min_gain", "seed")

    def __init__(self, weights=None, learn: bool = True, dim: int | None = None, combine: str = "auto",
                 grid_step: float = 0.1, val_fraction: float = 0.2, min_gain: float = 0.01, seed: int = 0):
        self.weights = weights
        self.learn = learn
        self.dim = dim
        self.combine = combine
        self.grid_step = grid_step
        self.val_fraction = val_fraction
        self.min_gain = min_gain
        self.seed = seed

    def fit(self, blocks: Blocks, masks: Masks | None = None, y=None) -> "WeightedFusion":
        n, masks = check_blocks(blocks, masks)
        if self.combine not in COMBINES:
            raise ConfigError(f"combine {self.combine!r} unknown", fix=f"use one of {list(COMBINES)}")
        self.modalities_ = list(blocks)
        self.dims_ = {m: int(blocks[m].shape[1]) for m in self.modalities_}
        self.combine_ = "sum" if self.combine == "sum" or (self.combine == "auto" and self.dim is not None) else "concat"
        self.fallback_ = False
        self.mean_ = self.components_ = None
        if self.combine_ == "sum":
            self._fit_projection(blocks, masks)
        else:
            self.dim_ = sum(self.dims_.values())
        self.fit_report_ = new_report(self.method, n, self.dims_, 0)
        self.fit_report_["combine"] = self.combine_
        equal = np.full(len(self.modalities_), 1 / len(self.modalities_), np.float32)
        if self.learn and y is not None:
            self.weights_ = self._learn(blocks, masks, as_tasks(y, n))
        elif self.weights is not None:
            w = np.asarray(self.weights, dtype=np.float64)
            if w.shape != (len(self.modalities_),) or (w < 0).any() or w.sum() <= 0:
                raise ConfigError(f"weights {self.weights} must be {len(self.modalities_)} non-negative numbers",
                                  fix=f"one weight per modality in {self.modalities_}")
            self.weights_ = (w / w.sum()).astype(np.float32)
            self.fit_report_["reason"] = "fixed weights (nothing learned)"
        elif self.learn:
            raise ConfigError("weighted fusion with learn=True needs labels in fit(blocks, masks, y)",
                              fix="pass y, or give fixed weights with learn=False")
        else:
            self.weights_ = equal
            self.fit_report_["reason"] = "equal weights (nothing learned)"
        if self.fallback_:
            self.dim_ = sum(self.dims_.values())
        note_shares(self.fit_report_, self.modalities_, self.weights_)
        return self

    def _fit_projection(self, blocks, masks) -> None:
        same = len(set(self.dims_.values())) == 1
        self.dim_ = int(self.dim or (next(iter(self.dims_.values())) if same else min(self.dims_.values())))
        if same and self.dim is None:
            return
        from sklearn.decomposition import PCA

        self.mean_, self.components_ = {}, {}
        for m in self.modalities_:
            x = np.asarray(blocks[m], np.float32)[masks[m]]
            if len(x) < self.dim_ or self.dims_[m] < self.dim_:
                raise SchemaMismatch(f"block {m!r} has {len(x)} rows × {self.dims_[m]} dims, too few for a "
                                     f"{self.dim_}-dim projection", fix="lower dim, or fit on more rows")
            pca = PCA(n_components=self.dim_, random_state=self.seed).fit(x)
            self.mean_[m], self.components_[m] = pca.mean_.astype(np.float32), pca.components_.astype(np.float32)

    def _fuse(self, blocks, masks, weights) -> np.ndarray:
        return weighted_fuse(blocks, masks, self.modalities_, weights, self.mean_, self.components_, self.combine_)

    def _learn(self, blocks, masks, tasks: dict[str, np.ndarray]) -> np.ndarray:
        tasks = {t: v for t, v in tasks.items() if (v >= 0).any()}
        fit, val = holdout(len(next(iter(blocks.values()))), self.val_fraction, self.seed)
        # concat mode: every block keeps a share, so a head (which standardises its inputs) sees all
        # of them and a weight only shapes similarity, scored by k-NN; sum mode changes what a head
        # sees, scored by the ridge probe, and may drop a block
        concat = self.combine_ == "concat"
        grid = simplex_grid(len(self.modalities_), self.grid_step)
        if concat and len(self.modalities_) > 1:
            grid = grid[(grid > 0).all(axis=1)]
        probe = knn_scores if concat else probe_scores
        equal = np.full(len(self.modalities_), 1 / len(self.modalities_))
        scored = []
        for w in grid:
            score = probe(self._fuse(blocks, masks, w), tasks, fit, val).get("mean", float("nan"))
            scored.append((score, -float(np.abs(w - equal).sum()), w))  # ties: the weights nearer equal
        scored = [s for s in scored if s[0] == s[0]]
        best = max(scored, key=lambda s: (s[0], s[1]))[2] if scored else equal
        self.fit_report_["learned"] = {"weights": {m: round(float(v), 4) for m, v in zip(self.modalities_, best)},
                                       "grid_points": len(grid)}
        fell_back = self._against_concat(self._fuse(blocks, masks, best), blocks, masks, tasks, fit, val, self.min_gain,
                                         knn=concat)
        if not fell_back:
            return best.astype(np.float32)
        self.fallback_ = not concat  # in concat mode, equal weights *are* concat
        return equal.astype(np.float32)

    def transform(self, blocks: Blocks, masks: Masks | None = None) -> np.ndarray:
        masks = self._validated(blocks, masks)
        if self.fallback_:
            return self._concat(blocks, masks)
        return self._fuse(blocks, masks, self.weights_)

    def _fitted_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"weights": self.weights_}
        if self.components_ is not None:
            arrays.update({f"mean.{m}": v for m, v in self.mean_.items()})
            arrays.update({f"components.{m}": v for m, v in self.components_.items()})
        return arrays

    def _fitted_meta(self) -> dict:
        return {"modalities": self.modalities_, "dims": self.dims_, "dim": self.dim_, "combine": self.combine_,
                "fallback": self.fallback_, "projected": self.components_ is not None}

    def _set_fitted(self, arrays, meta) -> None:
        self.modalities_, self.dims_, self.dim_ = meta["modalities"], meta["dims"], meta["dim"]
        self.combine_, self.fallback_ = meta.get("combine", "sum"), meta.get("fallback", False)
        self.weights_ = arrays["weights"]
        if meta["projected"]:
            self.mean_ = {m: arrays[f"mean.{m}"] for m in self.modalities_}
            self.components_ = {m: arrays[f"components.{m}"] for m in self.modalities_}
        else:
            self.mean_ = self.components_ = None
