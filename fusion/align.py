"""Align two encoders' spaces with CCA or PLS (scikit-learn), then fuse in the common space.

Why: two encoders that were never trained together (MiniLM text, HOG images) put related
items in unrelated coordinates, so cross-modal retrieval between their raw vectors is at
chance. CCA finds the projections of each block that are maximally correlated on paired
rows; PLS maximises covariance instead (steadier when blocks are wide and rows few).
An open_clip model needs none of this: its image and text towers already share a space
(see :class:`SharedSpaceFusion`).

Fitted attributes: ``modalities_`` (two), ``dims_``, ``dim_`` (= n_components), and per
modality ``mean_``, ``std_``, ``rotation_`` so that ``latent = (x - mean) / std @ rotation``.
"""
from __future__ import annotations

import numpy as np

from fusion.base import FUSIONS, Blocks, Fusion, Masks, check_blocks, check_is_fitted
from fusion.concat import l2_normalize
from fusion.simplex import row_weights
from store.errors import ConfigError, SchemaMismatch


def masked_mean(latents: list[np.ndarray], masks: np.ndarray) -> np.ndarray:
    """Average of L2-normalised per-modality latents over the modalities each row has."""
    w = row_weights(np.ones(len(latents), np.float32), masks)
    return sum(w[:, k:k + 1] * l2_normalize(z) for k, z in enumerate(latents)).astype(np.float32)


class _TwoBlockFusion(Fusion):
    def _check_two(self, blocks: Blocks) -> None:
        if len(blocks) != 2:
            raise ConfigError(f"{self.method} fusion aligns exactly two modalities, got {sorted(blocks)}",
                              fix="give two inputs, e.g. inputs = [\"text\", \"image\"]")

    def project(self, modality: str, x: np.ndarray) -> np.ndarray:
        """One modality's rows in the common space (for cross-modal retrieval)."""
        check_is_fitted(self)
        self._check_width(modality, x)
        return self._project(modality, np.asarray(x, np.float32))

    def transform(self, blocks: Blocks, masks: Masks | None = None) -> np.ndarray:
        masks = self._validated(blocks, masks)
        latents = [self.project(m, blocks[m]) for m in self.modalities_]
        return masked_mean(latents, np.stack([masks[m] for m in self.modalities_], axis=1))


class AlignFusion(_TwoBlockFusion):
    """Parameters
    ----------
    n_components : size of the common space.
    max_iter : scikit-learn's iteration cap.
    """

    _params = ("n_components", "max_iter")
    _estimator = ""

    def __init__(self, n_components: int = 32, max_iter: int = 1000):
        self.n_components = n_components
        self.max_iter = max_iter

    def fit(self, blocks: Blocks, masks: Masks | None = None, y=None):
        from sklearn import cross_decomposition

        self._check_two(blocks)
        _, masks = check_blocks(blocks, masks)
        self.modalities_ = list(blocks)
        a, b = self.modalities_
        both = masks[a] & masks[b]
        self.dims_ = {m: int(blocks[m].shape[1]) for m in self.modalities_}
        k = min(self.n_components, *self.dims_.values(), max(1, int(both.sum()) - 1))
        if both.sum() < 3:
            raise SchemaMismatch(f"{self.method} needs rows that have both {a} and {b}; found {int(both.sum())}",
                                 fix="embed both modalities for at least a few hundred items")
        est = getattr(cross_decomposition, self._estimator)(n_components=k, max_iter=self.max_iter)
        est.fit(np.asarray(blocks[a], np.float64)[both], np.asarray(blocks[b], np.float64)[both])
        self.dim_ = k
        self.mean_ = {a: est._x_mean.astype(np.float32), b: est._y_mean.astype(np.float32)}
        self.std_ = {a: est._x_std.astype(np.float32), b: est._y_std.astype(np.float32)}
        self.rotation_ = {a: est.x_rotations_.astype(np.float32), b: est.y_rotations_.astype(np.float32)}
        return self

    def _project(self, modality: str, x: np.ndarray) -> np.ndarray:
        std = np.where(self.std_[modality] == 0, 1, self.std_[modality])
        return (x - self.mean_[modality]) / std @ self.rotation_[modality]

    def _fitted_arrays(self) -> dict[str, np.ndarray]:
        return {f"{kind}.{m}": getattr(self, kind + "_")[m] for kind in ("mean", "std", "rotation")
                for m in self.modalities_}

    def _fitted_meta(self) -> dict:
        return {"modalities": self.modalities_, "dims": self.dims_, "dim": self.dim_}

    def _set_fitted(self, arrays, meta) -> None:
        self.modalities_, self.dims_, self.dim_ = meta["modalities"], meta["dims"], meta["dim"]
        for kind in ("mean", "std", "rotation"):
            setattr(self, kind + "_", {m: arrays[f"{kind}.{m}"] for m in self.modalities_})


@FUSIONS.register("cca")
class CcaFusion(AlignFusion):
    method = "cca"
    _estimator = "CCA"


@FUSIONS.register("pls")
class PlsFusion(AlignFusion):
    method = "pls"
    _estimator = "PLSCanonical"


@FUSIONS.register("shared")
class SharedSpaceFusion(_TwoBlockFusion):
    """Both blocks already live in one space (open_clip's image and text towers): fuse by the
    masked mean of the L2-normalised blocks, with nothing to learn."""

    method = "shared"
    _params = ()

    def fit(self, blocks: Blocks, masks: Masks | None = None, y=None) -> "SharedSpaceFusion":
        self._check_two(blocks)
        check_blocks(blocks, masks)
        self.modalities_ = list(blocks)
        self.dims_ = {m: int(blocks[m].shape[1]) for m in self.modalities_}
        if len(set(self.dims_.values())) != 1:
            raise SchemaMismatch(f"shared-space fusion needs equal widths, got {self.dims_}",
                                 fix="use cca or pls for encoders that were not trained together")
        self.dim_ = next(iter(self.dims_.values()))
        return self

    def _project(self, modality: str, x: np.ndarray) -> np.ndarray:
        return x

    def _fitted_meta(self) -> dict:
        return {"modalities": self.modalities_, "dims": self.dims_, "dim": self.dim_}

    def _set_fitted(self, arrays, meta) -> None:
        self.modalities_, self.dims_, self.dim_ = meta["modalities"], meta["dims"], meta["dim"]
