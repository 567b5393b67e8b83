"""The stacked MLP: M independent members computed as one batched network.

    from pipeline.nets.build import build_model
    model = build_model(input_shape, d_out, seeds, cell.model, cell.variant)  # model.kind: mlp or cnn

Hidden layer l: x = u W_l + b_l  ->  norm_l  ->  activation. The output layer is a plain
Linear(+bias). Every tensor carries the member dim first: W_l is [M, d_in, d_out].
Each member draws its own initialisation from a generator seeded by its seed alone, so
a member is the same network whether it trains in a stack or alone.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.config import ModelSettings, VariantSettings
from pipeline.nets.norms import make_norm
from pipeline.spec.variants import norm_spec

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "identity": nn.Identity}


class StackedLinear(nn.Module):
    """y = x W + b with x [M, B, d_in]; `weight_norm` gives w_j = g_j v_j / ||v_j||."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, weight_norm: bool = False):
        super().__init__()
        self.weight = nn.Parameter(weight)  # v when weight_norm
        self.bias = nn.Parameter(bias) if bias is not None else None
        self.weight_norm = weight_norm
        if weight_norm:  # g starts at ||v_j||: w = v at init
            self.g = nn.Parameter(weight.norm(dim=1, keepdim=True).clone())

    def effective_weight(self) -> torch.Tensor:
        if not self.weight_norm:
            return self.weight
        return self.g * self.weight / self.weight.norm(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.effective_weight()
        return torch.bmm(x, w) if self.bias is None else torch.baddbmm(self.bias, x, w)


def init_std(cfg: ModelSettings, fan_in: int, fan_out: int) -> float:
    """The std of W's entries at initialization (dense or conv: fans count the kernel's positions)."""
    if cfg.init == "kaiming":
        return math.sqrt(2.0 / fan_in)
    if cfg.init == "xavier":
        return math.sqrt(2.0 / (fan_in + fan_out))
    return cfg.init_std


def _init_member(gen: torch.Generator, d_in: int, d_out: int, cfg: ModelSettings):
    """One member's (W, b) for one layer; b is always drawn so RNG use never depends on `bias`."""
    w = torch.randn(d_in, d_out, generator=gen) * init_std(cfg, d_in, d_out)
    b = torch.randn(1, d_out, generator=gen) * cfg.bias_init
    return w, b


def norm_settings(variant: VariantSettings) -> dict:
    """The variant's keyword arguments for make_norm."""
    return dict(
        affine=variant.affine,
        groups=variant.groups,
        rmax=variant.rmax,
        dmax=variant.dmax,
        renorm_hold=variant.renorm_hold,
        renorm_ramp=variant.renorm_ramp,
    )


class StackedBase(nn.Module):
    """What the trainer calls on any stacked model with hidden `norms` (MLP and CNN)."""

    def set_step(self, t: int) -> None:
        """Tell every hidden norm the training step about to run (batch_renorm's schedule)."""
        for norm in self.norms:
            norm.set_step(t)

    @torch.no_grad()
    def refresh_population(self, x_full: torch.Tensor) -> None:
        """Recompute the population_* statistics on the full training set [M, N, ...]."""
        for norm in self.norms:
            norm.collect = True
        was_training = self.training
        self.train()
        try:
            self(x_full)
        finally:
            for norm in self.norms:
                norm.collect = False
            self.train(was_training)

    def uses_population(self) -> bool:
        """Some hidden norm refreshes (its spec row reads `refresh_every`): the trainer calls refresh_population."""
        return any(n.spec is not None and n.spec.refreshes for n in self.norms)


class StackedMLP(StackedBase):
    def __init__(self, d_in: int, d_out: int, seeds: list[int], model: ModelSettings, variant: VariantSettings):
        super().__init__()
        self.members = len(seeds)
        dims = [d_in] + [model.width] * model.depth + [d_out]
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        params = [[_init_member(g, a, b, model) for g in gens] for a, b in zip(dims[:-1], dims[1:])]
        weight_norm = norm_spec(variant.norm).reparametrizes_weight
        norm_kw = norm_settings(variant)

        self.linears = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i, per_member in enumerate(params):
            w = torch.stack([p[0] for p in per_member])
            b = torch.stack([p[1] for p in per_member])
            hidden = i < model.depth
            self.linears.append(
                StackedLinear(w, b if (variant.bias or not hidden) else None, weight_norm=weight_norm and hidden)
            )
            if hidden:
                self.norms.append(make_norm(variant.norm, self.members, model.width, **norm_kw))
        self.act = ACTIVATIONS[model.activation]()
        if variant.trainable == "bias":  # the bias-only toy: u and W fixed, only hidden b trains
            for p in self.parameters():
                p.requires_grad_(False)
            for lin in self.linears[:-1]:
                if lin.bias is not None:
                    lin.bias.requires_grad_(True)

    @property
    def hidden(self):
        return list(zip(self.linears[:-1], self.norms))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for lin, norm in self.hidden:
            x = self.act(norm(lin(x)))
        return self.linears[-1](x)
