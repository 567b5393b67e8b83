"""What a variant is, decided in one place: one `NormSpec` row per normalization layer.

Every rule that asks "what kind of normalization is this?" reads a row here -- never a norm's
name. `pipeline/nets/norms.py` registers one layer class per row (`@implements(name)`), params
validation accepts exactly the rows' names, and the report's judges select their subjects by
the rows' properties. Torch-free and pandas-free: reading settings never imports torch.

    from pipeline.spec.variants import norm_spec, names_where, register_spec
    norm_spec("center_detached").cancels_b_in_training         # True
    names_where(lambda s: s.detached)                           # claim 2's subjects
    register_spec(NormSpec("my_norm", "batch", detached=True, scales=True, centers=False,
                           summary="x / sg(rms_B)"))            # a plug-in adds a row (undo: unregister_spec)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, get_args

Statistics = Literal["batch", "population", "ema", "fixed", "per_example", "none"]
STATISTICS: tuple[str, ...] = get_args(Statistics)


@dataclass(frozen=True)
class NormSpec:
    """One normalization layer: what it computes, as the rules of the pipeline read it."""

    name: str  # the `norm:` of a variant in params.yaml; the layer's registry key
    statistics: Statistics  # what training-mode x_hat is normalized with: the current mini-batch,
    #                               the whole training set, an EMA, a fixed snapshot, each example, nothing
    detached: bool = False  # the statistics are re-estimated from the data outside the gradient
    #                               step (the gradient never sees them move): the paper's case
    centers: bool = False  # subtracts a mean
    scales: bool = False  # divides by sigma (or an rms)
    mode_free: bool = False  # training- and inference-mode forward are the same float operations and
    #                               no state moves: one full-set pass serves both evaluations
    refreshes: bool = False  # reads `refresh_every`: the trainer recomputes its statistics every K steps
    grouped: bool = False  # reads `groups`, which must divide the layer's width (or channels)
    reparametrizes_weight: bool = False  # the Linear (or conv) before it is built with weight normalization
    summary: str = ""  # one line: the forward, for listings

    def __post_init__(self):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.name):
            raise ValueError(f"NormSpec.name: must be letters, digits and _ (got {self.name!r})")
        if self.statistics not in STATISTICS:
            raise ValueError(f"NormSpec.statistics: must be one of {', '.join(STATISTICS)} (got {self.statistics!r})")

    # -- derived rules: each is named once here and read by the pipeline --------------------------
    @property
    def detached_batch(self) -> bool:
        """Training mode uses the current mini-batch's statistics, detached; inference mode uses
        others (running / population): b's unseen drift can show up as a train/eval gap (claim 1b)."""
        return self.statistics == "batch" and self.detached

    @property
    def cancels_b_in_training(self) -> bool:
        """Training-mode x_hat does not depend on b at all: (u + b) - sg(mean_B(u + b)) cancels b
        and a detached sigma_B ignores a shift. Claim 1's subjects; the bias-only toy's loss is fixed."""
        return self.detached_batch and self.centers


# The 14 layers of pipeline/nets/norms.py. `detached` is claim 2's sense (statistics re-estimated from the
# data while the gradient ignores them). Two layers whose statistics the gradient also ignores are NOT
# detached in that sense: `frozen` never re-estimates its statistics (a fixed affine map, the control
# of population_detached on which b is not redundant), and `batch_renorm`'s gradient flows through mu_B
# and sigma_B (only its correction r, d is stopped: "stop-gradient done right").
_BUILTIN: tuple[NormSpec, ...] = (
    NormSpec("none", "none", mode_free=True, summary="x_hat = x (no normalization, no affine)"),
    NormSpec(
        "bn", "batch", centers=True, scales=True, summary="(x - mu_B) / sigma_B, gradient through both statistics"
    ),
    NormSpec("center", "batch", centers=True, summary="x - mu_B, gradient through mu_B (mean-only BN)"),
    NormSpec(
        "center_detached", "batch", detached=True, centers=True, summary="x - sg(mu_B): the paper's thought experiment"
    ),
    NormSpec(
        "standardize_detached",
        "batch",
        detached=True,
        centers=True,
        scales=True,
        summary="(x - sg(mu_B)) / sg(sigma_B): also scales",
    ),
    NormSpec(
        "population_detached",
        "population",
        detached=True,
        centers=True,
        scales=True,
        mode_free=True,
        refreshes=True,
        summary="(x - sg(mu)) / sg(sigma) over the whole training set every K steps",
    ),
    NormSpec(
        "population_center_detached",
        "population",
        detached=True,
        centers=True,
        mode_free=True,
        refreshes=True,
        summary="x - sg(mu), mu over the whole training set every K steps",
    ),
    NormSpec(
        "running_detached",
        "ema",
        detached=True,
        centers=True,
        scales=True,
        summary="(x - sg(mu_EMA)) / sg(sigma_EMA), the EMA updated with the batch, then used",
    ),
    NormSpec(
        "running_center_detached",
        "ema",
        detached=True,
        centers=True,
        summary="x - sg(mu_EMA), the EMA mean used in training",
    ),
    NormSpec(
        "frozen",
        "fixed",
        centers=True,
        scales=True,
        summary="(x - mu_0) / sigma_0 of the first training batch, fixed forever",
    ),
    NormSpec(
        "batch_renorm",
        "batch",
        centers=True,
        scales=True,
        summary="(x - mu_B) / sigma_B * r + d, r and d detached (Ioffe 2017)",
    ),
    NormSpec(
        "layernorm",
        "per_example",
        centers=True,
        scales=True,
        mode_free=True,
        summary="per example over units (conv: C x H x W), gradient through",
    ),
    NormSpec(
        "groupnorm",
        "per_example",
        centers=True,
        scales=True,
        mode_free=True,
        grouped=True,
        summary="as layernorm, per group of `groups` contiguous units (channels)",
    ),
    NormSpec(
        "weightnorm",
        "none",
        mode_free=True,
        reparametrizes_weight=True,
        summary="x_hat = x; the layer's weight is w = g v / ||v||",
    ),
)
BUILTIN_NAMES: frozenset[str] = frozenset(s.name for s in _BUILTIN)

