"""params.yaml -> typed, validated settings; a grid cell's resolved configuration.

Every mistake becomes one line naming the key and what is allowed, before any work:

    $ python -m pipeline.train --variant bn --dataset digits --out runs/x
    normlab: params.yaml: optim.lrs.2: must be > 0 (got -0.1)
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.norms import NORMS

REPO_ROOT = Path(__file__).resolve().parents[1]


class ConfigError(ValueError):
    """A bad setting: the message is the one line shown to the user."""


class _Strict(BaseModel):
    # strict: no "64" -> 64 coercion; forbid: a typo'd key is an error, not a silent default
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


NormName = Literal[tuple(NORMS)]  # type: ignore[valid-type]


class VariantSettings(_Strict):
    norm: NormName                                  # which layer of pipeline/norms.py
    affine: bool = True                             # gamma, beta after the normalization
    bias: bool = True                               # the Linear layer has b
    trainable: Literal["all", "bias"] = "all"       # "bias": the bias-only toy (only b trains)
    groups: int = Field(4, gt=0)                    # groupnorm only
    rmax: float = Field(3.0, ge=1.0)                # batch_renorm only
    dmax: float = Field(5.0, ge=0.0)                # batch_renorm only
    refresh_every: int = Field(10, gt=0)            # population_detached only: K


class DatasetSettings(_Strict):
    kind: Literal["synthetic", "digits", "csv"]
    # synthetic
    input_mean: float = Field(3.0, ge=0.0)          # norm of the shared input mean (0: control)
    dim: int = Field(20, gt=0)
    classes: int = Field(4, gt=1)
    samples: int = Field(2000, gt=1)
    class_sep: float = Field(1.0, ge=0.0)           # std of the class centres around the mean
    # digits
    standardize: bool = False                       # digits: z-score (True) or pixels/16 (False)
    # csv
    path: str | None = None                         # csv: file with feature columns + target
    target: str = "label"
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    seed: int = 0                                   # fixes the data and the train/val split

    @model_validator(mode="after")
    def _csv_needs_path(self):
        if self.kind == "csv" and not self.path:
            raise ValueError("path: required when kind is csv")
        return self


class GridSettings(_Strict):
    variants: list[str] = Field(min_length=1)
    datasets: list[str] = Field(min_length=1)


class ModelSettings(_Strict):
    depth: int = Field(3, gt=0)                     # hidden layers, each Linear(+b) -> norm -> act
    width: int = Field(64, gt=0)
    activation: Literal["relu", "tanh", "gelu", "identity"] = "relu"
    init: Literal["kaiming", "xavier", "normal"] = "kaiming"
    init_std: float = Field(0.05, gt=0.0)           # init == "normal" only
    bias_init: float = 0.0                          # std of b at init (0: zeros)


class OptimSettings(_Strict):
    name: Literal["sgd", "adam"] = "sgd"
    lrs: list[float] = Field(min_length=1)          # member axis: one member per lr x seed
    seeds: list[int] = Field(min_length=1)          # member axis
    momentum: float = Field(0.0, ge=0.0, lt=1.0)    # sgd only
    weight_decay: float = Field(0.0, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)       # adam only
    batch_size: int = Field(64, gt=0)

    @model_validator(mode="after")
    def _positive_lrs(self):
        for i, lr in enumerate(self.lrs):
            if not lr > 0:
                raise ValueError(f"lrs.{i}: must be > 0 (got {lr})")
        return self


class TrainSettings(_Strict):
    steps: int = Field(1000, gt=0)
    log_every: int = Field(10, gt=0)                # norms, gradients: every N steps
    eval_every: int = Field(100, gt=0)              # full-train and validation loss/accuracy
    diverge_loss: float = Field(1e3, gt=0.0)        # loss above this = diverged
    diverge_param: float = Field(1e6, gt=0.0)       # any |parameter| above this = diverged
    threads: int = Field(0, ge=0)                   # torch threads per process (0: torch default)
    accelerator: str = "auto"


class TrackingSettings(_Strict):
    enabled: bool = True
    experiment: str = "normlab"
    log_every: int = Field(50, gt=0)                # steps between values sent to MLflow (full history: Parquet)
    metrics: list[str] = ["*"]                      # names (glob patterns) sent to MLflow
    flush_every: int = Field(500, gt=0)             # steps between MLflow log_batch flushes


class ReportSettings(_Strict):
    stable_loss_ratio: float = Field(1.0, gt=0.0)   # stable: not diverged and final loss <= ratio * initial
    drift_r2: float = Field(0.9, ge=0.0, le=1.0)    # linear-growth verdict needs R^2 above this
    redundant_tol: float = Field(1e-4, gt=0.0)      # "b stays at init": ||b_T - b_0|| / ||b_0|| below
    figure_lrs: list[float] | None = None           # lrs shown in faceted figures (None: all)


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
    def _grid_names_exist(self):
        for i, v in enumerate(self.grid.variants):
            if v not in self.variants:
                raise ValueError(f"grid.variants.{i}: unknown variant {v!r} (defined: {', '.join(self.variants)})")
        if self.tracking.log_every % self.train.log_every:
            raise ValueError(f"tracking.log_every: must be a multiple of train.log_every={self.train.log_every} "
                             f"(got {self.tracking.log_every})")
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
        return f"{self.variant_name}-{self.dataset_name}"

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


def _format(err: ValidationError, model: type[BaseModel], source: str) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"])
    if e["type"] == "extra_forbidden":
        # walk to the model that owns the bad key to list what it allows
        owner = model
        for part in e["loc"][:-1]:
            field = owner.model_fields.get(str(part)) if isinstance(owner, type) else None
            ann = getattr(field, "annotation", None)
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                owner = ann
            elif getattr(ann, "__args__", None) and isinstance(ann.__args__[-1], type) \
                    and issubclass(ann.__args__[-1], BaseModel):
                owner = ann.__args__[-1]  # dict[str, Model]: the next part is the name
        allowed = ", ".join(owner.model_fields)
        return f"{source}: {loc}: unknown key (allowed: {allowed})"
    msg = e["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
        if ": " in msg and msg.split(":")[0].replace(".", "").replace("_", "").isalnum():
            return f"{source}: {loc + '.' if loc else ''}{msg}"
    got = e.get("input")
    tail = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{source}: {loc or '(top level)'}: {msg}{tail}"


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML reads `1e6` as a string (YAML 1.1); DVC reads YAML 1.2, where it is a float."""


