"""Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019, "End-to-End Multi-Task Learning
with Attention").

w_t(k) = T · exp(r_t(k-1) / τ) / Σ_i exp(r_i(k-1) / τ), with r_t(k-1) = L_t(k-1) / L_t(k-2)
the ratio of the task's average losses over the last two epochs: a task whose loss falls
slowly gets more weight. τ (``temperature``, paper: 2) softens the weights; the first two
epochs use w = 1.
"""
from __future__ import annotations

import torch

from heads.weighting.base import WEIGHTINGS, TrainState, Weighting


@WEIGHTINGS.register("dwa")
class DwaWeighting(Weighting):
    def __init__(self, n_tasks: int, temperature: float = 2.0):
        super().__init__(n_tasks)
        self.temperature = temperature

    def forward(self, losses: torch.Tensor, state: TrainState) -> torch.Tensor:
        if len(state.epoch_losses) < 2:
            return torch.ones(self.n_tasks)
        last, before = torch.tensor(state.epoch_losses[-1]), torch.tensor(state.epoch_losses[-2])
        ratio = last / before.clamp_min(1e-12)
        return self.n_tasks * torch.softmax(ratio / self.temperature, dim=0)
