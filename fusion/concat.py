"""Concatenation fusion: the baseline every other method must beat.

Each block is L2-normalised per row so that no encoder dominates by scale (MiniLM emits
unit vectors, HOG features do not), optionally standardised with statistics fitted on the
present rows only, then concatenated. A masked block is written as zeros *and* the mask is
returned alongside, so downstream code knows the zeros mean "absent".
"""
from __future__ import annotations

import numpy as np

from fusion.base import FUSIONS, Blocks, Fusion, Masks, check_blocks, check_is_fitted


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def concat_fuse(blocks: Blocks, masks: Masks, order: list[str], mean: dict | None = None,
                scale: dict | None = None, normalize: bool = True) -> np.ndarray:
    """Pure transform: ``(n, sum(d_m))`` float32 with masked blocks zeroed.

    Writes each block straight into its slice of one output array: no per-block
    temporaries (fresh large allocations cost page faults, which dominated here).
    """
    n = len(blocks[order[0]])
    out = np.empty((n, sum(blocks[m].shape[1] for m in order)), dtype=np.float32)
    col = 0
    for m in order:
        x = np.asarray(blocks[m], dtype=np.float32)
        view = out[:, col:col + x.shape[1]]
        col += x.shape[1]
        if normalize:
            norms = np.sqrt(np.einsum("ij,ij->i", x, x))
            np.divide(x, np.maximum(norms, 1e-12)[:, None], out=view)
        else:
            view[...] = x
        if mean is not None:
            view -= mean[m]
            view /= scale[m]
        view[~masks[m]] = 0
    return out


@FUSIONS.register("concat")
class ConcatFusion(Fusion):
    """Parameters
    ----------
    normalize : L2-normalise each block per row.
    standardize : subtract the per-feature mean and divide by the std of present rows.

    Fitted attributes: ``modalities_`` (block order), ``dims_`` and, with standardize,
    ``mean_``/``scale_`` per modality.
    """

    method = "concat"
    _params = ("normalize", "standardize")

    def __init__(self, normalize: bool = True, standardize: bool = False):
        self.normalize = normalize
        self.standardize = standardize

    def needs_fit_rows(self) -> bool:
        return self.standardize

    def one_block_is_its_input(self) -> bool:
        return not self.standardize

    def fit(self, blocks: Blocks, masks: Masks | None = None, y=None) -> "ConcatFusion":
        _, masks = check_blocks(blocks, masks)
        self.modalities_ = list(blocks)
        self.dims_ = {m: int(blocks[m].shape[1]) for m in self.modalities_}
        if self.standardize:
            self.mean_, self.scale_ = {}, {}
            for m in self.modalities_:
                x = np.asarray(blocks[m], dtype=np.float32)[masks[m]]
                x = l2_normalize(x) if self.normalize else x
                self.mean_[m] = x.mean(axis=0) if len(x) else np.zeros(self.dims_[m], np.float32)
                std = x.std(axis=0) if len(x) else np.ones(self.dims_[m], np.float32)
                self.scale_[m] = np.where(std < 1e-6, 1.0, std).astype(np.float32)
        return self

    @property
    def dim_(self) -> int:
        check_is_fitted(self)
        return sum(self.dims_.values())

    def transform(self, blocks: Blocks, masks: Masks | None = None) -> np.ndarray:
        masks = self._validated(blocks, masks)
        return concat_fuse(blocks, masks, self.modalities_, getattr(self, "mean_", None),
                           getattr(self, "scale_", None), self.normalize)

    def _fitted_arrays(self) -> dict[str, np.ndarray]:
        if not self.standardize:
            return {}
        return {**{f"mean.{m}": v for m, v in self.mean_.items()}, **{f"scale.{m}": v for m, v in self.scale_.items()}}

    def _fitted_meta(self) -> dict:
        return {"modalities": self.modalities_, "dims": self.dims_}

    def _set_fitted(self, arrays, meta) -> None:
        self.modalities_, self.dims_ = meta["modalities"], meta["dims"]
        if self.standardize:
            self.mean_ = {m: arrays[f"mean.{m}"] for m in self.modalities_}
            self.scale_ = {m: arrays[f"scale.{m}"] for m in self.modalities_}
