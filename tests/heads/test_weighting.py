"""Each weighting's update rule against small cases worked out by hand from its paper."""
import math

import pytest
import torch

from heads.weighting import (WEIGHTINGS, DwaWeighting, EqualWeighting, FixedWeighting, GradNormWeighting,
                             PcGradWeighting, TrainState, UncertaintyWeighting, project_conflicting)
from store.errors import ConfigError


def test_registry_lists_every_strategy():
    assert WEIGHTINGS.keys() == ["dwa", "equal", "fixed", "gradnorm", "pcgrad", "uncertainty"]


def test_equal_weights_are_equal_for_any_losses():
    assert EqualWeighting(3)(torch.tensor([0.1, 5.0, 2.0]), TrainState()).tolist() == [1.0, 1.0, 1.0]


def test_fixed_weights_are_returned_as_given_and_checked():
    assert FixedWeighting(2, [0.3, 2.0])(torch.ones(2), TrainState()).tolist() == pytest.approx([0.3, 2.0])
    with pytest.raises(ConfigError, match="2 non-negative"):
        FixedWeighting(2, [1.0])


def test_uncertainty_weights_are_half_inverse_variance_with_log_variance_regulariser():
    w = UncertaintyWeighting(2)
    with torch.no_grad():
        w.log_var.copy_(torch.tensor([math.log(2.0), 0.0]))
    assert w(torch.ones(2), TrainState()).tolist() == pytest.approx([1 / 4, 1 / 2])
    assert float(w.regularizer().detach()) == pytest.approx(math.log(2.0) / 2)
    assert UncertaintyWeighting(3)(torch.tensor([1.0, 9.0, 4.0]), TrainState()).tolist() == [0.5, 0.5, 0.5]


def test_dwa_weights_follow_the_loss_ratio_softmax():
    state = TrainState(epoch_losses=[[1.0, 2.0], [0.5, 2.0]])  # ratios 0.5 and 1.0
    w = DwaWeighting(2, temperature=2.0)(torch.ones(2), state)
    e1, e2 = math.exp(0.5 / 2), math.exp(1.0 / 2)
    assert w.tolist() == pytest.approx([2 * e1 / (e1 + e2), 2 * e2 / (e1 + e2)])
    assert DwaWeighting(2)(torch.ones(2), TrainState(epoch_losses=[[1.0, 3.0]])).tolist() == [1.0, 1.0]
    equal = DwaWeighting(2)(torch.ones(2), TrainState(epoch_losses=[[2.0, 4.0], [1.0, 2.0]]))
    assert equal.tolist() == pytest.approx([1.0, 1.0])


def test_gradnorm_weight_gradient_and_update_match_the_paper_by_hand():
    # Task gradients g1 = (3, 4) → G1 = 5, g2 = (0, 1) → G2 = 1; losses (2, 1) against initial
    # (1, 2): L̃ = (2, 0.5), r = (1.6, 0.4); α = 1 → target = mean(G)·r = 3·r = (4.8, 1.2).
    # ∂Σ|w_t G_t − target_t| / ∂w_t = sign(G_t − target_t)·G_t = (+5, −1).
    gn = GradNormWeighting(2, alpha=1.0, lr=0.1)
    gn.initial = torch.tensor([1.0, 2.0])
    g = gn.weight_gradient(torch.tensor([2.0, 1.0]), torch.tensor([[3.0, 4.0], [0.0, 1.0]]))
    assert g.tolist() == pytest.approx([5.0, -1.0])

    gn = GradNormWeighting(2, alpha=1.0, lr=0.1)
    gn.initial = torch.tensor([1.0, 2.0])
    p = torch.tensor([-2.0 / 3.0, 1.0], requires_grad=True)  # L1 = 3a + 4b = 2, L2 = b = 1
    losses = torch.stack([3 * p[0] + 4 * p[1], p[1]])
    used = gn.backward(losses, [p], TrainState())
    assert used.tolist() == [1.0, 1.0]
    assert p.grad.tolist() == pytest.approx([3.0, 5.0])  # Σ w_t g_t with the weights before the update
    # w ← w − lr·g = (0.5, 1.1), renormalised to sum to T = 2 → (0.625, 1.375)
    assert gn.w.tolist() == pytest.approx([0.625, 1.375])


def test_pcgrad_projects_only_conflicting_gradients():
    out = project_conflicting(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]))
    # g1·g2 = −1 < 0: g1 − (−1/2)·g2 = (0.5, 0.5); g2 − (−1/1)·g1 = (0, 1)
    assert out.tolist() == [pytest.approx([0.5, 0.5]), pytest.approx([0.0, 1.0])]
    agree = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert torch.equal(project_conflicting(agree), agree)


def test_pcgrad_backward_writes_projected_sum_to_shared_params():
    p = torch.tensor([0.0, 0.0], requires_grad=True)
    losses = torch.stack([p[0], -p[0] + p[1]])  # gradients (1, 0) and (−1, 1)
    PcGradWeighting(2).backward(losses, [p], TrainState())
    assert p.grad.tolist() == pytest.approx([0.5, 1.5])
