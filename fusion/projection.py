"""Projection (deep, latent-space) fusion: a small network per modality into one space.

Two ways to train it:

- ``objective="supervised"``: one joint two-layer MLP over the concatenated L2-normalised
  blocks plus their presence bits (a missing block is zeros *with its bit off*), trained end
  to end from task losses (a linear head per task, cross-entropy, unlabelled rows masked).
  Joint, because a label that depends on an interaction of the modalities (an XOR) cannot be
  read off any sum of per-modality projections;
- ``objective="contrastive"``: a two-layer MLP per modality, trained with symmetric InfoNCE
  between the two projections of the same item (CLIP's loss, Radford et al. 2021). It needs
  no labels; the fused vector is the masked mean of the projections, and ``project`` maps
  one modality into the shared space for cross-modal retrieval.

Both hold out a deterministic ``val_fraction`` of the fit rows and stop early on its loss.
With labels the fused space is then compared with concat on those rows
(:mod:`fusion.guard`) and the method falls back to concat when it does not help: a
128-d bottleneck trained on a few thousand rows lost 0.16 macro-F1 to concat on a 99-class
task (issue 13). ``project`` (contrastive) keeps working after a fallback.

Transform is plain numpy (ReLU MLP), so scoring needs no torch. Fitted attributes:
``modalities_``, ``dims_``, ``dim_`` (the concat width after a fallback), ``fallback_``,
``fit_report_`` and ``params_`` (the MLP weights per modality).
"""
from __future__ import annotations

import numpy as np

from fusion.align import masked_mean
from fusion.base import FUSIONS, Blocks, Fusion, Masks, check_blocks, check_is_fitted
from fusion.concat import l2_normalize
from fusion.guard import holdout, new_report, note_shares, note_unvalidated
from fusion.labels import as_tasks
from store.errors import ConfigError, SchemaMismatch

_LAYERS = ("w1", "b1", "w2", "b2")


