"""Fixed weighting: hand-set weights per task (e.g. from a validation sweep)."""
from __future__ import annotations

import torch

from heads.weighting.base import WEIGHTINGS, TrainState, Weighting
from store.errors import ConfigError


@WEIGHTINGS.register("fixed")
class FixedWeighting(Weighting):
    def __init__(self, n_tasks: int, weights: list[float] | None = None):
        super().__init__(n_tasks)
        weights = [1.0] * n_tasks if weights is None else list(weights)
        if len(weights) != n_tasks or any(w < 0 for w in weights):
            raise ConfigError(f"fixed weights {weights} must be {n_tasks} non-negative numbers",
                              fix="give one weight per task")
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32))

    def forward(self, losses: torch.Tensor, state: TrainState) -> torch.Tensor:
        return self.weights