_table: dict[str, NormSpec] = {s.name: s for s in _BUILTIN}
# the live table, read-only: the built-in rows, in this order, then any registered at runtime
NORM_SPECS: Mapping[str, NormSpec] = MappingProxyType(_table)


# -- the table ------------------------------------------------------------------------------------
def norm_names() -> tuple[str, ...]:
    """Every row's name, built-in rows first (their order is the one error messages list)."""
    return tuple(_table)


def norm_spec(name: str) -> NormSpec:
    """The row of `name`; KeyError naming the registered rows for an unknown one."""
    try:
        return _table[name]
    except KeyError:
        raise KeyError(f"unknown norm {name!r} (registered: {', '.join(_table)})") from None


def names_where(rule: Callable[[NormSpec], bool]) -> tuple[str, ...]:
    """The names of the rows for which `rule(spec)` holds, in table order, e.g.
    names_where(lambda s: s.detached). Read at each call: a row registered at runtime counts."""
    return tuple(name for name, spec in _table.items() if rule(spec))


def register_spec(spec: NormSpec) -> NormSpec:
    """Add a row at runtime (a plug-in or a test adds a variant); undo with unregister_spec.
    Its layer class registers in pipeline.nets.norms (`implements` / register_norm)."""
    if not isinstance(spec, NormSpec):
        raise TypeError(f"register_spec: expected a NormSpec (got {type(spec).__name__})")
    if spec.name in _table:
        raise ValueError(f"register_spec: norm {spec.name!r} is already in the table")
    _table[spec.name] = spec
    return spec


def unregister_spec(name: str) -> None:
    """Remove a row added by register_spec (the built-in rows stay: the layers depend on them)."""
    if name in BUILTIN_NAMES:
        raise ValueError(f"unregister_spec: {name!r} is a built-in row of pipeline/spec/variants.py")
    _table.pop(name, None)


# -- a variant (a norm plus the settings around it) -----------------------------------------------
def _setting(variant, key: str, default=None):
    """`key` of a VariantSettings or of its dumped dict (a cell's config.json "variant")."""
    return variant.get(key, default) if isinstance(variant, Mapping) else getattr(variant, key, default)


def loss_fixed(variant) -> bool:
    """The loss cannot move by construction: only b trains (the bias-only toy) and training-mode
    x_hat cancels b. `variant`: a VariantSettings or its dict (norm, trainable, ...)."""
    only_b = _setting(variant, "trainable", "all") == "bias"
    return only_b and norm_spec(_setting(variant, "norm")).cancels_b_in_training


def refresh_interval(variant) -> int | None:
    """K, the steps between recomputed statistics, for a norm that refreshes; None otherwise
    (a variant's `refresh_every` is then unread)."""
    return int(_setting(variant, "refresh_every")) if norm_spec(_setting(variant, "norm")).refreshes else None


def allowed_text(names=None) -> str:
    """'a', 'b' or 'c': the registered names as a params error lists them."""
    quoted = [repr(n) for n in (norm_names() if names is None else names)]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
