"""Stacked SGD and Adam: one learning rate per member, and a live mask.

Every parameter has the member dim first. The update of member m is exactly torch.optim's
update with lr = lrs[m] (same float operations, in the same order), and a member whose
`alive` flag is False is not updated at all: a diverged member stays where it stopped.
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer


def _per_member(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.view(-1, *([1] * (like.dim() - 1)))


class StackedOptimizer(Optimizer):
    def __init__(self, params, lrs: torch.Tensor, **defaults):
        super().__init__(params, defaults)
        self.lrs = lrs
        self.alive = torch.ones_like(lrs, dtype=torch.bool)

    def step(self, closure=None):
        # the common case, every member alive, skips the masking (one sync, free on a CPU)
        self._all_alive = bool(self.alive.all())
        self._update()

    def _apply(self, p: torch.Tensor, new: torch.Tensor) -> None:
        if self._all_alive:
            p.copy_(new)
        else:
            p.copy_(torch.where(_per_member(self.alive, p), new, p))


class StackedSGD(StackedOptimizer):
    """torch.optim.SGD (momentum, dampening 0, weight decay, no nesterov) per member."""

    def __init__(self, params, lrs, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(params, lrs, momentum=momentum, weight_decay=weight_decay)

    @torch.no_grad()
    def _update(self):
        for group in self.param_groups:
            mom, wd = group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad
                if wd:
                    d_p = d_p.add(p, alpha=wd)
                if mom:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = d_p.clone()
                    else:
                        buf.mul_(mom).add_(d_p)
                    d_p = buf
                lr = _per_member(self.lrs, p)
                self._apply(p, p - lr * d_p)


class StackedAdam(StackedOptimizer):
    """torch.optim.Adam (no amsgrad) per member."""

    def __init__(self, params, lrs, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, lrs, betas=betas, eps=eps, weight_decay=weight_decay)

    @torch.no_grad()
    def _update(self):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["exp_avg"] = torch.zeros_like(p)
                    st["exp_avg_sq"] = torch.zeros_like(p)
                st["step"] += 1
                st["exp_avg"].lerp_(g, 1 - b1)
                st["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
                bc1 = 1 - b1 ** st["step"]
                bc2_sqrt = (1 - b2 ** st["step"]) ** 0.5
                denom = (st["exp_avg_sq"].sqrt() / bc2_sqrt).add_(group["eps"])
                step_size = _per_member(self.lrs, p) / bc1
                self._apply(p, p - step_size * (st["exp_avg"] / denom))


def make_optimizer(name: str, params, lrs: torch.Tensor, momentum=0.0, weight_decay=0.0, betas=(0.9, 0.999)):
    if name == "sgd":
        return StackedSGD(params, lrs, momentum=momentum, weight_decay=weight_decay)
    return StackedAdam(params, lrs, betas=betas, weight_decay=weight_decay)
