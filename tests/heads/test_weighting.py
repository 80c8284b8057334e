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


def test_uncertainty_weights_follow_kendall_per_task_kind():
    # s = log σ²: classification weight 1/σ² = e^{-s}, regression 1/(2σ²) = e^{-s}/2 (Kendall et al. 2018)
    w = UncertaintyWeighting(2)
    with torch.no_grad():
        w.log_var.copy_(torch.tensor([math.log(2.0), math.log(4.0)]))
    state = TrainState(kinds=("multiclass", "regression"))
    assert w(torch.ones(2), state).tolist() == pytest.approx([1 / 2, 1 / 8])
    assert float(w.regularizer().detach()) == pytest.approx((math.log(2.0) + math.log(4.0)) / 2)  # Σ log σ
    fresh = UncertaintyWeighting(3)(torch.tensor([1.0, 9.0, 4.0]), TrainState(kinds=("multiclass", "multilabel", "regression")))
    assert fresh.tolist() == [1.0, 1.0, 0.5]


def test_uncertainty_uniform_form_is_libmtl_half_inverse_variance_for_every_task():
    w = UncertaintyWeighting(2, form="uniform")
    with torch.no_grad():
        w.log_var.copy_(torch.tensor([math.log(2.0), 0.0]))
    assert w(torch.ones(2), TrainState()).tolist() == pytest.approx([1 / 4, 1 / 2])


def test_uncertainty_kendall_raises_with_fix_when_task_kinds_unknown():
    with pytest.raises(ConfigError, match="needs each task's kind") as info:
        UncertaintyWeighting(2)(torch.ones(2), TrainState())
    assert "uniform" in info.value.fix
    with pytest.raises(ConfigError, match="unknown"):
        UncertaintyWeighting(2, form="paper")


def test_uncertainty_objective_gradient_on_log_variance_matches_formula():
    # d/ds [e^{-s} L + s/2] = -e^{-s} L + 1/2 (classification); at s = 0, L = 3 → -2.5
    w = UncertaintyWeighting(1)
    loss = (w(torch.tensor([3.0]), TrainState(kinds=("multiclass",))) * torch.tensor([3.0])).sum() + w.regularizer()
    loss.backward()
    assert w.log_var.grad.tolist() == pytest.approx([-2.5])


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


def test_gradnorm_takes_initial_loss_from_first_batch_with_the_tasks_label():
    gn = GradNormWeighting(2, alpha=1.0, lr=0.1)
    grads = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    # first batch: task 2 has no label (loss 0, absent): only task 1 is initialised, nothing moves
    g = gn.weight_gradient(torch.tensor([2.0, 0.0]), grads, torch.tensor([True, False]))
    assert gn.initial[0] == 2.0 and torch.isnan(gn.initial[1]) and g.tolist() == [0.0, 0.0]
    # second batch has task 2's label: its initial loss is this one (never the 0 of batch 1)
    g = gn.weight_gradient(torch.tensor([2.0, 1.0]), grads, torch.tensor([True, True]))
    assert gn.initial.tolist() == [2.0, 1.0]
    # L̃ = (1, 1) → r = (1, 1), target = mean(G) = 3: sign(5 − 3)·5 = 5, sign(1 − 3)·1 = −1
    assert g.tolist() == pytest.approx([5.0, -1.0])


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


def _train(weighting, params=None, seed=0, partial=False):
    import numpy as np

    from heads import MultiTaskHeads, TaskSpec

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 6)).astype(np.float32)
    Y = {"a": (X[:, 0] > 0).astype(np.int64), "b": (X[:, 1] + 0.5 * X[:, 0] > 0).astype(np.int64) * 2 + (X[:, 2] > 0)}
    if partial:
        Y["b"] = np.where(np.arange(400) % 2 == 0, Y["b"], -1)
    tasks = [TaskSpec(name="a", classes=("0", "1")), TaskSpec(name="b", classes=("0", "1", "2", "3"))]
    est = MultiTaskHeads(tasks, hidden=16, max_epochs=6, patience=100, batch_size=64, weighting=weighting,
                         weighting_params=params, seed=seed, affinity_every=0, class_weight=None)
    est.fit(X[:300], {k: v[:300] for k, v in Y.items()}, X[300:], {k: v[300:] for k, v in Y.items()})
    return est


def _params(est):
    return torch.cat([p.detach().reshape(-1) for p in est.model_.parameters()])


def test_equal_weighting_training_is_deterministic_for_a_seed():
    assert torch.equal(_params(_train("equal")), _params(_train("equal")))


@pytest.mark.parametrize("weighting, params", [("fixed", {"weights": [1.0, 3.0]}), ("uncertainty", None),
                                               ("uncertainty", {"form": "uniform"}), ("dwa", None),
                                               ("gradnorm", None), ("pcgrad", None)])
def test_weighting_changes_training_compared_with_equal_on_same_data_and_seed(weighting, params):
    equal, other = _train("equal"), _train(weighting, params)
    assert not torch.allclose(_params(equal), _params(other), atol=1e-6)
    weights = [h["weights"] for h in other.history_]
    if weighting != "pcgrad":  # PCGrad changes gradient directions, not weights
        assert any(abs(w - 1.0) > 1e-3 for ws in weights for w in ws)


def test_gradnorm_trains_with_partial_labels_and_keeps_finite_weights():
    est = _train("gradnorm", partial=True)
    assert all(all(math.isfinite(w) and w > 0 for w in h["weights"]) for h in est.history_)
