"""Every normalization variant in its per-channel (conv) form, and the stacked CNN.

References: torch's BatchNorm2d, layer_norm, group_norm and conv2d per member; for every
variant the autograd Jacobian against finite differences of the closed-form "what the
gradient sees" function with statistics per (member, channel) over batch x H x W, in float64;
a member in a stack equals the member alone; and the theory's conv checks."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from pipeline.cell import run_cell
from pipeline.nets.cnn import StackedCNN, StackedConv2d
from pipeline.nets.norms import NORMS, make_norm
from pipeline.spec.variants import norm_spec
from tests.conftest import ALL_VARIANTS, make_cell
from tests.test_norms import RENORM, RENORM_STEP, _fd_jacobian, _renorm_limits

M, B, C, H, W = 2, 3, 4, 3, 3
EPS = 1e-5
CH = (1, 3, 4)  # per (member, channel): over batch x height x width
CNN = {"kind": "cnn", "channels": 4, "depth": 2}


def _x(seed=0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(M, B, C, H, W, generator=g, dtype=torch.float64) * 1.7 + shift


def _layer(name, affine=True, **kw):
    layer = make_norm(name, M, C, affine=affine, groups=2, **kw).double()
    if affine and layer.affine:
        with torch.no_grad():
            layer.gamma.copy_(torch.rand(M, 1, C, dtype=torch.float64) + 0.5)
            layer.beta.copy_(torch.randn(M, 1, C, dtype=torch.float64))
    return layer


def _per_channel(t):
    """A layer's [M, 1, C] statistic or parameter as [M, 1, C, 1, 1] (broadcasts over H, W)."""
    return t.view(M, 1, C, 1, 1)


def _stats(x, dims=CH):
    mu = x.mean(dims, keepdim=True)
    return mu, torch.sqrt(((x - mu) ** 2).mean(dims, keepdim=True) + EPS)


def test_bn_matches_torch_batchnorm2d_per_member():
    x = _x(shift=2.0).requires_grad_(True)
    layer = _layer("bn")
    y = layer(x)
    w = torch.randn_like(y)
    (y * w).sum().backward()
    for m in range(M):
        ref = torch.nn.BatchNorm2d(C, eps=EPS, momentum=0.1).double().train()
        with torch.no_grad():
            ref.weight.copy_(layer.gamma[m, 0])
            ref.bias.copy_(layer.beta[m, 0])
        xm = x.detach()[m].clone().requires_grad_(True)
        ym = ref(xm)
        (ym * w[m]).sum().backward()
        torch.testing.assert_close(y[m], ym)
        torch.testing.assert_close(x.grad[m], xm.grad)
        torch.testing.assert_close(layer.gamma.grad[m, 0], ref.weight.grad)
        torch.testing.assert_close(layer.beta.grad[m, 0], ref.bias.grad)
        torch.testing.assert_close(layer.running_mean[m, 0], ref.running_mean)  # unbiased var over B*H*W
        torch.testing.assert_close(layer.running_var[m, 0], ref.running_var)
    layer.eval()
    ref.eval()
    torch.testing.assert_close(layer(x.detach())[M - 1], ref(x.detach()[M - 1]))


def test_layernorm_and_groupnorm_match_torch_per_example():
    """layernorm: per example over C x H x W (torch's layer_norm over (C, H, W), i.e. group_norm
    with one group), then per-channel gamma, beta; groupnorm: torch's group_norm."""
    x = _x(1)
    ln, gn = _layer("layernorm"), _layer("groupnorm")
    for m in range(M):
        g_ln, b_ln = ln.gamma[m, 0], ln.beta[m, 0]
        ref = F.layer_norm(x[m], (C, H, W), eps=EPS) * g_ln.view(C, 1, 1) + b_ln.view(C, 1, 1)
        torch.testing.assert_close(ln(x)[m], ref)
        torch.testing.assert_close(ln(x)[m], F.group_norm(x[m], 1, g_ln, b_ln, eps=EPS))
        torch.testing.assert_close(gn(x)[m], F.group_norm(x[m], 2, gn.gamma[m, 0], gn.beta[m, 0], eps=EPS))


