"""What every fusion method shares: the block input format, validation and persistence.

Input is ``blocks``: modality → ``(n, d_m)`` float32 array, and ``masks``: modality →
``(n,)`` bool saying which rows actually have that modality. A missing modality is always
explicit in the mask, never inferred from zeros. Fitted parameters are saved as
safetensors (arrays) + JSON (everything else), never pickle, so loading runs no code.

Learned methods also keep ``fit_report_`` (see :mod:`fusion.guard`): what was learned, the
validation scores against concat, whether the method fell back to concat and why, and
warnings. It is saved in ``config.json`` and restored by :func:`load_fusion`; it does not
enter the fingerprint (it describes the fit, it does not change the transform).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np

from store.errors import NotFittedError, SchemaMismatch
from store.lineage import sha256_bytes, sha256_json
from store.registry import Registry

FUSIONS: Registry[type["Fusion"]] = Registry("fusion method")

Blocks = Mapping[str, np.ndarray]
Masks = Mapping[str, np.ndarray]


def check_blocks(blocks: Blocks, masks: Masks | None, modalities: list[str] | None = None) -> tuple[int, dict[str, np.ndarray]]:
    """Validate shapes; return ``n`` and complete masks (all-True where none was given)."""
    names = modalities or list(blocks)
    missing = [m for m in names if m not in blocks]
    if missing:
        raise SchemaMismatch(f"fusion input lacks blocks {missing}; got {sorted(blocks)}",
                             fix="pass every modality the fusion was fitted on (mask rows that lack it)")
    sizes = {m: len(blocks[m]) for m in names}
    if len(set(sizes.values())) != 1:
        raise SchemaMismatch(f"blocks have different row counts: {sizes}", fix="align blocks on id before fusing")
    n = next(iter(sizes.values()))
    full = {}
    for m in names:
        if blocks[m].ndim != 2:
            raise SchemaMismatch(f"block {m!r} must be 2-D (n, d), got shape {blocks[m].shape}", fix="reshape to (n, d)")
        mask = np.ones(n, dtype=bool) if masks is None or m not in masks else np.asarray(masks[m], dtype=bool)
        if mask.shape != (n,):
            raise SchemaMismatch(f"mask for {m!r} has shape {mask.shape}, expected ({n},)", fix="one bool per row")
        full[m] = mask
    return n, full


def check_is_fitted(est) -> None:
    if not any(k.endswith("_") and not k.startswith("_") for k in vars(est)):
        raise NotFittedError(f"{type(est).__name__} is not fitted yet", fix="call fit(blocks) before transform")


class Fusion:
    """Base: subclasses implement ``fit``/``transform`` and list their params and fitted arrays."""

    method: str = ""
    #: constructor parameter names (sklearn's get_params contract)
    _params: tuple[str, ...] = ()

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in self._params}

    def _validated(self, blocks: Blocks, masks: Masks | None) -> dict[str, np.ndarray]:
        """For ``transform``: fitted, every fitted block present, widths as fitted; returns masks."""
        check_is_fitted(self)
        _, masks = check_blocks(blocks, masks, self.modalities_)
        for m in self.modalities_:
            self._check_width(m, blocks[m])
        return masks

    def _check_width(self, modality: str, x: np.ndarray) -> None:
        if x.shape[1] != self.dims_[modality]:
            raise SchemaMismatch(f"block {modality!r} has {x.shape[1]} dims, the fusion was fitted on "
                                 f"{self.dims_[modality]}", fix="refit the fusion (plait fuse --refit) after changing an encoder")

    def needs_fit_rows(self) -> bool:
        """Whether ``fit`` learns from rows (else only widths matter: a 0-row sample will do)."""
        return True

    def one_block_is_its_input(self) -> bool:
        """Whether each block of a fused row is its input vector as stored, only scaled (so a
        query with one block can be ranked on that input alone: the same order as a cosine on
        that block of the fused rows, without favouring rows that lack the other blocks)."""
        return False

    def fit_transform(self, blocks: Blocks, masks: Masks | None = None, y=None) -> np.ndarray:
        return self.fit(blocks, masks, y).transform(blocks, masks)

    # the concat fallback of learned methods ----------------------------------------------
    def _concat(self, blocks: Blocks, masks: dict[str, np.ndarray]) -> np.ndarray:
        """What :class:`~fusion.concat.ConcatFusion` would output: the fallback's transform."""
        from fusion.concat import concat_fuse

        return concat_fuse(blocks, masks, self.modalities_)

    def _against_concat(self, learned: np.ndarray, blocks: Blocks, masks: dict[str, np.ndarray],
                        tasks: dict[str, np.ndarray], fit: np.ndarray, val: np.ndarray, min_gain: float,
                        knn: bool = False) -> bool:
        """Probe ``learned`` (the fused rows), concat and each block alone on the validation
        rows (ridge probe, or k-NN with ``knn``); record it in ``fit_report_``; True when the
        fit must fall back to concat."""
        from fusion.concat import l2_normalize
        from fusion.guard import decide, knn_scores, probe_scores

        probe = knn_scores if knn else probe_scores
        singles = {m: probe(np.where(masks[m][:, None], l2_normalize(np.asarray(blocks[m], np.float32)), 0),
                            tasks, fit, val) for m in self.modalities_}
        self.fit_report_["val_rows"] = int(val.sum())
        return decide(self.fit_report_, probe(learned, tasks, fit, val), probe(self._concat(blocks, masks), tasks, fit, val),
                      singles, min_gain, "cosine 10-NN vote" if knn else "ridge on one-hot labels")

    # persistence -----------------------------------------------------------------------
    def _fitted_arrays(self) -> dict[str, np.ndarray]:
        return {}

    def _fitted_meta(self) -> dict:
        return {}

    def _set_fitted(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        raise NotImplementedError

    def fingerprint(self) -> str:
        """Changes when the method, its params or its fitted state change."""
        check_is_fitted(self)
        arrays = {k: sha256_bytes(np.ascontiguousarray(v).tobytes()) for k, v in self._fitted_arrays().items()}
        return sha256_json({"method": self.method, "params": self.get_params(), "meta": self._fitted_meta(),
                            "arrays": arrays})[:16]

    def save(self, folder: str | Path) -> Path:
        from safetensors.numpy import save_file

        check_is_fitted(self)
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {k: np.ascontiguousarray(v) for k, v in self._fitted_arrays().items()}
        save_file(arrays or {"_empty": np.zeros(0, np.float32)}, folder / "params.safetensors")
        (folder / "config.json").write_text(json.dumps(
            {"method": self.method, "params": self.get_params(), "meta": self._fitted_meta(),
             "fit_report": getattr(self, "fit_report_", None)}, indent=2))
        return folder


def load_fusion(folder: str | Path) -> Fusion:
    """Rebuild a fitted fusion from ``config.json`` + ``params.safetensors``."""
    from safetensors.numpy import load_file

    folder = Path(folder)
    cfg = json.loads((folder / "config.json").read_text())
    cls = FUSIONS.get(cfg["method"])
    unknown = sorted(set(cfg["params"]) - set(cls._params))
    if unknown:
        raise SchemaMismatch(f"the fusion saved in {folder} was fitted by an older plait (parameters {unknown} "
                             f"no longer exist for {cfg['method']})", fix="refit it: plait fuse --refit")
    est = cls(**cfg["params"])
    arrays = {k: v for k, v in load_file(folder / "params.safetensors").items() if k != "_empty"}
    est._set_fitted(arrays, cfg["meta"])
    if cfg.get("fit_report") is not None:
        est.fit_report_ = cfg["fit_report"]
    return est
