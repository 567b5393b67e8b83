"""Normalization layers for stacked members: every input is [members, batch, features].

Each class implements a row of the spec table (pipeline/spec/variants.py: what the layer is,
as every rule reads it), declared with `@implements(name)`; NORMS maps each row's name to its
class. Statistics are per member (dim 1 is the batch), so members never see each other. `sg` in
the docstrings is stop-gradient (`.detach()`). Every layer except `none` has an `affine` switch
(gamma, beta after the normalization); the pre-affine output x_hat is exposed to `on_xhat` so
the trainer can record the mean gradient sum_i dl/dx_hat_i that drives the bias
(docs/science.md).

Conv form: an input [members, batch, channels, height, width] is normalized per channel
(docs/science.md, Variants). It is viewed as rows [M, B*H*W, C] -- every pixel of every
example is one row -- and the same code runs on the rows, so each statistic is per
(member, channel) over batch x height x width (bn is BatchNorm2d), gamma and beta are per
channel, and `on_xhat` sees the rows (its sum over dim 1 is the per-channel bias drive).
layernorm and groupnorm stay per example: over C x H x W, or a group's channels x H x W.

    >>> layer = make_norm("center_detached", members=4, features=32, affine=False)
    >>> y = layer(torch.randn(4, 64, 32))
    >>> y = layer(torch.randn(4, 64, 32, 8, 8))   # conv form: 32 channels

A new variant is one spec row plus one class, neither in a project file if it is a plug-in:

    register_spec(NormSpec("my_norm", "batch", detached=True, scales=True))
    @implements("my_norm")
    class MyNorm(StackedNorm): ...
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.spec.variants import BUILTIN_NAMES, NORM_SPECS, NormSpec, norm_spec

# spec name -> the class that implements it; filled by @implements (register_norm)
NORMS: dict[str, type[StackedNorm]] = {}


def register_norm(name: str, cls: type[StackedNorm]) -> type[StackedNorm]:
    """`cls` is the layer of the spec row `name` (which must be in the table); undo: unregister_norm."""
    norm_spec(name)  # KeyError naming the rows: a layer needs its row first
    if name in NORMS:
        raise ValueError(f"register_norm: {name!r} is already implemented by {NORMS[name].__name__}")
    NORMS[name] = cls
    return cls


def unregister_norm(name: str) -> None:
    """Remove a layer registered at runtime (the built-in rows' layers stay)."""
    if name in BUILTIN_NAMES:
        raise ValueError(f"unregister_norm: {name!r} is a built-in layer of pipeline/nets/norms.py")
    NORMS.pop(name, None)


def implements(*names: str):
    """Class decorator: the class is the layer of these spec rows."""

    def register(cls: type[StackedNorm]) -> type[StackedNorm]:
        for name in names:
            register_norm(name, cls)
        return cls

    return register


class StackedNorm(nn.Module):
    """Base: normalize(x) then optional gamma * x_hat + beta, per member."""

    def __init__(self, members: int, features: int, affine: bool = True, eps: float = 1e-5, momentum: float = 0.1, **_):
        super().__init__()
        self.members, self.features, self.affine = members, features, affine
        self.eps, self.momentum = eps, momentum
        if affine:
            self.gamma = nn.Parameter(torch.ones(members, 1, features))
            self.beta = nn.Parameter(torch.zeros(members, 1, features))
        self.on_xhat = None  # callable(x_hat) set by the trainer on steps it records
        # the spec row this layer implements: make_norm sets it; built directly, the row registered for
        # exactly this class (a subclass that did not register has none: it may add a mode)
        rows = [name for name, cls in NORMS.items() if cls is type(self)]
        self.spec_name: str | None = rows[0] if len(rows) == 1 else None

    @property
    def spec(self) -> NormSpec | None:
        """The layer's row of pipeline/spec/variants.py (None: no registered row)."""
        return NORM_SPECS.get(self.spec_name) if self.spec_name else None

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def set_step(self, t: int) -> None:
        """The training step about to run; only layers with a schedule (batch_renorm) use it."""

    positions = 1  # rows per example: H*W while a conv-form input runs, else 1
    # True: the layer keeps `running_mean`, starts it at 0, lerps it toward the batch mean by `momentum`
    # at every training-mode forward and subtracts it in eval mode. By linearity it then holds
    # EMA(mean(W u)) + EMA(b) exactly (b is constant over the batch), and the trainer can follow
    # EMA(b) beside it to split the inference-mode gap (pipeline/module.py, b_ema). False for layers
    # that copy the first batch (running_*, batch_renorm) or keep no EMA.
    ema_mean_from_zero = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:
            return self._forward_channels(x)
        x_hat = self.normalize(x)
        if self.on_xhat is not None and x_hat.requires_grad:
            self.on_xhat(x_hat)
        return self.gamma * x_hat + self.beta if self.affine else x_hat

    def _forward_channels(self, x: torch.Tensor) -> torch.Tensor:
        """[M, B, C, H, W] -> rows [M, B*H*W, C] -> the layer -> back. With the stacked
        CNN's channels-last layout both reshapes are views (no copy)."""
        m, b, c, h, w = x.shape
        rows = x.permute(0, 1, 3, 4, 2).reshape(m, b * h * w, c)
        self.positions = h * w
        try:
            y = self.forward(rows)
        finally:
            self.positions = 1
        return y.reshape(m, b, h, w, c).permute(0, 1, 4, 2, 3)


def _moments(x: torch.Tensor, dim):
    """Mean and biased variance over `dim`, an int or a tuple (two-pass; torch.var is ~6x slower on CPU here)."""
    mu = x.mean(dim=dim, keepdim=True)
    d = x - mu
    return mu, (d * d).mean(dim=dim, keepdim=True)


def _as_channels(x: torch.Tensor) -> torch.Tensor:
    """[M, B, F] -> [B, M*F]: every (member, unit) becomes one channel of F.batch_norm."""
    m, b, f = x.shape
    return x.transpose(0, 1).reshape(b, m * f)


def _from_channels(y: torch.Tensor, m: int) -> torch.Tensor:
    b = y.shape[0]
    return y.view(b, m, -1).transpose(0, 1)


def _batch_stats(x: torch.Tensor, eps: float):
    """Per-member mean and sigma = sqrt(biased var + eps) over the batch dim, [M, 1, F]."""
    mu, var = _moments(x, 1)
    return mu, torch.sqrt(var + eps)


class _RunningStats(StackedNorm):
    """Adds EMA buffers (torch's convention: running = (1-m)*running + m*batch, unbiased var).

    Eval mode normalizes with them, as torch.nn.BatchNorm1d does. A layer whose
    statistics are never estimated from a batch keeps them at mean 0, var 1.
    """

    def __init__(self, members, features, **kw):
        super().__init__(members, features, **kw)
        self.register_buffer("running_mean", torch.zeros(members, 1, features))
        self.register_buffer("running_var", torch.ones(members, 1, features))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def _update_running(self, x: torch.Tensor, init_from_batch: bool = False, moments=None):
        """EMA update from the batch x; `moments` = its (mean, biased var) if already computed."""
        mu, var = moments if moments is not None else _moments(x.detach(), 1)
        n = x.shape[1]
        var = var * (n / (n - 1)) if n > 1 else var  # unbiased, as torch's running_var
        if init_from_batch and not bool(self.initialized):
            self.running_mean.copy_(mu)
            self.running_var.copy_(var)
        else:
            self.running_mean.lerp_(mu, self.momentum)
            self.running_var.lerp_(var, self.momentum)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _update_running_mean(self, mu: torch.Tensor) -> None:
        """The centering variants only need the EMA of the mean (their eval subtracts it)."""
        self.running_mean.lerp_(mu.detach(), self.momentum)
        self.initialized.fill_(True)

    def _eval(self, x):
        return (x - self.running_mean) / torch.sqrt(self.running_var + self.eps)

    def shift_sigma(self) -> torch.Tensor:
        """The sigma the last training forward divided a shift of x by, [M, 1, F] (here the running sigma,
        which running_detached uses): with detached statistics dl/db = gamma / sigma * dl/dbeta (b shadows
        beta; pipeline/module.py)."""
        return torch.sqrt(self.running_var + self.eps)


@implements("none")
class Identity(StackedNorm):
    """`none`: x_hat = x. No affine (a plain layer already has its bias)."""

    def __init__(self, members, features, **kw):
        kw["affine"] = False
        super().__init__(members, features, **kw)

    def normalize(self, x):
        return x


@implements("bn")
class BatchNorm(_RunningStats):
    """`bn`: x_hat = (x - mu_B) / sigma_B, gradient through both statistics."""

    ema_mean_from_zero = True  # F.batch_norm: running = (1 - m) running + m mu_B, from zeros

    def normalize(self, x):
        if not self.training:
            return self._eval(x)
        # torch's fused batch norm, one channel per (member, unit): same math, far fewer ops;
        # it also updates the EMA buffers in place
        y = F.batch_norm(
            _as_channels(x),
            self.running_mean.view(-1),
            self.running_var.view(-1),
            training=True,
            momentum=self.momentum,
            eps=self.eps,
        )
        self.initialized.fill_(True)
        return _from_channels(y, x.shape[0])


@implements("center")
class Center(_RunningStats):
    """`center`: x_hat = x - mu_B, gradient through mu_B (mean-only BN)."""

    detach_mean = False
    ema_mean_from_zero = True

    def normalize(self, x):
        if not self.training:
            return x - self.running_mean
        mu = x.mean(dim=1, keepdim=True)
        self._update_running_mean(mu)
        return x - (mu.detach() if self.detach_mean else mu)


@implements("center_detached")
class CenterDetached(Center):
    """`center_detached`: x_hat = x - sg(mu_B) -- the paper's thought experiment."""

    detach_mean = True


@implements("standardize_detached")
class StandardizeDetached(_RunningStats):
    """`standardize_detached`: x_hat = (x - sg(mu_B)) / sg(sigma_B) -- "also scales"."""

    ema_mean_from_zero = True
    _batch_sigma: torch.Tensor | None = None  # sg(sigma_B) of the last training forward

    def normalize(self, x):
        if not self.training:
            return self._eval(x)
        mu, var = _moments(x.detach(), 1)
        self._update_running(x, moments=(mu, var))
        self._batch_sigma = torch.sqrt(var + self.eps)
        return (x - mu) / self._batch_sigma

    def shift_sigma(self) -> torch.Tensor:
        """sg(sigma_B) of the last training forward (before any: the running sigma)."""
        return self._batch_sigma if self._batch_sigma is not None else super().shift_sigma()


@implements("population_detached")
class PopulationDetached(StackedNorm):
    """`population_detached`: mu, sigma over the WHOLE training set, detached.

    The trainer calls `refresh` every K steps by running the full training set through
    the network with `collect=True`; between refreshes the statistics are constants.
    """

    scale = True  # False: subtract the mean only

    def __init__(self, members, features, **kw):
        super().__init__(members, features, **kw)
        self.register_buffer("pop_mean", torch.zeros(members, 1, features))
        self.register_buffer("pop_sigma", torch.ones(members, 1, features))
        self.collect = False

    def normalize(self, x):
        if self.collect:
            with torch.no_grad():
                mu, sigma = _batch_stats(x, self.eps)
                self.pop_mean.copy_(mu)
                self.pop_sigma.copy_(sigma)
        return (x - self.pop_mean) / self.pop_sigma if self.scale else x - self.pop_mean

    def shift_sigma(self) -> torch.Tensor:
        """The sigma the forward divides a shift of x by (see _RunningStats.shift_sigma)."""
        return self.pop_sigma


@implements("population_center_detached")
class PopulationCenterDetached(PopulationDetached):
    """`population_center_detached`: x_hat = x - sg(mu), mu over the whole training set
    every K steps; centering alone carries the gradient's rank-1 term (docs/science.md)."""

    scale = False


@implements("running_detached")
class RunningDetached(_RunningStats):
    """`running_detached`: normalize with the EMA statistics during training, detached.

    The EMA is updated with the current batch first (initialized from the first batch),
    then used; Ioffe (2017) reports this blows up.
    """

    scale = True  # False: subtract the mean only

    def normalize(self, x):
        if self.training:
            self._update_running(x, init_from_batch=True)
        return self._eval(x) if self.scale else x - self.running_mean


@implements("running_center_detached")
class RunningCenterDetached(RunningDetached):
    """`running_center_detached`: x_hat = x - sg(mu_EMA), the EMA mean used in training."""

    scale = False


@implements("frozen")
class Frozen(StackedNorm):
    """`frozen`: mu, sigma of the first training batch, fixed forever (an affine map)."""

    def __init__(self, members, features, **kw):
        super().__init__(members, features, **kw)
        self.register_buffer("frozen_mean", torch.zeros(members, 1, features))
        self.register_buffer("frozen_sigma", torch.ones(members, 1, features))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def normalize(self, x):
        if self.training and not bool(self.initialized):
            with torch.no_grad():
                mu, sigma = _batch_stats(x, self.eps)
                self.frozen_mean.copy_(mu)
                self.frozen_sigma.copy_(sigma)
                self.initialized.fill_(True)
        return (x - self.frozen_mean) / self.frozen_sigma


@implements("batch_renorm")
class BatchRenorm(_RunningStats):
    """`batch_renorm` (Ioffe 2017): ((x - mu_B)/sigma_B) * r + d with
    r = sg(clip(sigma_B / sigma, 1/rmax_t, rmax_t)), d = sg(clip((mu_B - mu)/sigma, -dmax_t, dmax_t)),
    mu, sigma the EMAs (initialized from the first batch, updated after use).

    Ioffe's schedule: rmax_t = 1, dmax_t = 0 (plain BN, while the EMAs settle) for the
    first `hold` steps, then both move linearly to `rmax`, `dmax` over `ramp` steps.
    hold = ramp = 0 uses the limits from step 0. The trainer calls `set_step(t)`.
    """

    def __init__(
        self, members, features, rmax: float = 3.0, dmax: float = 5.0, renorm_hold: int = 0, renorm_ramp: int = 0, **kw
    ):
        super().__init__(members, features, **kw)
        self.rmax, self.dmax = rmax, dmax
        self.hold, self.ramp, self.step = renorm_hold, renorm_ramp, 0

    def set_step(self, t: int) -> None:
        self.step = t

    def limits(self) -> tuple[float, float]:
        """(rmax_t, dmax_t) at the current step."""
        t = self.step - self.hold
        frac = 0.0 if t < 0 else 1.0 if t >= self.ramp else t / self.ramp
        return 1.0 + (self.rmax - 1.0) * frac, self.dmax * frac

    def normalize(self, x):
        if not self.training:
            return self._eval(x)
        if not bool(self.initialized):
            self._update_running(x, init_from_batch=True)
        mu_b, var_b = _moments(x, 1)
        sigma_b = torch.sqrt(var_b + self.eps)
        sigma = torch.sqrt(self.running_var + self.eps)
        rmax, dmax = self.limits()
        r = (sigma_b.detach() / sigma).clamp(1.0 / rmax, rmax)
        d = ((mu_b.detach() - self.running_mean) / sigma).clamp(-dmax, dmax)
        out = (x - mu_b) / sigma_b * r + d
        self._update_running(x, moments=(mu_b.detach(), var_b.detach()))
        return out


@implements("layernorm")
class LayerNorm(StackedNorm):
    """`layernorm`: statistics per example over units, gradient through."""

    def normalize(self, x):
        if self.positions > 1:  # conv form: per example over all its rows (C x H x W)
            m, n, f = x.shape
            xe = x.reshape(m, n // self.positions, self.positions, f)
            mu, var = _moments(xe, (2, 3))
            return ((xe - mu) / torch.sqrt(var + self.eps)).reshape(m, n, f)
        mu, var = _moments(x, -1)
        return (x - mu) / torch.sqrt(var + self.eps)


@implements("groupnorm")
class GroupNorm(StackedNorm):
    """`groupnorm`: as layernorm, per group of `groups` contiguous units."""

    def __init__(self, members, features, groups: int = 4, **kw):
        super().__init__(members, features, **kw)
        if features % groups:
            raise ValueError(f"groupnorm: width {features} is not divisible by groups={groups}")
        self.groups = groups

    def normalize(self, x):
        m, b, f = x.shape
        if self.positions > 1:  # conv form: per example over the group's channels x H x W
            xg = x.reshape(m, b // self.positions, self.positions, self.groups, f // self.groups)
            mu, var = _moments(xg, (2, 4))
            return ((xg - mu) / torch.sqrt(var + self.eps)).reshape(m, b, f)
        xg = x.reshape(m, b, self.groups, f // self.groups)
        mu, var = _moments(xg, -1)
        return ((xg - mu) / torch.sqrt(var + self.eps)).reshape(m, b, f)


@implements("weightnorm")
class WeightNormMarker(Identity):
    """`weightnorm`: no data statistics; the Linear layer reparametrizes w = g v/||v||
    (a conv layer: per output channel, ||v|| over its C_in x k x k weights).

    The activation path is the identity; the spec row's `reparametrizes_weight` tells the model
    to build its Linear with weight normalization. `affine` adds gamma, beta like the others.
    """

    def __init__(self, members, features, affine: bool = False, **kw):
        StackedNorm.__init__(self, members, features, affine=affine, **kw)


if set(NORMS) != BUILTIN_NAMES:  # every built-in row has its layer, and no layer lacks a row
    raise ImportError(
        f"pipeline/nets/norms.py implements {sorted(NORMS)}, pipeline/spec/variants.py's built-in "
        f"rows are {sorted(BUILTIN_NAMES)}"
    )


def make_norm(name: str, members: int, features: int, **kw) -> StackedNorm:
    """The layer of spec row `name` (KeyError: no row, or a row no class implements)."""
    norm_spec(name)
    if name not in NORMS:
        raise KeyError(
            f"norm {name!r} has a spec row but no layer: register its class (pipeline.nets.norms.implements)"
        )
    layer = NORMS[name](members, features, **kw)
    layer.spec_name = name  # a class may implement several rows: the instance knows which
    return layer
