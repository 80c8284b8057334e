"""Loss weighting strategies: small interchangeable ``nn.Module`` classes.

Contract: ``forward(losses, state) -> weights`` with ``losses`` a ``(T,)`` tensor of the
current per-task losses and ``state`` the :class:`TrainState` (epoch, loss history); the
trainer minimises ``(weights * losses).sum()``. Strategies with learnable parameters
(uncertainty weighting) add them in ``__init__`` and the trainer optimises them too.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from store.registry import Registry

WEIGHTINGS: Registry[type["Weighting"]] = Registry("loss weighting")


@dataclass
class TrainState:
    epoch: int = 0
    epoch_losses: list[list[float]] = field(default_factory=list)  # per epoch, per task


class Weighting(nn.Module):
    def __init__(self, n_tasks: int):
        super().__init__()
        self.n_tasks = n_tasks

    def forward(self, losses: torch.Tensor, state: TrainState) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError
