"""Loss weighting strategies: small interchangeable ``nn.Module`` classes.

Contract: ``forward(losses, state) -> weights`` with ``losses`` a ``(T,)`` tensor of the
current per-task losses and ``state`` the :class:`TrainState` (epoch, per-epoch losses,
which tasks have labels in the current batch, and the task kinds);
the trainer minimises ``(weights * losses).sum() + regularizer()``. Strategies with
learnable parameters (uncertainty weighting) hold them as parameters and the trainer
optimises them too. Gradient-based strategies (GradNorm, PCGrad) set ``uses_gradients``
and implement ``backward(losses, shared_params, state)``, which fills the ``.grad`` of
the shared parameters itself and returns the weights it used.
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
    epoch_losses: list[list[float]] = field(default_factory=list)  # per finished epoch, per task
    step: int = 0
    #: (T,) bool: which tasks have at least one label in the current batch (None: all)
    present: torch.Tensor | None = None
    #: per task "multiclass" / "multilabel" / "regression" (the likelihood each loss comes from)
    kinds: tuple[str, ...] | None = None

    def present_mask(self, n_tasks: int) -> torch.Tensor:
        return torch.ones(n_tasks, dtype=torch.bool) if self.present is None else self.present


class Weighting(nn.Module):
    uses_gradients = False

    def __init__(self, n_tasks: int):
        super().__init__()
        self.n_tasks = n_tasks

    def forward(self, losses: torch.Tensor, state: TrainState) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def regularizer(self) -> torch.Tensor:
        return torch.zeros(())


def task_gradients(losses: torch.Tensor, shared_params: list[torch.Tensor]) -> torch.Tensor:
    """(T, P): each task's loss gradient on the shared parameters, flattened."""
    rows = []
    for t in range(len(losses)):
        grads = torch.autograd.grad(losses[t], shared_params, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                               for g, p in zip(grads, shared_params)]))
    return torch.stack(rows)


def set_flat_grad(shared_params: list[torch.Tensor], flat: torch.Tensor) -> None:
    """Write a flattened gradient into the ``.grad`` of ``shared_params``."""
    start = 0
    for p in shared_params:
        n = p.numel()
        g = flat[start:start + n].reshape(p.shape)
        p.grad = g.clone() if p.grad is None else p.grad + g
        start += n
