"""``MultiTaskHeads``: a scikit-learn-style estimator (fit / predict) over fused vectors.

Why an estimator and not a training script: the same object is fitted in ``plait train``,
in tests on arrays, and loaded for ``plait score``; it holds no reference to the store.
Training: AdamW, mini-batches, masked cross-entropy per task (rows without a task's label
add nothing to its loss), weights from a :mod:`heads.weighting` strategy, early stopping on
the validation loss with the best weights restored.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from heads.model import MultiTaskNet
from heads.tasks import MISSING, TaskSpec
from heads.weighting import WEIGHTINGS, TrainState, task_gradients
from store.errors import ConfigError, NotFittedError, SchemaMismatch


def cosine_matrix(grads: torch.Tensor) -> torch.Tensor:
    """(T, P) task gradients → (T, T) pairwise cosine similarity: the task-affinity matrix
    (positive: the tasks pull the shared trunk the same way; negative: they conflict)."""
    unit = torch.nn.functional.normalize(grads, dim=1)
    return unit @ unit.T


class MultiTaskHeads:
    def __init__(self, tasks: list[TaskSpec], hidden: int = 512, depth: int = 1, dropout: float = 0.2,
                 weighting: str = "equal", weighting_params: dict | None = None, lr: float = 1e-3,
                 weight_decay: float = 1e-4, batch_size: int = 128, max_epochs: int = 200, patience: int = 12,
                 seed: int = 0, affinity_every: int = 10):
        self.tasks = tasks
        self.hidden = hidden
        self.depth = depth
        self.dropout = dropout
        self.weighting = weighting
        self.weighting_params = weighting_params
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.seed = seed
        self.affinity_every = affinity_every

    def get_params(self) -> dict:
        return {"tasks": [t.to_json() for t in self.tasks], "hidden": self.hidden, "depth": self.depth,
                "dropout": self.dropout, "weighting": self.weighting, "weighting_params": self.weighting_params,
                "lr": self.lr, "weight_decay": self.weight_decay, "batch_size": self.batch_size,
                "max_epochs": self.max_epochs, "patience": self.patience, "seed": self.seed,
                "affinity_every": self.affinity_every}

    # --- training -------------------------------------------------------------------------
    def _losses(self, out: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> torch.Tensor:
        """(T,) per-task losses over the rows that have each task's label (others masked)."""
        losses = []
        for t in self.tasks:
            target, pred = y[t.name], out[t.name]
            if t.kind == "multiclass":
                keep = target != MISSING
            else:
                keep = ~torch.isnan(target if target.ndim == 1 else target[:, 0])
            if not keep.any():
                losses.append(pred.sum() * 0.0)
            elif t.kind == "multiclass":
                losses.append(nn.functional.cross_entropy(pred[keep], target[keep]))
            elif t.kind == "multilabel":
                losses.append(nn.functional.binary_cross_entropy_with_logits(pred[keep], target[keep]))
            else:
                losses.append(nn.functional.mse_loss(pred[keep, 0], target[keep]))
        return torch.stack(losses)

    @staticmethod
    def _target_tensor(t: TaskSpec, v) -> torch.Tensor:
        return torch.from_numpy(np.asarray(v, dtype=np.int64 if t.kind == "multiclass" else np.float32))

    def fit(self, X: np.ndarray, Y: dict[str, np.ndarray], X_val: np.ndarray | None = None,
            Y_val: dict[str, np.ndarray] | None = None, on_epoch=None) -> "MultiTaskHeads":
        """``Y`` maps task name → int64 class indices (``-1`` = no label). ``on_epoch(epoch,
        train_loss, val_loss)`` is called after each epoch (for progress bars)."""
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        X = np.asarray(X, dtype=np.float32)
        self._check_targets(X, Y)
        self.n_features_in_ = X.shape[1]
        self.model_ = MultiTaskNet(X.shape[1], self.tasks, self.hidden, self.depth, self.dropout)
        self.weighting_ = WEIGHTINGS.get(self.weighting)(len(self.tasks), **(self.weighting_params or {}))
        shared = list(self.model_.trunk.parameters())
        head_params = list(self.model_.heads.parameters())
        if self.weighting_.uses_gradients and not shared:
            raise ConfigError(f"{self.weighting} weighting needs a shared trunk (depth ≥ 1)", fix="set depth = 1 or more")
        params = list(self.model_.parameters()) + list(self.weighting_.parameters())
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        xt = torch.from_numpy(X)
        yt = {t.name: self._target_tensor(t, Y[t.name]) for t in self.tasks}
        has_val = X_val is not None and len(X_val) > 0
        if has_val:
            xv = torch.from_numpy(np.asarray(X_val, dtype=np.float32))
            yv = {t.name: self._target_tensor(t, Y_val[t.name]) for t in self.tasks}
        state = TrainState()
        affinity_sum, affinity_n = np.zeros((len(self.tasks), len(self.tasks))), 0
        best, best_state, bad_epochs = float("inf"), None, 0
        self.history_ = []
        for epoch in range(self.max_epochs):
            state.epoch = epoch
            self.model_.train()
            order = rng.permutation(len(X))
            epoch_losses, epoch_weights = [], []
            for start in range(0, len(X), self.batch_size):
                idx = torch.from_numpy(order[start:start + self.batch_size])
                losses = self._losses(self.model_(xt[idx]), {k: v[idx] for k, v in yt.items()})
                opt.zero_grad()
                if self.affinity_every and state.step % self.affinity_every == 0 and len(self.tasks) > 1:
                    affinity_sum += cosine_matrix(task_gradients(losses, shared)).numpy()
                    affinity_n += 1
                if self.weighting_.uses_gradients:
                    weights = self.weighting_.backward(losses, shared, state)
                    grads = torch.autograd.grad((weights.detach() * losses).sum(), head_params, allow_unused=True)
                    for p, g in zip(head_params, grads):
                        p.grad = g
                else:
                    weights = self.weighting_(losses, state)
                    ((weights * losses).sum() + self.weighting_.regularizer()).backward()
                opt.step()
                state.step += 1
                epoch_losses.append(losses.detach().numpy())
                epoch_weights.append(weights.detach().numpy())
            train_loss = np.mean(epoch_losses, axis=0)
            state.epoch_losses.append(train_loss.tolist())
            val_loss = None
            if has_val:
                self.model_.eval()
                with torch.no_grad():
                    val_loss = self._losses(self.model_(xv), yv).numpy()
            self.history_.append({"epoch": epoch, "train": train_loss.tolist(),
                                  "val": None if val_loss is None else val_loss.tolist(),
                                  "weights": np.mean(epoch_weights, axis=0).tolist()})
            if on_epoch:
                on_epoch(epoch, float(train_loss.sum()), None if val_loss is None else float(val_loss.sum()))
            score = float(val_loss.sum()) if val_loss is not None else float(train_loss.sum())
            if score < best - 1e-4:
                best, bad_epochs = score, 0
                best_state = {k: v.detach().clone() for k, v in self.model_.state_dict().items()}
            else:
                bad_epochs += 1
                if bad_epochs >= self.patience:
                    break
        self.model_.load_state_dict(best_state)
        self.model_.eval()
        self.affinity_ = (affinity_sum / affinity_n).tolist() if affinity_n else None
        self.best_epoch_ = int(np.argmin([sum(h["val"] or h["train"]) for h in self.history_]))
        return self

    def _check_targets(self, X: np.ndarray, Y: dict[str, np.ndarray]) -> None:
        for t in self.tasks:
            if t.name not in Y:
                raise SchemaMismatch(f"no labels for task {t.name!r}", fix=f"pass Y[{t.name!r}] (use -1 for missing)")
            y = np.asarray(Y[t.name])
            want = (len(X), t.n_outputs) if t.kind == "multilabel" else (len(X),)
            if y.shape != want:
                raise SchemaMismatch(f"labels for {t.name!r} have shape {y.shape}, expected {want}",
                                     fix="encode labels with TaskSpec.encode (one row per row of X)")
            if t.kind == "multiclass" and y.max(initial=MISSING) >= t.n_outputs:
                raise SchemaMismatch(f"task {t.name!r} has label index {y.max()} but {t.n_outputs} classes",
                                     fix="encode labels with TaskSpec.encode")

    # --- inference ------------------------------------------------------------------------
    def _check_fitted(self, X: np.ndarray) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError("MultiTaskHeads is not fitted yet", fix="call fit(X, Y) first, or load() a saved head")
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise SchemaMismatch(f"X has {X.shape[-1]} features, the head was trained on {self.n_features_in_}",
                                 fix="score with the fused table the head was trained on")

    def predict_proba(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """multiclass: (n, C) softmax; multilabel: (n, C) sigmoids; regression: (n,) values."""
        X = np.asarray(X, dtype=np.float32)
        self._check_fitted(X)
        with torch.no_grad():
            out = self.model_(torch.from_numpy(X))
        result = {}
        for t in self.tasks:
            v = out[t.name]
            if t.kind == "multiclass":
                result[t.name] = torch.softmax(v, dim=1).numpy()
            elif t.kind == "multilabel":
                result[t.name] = torch.sigmoid(v).numpy()
            else:
                result[t.name] = (v[:, 0] * t.std + t.mean).numpy()
        return result

    def predict(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """multiclass: class index; multilabel: (n, C) bool at 0.5; regression: value."""
        out = {}
        proba = self.predict_proba(X)
        for t in self.tasks:
            p = proba[t.name]
            out[t.name] = p.argmax(axis=1) if t.kind == "multiclass" else (p >= 0.5 if t.kind == "multilabel" else p)
        return out

    # --- persistence: safetensors + JSON, never pickle -------------------------------------
    def save(self, folder: str | Path, extra: dict | None = None) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.model_.state_dict().items()}, folder / "model.safetensors")
        cfg = {"params": self.get_params(), "n_features_in": self.n_features_in_, "best_epoch": self.best_epoch_,
               "history": self.history_, "affinity": getattr(self, "affinity_", None), **(extra or {})}
        (folder / "config.json").write_text(json.dumps(cfg, indent=2, default=str))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "MultiTaskHeads":
        from safetensors.torch import load_file

        folder = Path(folder)
        cfg = json.loads((folder / "config.json").read_text())
        params = dict(cfg["params"])
        params["tasks"] = [TaskSpec.from_json(t) for t in params["tasks"]]
        est = cls(**params)
        est.n_features_in_ = int(cfg["n_features_in"])
        est.best_epoch_ = cfg.get("best_epoch", 0)
        est.history_ = cfg.get("history", [])
        est.affinity_ = cfg.get("affinity")
        est.model_ = MultiTaskNet(est.n_features_in_, est.tasks, est.hidden, est.depth, est.dropout)
        state = load_file(folder / "model.safetensors")
        try:
            est.model_.load_state_dict(state)
        except RuntimeError as e:
            raise SchemaMismatch(f"weights in {folder} do not match its config.json: {e}",
                                 fix="re-train the head (plait train) or restore the matching files") from e
        est.model_.eval()
        return est
