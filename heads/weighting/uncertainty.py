"""Uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018).

Each task t has a learned log-variance s_t; the objective is
Σ_t L_t / (2·exp(s_t)) + s_t / 2, so a noisy task (large loss) learns a large s_t and a
small weight, while the s_t/2 term stops all weights collapsing to zero.
Weights returned: 1 / (2·exp(s_t)); regulariser: Σ s_t / 2.
"""
from __future__ import annotations

import torch
from torch import nn

from heads.weighting.base import WEIGHTINGS, TrainState, Weighting


@WEIGHTINGS.register("uncertainty")
class UncertaintyWeighting(Weighting):
    def __init__(self, n_tasks: int):
        super().__init__(n_tasks)
        self.log_var = nn.Parameter(torch.zeros(n_tasks))

    def forward(self, losses: torch.Tensor, state: TrainState) -> torch.Tensor:
        return 1.0 / (2.0 * torch.exp(self.log_var))

    def regularizer(self) -> torch.Tensor:
        return self.log_var.sum() / 2.0
