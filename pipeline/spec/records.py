"""The typed records of a cell (summary, members, per-layer stats) and the names of per-layer columns.

Per-layer quantities are stored in the history (and sent to MLflow) under one column per layer;
`layer_column` is the only place that builds such a name, and nothing parses one back: readers
know the layer indices from the typed records (or the cell's depth) and build the names.

summary.json is a `CellSummary`:
    {"cell": "bn-synthetic", "variant": "bn", "dataset": "synthetic", "norm": "bn", "steps": 300,
     "input_mean_norm": 3.1, "classes": 4, "chance_loss": 1.386, "config_hash": "...",
     "members": [{"member": 0, "lr": 0.1, "seed": 0, "diverged": false, "diverged_step": null,
                  "initial_loss": ..., "final_loss": ..., "init_full_loss_train": ..., ...,
                  "layers": [{"layer": 0, "W_norm": ..., "W_norm0": ..., "b_norm": ..., "b_norm0": ...,
                              "b_drift": ..., "gsum_persist": ...}, ...]}, ...]}
Every model refuses a key it does not know and a value of the wrong type (strict: "1.5" and "NaN"
are not numbers, 1 is not a bool); NaN is a number (a quantity that was recorded but has no value).
What training can never write is refused too, so a hand-edited or damaged summary is not read as
data: a cell without members, a member numbered twice, an lr that is not finite and > 0, a seed
outside [0, 2**32), a diverged member without its step (or a step without divergence), a negative
loss, norm or step count, an accuracy outside [0, 1]. Every rule holds for every summary normlab has
written, so older records load as before.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


def layer_column(quantity: str, layer: int) -> str:
    """The history / member-table / MLflow name of `quantity` on hidden layer `layer` (0-based)."""
    return f"{quantity}/l{layer}"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _not_negative(obj, names) -> None:
    """NaN (recorded, no value) and +inf (a diverged member's loss or norm) pass; a negative does not."""
    for name in names:
        v = getattr(obj, name)
        if v is not None and v < 0:
            raise ValueError(f"{name}: must not be negative (got {v!r})")


def _in_unit_interval(obj, names) -> None:
    for name in names:
        v = getattr(obj, name)
        if not (math.isnan(v) or 0.0 <= v <= 1.0):
            raise ValueError(f"{name}: an accuracy is in [0, 1] or NaN (got {v!r})")


class LayerStats(_Record):
    """One hidden layer's numbers in a member's summary. `W_norm`, `b_norm`, `b_drift`, `mean_dir_W`,
    `mean_dir_drift`: at the final state theta_T; `W_norm0`, `b_norm0`, `mean_dir_W0`: at initialization; `gsum_persist`: ||sum_t G_t|| /
    sum_t ||G_t|| with G_t = dl/db_t (1 = a persistent drive of b). None: the layer has no such
    quantity (no b); NaN: recorded, but no value (e.g. nothing logged).
    b's drive over the last logged window (pipeline.drive.window_moments; claim 1b's predicted leak):
    `drive_end_sq` the unbiased estimate of ||Gbar||^2 (the full-batch mean of G; negative where noise
    dominates), `drive_end_var` of tr(Sigma) (the mini-batch noise; may round below 0 where there is none). Where the running mean holds an EMA of
    b (pipeline/module.py): `b_lag` = ||b_T - EMA(b)||, `ema_momentum` the EMA's momentum m. Optional:
    records written before them load with None."""

    layer: int
    W_norm: float
    W_norm0: float
    b_norm: float | None = None
    b_norm0: float | None = None
    b_drift: float | None = None
    gsum_persist: float | None = None
    # W along the input-mean direction m = E[u]/||E[u]|| (the dense first layer only; None elsewhere and in
    # records written before it): ||m^T W|| at theta_T and at init, and its drift ||m^T (W_T - W_0)|| -- what
    # the rank-1 term u_bar (sum_i g_i)^T of detached centering moves (pipeline/claims/mechanism.py)
    mean_dir_W: float | None = None
    mean_dir_W0: float | None = None
    mean_dir_drift: float | None = None
    drive_end_sq: float | None = None
    drive_end_var: float | None = None
    b_lag: float | None = None
    ema_momentum: float | None = None

    @model_validator(mode="after")
    def _possible(self):
        if self.layer < 0:
            raise ValueError(f"layer: must not be negative (got {self.layer})")
        # the drive's moments are unbiased estimates (differences): they may come out below 0
        _not_negative(self, tuple(q for q in self.quantities() if q not in ("drive_end_sq", "drive_end_var")))
        if self.ema_momentum is not None and not 0 < self.ema_momentum <= 1:
            raise ValueError(f"ema_momentum: must be in (0, 1] (got {self.ema_momentum!r})")
        return self

    @classmethod
    def quantities(cls) -> tuple[str, ...]:
        """The per-layer quantity names, in field order (every field but `layer`)."""
        return tuple(n for n in cls.model_fields if n != "layer")

    def columns(self) -> dict[str, float]:
        """{layer_column(quantity, layer): value} for every quantity this layer has (None left out)."""
        return {layer_column(q, self.layer): v for q in self.quantities() if (v := getattr(self, q)) is not None}


class MemberSummary(_Record):
    """One member (lr, seed) of a cell: its divergence, losses, final evaluations (NaN for a member
    that diverged before them) and `layers`, one LayerStats per hidden layer, in order."""

    member: int
    lr: float
    seed: int
    diverged: bool
    diverged_step: int | None
    initial_loss: float  # mean mini-batch loss of the first 10 steps
    final_loss: float  # mean mini-batch loss of the last tenth of the run
    init_full_loss_train: float  # full training set, training mode, at initialization
    init_full_acc_train: float
    full_loss_train: float  # the final state's (training mode on the full training set) ...
    full_acc_train: float
    full_loss_eval: float  # ... inference mode on the full training set ...
    full_acc_eval: float
    val_loss_eval: float  # ... inference mode on the validation set
    val_acc_eval: float
    # inference mode on the full training set with every b replaced by its EMA (b's lag removed:
    # pipeline/module.py). NaN where it is not measured (mode-free variants, no b, EMAs that copy their
    # first batch) and in records written before it existed: optional, so those still load
    full_loss_eval_bema: float = float("nan")
    layers: list[LayerStats]

    @model_validator(mode="after")
    def _possible(self):
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr: must be a finite number > 0 (got {self.lr!r})")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed: must be in [0, 2**32) (got {self.seed})")
        if self.member < 0:
            raise ValueError(f"member: must not be negative (got {self.member})")
        if self.diverged != (self.diverged_step is not None):
            raise ValueError(
                f"diverged_step: set exactly when diverged is true (diverged {self.diverged}, "
                f"diverged_step {self.diverged_step})"
            )
        if self.diverged_step is not None and self.diverged_step < 0:
            raise ValueError(f"diverged_step: must not be negative (got {self.diverged_step})")
        _not_negative(
            self,
            (
                "initial_loss",
                "final_loss",
                "init_full_loss_train",
                "full_loss_train",
                "full_loss_eval",
                "val_loss_eval",
                "full_loss_eval_bema",
            ),
        )
        _in_unit_interval(self, ("init_full_acc_train", "full_acc_train", "full_acc_eval", "val_acc_eval"))
        return self

    @model_validator(mode="after")
    def _layers_in_order(self):
        got = [s.layer for s in self.layers]
        if got != list(range(len(got))):
            raise ValueError(f"layers must be numbered 0..{len(got) - 1} in order (got {got})")
        return self

    @property
    def depth(self) -> int:
        """The number of hidden layers."""
        return len(self.layers)

    def scalars(self) -> dict[str, Any]:
        """Every field but `layers`, by name."""
        return {n: getattr(self, n) for n in type(self).model_fields if n != "layers"}

    def layer_columns(self) -> dict[str, float]:
        """Every layer's numbers under their column names (None left out), quantity by quantity:
        {"W_norm/l0": .., "W_norm/l1": .., "W_norm0/l0": .., ...}."""
        return {
            layer_column(q, s.layer): v
            for q in LayerStats.quantities()
            for s in self.layers
            if (v := getattr(s, q)) is not None
        }


