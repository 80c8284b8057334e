"""PCGrad, gradient surgery for conflicting tasks (Yu et al., NeurIPS 2020).

For each task t, in a random order over the others j: if g_t · g_j < 0, remove from g_t its
component along g_j: g_t ← g_t − (g_t·g_j / ‖g_j‖²) g_j (projecting against the *original*
g_j). The shared parameters get Σ_t g_t; task-specific parameters get their usual gradients.
Weights returned: all ones (PCGrad changes directions, not weights).
"""
from __future__ import annotations

import torch

from heads.weighting.base import WEIGHTINGS, TrainState, Weighting, set_flat_grad, task_gradients


def project_conflicting(grads: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(T, P) task gradients → (T, P) after PCGrad's projections."""
    out = grads.clone()
    n = len(grads)
    for t in range(n):
        for j in torch.randperm(n, generator=generator).tolist():
            if j == t:
                continue
            dot = out[t] @ grads[j]
            if dot < 0:
                out[t] = out[t] - dot / grads[j].pow(2).sum().clamp_min(1e-12) * grads[j]
    return out


@WEIGHTINGS.register("pcgrad")
class PcGradWeighting(Weighting):
    uses_gradients = True

    def __init__(self, n_tasks: int, seed: int = 0):
        super().__init__(n_tasks)
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, losses: torch.Tensor, state: TrainState) -> torch.Tensor:
        return torch.ones(self.n_tasks)

    def backward(self, losses: torch.Tensor, shared_params: list[torch.Tensor], state: TrainState) -> torch.Tensor:
        grads = task_gradients(losses, shared_params)
        set_flat_grad(shared_params, project_conflicting(grads, self.generator).sum(dim=0))
        return torch.ones(self.n_tasks)
