"""Align two encoders' spaces with regularised CCA or PLS, then fuse in the common space.

Why: two encoders that were never trained together (MiniLM text, HOG images) put related
items in unrelated coordinates, so cross-modal retrieval between their raw vectors is at
chance. CCA finds the projections of each block that are maximally correlated on paired
rows; PLS maximises covariance instead (steadier when blocks are wide and rows few).
An open_clip model needs none of this: its image and text towers already share a space
(see :class:`SharedSpaceFusion`).

Learned like every other method against concat (:mod:`fusion.guard`): a deterministic slice
of the fit rows is held out to choose the shrinkage and, when task labels are given, to
compare the aligned space with concat; it falls back to concat when it does not help.
``project`` keeps mapping each modality into the aligned space either way.

Fitted attributes: ``modalities_`` (two), ``dims_``, ``dim_`` (components, or the concat width
after a fallback), ``shrinkage_``, ``fallback_``, ``fit_report_``, and per modality ``mean_``,
``std_``, ``rotation_`` so that ``latent = (x - mean) / std @ rotation``.
"""
from __future__ import annotations

import numpy as np

from fusion.base import FUSIONS, Blocks, Fusion, Masks, check_blocks, check_is_fitted
from fusion.concat import l2_normalize
from fusion.guard import holdout, new_report, note_shares, note_unvalidated
from fusion.labels import as_tasks
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
    """Regularised CCA in closed form; PLS is its fully shrunk end.

    With standardised blocks X, Y and covariances C_xx, C_yy, C_xy on the fit rows, each
    block's covariance is shrunk towards a scaled identity, C(r) = (1 − r)·C + r·tr(C)/d·I,
    and the rotations are R_x = C_xx(r)^{-1/2} U_k, R_y = C_yy(r)^{-1/2} V_k from the SVD
    C_xx(r)^{-1/2} C_xy C_yy(r)^{-1/2} = U S Vᵀ. r = 0 is classical CCA (undefined when rows
    are fewer than dimensions: it then finds perfect, meaningless correlations); r = 1 is
    PLS-SVD (scikit-learn's ``PLSSVD``: the SVD of the cross-covariance). Why: scikit-learn's
    iterative CCA has no regularisation and was fitted on 615 rows against 816 dims without
    a warning (issue 13).

    Parameters
    ----------
    n_components : size of the common space, capped by both widths and by fit rows − 1.
    shrinkage : r in [0, 1]; None = chosen on the held-out rows (highest mean canonical
        correlation there) from ``SHRINKAGE_GRID``. PLS fixes it at 1.
    val_fraction, min_gain, seed : held-out share of the fit rows, the validation macro-F1 gain
        over concat needed to keep the aligned space when labels are given, the split seed.
    """

    _params = ("n_components", "shrinkage", "val_fraction", "min_gain", "seed")
    SHRINKAGE_GRID = (0.1, 0.3, 0.5, 0.7, 0.9)

    def __init__(self, n_components: int = 32, shrinkage: float | None = None, val_fraction: float = 0.2,
                 min_gain: float = 0.01, seed: int = 0):
        self.n_components = n_components
        self.shrinkage = shrinkage
        self.val_fraction = val_fraction
        self.min_gain = min_gain
        self.seed = seed

    def _grid(self) -> tuple[float, ...]:
        return self.SHRINKAGE_GRID if self.shrinkage is None else (float(self.shrinkage),)

    def fit(self, blocks: Blocks, masks: Masks | None = None, y=None):
        self._check_two(blocks)
        n, masks = check_blocks(blocks, masks)
        self.modalities_ = list(blocks)
        a, b = self.modalities_
        both = masks[a] & masks[b]
        if both.sum() < 3:
            raise SchemaMismatch(f"{self.method} needs rows that have both {a} and {b}; found {int(both.sum())}",
                                 fix="embed both modalities for at least a few hundred items")
        if any(not 0 <= r <= 1 for r in self._grid()):
            raise ConfigError(f"shrinkage {self.shrinkage} must lie in [0, 1]", fix="use e.g. shrinkage = 0.5, or leave it unset")
        self.dims_ = {m: int(blocks[m].shape[1]) for m in self.modalities_}
        fit, val = holdout(n, self.val_fraction, self.seed)
        rows, vrows = fit & both, val & both
        if rows.sum() < 3:  # too few rows to hold any out: fit on all of them
            rows, vrows = both, np.zeros(n, bool)
        X, Y = (np.asarray(blocks[m], np.float64) for m in (a, b))
        wanted = int(self.n_components)
        k = max(1, min(wanted, *self.dims_.values(), int(rows.sum()) - 1))
        self.fit_report_ = new_report(self.method, int(rows.sum()), self.dims_, int(vrows.sum()))
        if k < wanted:
            self.fit_report_["warnings"].append(f"n_components capped at {k} (asked {wanted}): "
                                                f"{int(rows.sum())} fit rows, widths {self.dims_}")
        mx, sx = X[rows].mean(0), _std(X[rows])
        my, sy = Y[rows].mean(0), _std(Y[rows])
        Xs, Ys = (X - mx) / sx, (Y - my) / sy
        tried = {}
        for r in self._grid():
            Rx, Ry, corr = _regularised_cca(Xs[rows], Ys[rows], r, k)
            held = _correlations(Xs[vrows] @ Rx, Ys[vrows] @ Ry) if vrows.sum() > 2 else corr
            tried[r] = (float(np.mean(held)), Rx, Ry, corr, held)
        r = max(tried, key=lambda key: tried[key][0])
        _, Rx, Ry, corr, held = tried[r]
        self.dim_, self.shrinkage_ = k, r
        self.mean_ = {a: mx.astype(np.float32), b: my.astype(np.float32)}
        self.std_ = {a: sx.astype(np.float32), b: sy.astype(np.float32)}
        self.rotation_ = {a: Rx.astype(np.float32), b: Ry.astype(np.float32)}
        self.fallback_ = False
        self.fit_report_["learned"] = {
            "components": k, "shrinkage": r,
            "shrinkage_scores": {str(key): round(v[0], 4) for key, v in tried.items()},
            "fit_correlations": [round(float(c), 3) for c in corr[:10]],
            "val_correlations": [round(float(c), 3) for c in held[:10]],
            "useful_components": int(np.sum(np.asarray(held) > 0.1))}
        tasks = {t: v for t, v in as_tasks(y, n).items() if (v >= 0).any()} if y is not None else {}
        if tasks:
            self.fallback_ = self._against_concat(self._latent_mean(blocks, masks), blocks, masks, tasks, fit, val,
                                                  self.min_gain)
        else:
            note_unvalidated(self.fit_report_, f"held-out canonical correlation {tried[r][0]:.3f}")
        if self.fallback_:
            self.dim_ = sum(self.dims_.values())
        note_shares(self.fit_report_, self.modalities_, np.full(2, 0.5))
        return self

    def _latent_mean(self, blocks: Blocks, masks: dict) -> np.ndarray:
        latents = [self._project(m, np.asarray(blocks[m], np.float32)) for m in self.modalities_]
        return masked_mean(latents, np.stack([masks[m] for m in self.modalities_], axis=1))

    def transform(self, blocks: Blocks, masks: Masks | None = None) -> np.ndarray:
        masks = self._validated(blocks, masks)
        if self.fallback_:
            return self._concat(blocks, masks)
        return self._latent_mean(blocks, masks)

    def _project(self, modality: str, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean_[modality]) / self.std_[modality] @ self.rotation_[modality]).astype(np.float32)

    def _fitted_arrays(self) -> dict[str, np.ndarray]:
        return {f"{kind}.{m}": getattr(self, kind + "_")[m] for kind in ("mean", "std", "rotation")
                for m in self.modalities_}

    def _fitted_meta(self) -> dict:
        return {"modalities": self.modalities_, "dims": self.dims_, "dim": self.dim_,
                "shrinkage": self.shrinkage_, "fallback": self.fallback_}

    def _set_fitted(self, arrays, meta) -> None:
        self.modalities_, self.dims_, self.dim_ = meta["modalities"], meta["dims"], meta["dim"]
        self.shrinkage_, self.fallback_ = meta.get("shrinkage"), meta.get("fallback", False)
        for kind in ("mean", "std", "rotation"):
            setattr(self, kind + "_", {m: arrays[f"{kind}.{m}"] for m in self.modalities_})