class CellSummary(_Record):
    """A cell's summary.json: what the cell is, its baselines and every member."""

    cell: str
    variant: str
    dataset: str
    norm: str
    steps: int
    input_mean_norm: float
    classes: int
    chance_loss: float
    config_hash: str
    members: list[MemberSummary]

    @model_validator(mode="after")
    def _possible(self):
        if not self.members:
            raise ValueError("members: a cell has at least one member (an lr x seed); got none")
        seen: dict[int, int] = {}
        for i, m in enumerate(self.members):
            if m.member in seen:
                raise ValueError(f"members.{i}.member: {m.member} is listed twice (also at index {seen[m.member]})")
            seen[m.member] = i
        if self.steps <= 0:
            raise ValueError(f"steps: must be > 0 (got {self.steps})")
        if self.classes < 2:
            raise ValueError(f"classes: must be at least 2 (got {self.classes})")
        _not_negative(self, ("input_mean_norm", "chance_loss"))
        return self

    @model_validator(mode="after")
    def _one_depth(self):
        depths = sorted({m.depth for m in self.members})
        if len(depths) > 1:
            raise ValueError(f"members have different numbers of layers {depths}: one cell has one architecture")
        return self

    @property
    def depth(self) -> int:
        """The number of hidden layers."""
        return self.members[0].depth


class CellMeta(BaseModel):
    """`<cell>.meta.json`, beside the cell folder: run-specific facts DVC does not hash (other
    keys allowed: it is not part of the cell's outputs)."""

    model_config = ConfigDict(extra="allow")
    cell: str
    timing: dict[str, Any]
    mlflow: dict[str, Any] | None = None
    outputs_hash: str | None = None
