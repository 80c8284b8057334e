"""Hard parameter sharing: one MLP trunk over the fused vector, one linear head per task."""
from __future__ import annotations

import torch
from torch import nn

from heads.tasks import TaskSpec


class MultiTaskNet(nn.Module):
    def __init__(self, in_dim: int, tasks: list[TaskSpec], hidden: int = 512, depth: int = 1, dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout)]
            width = hidden
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({t.name: nn.Linear(width, t.n_outputs) for t in tasks})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.trunk(x)
        return {name: head(z) for name, head in self.heads.items()}
