"""``MultiTaskHeads``: a scikit-learn-style estimator (fit / predict) over fused vectors.

Why an estimator and not a training script: the same object is fitted in ``plait train``,
in tests on arrays, and loaded for ``plait score``; it holds no reference to the store.

Training, and why each choice (issue 13: the head must reach a tuned per-task
LogisticRegression; issue 12: 3.8k rows × 896 dims in ≤ 10 s on 2 cores):

- inputs standardised with the training rows' mean/std (fused blocks are L2-normalised, so
  features are ~0.05 in size and an MLP at default init learns slowly from them);
- class-weighted losses (``class_weight``) because the target metric is macro-F1;
- early stopping on the validation *metric* (macro-F1 per classifier, R² for regression,
  averaged over tasks), best weights restored; it stops after ``patience`` epochs without
  a gain of ``min_delta`` (on a 99-class task the metric creeps up by noise for dozens of
  epochs after the loss has turned: that cost 2x the training time for nothing);
- mini-batches of ``batch_size`` (default: ~16 steps an epoch, 64-1024 rows), AdamW with
  weight decay on the network only (never on a weighting's own parameters);
- one torch thread by default (``threads``; see :func:`torch_threads`);
- ``search=True``: a small grid over width, dropout and weight decay (``search_space``),
  each candidate trained as above and the best on the validation metric kept; the grid and
  every candidate's score are recorded in ``search_``.

Fitted attributes: ``model_``, ``weighting_`` (the strategy module, with its learned state),
``n_features_in_``, ``input_mean_``/``input_scale_``,
``settings_`` (the hidden/dropout/weight_decay used), ``search_`` (list of candidates),
``history_`` (per epoch: train/val losses, val score, weights), ``best_epoch_``,
``best_score_``, ``affinity_``.
"""
from __future__ import annotations

import itertools
import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from heads.losses import class_weights, task_losses
from heads.metrics import task_score
from heads.model import MultiTaskNet
from heads.optim import AdamW
from heads.tasks import MISSING, TaskSpec
from heads.weighting import WEIGHTINGS, TrainState, task_gradients
from store.errors import ConfigError, NotFittedError, SchemaMismatch

#: ``search=True`` tries every combination (8 fits) unless ``search_space`` says otherwise.
DEFAULT_SEARCH = {"hidden": [256, 1024], "dropout": [0.1, 0.5], "weight_decay": [1e-4, 1e-2]}
SEARCHABLE = ("hidden", "dropout", "weight_decay", "class_weight", "depth", "lr")


def cosine_matrix(grads: torch.Tensor) -> torch.Tensor:
    """(T, P) task gradients → (T, T) pairwise cosine similarity: the task-affinity matrix
    (positive: the tasks pull the shared trunk the same way; negative: they conflict)."""
    unit = torch.nn.functional.normalize(grads, dim=1)
    return unit @ unit.T


@contextmanager
def torch_threads(n: int | None):
    """Run with ``n`` intra-op threads (None: torch's setting), restored afterwards.

    Why 1 by default: on the shared 2-core machine a small head took 28x longer with torch's
    2 threads than with 1 while other processes ran (every op waits on an OpenMP barrier for
    a thread that is not scheduled); a head of a few thousand rows is small enough that one
    core trains it in seconds. Set ``threads`` higher on a dedicated many-core machine."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def auto_batch_size(n: int) -> int:
    """About 16 steps an epoch, within 64..1024 rows: few Python round trips per epoch on
    small data, still enough updates per epoch for early stopping to see progress."""
    return int(min(1024, max(64, 2 ** round(np.log2(max(n, 1) / 16)))))


class MultiTaskHeads:
    def __init__(self, tasks: list[TaskSpec], hidden: int = 512, depth: int = 1, dropout: float = 0.2,
                 weighting: str = "equal", weighting_params: dict | None = None, lr: float = 1e-3,
                 weight_decay: float = 1e-4, batch_size: int | None = None, max_epochs: int = 200, patience: int = 12,
                 seed: int = 0, affinity_every: int = 50, class_weight: str | None = "balanced",
                 standardize: bool = True, search: bool = False, search_space: dict | None = None,
                 threads: int | None = 1, min_delta: float = 0.002):
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
        self.class_weight = class_weight
        self.standardize = standardize
        self.search = search
        self.search_space = search_space
        self.threads = threads
        self.min_delta = min_delta

    def get_params(self) -> dict:
        return {"tasks": [t.to_json() for t in self.tasks], "hidden": self.hidden, "depth": self.depth,
                "dropout": self.dropout, "weighting": self.weighting, "weighting_params": self.weighting_params,
                "lr": self.lr, "weight_decay": self.weight_decay, "batch_size": self.batch_size,
                "max_epochs": self.max_epochs, "patience": self.patience, "seed": self.seed,
                "affinity_every": self.affinity_every, "class_weight": self.class_weight,
                "standardize": self.standardize, "search": self.search, "search_space": self.search_space,
                "threads": self.threads, "min_delta": self.min_delta}

    # --- training -------------------------------------------------------------------------
    def _losses(self, out: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> torch.Tensor:
        """(T,) unweighted per-task losses over the rows that have each task's label."""
        return task_losses(self.tasks, out, y)[0]

    @staticmethod
    def _target_tensor(t: TaskSpec, v) -> torch.Tensor:
        return torch.from_numpy(np.asarray(v, dtype=np.int64 if t.kind == "multiclass" else np.float32))

    def _candidates(self) -> list[dict]:
        base = {"hidden": self.hidden, "depth": self.depth, "dropout": self.dropout,
                "weight_decay": self.weight_decay, "class_weight": self.class_weight, "lr": self.lr}
        if not self.search:
            return [base]
        space = dict(self.search_space or DEFAULT_SEARCH)
        bad = [k for k in space if k not in SEARCHABLE]
        if bad or not space:
            raise ConfigError(f"search_space keys {bad or '(none)'} not searchable",
                              fix=f"use keys among {list(SEARCHABLE)}, each with a list of values")
        keys = list(space)
        return [{**base, **dict(zip(keys, combo))} for combo in itertools.product(*(list(space[k]) for k in keys))]

    def fit(self, X: np.ndarray, Y: dict[str, np.ndarray], X_val: np.ndarray | None = None,
            Y_val: dict[str, np.ndarray] | None = None, on_epoch=None) -> "MultiTaskHeads":
        """``Y`` maps task name → encoded labels (``TaskSpec.encode``; ``-1``/NaN = no label).
        ``on_epoch(epoch, train_loss, val_loss)`` is called after each epoch (progress bars)."""
        X = np.asarray(X, dtype=np.float32)
        self._check_targets(X, Y)
        has_val = X_val is not None and len(X_val) > 0
        if has_val:
            X_val = np.asarray(X_val, dtype=np.float32)
            self._check_targets(X_val, Y_val, "validation ")
        elif self.search:
            raise ConfigError("search=True chooses settings on a validation split, and none was given",
                              fix="pass X_val and Y_val (plait train does), or set search = false")
        self.n_features_in_ = X.shape[1]
        if self.standardize:
            mean, std = X.mean(axis=0), X.std(axis=0)
            self.input_mean_, self.input_scale_ = mean.astype(np.float32), np.where(std < 1e-6, 1.0, std).astype(np.float32)
        else:
            self.input_mean_ = np.zeros(X.shape[1], np.float32)
            self.input_scale_ = np.ones(X.shape[1], np.float32)
        xt = torch.from_numpy(self._scaled(X))
        yt = {t.name: self._target_tensor(t, Y[t.name]) for t in self.tasks}
        val = (torch.from_numpy(self._scaled(X_val)), {t.name: np.asarray(Y_val[t.name]) for t in self.tasks}) if has_val else None
        self.search_ = []
        best = None
        for settings in self._candidates():
            with torch_threads(self.threads):
                run = self._train(settings, xt, yt, Y, val, on_epoch if not self.search else None)
            self.search_.append({"settings": settings, "val_score": run["score"], "epochs": len(run["history"]),
                                 "best_epoch": run["best_epoch"]})
            if best is None or run["score"] > best["score"] + 1e-9:
                best = run
        self.model_, self.settings_ = best["model"], best["settings"]
        self.history_, self.best_epoch_, self.best_score_ = best["history"], best["best_epoch"], best["score"]
        self.affinity_, self.weighting_ = best["affinity"], best["weighting"]
        self.model_.eval()
        return self

    def _train(self, s: dict, xt: torch.Tensor, yt: dict, Y: dict, val, on_epoch) -> dict:
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        model = MultiTaskNet(xt.shape[1], self.tasks, s["hidden"], s["depth"], s["dropout"])
        weighting = WEIGHTINGS.get(self.weighting)(len(self.tasks), **(self.weighting_params or {}))
        shared = list(model.trunk.parameters())
        head_params = list(model.heads.parameters())
        if weighting.uses_gradients and not shared:
            raise ConfigError(f"{self.weighting} weighting needs a shared trunk (depth ≥ 1)", fix="set depth = 1 or more")
        opt = AdamW([{"params": list(model.parameters()), "weight_decay": s["weight_decay"]},
                     {"params": list(weighting.parameters()), "weight_decay": 0.0}], lr=s["lr"])
        cw = {t.name: class_weights(t, np.asarray(Y[t.name]), s["class_weight"]) for t in self.tasks}
        n = len(xt)
        batch = self.batch_size or auto_batch_size(n)
        state = TrainState(kinds=tuple(t.kind for t in self.tasks))
        affinity_sum, affinity_n = np.zeros((len(self.tasks), len(self.tasks))), 0
        best_key, best_state, best_epoch, bad_epochs, history, reference = None, None, 0, 0, [], None
        for epoch in range(self.max_epochs):
            state.epoch = epoch
            model.train()
            order = torch.from_numpy(rng.permutation(n))
            epoch_losses, epoch_weights = [], []
            for start in range(0, n, batch):
                idx = order[start:start + batch]
                losses, state.present = task_losses(self.tasks, model(xt[idx]), {k: v[idx] for k, v in yt.items()}, cw)
                opt.zero_grad()
                if self.affinity_every and state.step % self.affinity_every == 0 and len(self.tasks) > 1:
                    affinity_sum += cosine_matrix(task_gradients(losses, shared)).numpy()
                    affinity_n += 1
                if weighting.uses_gradients:
                    weights = weighting.backward(losses, shared, state)
                    grads = torch.autograd.grad((weights.detach() * losses).sum(), head_params, allow_unused=True)
                    for p, g in zip(head_params, grads):
                        p.grad = g
                else:
                    weights = weighting(losses, state)
                    ((weights * losses).sum() + weighting.regularizer()).backward()
                opt.step()
                state.step += 1
                epoch_losses.append(losses.detach().numpy())
                epoch_weights.append(weights.detach().numpy())
            train_loss = np.mean(epoch_losses, axis=0)
            state.epoch_losses.append(train_loss.tolist())
            val_loss, score = None, -float(train_loss.sum())
            if val is not None:
                val_loss, score = self._validate(model, val)
            history.append({"epoch": epoch, "train": train_loss.tolist(),
                            "val": None if val_loss is None else val_loss.tolist(),
                            "val_score": None if val is None else score,
                            "weights": np.mean(epoch_weights, axis=0).tolist()})
            if on_epoch:
                on_epoch(epoch, float(train_loss.sum()), None if val_loss is None else float(val_loss.sum()))
            # the best epoch: highest metric, ties (common on small validation sets) to the lower loss;
            # patience counts epochs since the metric last rose by min_delta, so a metric creeping
            # up by noise-sized steps does not keep a converged run going
            key = (round(score, 4), -float((val_loss if val_loss is not None else train_loss).sum()))
            if best_key is None or key > best_key:
                best_key, best_epoch = key, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if reference is None or score > reference + self.min_delta:
                reference, bad_epochs = score, 0
            else:
                bad_epochs += 1
                if bad_epochs >= self.patience:
                    break
        model.load_state_dict(best_state)
        model.eval()
        return {"model": model, "weighting": weighting, "settings": s, "history": history, "best_epoch": best_epoch,
                "score": best_key[0],
                "affinity": (affinity_sum / affinity_n).tolist() if affinity_n else None}

    def _validate(self, model, val) -> tuple[np.ndarray, float]:
        """Validation losses (T,) and the mean per-task score (macro-F1 / R²)."""
        xv, yv = val
        model.eval()
        with torch.no_grad():
            out = model(xv)
            losses, _ = task_losses(self.tasks, out, {t.name: self._target_tensor(t, yv[t.name]) for t in self.tasks})
        pred = self._decide(out)
        scores = [task_score(t, yv[t.name], pred[t.name]) for t in self.tasks]
        scores = [s for s in scores if s == s]
        return losses.numpy(), float(np.mean(scores)) if scores else float("nan")

    def _check_targets(self, X: np.ndarray, Y: dict[str, np.ndarray], what: str = "") -> None:
        for t in self.tasks:
            if Y is None or t.name not in Y:
                raise SchemaMismatch(f"no {what}labels for task {t.name!r}", fix=f"pass Y[{t.name!r}] (use -1 for missing)")
            y = np.asarray(Y[t.name])
            want = (len(X), t.n_outputs) if t.kind == "multilabel" else (len(X),)
            if y.shape != want:
                raise SchemaMismatch(f"{what}labels for {t.name!r} have shape {y.shape}, expected {want}",
                                     fix="encode labels with TaskSpec.encode (one row per row of X)")
            if t.kind == "multiclass" and y.max(initial=MISSING) >= t.n_outputs:
                raise SchemaMismatch(f"task {t.name!r} has label index {y.max()} but {t.n_outputs} classes",
                                     fix="encode labels with TaskSpec.encode")

    # --- inference ------------------------------------------------------------------------
    def _scaled(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.input_mean_) / self.input_scale_).astype(np.float32)

    def _check_fitted(self, X: np.ndarray) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError("MultiTaskHeads is not fitted yet", fix="call fit(X, Y) first, or load() a saved head")
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise SchemaMismatch(f"X has {X.shape[-1]} features, the head was trained on {self.n_features_in_}",
                                 fix="score with the fused table the head was trained on")

    def _proba(self, out: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
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

    def _decide(self, out: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        proba = self._proba(out)
        return {t.name: proba[t.name].argmax(axis=1) if t.kind == "multiclass" else
                (proba[t.name] >= 0.5 if t.kind == "multilabel" else proba[t.name]) for t in self.tasks}

    def predict_proba(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """multiclass: (n, C) softmax; multilabel: (n, C) sigmoids; regression: (n,) values."""
        X = np.asarray(X, dtype=np.float32)
        self._check_fitted(X)
        with torch.no_grad():
            return self._proba(self.model_(torch.from_numpy(self._scaled(X))))

    def predict(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """multiclass: class index; multilabel: (n, C) bool at 0.5; regression: value."""
        X = np.asarray(X, dtype=np.float32)
        self._check_fitted(X)
        with torch.no_grad():
            return self._decide(self.model_(torch.from_numpy(self._scaled(X))))

    # --- persistence: safetensors + JSON, never pickle -------------------------------------
    def fit_report(self) -> dict:
        """JSON-able summary for the train stage to print and store."""
        return {"settings": self.settings_, "search": self.search_, "best_epoch": self.best_epoch_,
                "epochs": len(self.history_), "val_score": self.best_score_}

    def save(self, folder: str | Path, extra: dict | None = None) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.contiguous() for k, v in self.model_.state_dict().items()}
        tensors["_input.mean"] = torch.from_numpy(self.input_mean_)
        tensors["_input.scale"] = torch.from_numpy(self.input_scale_)
        save_file(tensors, folder / "model.safetensors")
        cfg = {"params": self.get_params(), "n_features_in": self.n_features_in_, "best_epoch": self.best_epoch_,
               "best_score": self.best_score_, "settings": self.settings_, "search": self.search_,
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
        est.best_score_ = cfg.get("best_score")
        est.history_ = cfg.get("history", [])
        est.affinity_ = cfg.get("affinity")
        est.search_ = cfg.get("search", [])
        est.settings_ = cfg.get("settings") or {k: params[k] for k in ("hidden", "depth", "dropout", "weight_decay",
                                                                         "class_weight", "lr") if k in params}
        s = est.settings_
        est.model_ = MultiTaskNet(est.n_features_in_, est.tasks, s.get("hidden", est.hidden), s.get("depth", est.depth),
                                  s.get("dropout", est.dropout))
        state = load_file(folder / "model.safetensors")
        # heads saved before input standardisation existed have no scaling: identity
        est.input_mean_ = state.pop("_input.mean", torch.zeros(est.n_features_in_)).numpy()
        est.input_scale_ = state.pop("_input.scale", torch.ones(est.n_features_in_)).numpy()
        try:
            est.model_.load_state_dict(state)
        except RuntimeError as e:
            raise SchemaMismatch(f"weights in {folder} do not match its config.json: {e}",
                                 fix="re-train the head (plait train) or restore the matching files") from e
        est.model_.eval()
        return est