@FUSIONS.register("projection")
class ProjectionFusion(Fusion):
    """Parameters
    ----------
    dim, hidden : output and hidden widths of the MLP(s).
    objective : "supervised" (needs ``y``) or "contrastive".
    epochs : the most epochs; training stops after ``patience`` epochs without a lower
        validation loss and keeps the best epoch's weights.
    lr, batch_size, temperature, seed : optimiser, InfoNCE temperature, seed.
    val_fraction, min_gain : held-out share of the fit rows; validation macro-F1 gain over
        concat needed to keep the projection (when labels are given) instead of falling back.
    threads : torch threads while fitting (None: torch's setting).
    """

    method = "projection"
    _params = ("dim", "hidden", "objective", "epochs", "lr", "batch_size", "temperature", "seed", "val_fraction",
               "patience", "min_gain", "threads")

    def __init__(self, dim: int = 128, hidden: int = 256, objective: str = "supervised", epochs: int = 100,
                 lr: float = 1e-3, batch_size: int = 256, temperature: float = 0.07, seed: int = 0,
                 val_fraction: float = 0.2, patience: int = 5, min_gain: float = 0.01, threads: int | None = 1):
        self.dim = dim
        self.hidden = hidden
        self.objective = objective
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.temperature = temperature
        self.seed = seed
        self.val_fraction = val_fraction
        self.patience = patience
        self.min_gain = min_gain
        self.threads = threads

    def fit(self, blocks: Blocks, masks: Masks | None = None, y=None) -> "ProjectionFusion":
        import torch

        before = torch.get_num_threads()
        if self.threads:  # one thread: see heads.estimator.torch_threads for the measurement
            torch.set_num_threads(self.threads)
        try:
            return self._fit(blocks, masks, y)
        finally:
            torch.set_num_threads(before)

    def _fit(self, blocks: Blocks, masks: Masks | None, y) -> "ProjectionFusion":
        import torch
        from torch import nn

        n, masks = check_blocks(blocks, masks)
        if self.objective not in ("supervised", "contrastive"):
            raise ConfigError(f"objective {self.objective!r} unknown", fix="use supervised or contrastive")
        if self.objective == "supervised" and y is None:
            raise ConfigError("supervised projection fusion needs labels", fix="pass y, or use objective=contrastive")
        if self.objective == "contrastive" and len(blocks) != 2:
            raise ConfigError("contrastive projection aligns exactly two modalities", fix="give two inputs")
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.modalities_ = list(blocks)
        self.dims_ = {m: int(blocks[m].shape[1]) for m in self.modalities_}
        self.dim_ = int(self.dim)
        self.fallback_ = False
        fit, val = holdout(n, self.val_fraction, self.seed)
        self.fit_report_ = new_report(self.method, int(fit.sum()), self.dims_, int(val.sum()))

        def mlp(d):
            return nn.Sequential(nn.Linear(d, self.hidden), nn.ReLU(), nn.Linear(self.hidden, self.dim))

        tasks = {t: v for t, v in as_tasks(y, n).items() if (v >= 0).any()} if y is not None else {}
        if self.objective == "supervised" and not tasks:
            raise ConfigError("supervised projection fusion got labels, but no row has one",
                              fix="check the fusion's tasks columns, or use objective=contrastive")
        if self.objective == "supervised":
            joint = torch.from_numpy(self._joint_input(blocks, masks))
            nets = nn.ModuleDict({"joint": mlp(joint.shape[1])})
            targets = {t: torch.from_numpy(v) for t, v in tasks.items()}
            heads = nn.ModuleDict({t: nn.Linear(self.dim, int(v.max()) + 1) for t, v in tasks.items()})
            rows, vrows = np.flatnonzero(fit), np.flatnonzero(val)

            def loss_of(idx):
                z = nets["joint"](joint[idx])
                return sum(nn.functional.cross_entropy(h(z)[targets[t][idx] >= 0], targets[t][idx][targets[t][idx] >= 0])
                           for t, h in heads.items() if (targets[t][idx] >= 0).any())
        else:
            a, b = self.modalities_
            heads = nn.ModuleDict()
            nets = nn.ModuleDict({m: mlp(d) for m, d in self.dims_.items()})
            xs = {m: torch.from_numpy(np.asarray(blocks[m], np.float32)) for m in self.modalities_}
            both = masks[a] & masks[b]
            rows, vrows = np.flatnonzero(fit & both), np.flatnonzero(val & both)
            if len(rows) < 2:
                raise SchemaMismatch("contrastive fusion needs rows with both modalities", fix="embed both modalities")

            def loss_of(idx):
                z = {m: nn.functional.normalize(nets[m](xs[m][idx]), dim=1) for m in self.modalities_}
                logits = z[a] @ z[b].T / self.temperature
                target = torch.arange(len(idx))
                return (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target)) / 2

        opt = torch.optim.AdamW(list(nets.parameters()) + list(heads.parameters()), lr=self.lr, weight_decay=1e-4)
        best, best_state, bad, epochs_run = float("inf"), None, 0, 0
        for _ in range(self.epochs):
            nets.train()
            order = rows[rng.permutation(len(rows))]
            for start in range(0, len(order), self.batch_size):
                idx = torch.from_numpy(order[start:start + self.batch_size])
                if len(idx) < 2:
                    continue
                loss = loss_of(idx)
                opt.zero_grad()
                loss.backward()
                opt.step()
            epochs_run += 1
            if len(vrows) < 2:
                continue
            with torch.no_grad():
                v = float(loss_of(torch.from_numpy(vrows)))
            if v < best - 1e-4:
                best, bad = v, 0
                best_state = {k: t.detach().clone() for k, t in nets.state_dict().items()}
            else:
                bad += 1
                if bad >= self.patience:
                    break
        if best_state is not None:
            nets.load_state_dict(best_state)
        self.params_ = {m: {"w1": net[0].weight.detach().numpy().T.copy(), "b1": net[0].bias.detach().numpy().copy(),
                            "w2": net[2].weight.detach().numpy().T.copy(), "b2": net[2].bias.detach().numpy().copy()}
                        for m, net in nets.items()}
        self.fit_report_["learned"] = {"epochs": epochs_run, "val_loss": None if best_state is None else round(best, 4),
                                       "objective": self.objective, "dim": self.dim_}
        if tasks:
            self.fallback_ = self._against_concat(self._fused(blocks, masks), blocks, masks, tasks, fit, val,
                                                  self.min_gain)
        else:
            note_unvalidated(self.fit_report_, "contrastive objective")
        if self.fallback_:
            self.dim_ = sum(self.dims_.values())
        note_shares(self.fit_report_, self.modalities_, self._shares())
        return self

    def _shares(self) -> np.ndarray:
        """Each block's share of the joint first layer's squared weights (inputs are unit
        blocks, so this is how much of the projection reads each one); equal for contrastive."""
        if self.objective != "supervised":
            return np.full(len(self.modalities_), 1 / len(self.modalities_))
        w1, col, out = self.params_["joint"]["w1"], 0, []
        for m in self.modalities_:
            out.append(float((w1[col:col + self.dims_[m]] ** 2).sum()))
            col += self.dims_[m]
        return np.asarray(out) / max(sum(out), 1e-12)

    def _joint_input(self, blocks: Blocks, masks: dict) -> np.ndarray:
        parts = [np.where(masks[m][:, None], l2_normalize(np.asarray(blocks[m], np.float32)), 0) for m in self.modalities_]
        bits = np.stack([masks[m] for m in self.modalities_], axis=1).astype(np.float32)
        return np.concatenate(parts + [bits], axis=1).astype(np.float32)

    @staticmethod
    def _mlp(p: dict, x: np.ndarray) -> np.ndarray:
        return (np.maximum(x @ p["w1"] + p["b1"], 0) @ p["w2"] + p["b2"]).astype(np.float32)

    def project(self, modality: str, x: np.ndarray) -> np.ndarray:
        """One modality in the shared space (contrastive objective only)."""
        check_is_fitted(self)
        if self.objective != "contrastive":
            raise ConfigError("only a contrastive projection maps one modality on its own",
                              fix="use objective=contrastive for cross-modal retrieval")
        self._check_width(modality, x)
        return self._mlp(self.params_[modality], np.asarray(x, np.float32))

    def transform(self, blocks: Blocks, masks: Masks | None = None) -> np.ndarray:
        masks = self._validated(blocks, masks)
        return self._concat(blocks, masks) if self.fallback_ else self._fused(blocks, masks)

    def _fused(self, blocks: Blocks, masks: dict) -> np.ndarray:
        if self.objective == "supervised":
            return self._mlp(self.params_["joint"], self._joint_input(blocks, masks))
        latents = [self.project(m, blocks[m]) for m in self.modalities_]
        return masked_mean(latents, np.stack([masks[m] for m in self.modalities_], axis=1))

    def _fitted_arrays(self) -> dict[str, np.ndarray]:
        return {f"{m}.{k}": v for m, p in self.params_.items() for k, v in p.items()}

    def _fitted_meta(self) -> dict:
        return {"modalities": self.modalities_, "dims": self.dims_, "dim": self.dim_, "fallback": self.fallback_}

    def _set_fitted(self, arrays, meta) -> None:
        self.modalities_, self.dims_, self.dim_ = meta["modalities"], meta["dims"], meta["dim"]
        self.fallback_ = meta.get("fallback", False)
        nets = ["joint"] if self.objective == "supervised" else self.modalities_
        self.params_ = {m: {k: arrays[f"{m}.{k}"] for k in _LAYERS} for m in nets}
