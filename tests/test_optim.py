"""The stacked optimizers reproduce torch.optim per member, with each member's own lr."""

from __future__ import annotations

import pytest
import torch

from pipeline.nets.optim import StackedAdam, StackedSGD

LRS = [0.3, 0.01, 1.5]


def _run(stacked_cls, torch_cls, steps=5, **kw):
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(len(LRS), 4, 3, generator=g)
    grads = [torch.randn(len(LRS), 4, 3, generator=g) for _ in range(steps)]
    w = torch.nn.Parameter(w0.clone())
    opt = stacked_cls([w], torch.tensor(LRS), **kw)
    for gr in grads:
        w.grad = gr.clone() + 0.1 * w.detach()  # gradient that depends on the parameter
        opt.step()
    for m, lr in enumerate(LRS):
        wm = torch.nn.Parameter(w0[m].clone())
        ref = torch_cls([wm], lr=lr, **kw)
        for gr in grads:
            wm.grad = gr[m].clone() + 0.1 * wm.detach()
            ref.step()
        torch.testing.assert_close(w.detach()[m], wm.detach(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kw", [{}, {"momentum": 0.9}, {"weight_decay": 0.01}, {"momentum": 0.5, "weight_decay": 0.1}])
def test_sgd_matches_torch_per_member(kw):
    _run(StackedSGD, torch.optim.SGD, **kw)


@pytest.mark.parametrize("kw", [{}, {"weight_decay": 0.01}, {"betas": (0.8, 0.99)}])
def test_adam_matches_torch_per_member(kw):
    _run(StackedAdam, torch.optim.Adam, **kw)


def test_dead_member_is_not_updated():
    w = torch.nn.Parameter(torch.ones(3, 2))
    opt = StackedSGD([w], torch.tensor(LRS))
    opt.alive = torch.tensor([True, False, True])
    w.grad = torch.full((3, 2), float("nan"))
    w.grad[0] = 1.0
    w.grad[2] = 1.0
    opt.step()
    assert torch.equal(w.detach()[1], torch.ones(2))  # frozen, NaN gradient ignored
    torch.testing.assert_close(w.detach()[0], torch.full((2,), 1 - LRS[0]))
    torch.testing.assert_close(w.detach()[2], torch.full((2,), 1 - LRS[2]))
