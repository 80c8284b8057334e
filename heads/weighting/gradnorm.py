"""GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, ICML 2018).

Learned weights w_t (start at 1). At each step, G_t = ‖∇_W w_t·L_t‖ on the shared
parameters W; L̃_t = L_t / L_t(0) is the task's loss relative to its first step and
r_t = L̃_t / mean(L̃) its relative inverse training rate. The weights are moved by the
gradient of Σ_t |G_t − mean(G)·r_t^α| (the target treated as a constant), then renormalised
to sum to T. α (``alpha``, paper: 1.5 for most tasks) sets how hard slow tasks are pulled up.
The network itself is trained on Σ_t w_t·L_t with the weights before the update.
"""
from __future__ import annotations

import torch

from heads.weighting.base import WEIGHTINGS, TrainState, Weighting, set_flat_grad, task_gradients


@WEIGHTINGS.register("gradnorm")
class GradNormWeighting(Weighting):
    uses_gradients = True

    def __init__(self, n_tasks: int, alpha: float = 1.5, lr: float = 0.025):
        super().__init__(n_tasks)
        self.alpha = alpha
        self.lr = lr
        self.register_buffer("w", torch.ones(n_tasks))
        self.register_buffer("initial", torch.zeros(n_tasks))

    def forward(self, losses: torch.Tensor, state: TrainState) -> torch.Tensor:
        return self.w

    def weight_gradient(self, losses: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """∂/∂w of Σ|G_t − target_t| for task gradients ``grads`` (T, P) of the unweighted losses."""
        if not torch.any(self.initial):
            self.initial = losses.detach().clone()
        w = self.w.clone().requires_grad_(True)
        norms = (w[:, None] * grads).norm(dim=1)  # G_t
        ratio = losses.detach() / self.initial.clamp_min(1e-12)
        r = ratio / ratio.mean()
        target = (norms.mean() * r ** self.alpha).detach()
        (g,) = torch.autograd.grad((norms - target).abs().sum(), w)
        return g

    def backward(self, losses: torch.Tensor, shared_params: list[torch.Tensor], state: TrainState) -> torch.Tensor:
        grads = task_gradients(losses, shared_params)
        used = self.w.clone()
        set_flat_grad(shared_params, (used[:, None] * grads).sum(dim=0))
        g = self.weight_gradient(losses, grads)
        with torch.no_grad():
            w = (self.w - self.lr * g).clamp_min(1e-3)
            self.w = w * self.n_tasks / w.sum()
        return used
