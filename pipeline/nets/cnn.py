"""The stacked CNN: M independent convolutional members computed as one network.

Block l: x = conv_l(u) + b_l (k x k, "same" padding) -> norm_l (per channel, see
pipeline/nets/norms.py) -> activation, optionally a 2x2 average pool every `pool_every` blocks;
then global average pooling and a linear head. Members run as ONE grouped convolution
(groups = members) on [B, M*C, H, W] in channels-last memory: measured on this 2-core CPU
(25 members, 16 channels, batch 64, forward + backward), grouped channels-last took 108 ms
(8x8) / 655 ms (28x28), grouped NCHW 180 / 1603 ms, torch.vmap 176 / 1589 ms, unfolded
patches + bmm 2013 / 12951 ms. Channels-last also makes the norms' rows view
[M, B*H*W, C] free. Every member draws its initialisation from its own seeded generator
(b always drawn), so a member is the same network in a stack or alone.

    from pipeline.nets.cnn import StackedCNN
    model = StackedCNN(in_channels=1, d_out=10, seeds=[0, 1], model=cell.model, variant=cell.variant)
    logits = model(x)   # x [M, B, C, H, W] -> [M, B, classes]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import ModelSettings, VariantSettings
from pipeline.nets.mlp import ACTIVATIONS, StackedBase, StackedLinear, _init_member, init_std, norm_settings
from pipeline.nets.norms import make_norm
from pipeline.spec.variants import norm_spec

CL = torch.channels_last


def to_members(x: torch.Tensor, m: int) -> torch.Tensor:
    """[B, M*C, H, W] -> [M, B, C, H, W] (a view)."""
    b, mc, h, w = x.shape
    return x.view(b, m, mc // m, h, w).transpose(0, 1)


def from_members(x: torch.Tensor) -> torch.Tensor:
    """[M, B, C, H, W] -> [B, M*C, H, W] channels-last (a view when x came from to_members)."""
    m, b, c, h, w = x.shape
    return x.transpose(0, 1).reshape(b, m * c, h, w).contiguous(memory_format=CL)


class StackedConv2d(nn.Module):
    """y = conv(x, W_m) + b_m per member, as one grouped convolution.

    weight [M, C_out, C_in, k, k], bias [M, 1, C_out] (one scalar per channel, shaped like
    the norms' beta); `weight_norm`: w_o = g_o v_o / ||v_o|| per output channel."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, weight_norm: bool = False):
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias) if bias is not None else None
        self.weight_norm = weight_norm
        if weight_norm:  # g starts at ||v_o||: w = v at init
            self.g = nn.Parameter(self._vnorm(weight).clone())

    @staticmethod
    def _vnorm(v: torch.Tensor) -> torch.Tensor:
        return v.flatten(2).norm(dim=2)[..., None, None, None]  # [M, C_out, 1, 1, 1]

    def effective_weight(self) -> torch.Tensor:
        if not self.weight_norm:
            return self.weight
        return self.g * self.weight / self._vnorm(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, M*C_in, H, W] -> [B, M*C_out, H, W]."""
        w = self.effective_weight()
        m, c_out, c_in, k, _ = w.shape
        b = self.bias.reshape(m * c_out) if self.bias is not None else None
        return F.conv2d(x.contiguous(memory_format=CL), w.reshape(m * c_out, c_in, k, k), b, padding=k // 2, groups=m)


def _init_conv_member(gen: torch.Generator, c_in: int, c_out: int, cfg: ModelSettings):
    """One member's (W, b) for one conv layer; fan-in C_in*k*k, fan-out C_out*k*k."""
    k = cfg.kernel_size
    w = torch.randn(c_out, c_in, k, k, generator=gen) * init_std(cfg, c_in * k * k, c_out * k * k)
    b = torch.randn(1, c_out, generator=gen) * cfg.bias_init
    return w, b


class StackedCNN(StackedBase):
    def __init__(self, in_channels: int, d_out: int, seeds: list[int], model: ModelSettings, variant: VariantSettings):
        super().__init__()
        self.members = len(seeds)
        self.pool_every = model.pool_every
        chans = [in_channels] + [model.channels] * model.depth
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        weight_norm = norm_spec(variant.norm).reparametrizes_weight
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            per_member = [_init_conv_member(g, c_in, c_out, model) for g in gens]
            w = torch.stack([p[0] for p in per_member])
            b = torch.stack([p[1] for p in per_member])
            self.convs.append(StackedConv2d(w, b if variant.bias else None, weight_norm=weight_norm))
            self.norms.append(make_norm(variant.norm, self.members, c_out, **norm_settings(variant)))
        head = [_init_member(g, model.channels, d_out, model) for g in gens]
        self.head = StackedLinear(torch.stack([p[0] for p in head]), torch.stack([p[1] for p in head]))
        self.act = ACTIVATIONS[model.activation]()
        if variant.trainable == "bias":  # the bias-only toy: only the conv biases train
            for p in self.parameters():
                p.requires_grad_(False)
            for conv in self.convs:
                if conv.bias is not None:
                    conv.bias.requires_grad_(True)

    @property
    def hidden(self):
        return list(zip(self.convs, self.norms))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [M, B, C, H, W] -> logits [M, B, classes]."""
        m = self.members
        h = from_members(x)
        for i, (conv, norm) in enumerate(self.hidden):
            h = from_members(self.act(norm(to_members(conv(h), m))))
            if self.pool_every and (i + 1) % self.pool_every == 0 and min(h.shape[-2:]) >= 2:
                h = F.avg_pool2d(h, 2)
        pooled = h.mean(dim=(2, 3))  # global average pooling: [B, M*C]
        return self.head(pooled.view(pooled.shape[0], m, -1).transpose(0, 1))
