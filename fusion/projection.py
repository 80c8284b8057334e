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

Transform is plain numpy (ReLU MLP), so scoring needs no torch. Fitted attributes:
``modalities_``, ``dims_``, ``dim_`` and ``params_`` (the MLP weights per modality).
"""
from __future__ import annotations

import numpy as np

from fusion.align import masked_mean
from fusion.base import FUSIONS, Blocks, Fusion, Masks, check_blocks, check_is_fitted
from fusion.concat import l2_normalize
from fusion.labels import as_tasks
from store.errors import ConfigError, SchemaMismatch

_LAYERS = ("w1", "b1", "w2", "b2")


@FUSIONS.register("projection")
class ProjectionFusion(Fusion):
    method = "projection"
    _params = ("dim", "hidden", "objective", "epochs", "lr", "batch_size", "temperature", "seed")

    def __init__(self, dim: int = 128, hidden: int = 256, objective: str = "supervised", epochs: int = 30,
                 lr: float = 1e-3, batch_size: int = 256, temperature: float = 0.07, seed: int = 0):
        self.dim = dim
        self.hidden = hidden
        self.objective = objective
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.temperature = temperature
        self.seed = seed

    def fit(self, blocks: Blocks, masks: Masks | None = None, y=None) -> "ProjectionFusion":
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
        def mlp(d):
            return nn.Sequential(nn.Linear(d, self.hidden), nn.ReLU(), nn.Linear(self.hidden, self.dim))

        if self.objective == "supervised":
            joint = torch.from_numpy(self._joint_input(blocks, masks))
            nets = nn.ModuleDict({"joint": mlp(joint.shape[1])})
        else:
            nets = nn.ModuleDict({m: mlp(d) for m, d in self.dims_.items()})
            xs = {m: torch.from_numpy(np.asarray(blocks[m], np.float32)) for m in self.modalities_}
        params = list(nets.parameters())
        if self.objective == "supervised":
            tasks = {t: torch.from_numpy(v) for t, v in as_tasks(y, n).items() if (v >= 0).any()}
            heads = nn.ModuleDict({t: nn.Linear(self.dim, int(v.max()) + 1) for t, v in tasks.items()})
            params += list(heads.parameters())
            rows = np.arange(n)
        else:
            a, b = self.modalities_
            rows = np.flatnonzero(masks[a] & masks[b])
            if len(rows) < 2:
                raise SchemaMismatch("contrastive fusion needs rows with both modalities", fix="embed both modalities")
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=1e-4)
        for _ in range(self.epochs):
            order = rows[rng.permutation(len(rows))]
            for start in range(0, len(order), self.batch_size):
                idx = torch.from_numpy(order[start:start + self.batch_size])
                if self.objective == "supervised":
                    fused = nets["joint"](joint[idx])
                    loss = sum(nn.functional.cross_entropy(h(fused)[tasks[t][idx] >= 0], tasks[t][idx][tasks[t][idx] >= 0])
                               for t, h in heads.items() if (tasks[t][idx] >= 0).any())
                else:
                    z = {m: nn.functional.normalize(nets[m](xs[m][idx]), dim=1) for m in self.modalities_}
                    logits = z[a] @ z[b].T / self.temperature
                    target = torch.arange(len(idx))
                    loss = (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target)) / 2
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.params_ = {m: {"w1": net[0].weight.detach().numpy().T.copy(), "b1": net[0].bias.detach().numpy().copy(),
                            "w2": net[2].weight.detach().numpy().T.copy(), "b2": net[2].bias.detach().numpy().copy()}
                        for m, net in nets.items()}
        return self

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
        if self.objective == "supervised":
            return self._mlp(self.params_["joint"], self._joint_input(blocks, masks))
        latents = [self.project(m, blocks[m]) for m in self.modalities_]
        return masked_mean(latents, np.stack([masks[m] for m in self.modalities_], axis=1))

    def _fitted_arrays(self) -> dict[str, np.ndarray]:
        return {f"{m}.{k}": v for m, p in self.params_.items() for k, v in p.items()}

    def _fitted_meta(self) -> dict:
        return {"modalities": self.modalities_, "dims": self.dims_, "dim": self.dim_}

    def _set_fitted(self, arrays, meta) -> None:
        self.modalities_, self.dims_, self.dim_ = meta["modalities"], meta["dims"], meta["dim"]
        nets = ["joint"] if self.objective == "supervised" else self.modalities_
        self.params_ = {m: {k: arrays[f"{m}.{k}"] for k in _LAYERS} for m in nets}
