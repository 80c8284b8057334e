"""GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, ICML 2018).

Learned weights w_t (start at 1). At each step, G_t = ‖∇_W w_t·L_t‖ on the shared
parameters W; L̃_t = L_t / L_t(0) is the task's loss relative to its initial loss and
r_t = L̃_t / mean(L̃) its relative inverse training rate. The weights are moved by the
gradient of Σ_t |G_t − mean(G)·r_t^α| (the target treated as a constant), then renormalised
to sum to T. α (``alpha``, paper: 1.5 for most tasks) sets how hard slow tasks are pulled up.
The network itself is trained on Σ_t w_t·L_t with the weights before the update.

With partial labels a batch may hold no label for a task: its loss is 0 there, so L_t(0)
is taken from the first batch that *has* the task's label (recording 0 would make r_t
infinite later), and a step updates only the tasks present in it and already initialised;
means are over those tasks.
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
        self.register_buffer("initial", torch.full((n_tasks,), float("nan")))

    def forward(self, losses: torch.Tensor, state: TrainState) -> torch.Tensor:
        return self.w

    def weight_gradient(self, losses: torch.Tensor, grads: torch.Tensor,
                        present: torch.Tensor | None = None) -> torch.Tensor:
        """∂/∂w of Σ|G_t − target_t| over the active tasks, for task gradients ``grads`` (T, P)
        of the unweighted losses; 0 for tasks absent from the batch."""
        present = torch.ones(len(losses), dtype=torch.bool) if present is None else present
        fresh = present & torch.isnan(self.initial)
        self.initial = torch.where(fresh, losses.detach(), self.initial)
        active = present & ~torch.isnan(self.initial)
        g = torch.zeros_like(self.w)
        if active.sum() < 2:  # one task alone has nothing to be balanced against
            return g
        w = self.w.clone().requires_grad_(True)
        norms = (w[:, None] * grads).norm(dim=1)[active]  # G_t
        ratio = losses.detach()[active] / self.initial[active].clamp_min(1e-12)
        r = ratio / ratio.mean()
        target = (norms.mean() * r ** self.alpha).detach()
        (full,) = torch.autograd.grad((norms - target).abs().sum(), w)
        g[active] = full[active]
        return g

    def backward(self, losses: torch.Tensor, shared_params: list[torch.Tensor], state: TrainState) -> torch.Tensor:
        grads = task_gradients(losses, shared_params)
        used = self.w.clone()
        set_flat_grad(shared_params, (used[:, None] * grads).sum(dim=0))
        g = self.weight_gradient(losses, grads, state.present_mask(self.n_tasks))
        with torch.no_grad():
            w = (self.w - self.lr * g).clamp_min(1e-3)
            self.w = w * self.n_tasks / w.sum()
        return used
