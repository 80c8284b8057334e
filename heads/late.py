"""Late (decision-level) fusion as a head: one linear model per modality and task, their
predictions combined with per-task simplex weights renormalised over the modalities a row has.

Why: when one modality is often missing or noisy, combining decisions degrades gracefully
(a row without an image is scored by the text model alone), and the learned weights say how
much each modality is trusted. A head, so the train stage can fit, save, load and score it
like :class:`~heads.estimator.MultiTaskHeads` (same ``fit(X, Y, X_val, Y_val)`` /
``predict`` / ``predict_proba`` / ``save`` / ``load``), on a *concat* fused table: ``blocks``
gives the table's block order and widths, and a block that is all zeros in a row is that
modality missing (concat writes absent blocks as zeros).

Per task and modality: scikit-learn LogisticRegression (multi-class; one per class for
multi-label) or Ridge (regression) on the block standardised with its training rows, C
chosen on the validation rows (:func:`heads.baselines.logistic_baseline`'s grid). The
weights are the point of a simplex grid with the lowest validation loss (log loss; MSE for
regression). Without a validation split, a deterministic 20 % of the training rows is held
out for both choices. Prediction is numpy only; the saved form is safetensors + JSON.

Fitted attributes: ``models_`` (task → modality → arrays), ``weights_`` (task → (M,)),
``C_`` (task → modality → C), ``n_features_in_``.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from fusion.simplex import row_weights
from heads.baselines import DEFAULT_CS
from heads.tasks import TaskSpec
from store.errors import ConfigError, NotFittedError, SchemaMismatch


def _simplex(m: int, steps: int = 10) -> np.ndarray:
    import itertools

    grid = [c for c in itertools.product(range(steps + 1), repeat=m) if sum(c) == steps]
    return np.asarray(grid, np.float64) / steps


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(z, -50, 50)))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class LateFusionHeads:
    """Parameters
    ----------
    tasks : the tasks, as for :class:`~heads.estimator.MultiTaskHeads`.
    blocks : ``{modality: width}`` in the fused table's column order (a concat fusion's ``dims_``).
    Cs : inverse regularisation strengths tried per model on the validation rows.
    seed : seed of the internal hold-out when no validation split is given.
    """

    def __init__(self, tasks: list[TaskSpec], blocks: dict[str, int], Cs=DEFAULT_CS, seed: int = 0):
        self.tasks = tasks
        self.blocks = blocks
        self.Cs = Cs
        self.seed = seed

    def get_params(self) -> dict:
        return {"tasks": [t.to_json() for t in self.tasks], "blocks": dict(self.blocks), "Cs": list(self.Cs),
                "seed": self.seed}

    # --- blocks ---------------------------------------------------------------------------
    def _split(self, X: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        X = np.asarray(X, np.float32)
        width = sum(self.blocks.values())
        if X.ndim != 2 or X.shape[1] != width:
            raise SchemaMismatch(f"X has {X.shape[-1]} features, the late-fusion head expects {width} "
                                 f"({', '.join(f'{m} {d}' for m, d in self.blocks.items())})",
                                 fix="train late fusion on a concat fused table and give its block widths")
        parts, masks, col = {}, {}, 0
        for m, d in self.blocks.items():
            parts[m] = X[:, col:col + d]
            masks[m] = np.any(parts[m] != 0, axis=1)
            col += d
        return parts, masks

    # --- fitting --------------------------------------------------------------------------
    def fit(self, X: np.ndarray, Y: dict[str, np.ndarray], X_val: np.ndarray | None = None,
            Y_val: dict[str, np.ndarray] | None = None, on_epoch=None) -> "LateFusionHeads":
        """As :meth:`MultiTaskHeads.fit` (``on_epoch`` is accepted and unused: nothing iterates
        in epochs here). BLAS runs on one thread, as the MLP heads do."""
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            return self._fit(X, Y, X_val, Y_val)

    def _fit(self, X, Y, X_val, Y_val) -> "LateFusionHeads":
        if not self.blocks:
            raise ConfigError("late fusion needs the fused table's blocks", fix="pass blocks={modality: width, ...}")
        X = np.asarray(X, np.float32)
        if X_val is None or len(X_val) == 0:
            held = np.random.default_rng(self.seed).random(len(X)) < 0.2
            X_val, Y_val = X[held], {k: np.asarray(v)[held] for k, v in Y.items()}
            X, Y = X[~held], {k: np.asarray(v)[~held] for k, v in Y.items()}
        tr, tr_masks = self._split(X)
        va, va_masks = self._split(np.asarray(X_val, np.float32))
        self.n_features_in_ = X.shape[1]
        self.models_, self.weights_, self.C_ = {}, {}, {}
        for t in self.tasks:
            y, yv = np.asarray(Y[t.name]), np.asarray(Y_val[t.name])
            self.models_[t.name], self.C_[t.name] = {}, {}
            for m in self.blocks:
                rows = tr_masks[m] & t.labelled(y)
                if rows.sum() < 2:
                    raise SchemaMismatch(f"task {t.name!r} has {int(rows.sum())} labelled training rows with {m}",
                                         fix="late fusion needs labelled rows for every modality")
                self.models_[t.name][m], self.C_[t.name][m] = self._fit_model(t, tr[m][rows], y[rows], va[m], yv,
                                                                              va_masks[m] & t.labelled(yv))
            self.weights_[t.name] = self._fit_weights(t, va, va_masks, yv)
        return self

    def _fit_model(self, t: TaskSpec, x, y, xv, yv, vrows) -> tuple[dict, float]:
        """The model at the C (ascending path, warm-started, stopped two Cs past the best)
        with the lowest validation loss."""
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression, Ridge

        mean, std = x.mean(axis=0), x.std(axis=0)
        scale = np.where(std < 1e-6, 1.0, std).astype(np.float32)
        xs = ((x - mean) / scale).astype(np.float32)
        columns = range(t.n_outputs) if t.kind == "multilabel" else [None]
        fits = {c: LogisticRegression(max_iter=100, warm_start=True) for c in columns}
        best, worse = None, 0
        for C in sorted(self.Cs):
            coef, icpt = np.zeros((t.n_outputs, x.shape[1])), np.zeros(t.n_outputs)
            if t.kind == "regression":
                r = Ridge(alpha=1.0 / C).fit(xs, y)
                coef, icpt = r.coef_[None, :], np.atleast_1d(r.intercept_)
            for c, lr in fits.items() if t.kind != "regression" else ():
                target = y if c is None else y[:, c].astype(int)
                if np.unique(target).size < 2:  # a constant column (multi-label): a constant logit
                    icpt[c] = 30.0 if target[0] else -30.0
                    continue
                lr.C = C
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    lr.fit(xs, target)
                if c is not None:
                    coef[c], icpt[c] = lr.coef_[0], lr.intercept_[0]
                elif len(lr.classes_) == 2:  # binary: sklearn keeps one row; softmax over (0, z)
                    icpt[:] = -30.0
                    coef[lr.classes_[1]], icpt[lr.classes_[1]] = lr.coef_[0], lr.intercept_[0]
                    icpt[lr.classes_[0]] = 0.0
                else:
                    icpt[:] = -30.0
                    coef[lr.classes_], icpt[lr.classes_] = lr.coef_, lr.intercept_
            model = {"mean": mean.astype(np.float32), "scale": scale, "coef": coef.astype(np.float32),
                     "intercept": icpt.astype(np.float32)}
            if not vrows.any():
                return model, float(C)
            loss = self._loss(t, self._predict_model(t, model, xv[vrows]), yv[vrows])
            if best is None or loss < best[0] - 1e-12:
                best, worse = (loss, model, C), 0
            else:
                worse += 1
                if worse >= 2:
                    break
        return best[1], float(best[2])

    @staticmethod
    def _loss(t: TaskSpec, p: np.ndarray, y: np.ndarray) -> float:
        if t.kind == "multiclass":
            return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-7, None))))
        if t.kind == "multilabel":
            p = np.clip(p, 1e-7, 1 - 1e-7)
            return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
        return float(np.mean((p - (y * t.std + t.mean)) ** 2))

    def _fit_weights(self, t: TaskSpec, va, va_masks, yv) -> np.ndarray:
        names = list(self.blocks)
        rows = t.labelled(yv) & np.any(np.stack([va_masks[m] for m in names], axis=1), axis=1)
        equal = np.full(len(names), 1 / len(names))
        if not rows.any():
            return equal.astype(np.float32)
        preds = np.stack([self._predict_model(t, self.models_[t.name][m], va[m][rows]) for m in names], axis=1)
        masks = np.stack([va_masks[m][rows] for m in names], axis=1)
        scored = [(self._loss(t, self._mix(preds, masks, w), yv[rows]), float(np.abs(w - equal).sum()), tuple(w))
                  for w in _simplex(len(names))]
        return np.asarray(min(scored)[2], np.float32)

    # --- prediction -----------------------------------------------------------------------
    @staticmethod
    def _predict_model(t: TaskSpec, model: dict, x: np.ndarray) -> np.ndarray:
        z = ((x - model["mean"]) / model["scale"]) @ model["coef"].T + model["intercept"]
        if t.kind == "multiclass":
            return _softmax(z)
        if t.kind == "multilabel":
            return _sigmoid(z)
        return z[:, 0] * t.std + t.mean

    @staticmethod
    def _mix(preds: np.ndarray, masks: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """preds (n, M, ...) → (n, ...): the weighted mean over each row's present modalities."""
        w = row_weights(weights, masks)
        return (w.reshape(w.shape + (1,) * (preds.ndim - 2)) * preds).sum(axis=1)

    def predict_proba(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """multiclass: (n, C) probabilities; multilabel: (n, C); regression: (n,) values."""
        if not hasattr(self, "models_"):
            raise NotFittedError("LateFusionHeads is not fitted yet", fix="call fit(X, Y) first, or load() a saved head")
        parts, masks = self._split(X)
        names = list(self.blocks)
        mask = np.stack([masks[m] for m in names], axis=1)
        return {t.name: self._mix(np.stack([self._predict_model(t, self.models_[t.name][m], parts[m]) for m in names],
                                           axis=1), mask, self.weights_[t.name]) for t in self.tasks}

    def predict(self, X: np.ndarray) -> dict[str, np.ndarray]:
        proba = self.predict_proba(X)
        return {t.name: proba[t.name].argmax(axis=1) if t.kind == "multiclass" else
                (proba[t.name] >= 0.5 if t.kind == "multilabel" else proba[t.name]) for t in self.tasks}

    def fit_report(self) -> dict:
        return {"weights": {t: dict(zip(self.blocks, map(float, w))) for t, w in self.weights_.items()}, "C": self.C_}

    # --- persistence: safetensors + JSON --------------------------------------------------
    def save(self, folder: str | Path, extra: dict | None = None) -> Path:
        from safetensors.numpy import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {f"{t}.{m}.{k}": np.ascontiguousarray(v) for t, per in self.models_.items()
                  for m, model in per.items() for k, v in model.items()}
        arrays.update({f"{t}.weights": w for t, w in self.weights_.items()})
        save_file(arrays, folder / "model.safetensors")
        cfg = {"kind": "late", "params": self.get_params(), "n_features_in": self.n_features_in_, "C": self.C_,
               **(extra or {})}
        (folder / "config.json").write_text(json.dumps(cfg, indent=2, default=str))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "LateFusionHeads":
        from safetensors.numpy import load_file

        folder = Path(folder)
        cfg = json.loads((folder / "config.json").read_text())
        p = cfg["params"]
        est = cls([TaskSpec.from_json(t) for t in p["tasks"]], dict(p["blocks"]), tuple(p["Cs"]), p["seed"])
        arrays = load_file(folder / "model.safetensors")
        try:
            est.models_ = {t.name: {m: {k: arrays[f"{t.name}.{m}.{k}"] for k in ("mean", "scale", "coef", "intercept")}
                                    for m in est.blocks} for t in est.tasks}
            est.weights_ = {t.name: arrays[f"{t.name}.weights"] for t in est.tasks}
        except KeyError as e:
            raise SchemaMismatch(f"weights in {folder} do not match its config.json: missing {e}",
                                 fix="re-train the head (plait train) or restore the matching files") from e
        est.n_features_in_, est.C_ = int(cfg["n_features_in"]), cfg.get("C", {})
        return est


def load_head(folder: str | Path):
    """Load whichever head kind is saved in ``folder`` (multi-task MLP or late fusion)."""
    cfg = json.loads((Path(folder) / "config.json").read_text())
    if cfg.get("kind") == "late":
        return LateFusionHeads.load(folder)
    from heads.estimator import MultiTaskHeads

    return MultiTaskHeads.load(folder)


class LateFusionClassifier:
    """One task on per-modality blocks: ``fit(blocks, masks, y)`` / ``predict_proba(blocks,
    masks)`` over :class:`LateFusionHeads` (kept for the Python API it replaced)."""

    def __init__(self, Cs=DEFAULT_CS, seed: int = 0):
        self.Cs = Cs
        self.seed = seed

    def _X(self, blocks, masks) -> np.ndarray:
        from fusion.base import check_blocks

        _, masks = check_blocks(blocks, masks, list(self.dims_))
        return np.concatenate([np.where(masks[m][:, None], blocks[m], 0) for m in self.dims_], axis=1)

    def fit(self, blocks, masks=None, y=None) -> "LateFusionClassifier":
        y = np.asarray(y)
        self.dims_ = {m: int(x.shape[1]) for m, x in blocks.items()}
        labelled = y >= 0 if y.dtype.kind in "iu" else np.array([v is not None for v in y])
        self.classes_ = np.unique(y[labelled])
        codes = np.full(len(y), -1, np.int64)
        codes[labelled] = np.searchsorted(self.classes_, y[labelled])
        task = TaskSpec(name="y", classes=tuple(str(c) for c in self.classes_))
        self.head_ = LateFusionHeads([task], self.dims_, self.Cs, self.seed).fit(self._X(blocks, masks), {"y": codes})
        self.weights_ = self.head_.weights_["y"]
        return self

    def predict_proba(self, blocks, masks=None) -> np.ndarray:
        if not hasattr(self, "head_"):
            raise NotFittedError("LateFusionClassifier is not fitted yet", fix="call fit(blocks, masks, y) first")
        return self.head_.predict_proba(self._X(blocks, masks))["y"]

    def predict(self, blocks, masks=None) -> np.ndarray:
        return self.classes_[self.predict_proba(blocks, masks).argmax(axis=1)]