def _seen(name, layer0, x0):
    """The conv-form forward "as the gradient sees it": every sg(.) replaced by its value at x0,
    every statistic per (member, channel) over batch x H x W, from closed forms."""
    spec = norm_spec(name)
    mu0, s0 = _stats(x0)
    if spec.statistics == "none":
        return lambda x: x
    if name == "batch_renorm":
        sigma = torch.sqrt(_per_channel(layer0.running_var) + EPS)
        rmax, dmax = _renorm_limits(RENORM_STEP, **RENORM)
        r0 = (s0 / sigma).clamp(1 / rmax, rmax)
        d0 = ((mu0 - _per_channel(layer0.running_mean)) / sigma).clamp(-dmax, dmax)
        return lambda x: (x - _stats(x)[0]) / _stats(x)[1] * r0 + d0
    if spec.statistics == "per_example" and not spec.grouped:
        return lambda x: (x - _stats(x, (2, 3, 4))[0]) / _stats(x, (2, 3, 4))[1]
    if spec.statistics == "per_example":

        def gn(x):
            xg = x.reshape(M, B, 2, C // 2, H, W)
            return ((xg - _stats(xg, (3, 4, 5))[0]) / _stats(xg, (3, 4, 5))[1]).reshape(x.shape)

        return gn
    if spec.statistics == "batch" and not spec.detached:  # the gradient goes through the batch statistics
        if spec.scales:
            return lambda x: (x - _stats(x)[0]) / _stats(x)[1]
        return lambda x: x - x.mean(CH, keepdim=True)
    # detached or fixed: the statistics are constants, those of x0 here
    if spec.statistics == "ema" and spec.scales:  # EMA initialized from x0 with the unbiased var over B*H*W
        var_u = ((x0 - mu0) ** 2).sum(CH, keepdim=True) / (B * H * W - 1)
        return lambda x: (x - mu0) / torch.sqrt(var_u + EPS)
    if spec.centers:
        return (lambda x: (x - mu0) / s0) if spec.scales else (lambda x: x - mu0)
    raise KeyError(name)


def _prepared(name, x0):
    layer = _layer(name, affine=False, **(RENORM if name == "batch_renorm" else {}))
    mu0, s0 = _stats(x0)
    if name == "batch_renorm":  # mid-ramp; EMA state that makes r and d non-trivial and unclipped
        layer.set_step(RENORM_STEP)
        layer.running_mean.copy_(mu0.view(M, 1, C) + 0.3)
        layer.running_var.copy_((s0**2).view(M, 1, C) * 1.5)
        layer.initialized.fill_(True)
    if norm_spec(name).refreshes:
        layer.collect = True  # the refresh pass computes the full-set statistics from x0
        layer(x0)
        layer.collect = False
    return layer


@pytest.mark.parametrize("name", sorted(NORMS))
def test_conv_form_gradient_is_what_the_table_says(name):
    x0 = _x(3, shift=1.0)
    layer0 = _prepared(name, x0)
    seen = _seen(name, layer0, x0)

    def forward(x):
        return copy.deepcopy(layer0)(x)

    torch.testing.assert_close(forward(x0), seen(x0))
    analytic = torch.autograd.functional.jacobian(forward, x0).reshape(x0.numel(), x0.numel())
    torch.testing.assert_close(analytic, _fd_jacobian(seen, x0), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["center_detached", "standardize_detached", "running_center_detached"])
def test_conv_form_detached_statistics_hide_the_dependence(name):
    """The naive gradcheck must fail for a detached variant (a detach that does nothing passes)."""
    layer = _layer(name, affine=False)
    x = _x(5, shift=1.0).requires_grad_(True)
    assert not torch.autograd.gradcheck(lambda x: copy.deepcopy(layer)(x), (x,), raise_exception=False)


def test_on_xhat_sees_rows_whose_sum_is_the_per_channel_bias_drive():
    """The trainer sums the hook's gradient over dim 1: per (member, channel) over B x H x W."""
    layer = _layer("center_detached", affine=False)
    seen = []
    layer.on_xhat = seen.append
    x = _x(6).requires_grad_(True)
    w = torch.randn(M, B, C, H, W, dtype=torch.float64)
    y = layer(x)
    assert seen[0].shape == (M, B * H * W, C)
    grads = []
    seen[0].register_hook(grads.append)
    (y * w).sum().backward()
    torch.testing.assert_close(grads[0].sum(1), w.sum(CH).view(M, C))


def _conv(weight_norm=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(M, 5, C, 3, 3, generator=g, dtype=torch.float64)
    b = torch.randn(M, 1, 5, generator=g, dtype=torch.float64)
    return StackedConv2d(w, b, weight_norm=weight_norm).double()


def test_grouped_conv_is_each_members_own_conv2d():
    from pipeline.nets.cnn import from_members, to_members

    conv = _conv()
    x = _x(7)
    y = to_members(conv(from_members(x)), M)
    for m in range(M):
        torch.testing.assert_close(y[m], F.conv2d(x[m], conv.weight[m], conv.bias[m, 0], padding=1))


def test_conv_weightnorm_is_per_output_channel_and_scale_invariant():
    conv = _conv(weight_norm=True)
    v = conv.weight.detach().clone()
    x = _x(8).transpose(0, 1).reshape(B, M * C, H, W)
    y1 = conv(x)
    with torch.no_grad():
        conv.weight[:, 2].mul_(7.0)  # one output channel's v scaled: nothing changes
    torch.testing.assert_close(conv(x), y1)
    norms = v.flatten(2).norm(dim=2)[..., None, None, None]
    torch.testing.assert_close(conv.effective_weight(), conv.g * v / norms)


def _cnn(variant, seeds, **model):
    cell = make_cell(variant, "digits_images", model={**CNN, **model})
    return StackedCNN(1, 10, seeds, cell.model, cell.variant).double()


@pytest.mark.parametrize("pool_every", [0, 1])
def test_stacked_cnn_member_is_a_plain_torch_cnn(pool_every):
    """Member 1 of the stack == conv2d -> BatchNorm2d -> relu (-> avg pool) blocks, global
    average pooling and a linear head, built from torch's own layers with its weights."""
    model = _cnn("bn", [0, 1], pool_every=pool_every)
    x = torch.rand(2, 5, 1, 8, 8, dtype=torch.float64)
    h = x[1]
    for conv, norm in model.hidden:
        bn = torch.nn.BatchNorm2d(4, eps=EPS).double()
        with torch.no_grad():
            bn.weight.copy_(norm.gamma[1, 0])
            bn.bias.copy_(norm.beta[1, 0])
        h = torch.relu(bn(F.conv2d(h, conv.weight[1], conv.bias[1, 0], padding=1)))
        h = F.avg_pool2d(h, 2) if pool_every else h
    ref = h.mean((2, 3)) @ model.head.weight[1] + model.head.bias[1]
    torch.testing.assert_close(model(x)[1], ref)


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_cnn_member_in_a_stack_is_the_member_alone_forward_and_gradients(variant):
    stack, alone = _cnn(variant, [3, 5]), _cnn(variant, [5])
    x = torch.rand(2, 6, 1, 8, 8, dtype=torch.float64)
    for model, xs in ((stack, x), (alone, x[1:])):
        if model.uses_population():
            model.refresh_population(xs)
        model(xs).square().sum().backward()
    torch.testing.assert_close(stack(x)[1], alone(x[1:])[0])
    for (name, p), q in zip(stack.named_parameters(), alone.parameters()):
        torch.testing.assert_close(p[1:], q.detach(), msg=name)
        torch.testing.assert_close(p.grad[1:], q.grad, msg=f"grad {name}")


TRAIN = {"steps": 10, "log_every": 5, "eval_every": 5}


@pytest.mark.parametrize("variant", ALL_VARIANTS + ["bias_only_toy"])
def test_cnn_cell_member_equals_member_alone(tmp_path, variant):
    """tests/test_stacking.py for model.kind cnn: the whole training run, every column."""
    stacked = make_cell(
        variant,
        "digits_images",
        model=CNN,
        optim={"lrs": [0.05, 0.5], "seeds": [0, 1]},
        train=TRAIN,
        tracking={"log_every": 5},
    )
    run_cell(stacked, tmp_path / "stack", track=False, progress=False)
    hs = pd.read_parquet(tmp_path / "stack" / "history.parquet")
    member, (lr, seed) = 2, (0.5, 0)
    alone = make_cell(
        variant,
        "digits_images",
        model=CNN,
        optim={"lrs": [lr], "seeds": [seed]},
        train=TRAIN,
        tracking={"log_every": 5},
    )
    run_cell(alone, tmp_path / "alone", track=False, progress=False)
    ha = pd.read_parquet(tmp_path / "alone" / "history.parquet").drop(columns=["member"]).reset_index(drop=True)
    hm = hs[hs["member"] == member].drop(columns=["member"]).reset_index(drop=True)
    assert list(hm.columns) == list(ha.columns) and len(hm) == len(ha)
    for col in hm.columns:
        np.testing.assert_allclose(
            hm[col].to_numpy(float), ha[col].to_numpy(float), rtol=2e-5, atol=1e-6, err_msg=f"{variant} column {col}"
        )


def _loss(model, x, y):
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten())


def test_under_bn_the_conv_bias_gradient_is_zero_per_channel():
    model = _cnn("bn", [0, 1], bias_init=0.5)
    x, y = torch.rand(2, 8, 1, 8, 8, dtype=torch.float64), torch.randint(0, 10, (2, 8))
    _loss(model, x, y).backward()
    for conv, _ in model.hidden:
        assert conv.bias.grad.abs().max() < 1e-12 * conv.weight.grad.abs().max()
        assert conv.weight.grad.abs().max() > 1e-6


def test_center_detached_loss_does_not_depend_on_the_conv_bias_but_its_gradient_does_not_vanish():
    """x - sg(mu_B): a per-channel b shifts x and mu_B alike, so the training-mode loss is the
    same for any b -- while autograd still hands b a non-zero gradient (docs/science.md, claim1)."""
    model = _cnn("center_detached", [0, 1])
    x, y = torch.rand(2, 8, 1, 8, 8, dtype=torch.float64) + 0.5, torch.randint(0, 10, (2, 8))
    before = _loss(model, x, y)
    before.backward()
    grads = [conv.bias.grad.abs().max() for conv, _ in model.hidden]
    with torch.no_grad():
        for conv, _ in model.hidden:
            conv.bias.add_(torch.randn_like(conv.bias) * 3.0)
    torch.testing.assert_close(_loss(model, x, y), before.detach())
    assert min(grads) > 1e-4
