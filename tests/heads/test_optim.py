import pytest
import torch

from heads.optim import AdamW


def test_adamw_matches_torch_adamw_step_for_step():
    torch.manual_seed(0)
    a = torch.randn(5, 3, requires_grad=True)
    b = a.detach().clone().requires_grad_(True)
    x = torch.randn(7, 5)
    mine = AdamW([{"params": [a], "weight_decay": 0.1}], lr=0.01)
    ref = torch.optim.AdamW([b], lr=0.01, weight_decay=0.1)
    for _ in range(5):
        for p, opt in ((a, mine), (b, ref)):
            opt.zero_grad()
            ((x @ p) ** 2).sum().backward()
            opt.step()
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_adamw_group_without_weight_decay_is_not_shrunk_when_gradient_is_zero():
    p, q = torch.ones(3, requires_grad=True), torch.ones(3, requires_grad=True)
    opt = AdamW([{"params": [p], "weight_decay": 0.5}, {"params": [q], "weight_decay": 0.0}], lr=0.1)
    p.grad, q.grad = torch.zeros(3), torch.zeros(3)
    opt.step()
    assert p.tolist() == pytest.approx([0.95] * 3) and q.tolist() == [1.0] * 3  # decay (1 − lr·λ) on p only
