"""Each normalization layer against a reference: torch's own layers where one exists, and
for every variant the gradient autograd computes against finite differences of the
function "what the gradient sees" (SCIENCE.md table), in float64."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from pipeline.norms import NORMS, make_norm

M, B, FEAT = 2, 6, 4
EPS = 1e-5


def _x(seed=0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(M, B, FEAT, generator=g, dtype=torch.float64) * 1.7 + shift)


def _layer(name, affine=True, **kw):
    layer = make_norm(name, M, FEAT, affine=affine, groups=2, **kw).double()
    if affine and layer.affine:
        with torch.no_grad():  # non-trivial gamma, beta
            layer.gamma.copy_(torch.rand(M, 1, FEAT, dtype=torch.float64) + 0.5)
            layer.beta.copy_(torch.randn(M, 1, FEAT, dtype=torch.float64))
    return layer


def test_registry_covers_science_table():
    expected = {"none", "bn", "center", "center_detached", "standardize_detached", "population_detached",
                "running_detached", "frozen", "batch_renorm", "layernorm", "groupnorm", "weightnorm"}
    assert set(NORMS) == expected


def test_bn_matches_torch_batchnorm1d_per_member():
    x = _x(shift=2.0).requires_grad_(True)
    layer = _layer("bn")
    y = layer(x)
    w = torch.randn_like(y)
    (y * w).sum().backward()
    for m in range(M):
        ref = torch.nn.BatchNorm1d(FEAT, eps=EPS, momentum=0.1).double().train()
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
        torch.testing.assert_close(layer.running_mean[m, 0], ref.running_mean)
        torch.testing.assert_close(layer.running_var[m, 0], ref.running_var)
    layer.eval()  # eval mode normalizes with the running statistics, as torch does
    ref.eval()
    torch.testing.assert_close(layer(x.detach())[M - 1], ref(x.detach()[M - 1]))


def test_layernorm_matches_torch():
    x = _x(1)
    layer = _layer("layernorm")
    for m in range(M):
        ref = F.layer_norm(x[m], (FEAT,), layer.gamma[m, 0], layer.beta[m, 0], eps=EPS)
        torch.testing.assert_close(layer(x)[m], ref)


def test_groupnorm_matches_torch():
    x = _x(2)
    layer = _layer("groupnorm")
    for m in range(M):
        ref = F.group_norm(x[m], 2, layer.gamma[m, 0], layer.beta[m, 0], eps=EPS)
        torch.testing.assert_close(layer(x)[m], ref)


def _stats(x):
    mu = x.mean(1, keepdim=True)
    return mu, torch.sqrt(((x - mu) ** 2).mean(1, keepdim=True) + EPS)


def _seen(name, layer0, x0):
    """The forward "as the gradient sees it": every sg(.) replaced by its value at x0.

    Returns f(x) built from closed forms (not from the layer's code), plus the state the
    layer must be in before its forward at x0.
    """
    mu0, s0 = _stats(x0)
    if name in ("none", "weightnorm"):
        return lambda x: x
    if name == "bn":
        return lambda x: (x - _stats(x)[0]) / _stats(x)[1]
    if name == "center":
        return lambda x: x - x.mean(1, keepdim=True)
    if name == "center_detached":
        return lambda x: x - mu0
    if name == "standardize_detached":
        return lambda x: (x - mu0) / s0
    if name in ("frozen", "population_detached"):
        return lambda x: (x - mu0) / s0  # the first batch / the full set is x0 itself here
    if name == "running_detached":  # EMA initialized from x0 (unbiased var), then used
        var_u = ((x0 - mu0) ** 2).sum(1, keepdim=True) / (B - 1)
        return lambda x: (x - mu0) / torch.sqrt(var_u + EPS)
    if name == "batch_renorm":
        rm, rv = layer0.running_mean, layer0.running_var
        sigma = torch.sqrt(rv + EPS)
        r0 = (s0 / sigma).clamp(1 / layer0.rmax, layer0.rmax)
        d0 = ((mu0 - rm) / sigma).clamp(-layer0.dmax, layer0.dmax)
        return lambda x: (x - _stats(x)[0]) / _stats(x)[1] * r0 + d0
    if name == "layernorm":
        def ln(x):
            mu = x.mean(-1, keepdim=True)
            return (x - mu) / torch.sqrt(((x - mu) ** 2).mean(-1, keepdim=True) + EPS)
        return ln
    if name == "groupnorm":
        def gn(x):
            xg = x.reshape(M, B, 2, FEAT // 2)
            mu = xg.mean(-1, keepdim=True)
            return ((xg - mu) / torch.sqrt(((xg - mu) ** 2).mean(-1, keepdim=True) + EPS)).reshape(M, B, FEAT)
        return gn
    raise KeyError(name)


def _prepared(name, x0):
    layer = _layer(name, affine=False)
    if name == "batch_renorm":  # EMA state that makes r and d non-trivial (and unclipped)
        layer.running_mean.copy_(x0.mean(1, keepdim=True) + 0.3)
        layer.running_var.copy_(((x0 - x0.mean(1, keepdim=True)) ** 2).mean(1, keepdim=True) * 1.5)
        layer.initialized.fill_(True)
    if name == "population_detached":
        layer.collect = True  # the refresh pass computes the full-set statistics from x0
        layer(x0)
        layer.collect = False
    return layer


def _fd_jacobian(f, x, h=1e-6):
    flat = x.detach().reshape(-1)
    cols = []
    for i in range(flat.numel()):
        e = torch.zeros_like(flat)
        e[i] = h
        cols.append(((f((flat + e).view_as(x)) - f((flat - e).view_as(x))) / (2 * h)).reshape(-1))
    return torch.stack(cols, dim=1)


@pytest.mark.parametrize("name", sorted(NORMS))
def test_gradient_is_what_the_table_says(name):
    """autograd's Jacobian of the layer at x0 == finite differences of the table's
    "what the gradient sees" function; and the forward values agree too."""
    x0 = _x(3, shift=1.0)
    layer0 = _prepared(name, x0)
    seen = _seen(name, layer0, x0)

    def forward(x):
        return copy.deepcopy(layer0)(x)  # a fresh copy: no state carried between calls

    torch.testing.assert_close(forward(x0), seen(x0))
    analytic = torch.autograd.functional.jacobian(forward, x0).reshape(x0.numel(), x0.numel())
    numeric = _fd_jacobian(seen, x0)
    torch.testing.assert_close(analytic, numeric, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["bn", "center", "layernorm", "groupnorm", "none"])
def test_gradcheck_when_statistics_are_in_the_graph(name):
    layer = _layer(name)
    x = _x(4).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: copy.deepcopy(layer)(x), (x,))


@pytest.mark.parametrize("name", ["center_detached", "standardize_detached", "running_detached"])
def test_detached_statistics_hide_the_dependence_from_autograd(name):
    """The naive gradcheck must FAIL for a detached variant: the numerical gradient sees
    that the statistics move with x, autograd does not. (Guards against a detach that
    silently does nothing.)"""
    layer = _layer(name, affine=False)
    x = _x(5, shift=1.0).requires_grad_(True)
    assert not torch.autograd.gradcheck(lambda x: copy.deepcopy(layer)(x), (x,), raise_exception=False)


def test_frozen_keeps_first_batch_statistics():
    layer = _layer("frozen", affine=False)
    x1, x2 = _x(6), _x(7, shift=5.0)
    layer(x1)
    mu1, s1 = _stats(x1)
    torch.testing.assert_close(layer(x2), (x2 - mu1) / s1)


def test_weightnorm_is_scale_invariant_in_v():
    from pipeline.model import StackedLinear

    v = torch.randn(M, FEAT, 3, dtype=torch.float64)
    lin = StackedLinear(v.clone(), None, weight_norm=True).double()
    x = _x(8)
    y1 = lin(x)
    with torch.no_grad():
        lin.weight.mul_(7.0)
    torch.testing.assert_close(lin(x), y1)
    torch.testing.assert_close(lin.effective_weight(), lin.g * v / v.norm(dim=1, keepdim=True))
