"""Equal weighting: every task's loss counts 1. The baseline all dynamic schemes must beat."""
from __future__ import annotations

import torch

from heads.weighting.base import WEIGHTINGS, TrainState, Weighting


@WEIGHTINGS.register("equal")
class EqualWeighting(Weighting):
    def forward(self, losses: torch.Tensor, state: TrainState) -> torch.Tensor:
        return torch.ones_like(losses)