_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*)?(?:\.\d*)?(?:[eE][-+]?\d+)$|^[-+]?\d[\d_]*\.\d*$|^[-+]?\.\d+$"
               r"|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."))


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: file not found")
    try:
        raw = yaml.load(path.read_text(), Loader=_Yaml12Loader) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format(err, Params, path.name)) from None


def cell_settings(params: Params, variant: str, dataset: str) -> CellSettings:
    if variant not in params.variants:
        raise ConfigError(f"--variant: unknown variant {variant!r} (defined: {', '.join(params.variants)})")
    if dataset not in params.datasets:
        raise ConfigError(f"--dataset: unknown dataset {dataset!r} (defined: {', '.join(params.datasets)})")
    ds = params.datasets[dataset]
    if ds.kind == "csv" and not (REPO_ROOT / ds.path).exists() and not Path(ds.path).exists():
        raise ConfigError(f"datasets.{dataset}.path: file not found: {ds.path}")
    v = params.variants[variant]
    if v.norm == "groupnorm" and params.model.width % v.groups:
        raise ConfigError(f"variants.{variant}.groups: must divide model.width={params.model.width} (got {v.groups})")
    return CellSettings(variant_name=variant, dataset_name=dataset, variant=v, dataset=ds,
                        model=params.model, optim=params.optim, train=params.train,
                        tracking=params.tracking)


def die(msg: str) -> None:
    print(f"normlab: {msg}", file=sys.stderr)
    raise SystemExit(2)
