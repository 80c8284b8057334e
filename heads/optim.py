"""AdamW (Loshchilov & Hutter, ICLR 2019) in a few tensor ops, with per-group weight decay.

Why not ``torch.optim.AdamW``: the first use of any ``torch.optim`` optimiser imports
``torch._dynamo`` (3-4 s on the 2-core development machine), which was a large share of
training a small head. The update below is the same rule as torch's default (non-amsgrad,
decoupled decay): p ← p·(1 − lr·λ) − lr · m̂ / (√v̂ + ε). Groups let the trainer keep weight
decay off parameters it must not shrink (uncertainty weighting's log-variances: decaying
them pulls every task weight towards 1, which is not the paper's objective).
"""
from __future__ import annotations

import torch


class AdamW:
    """``groups``: list of ``{"params": [...], "weight_decay": float}``."""

    def __init__(self, groups: list[dict], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.groups = [{"params": [p for p in g["params"] if p.requires_grad],
                        "weight_decay": float(g.get("weight_decay", 0.0))} for g in groups]
        self.lr, self.betas, self.eps = lr, betas, eps
        self.step_count = 0
        self.state: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def zero_grad(self) -> None:
        for g in self.groups:
            for p in g["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter with a gradient, a few fused ``_foreach`` ops per
        group (Python overhead per step matters on small heads)."""
        self.step_count += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1 ** self.step_count, 1 - b2 ** self.step_count
        for g in self.groups:
            params = [p for p in g["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            for p in params:
                if id(p) not in self.state:
                    self.state[id(p)] = (torch.zeros_like(p), torch.zeros_like(p))
            m = [self.state[id(p)][0] for p in params]
            v = [self.state[id(p)][1] for p in params]
            if g["weight_decay"]:
                torch._foreach_mul_(params, 1 - self.lr * g["weight_decay"])
            torch._foreach_lerp_(m, grads, 1 - b1)  # m ← b1·m + (1 − b1)·g
            torch._foreach_mul_(v, b2)
            torch._foreach_addcmul_(v, grads, grads, value=1 - b2)
            denom = torch._foreach_div(v, c2)
            torch._foreach_sqrt_(denom)
            torch._foreach_add_(denom, self.eps)
            torch._foreach_addcdiv_(params, m, denom, value=-self.lr / c1)