def _std(x: np.ndarray) -> np.ndarray:
    s = x.std(axis=0, ddof=1) if len(x) > 1 else np.ones(x.shape[1])
    return np.where(s < 1e-12, 1.0, s)


def _inv_sqrt(c: np.ndarray) -> np.ndarray:
    s, v = np.linalg.eigh(c)
    return (v / np.sqrt(np.clip(s, 1e-12, None))) @ v.T


def _regularised_cca(X: np.ndarray, Y: np.ndarray, r: float, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rotations (dx, k), (dy, k) and the k canonical correlations on these rows (X, Y centred)."""
    n = len(X) - 1
    cxx, cyy, cxy = X.T @ X / n, Y.T @ Y / n, X.T @ Y / n
    shrunk = [(1 - r) * c + r * np.trace(c) / len(c) * np.eye(len(c)) for c in (cxx, cyy)]
    wx, wy = (_inv_sqrt(c) for c in shrunk)
    u, _, vt = np.linalg.svd(wx @ cxy @ wy, full_matrices=False)
    Rx, Ry = wx @ u[:, :k], wy @ vt[:k].T
    return Rx, Ry, _correlations(X @ Rx, Y @ Ry)


def _correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column pair (0 where a column is constant)."""
    a, b = a - a.mean(0), b - b.mean(0)
    denom = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    return np.divide((a * b).sum(0), denom, out=np.zeros(a.shape[1]), where=denom > 1e-12)


@FUSIONS.register("cca")
class CcaFusion(AlignFusion):
    method = "cca"


@FUSIONS.register("pls")
class PlsFusion(AlignFusion):
    """PLS-SVD: :class:`AlignFusion` with shrinkage fixed at 1 (covariance, not correlation)."""

    method = "pls"
    _params = ("n_components", "val_fraction", "min_gain", "seed")

    def __init__(self, n_components: int = 32, val_fraction: float = 0.2, min_gain: float = 0.01, seed: int = 0):
        super().__init__(n_components=n_components, shrinkage=1.0, val_fraction=val_fraction, min_gain=min_gain,
                         seed=seed)


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
