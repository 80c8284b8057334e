"""Uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018), in the paper's form by default.

Each task t has a learned log-variance s_t = log σ_t². The paper derives the weight from the
task's likelihood: a Gaussian (regression, MSE) gives L_t / (2σ_t²) + log σ_t, a softmax
classifier with temperature σ² gives approximately L_t / σ_t² + log σ_t (their eq. 10). So

- ``form="kendall"`` (default): weight e^{-s_t} for classification (multi-class and
  multi-label: Bernoulli/softmax likelihoods), e^{-s_t} / 2 for regression;
- ``form="uniform"``: e^{-s_t} / 2 for every task, LibMTL's ``UW`` (a simplification that
  halves a classifier's weight relative to the paper).

Both add the regulariser Σ s_t / 2 (= Σ log σ_t), which stops the weights collapsing to 0.
The trainer keeps weight decay off s_t: decay would pull every σ_t towards 1, i.e. towards
fixed weights, which is not the paper's objective. Weights returned: the per-task factors.
"""
from __future__ import annotations

import torch
from torch import nn

from heads.weighting.base import WEIGHTINGS, TrainState, Weighting
from store.errors import ConfigError

FORMS = ("kendall", "uniform")


@WEIGHTINGS.register("uncertainty")
class UncertaintyWeighting(Weighting):
    def __init__(self, n_tasks: int, form: str = "kendall"):
        super().__init__(n_tasks)
        if form not in FORMS:
            raise ConfigError(f"uncertainty form {form!r} unknown", fix=f"use one of {list(FORMS)}")
        self.form = form
        self.log_var = nn.Parameter(torch.zeros(n_tasks))

    def factors(self, state: TrainState) -> torch.Tensor:
        """1 for a classification task and 1/2 for regression (kendall), 1/2 for all (uniform)."""
        if self.form == "uniform":
            return torch.full((self.n_tasks,), 0.5)
        if state.kinds is None or len(state.kinds) != self.n_tasks:
            raise ConfigError("kendall-form uncertainty weighting needs each task's kind",
                              fix="pass TrainState(kinds=...) (MultiTaskHeads does), or use form=\"uniform\"")
        return torch.tensor([0.5 if k == "regression" else 1.0 for k in state.kinds])

    def forward(self, losses: torch.Tensor, state: TrainState) -> torch.Tensor:
        return self.factors(state) * torch.exp(-self.log_var)

    def regularizer(self) -> torch.Tensor:
        return self.log_var.sum() / 2.0
